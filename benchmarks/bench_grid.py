"""A 10-cell perturbation grid on retrieval: vlmkit's engine vs re-running full evaluations.

    python benchmarks/bench_grid.py --data ../shared/data --model toy:vit --n 159

The baseline runs each cell the way CLIP_benchmark's ``evaluate`` does: a fresh pass over the data
loader (decode + resize every image from disk), re-encode every caption, encode the perturbed images,
compute recall. The engine decodes once (uint8 cache), embeds the captions once, and reuses the
clean embeddings for drift and flips. Both produce the same Recall@K (checked below); the table
prints both wall times and the ratio, measured in the same run.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

import vlmkit
import vlmkit.perturb  # noqa: F401  (registers every perturbation)
from vlmkit.data import decode_image, load_coco_captions
from vlmkit.evaluate import Cell, evaluate_grid
from vlmkit.metrics import retrieval_metrics
from vlmkit.registry import PERTURBATIONS
from vlmkit.runtime import make_generator

CANDIDATES = [("gaussian_noise", 1), ("gaussian_noise", 3), ("defocus_blur", 2), ("jpeg_compression", 3),
              ("contrast", 3), ("band_noise", 2), ("low_pass", 2), ("high_pass", 2), ("translate", 2),
              ("rotate", 2), ("scale", 2), ("typographic", 1), ("phase_noise", 2)]


def cells(n: int = 10) -> list[Cell]:
    out = [Cell("perturbation", name, sev) for name, sev in CANDIDATES if name in PERTURBATIONS]
    if len(out) < n:
        raise SystemExit(f"only {len(out)} of the benchmark's perturbations are registered")
    return out[:n]


def baseline(vlm: vlmkit.VLM, ds, grid: list[Cell], batch_size: int, size: int, seed: int) -> dict[str, float]:
    """CLIP_benchmark style: every cell re-reads images and re-encodes texts."""
    out = {}
    for cell in grid:
        with torch.inference_mode():
            txt = vlm.encode_text(ds.captions)
            embs = []
            for i in range(0, len(ds), batch_size):
                xb = torch.stack([torch.from_numpy(decode_image(p, size)) for p in ds.paths[i:i + batch_size]])
                xb = xb.to(vlm.device).float() / 255
                xb = PERTURBATIONS.get(cell.name)(xb, cell.severity, generator=make_generator(seed + i))
                embs.append(vlm.encode_image(xb))
            out[cell.label()] = retrieval_metrics(torch.cat(embs), txt, ds.text_to_image)["i2t_R@1"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--model", default="toy:vit")
    ap.add_argument("--n", type=int, default=159, help="COCO images (coco-mini has 159)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    vlmkit.seed_everything(0)
    root = Path(args.data) / "coco-mini"
    ds = load_coco_captions(root / "captions.json", root / "images").subset(args.n, seed=0)
    vlm = vlmkit.load_model(args.model, device=args.device)
    grid = cells()
    size = max(vlm.image_size)

    t0 = time.perf_counter()
    base = baseline(vlm, ds, grid, args.batch_size, size, seed=0)
    t_base = time.perf_counter() - t0

    out = Path(tempfile.mkdtemp(prefix="vlmkit-bench-grid-"))
    try:
        t0 = time.perf_counter()
        table = evaluate_grid(vlm, ds, grid, out_dir=out, batch_size=args.batch_size, progress=False)
        t_engine = time.perf_counter() - t0
        t0 = time.perf_counter()
        evaluate_grid(vlm, ds, grid, out_dir=out, batch_size=args.batch_size, progress=False)
        t_resume = time.perf_counter() - t0
    finally:
        shutil.rmtree(out, ignore_errors=True)

    print(f"\n10-cell retrieval grid, {args.model}, {len(ds)} COCO images / {ds.num_texts} captions, "
          f"{torch.get_num_threads()} threads, device {vlm.device}")
    print(f"{'cell':<24}{'i2t R@1 engine':>16}{'i2t R@1 baseline':>18}")
    for cell in grid:
        eng = table[(table.label == cell.label()) & (table.metric == "i2t_R@1")]["value"].iloc[0]
        print(f"{cell.label():<24}{eng:>16.3f}{base[cell.label()]:>18.3f}")
    print(f"\n{'run':<44}{'seconds':>10}")
    print(f"{'baseline (re-encode every cell, CLIP_benchmark-style)':<44}{t_base:>10.2f}")
    print(f"{'vlmkit engine (cold cache)':<44}{t_engine:>10.2f}")
    print(f"{'vlmkit engine (resume, all cells done)':<44}{t_resume:>10.2f}")
    print(f"speed-up (baseline / engine cold): {t_base / t_engine:.2f}x")


if __name__ == "__main__":
    main()
