"""One GPU near its limit: throughput of vlmkit's hot paths and the share of the GPU's bf16 matrix peak.

    python benchmarks/bench_gpu.py                      # on a GPU: ViT-B-32 and ViT-L-14, COCO-5k-sized data
    python benchmarks/bench_gpu.py --small              # CPU smoke (automatic without CUDA): ViT-B-32, tiny n
    python benchmarks/bench_gpu.py --compile reduce-overhead --precision bf16 --n 5000

For each model (``open_clip:<arch>`` with no weights = random init: same FLOPs as pretrained):

* **clean embed** — image embeddings of resident uint8 images (img/s);
* **PGD-10** — L∞ PGD, 10 steps, ε = 4/255, zero-shot cross-entropy over 1000 class embeddings (img/s);
* **corrupt 19x5** — the 19 ImageNet-C corruptions × 5 severities on resident images, corruption only
  (corrupted img/s over all 95 cells);
* **grid 20** — :func:`vlmkit.evaluate.evaluate_grid` on a synthetic COCO-5k-sized retrieval set
  (5 captions per image): clean + 20 corruption cells, cold cache (seconds, and img/s over 21 cells).

Data is synthetic (seeded smooth noise; throughput does not depend on the pixels) and resident on the
device as uint8. On CUDA the defaults are bf16 autocast of the image tower (float32 pixels, attack steps,
metrics), batch size from free memory with back-off on out-of-memory. "% peak" is the achieved matrix
FLOP rate over the GPU's dense bf16 peak (H100/H200 SXM: 989 TFLOP/s; ``--peak-tflops`` to override),
with FLOPs per image estimated from the ViT architecture (2 FLOPs per multiply-add of the patch
embedding, attention and MLP matmuls; a PGD step = forward + input-gradient backward ≈ 2 forwards).
Corruptions are not matrix work: no "% peak" for them.

Goals on one H100 (issue #9): ViT-B/32 clean ≥ 20k img/s, PGD-10 ≥ 1.5k img/s, 20-cell grid on 5k
images < 2 min.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import tempfile
import time
from pathlib import Path

import torch

import vlmkit
import vlmkit.attacks  # noqa: F401  (registers the attacks)
import vlmkit.perturb  # noqa: F401  (registers every perturbation)
from vlmkit.evaluate import Cell, evaluate_grid
from vlmkit.perturb.corruptions import CORRUPTIONS
from vlmkit.registry import ATTACKS, PERTURBATIONS
from vlmkit.runtime import auto_batch_size, make_generator, run_batched_with_backoff

#: Dense bf16 tensor-core peak (TFLOP/s) by GPU name fragment.
PEAKS = {"H100": 989.0, "H200": 989.0, "GH200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0}
GRID_CELLS = [(name, sev) for name in ("gaussian_noise", "defocus_blur", "contrast", "jpeg_compression")
              for sev in (1, 2, 3, 4, 5)]  # 20 cells


class SyntheticCaptions:
    """A COCO-shaped retrieval set in memory: ``n`` images (seeded smooth noise), 5 captions each."""

    def __init__(self, n: int, captions_per_image: int = 5, seed: int = 0) -> None:
        self.n, self.seed, self.name = n, seed, f"synthetic-coco-{n}"
        self.captions = [f"a photo of scene {i} seen from angle {k}" for i in range(n) for k in range(captions_per_image)]
        self.text_to_image = torch.arange(n).repeat_interleave(captions_per_image)
        self._images: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return self.n

    def content_hash(self) -> str:
        return hashlib.sha256(f"{self.name}-{self.seed}".encode()).hexdigest()[:32]

    def load_images(self, size: int = 224, *args, **kwargs) -> torch.Tensor:
        if size not in self._images:
            g = torch.Generator().manual_seed(self.seed)
            low = torch.randint(0, 256, (self.n, 3, size // 8, size // 8), generator=g, dtype=torch.uint8)
            img = torch.nn.functional.interpolate(low.float(), size=(size, size), mode="bilinear", align_corners=False)
            img += torch.randn(img.shape, generator=g) * 12
            self._images[size] = img.clamp_(0, 255).to(torch.uint8)
        return self._images[size]


def vit_flops(arch: str) -> float:
    """Forward matrix FLOPs per image of an open_clip ViT image tower (2 × multiply-adds)."""
    from open_clip import get_model_config

    v = get_model_config(arch)["vision_cfg"]
    s, p, w, layers = int(v["image_size"]), int(v["patch_size"]), int(v["width"]), int(v["layers"])
    ratio = float(v.get("mlp_ratio", 4.0))
    n = (s // p) ** 2 + 1
    per_layer = 4 * n * w * w + 2 * n * w * (ratio * w) + 2 * n * n * w  # qkv+out, MLP, QK^T and AV
    macs = layers * per_layer + (s // p) ** 2 * 3 * p * p * w + w * get_model_config(arch)["embed_dim"]
    return 2.0 * macs


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn, dev: torch.device) -> float:
    sync(dev)
    t0 = time.perf_counter()
    fn()
    sync(dev)
    return time.perf_counter() - t0


def bench_model(arch: str, args: argparse.Namespace, dev: torch.device) -> dict[str, float]:
    vlmkit.seed_everything(0)
    vlm = vlmkit.load_model(f"open_clip:{arch}", device=dev)
    vlm.check_inputs = False
    size = max(vlm.image_size)
    opts = {"precision": args.precision, "channels_last": args.channels_last, "compile": args.compile}
    res: dict[str, float] = {"gflop": vit_flops(arch) / 1e9}

    # clean embedding, resident uint8 images
    data = SyntheticCaptions(args.n, seed=0)
    imgs = data.load_images(size).to(dev)
    n = len(imgs)

    def embed(start: int, stop: int) -> torch.Tensor:
        with torch.inference_mode():
            return vlm.encode_image(imgs[start:stop].float().div_(255))

    with vlm.fast(**opts):
        bs = args.batch_size or auto_batch_size(embed, n, dev, default=64)
        run_batched_with_backoff(embed, min(n, 2 * bs), bs)  # warm-up (and compile)
        t = timed(lambda: run_batched_with_backoff(embed, n, bs), dev)
    res["embed_bs"], res["embed"] = bs, n / t

    # PGD-10 on a zero-shot objective (1000 classes)
    from vlmkit.attacks import ZeroShotCE

    n_adv = min(n, args.n_attack)
    text = torch.nn.functional.normalize(torch.randn(1000, vlm.encode_text(["a"]).shape[-1], device=dev), dim=-1)
    labels = torch.randint(0, 1000, (n,), generator=torch.Generator().manual_seed(0)).to(dev)
    attack = ATTACKS.create("pgd", ZeroShotCE(), eps=4 / 255, steps=10, generator=make_generator(0, dev))

    def pgd(start: int, stop: int) -> torch.Tensor:
        return attack(vlm, imgs[start:stop].float().div_(255), {"text_emb": text, "labels": labels[start:stop]})

    with vlm.fast(**opts):
        bs_adv = args.batch_size or auto_batch_size(pgd, n_adv, dev, default=32, probe=4)
        run_batched_with_backoff(pgd, min(n_adv, bs_adv), bs_adv)  # warm-up
        t = timed(lambda: run_batched_with_backoff(pgd, n_adv, bs_adv), dev)
    res["pgd_bs"], res["pgd"] = bs_adv, n_adv / t

    # 19 corruptions x 5 severities, corruption only
    n_c = min(n, args.n_corrupt)
    bs_c = min(n_c, args.batch_size or 256)
    names = [c for c in CORRUPTIONS if c in PERTURBATIONS]

    def corrupt_all() -> None:
        for name in names:
            fn = PERTURBATIONS.get(name)
            for sev in range(1, 6):
                g = make_generator(sev, dev)
                for i in range(0, n_c, bs_c):
                    fn(imgs[i:i + bs_c].float().div_(255), sev, generator=g)

    for name in names:  # warm-up (kernels, frost textures)
        PERTURBATIONS.get(name)(imgs[:2].float().div_(255), 1, generator=make_generator(0, dev))
    t = timed(corrupt_all, dev)
    res["corrupt"], res["n_corruptions"] = n_c * len(names) * 5 / t, len(names)

    # 20-cell retrieval grid through the engine, cold cache
    grid = [Cell("perturbation", name, sev) for name, sev in GRID_CELLS if name in PERTURBATIONS]
    n_g = min(n, args.n_grid)
    gdata = data if n_g == n else SyntheticCaptions(n_g, seed=0)
    out = Path(tempfile.mkdtemp(prefix="vlmkit-bench-gpu-"))
    try:
        t = timed(lambda: evaluate_grid(vlm, gdata, grid, out_dir=out, task="retrieval", progress=False,
                                        batch_size=args.batch_size or "auto", **opts), dev)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    res["grid_s"], res["grid_cells"], res["grid_n"] = t, len(grid), n_g
    res["grid"] = n_g * (len(grid) + 1) / t
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=None, help="open_clip architectures (default: ViT-B-32 ViT-L-14)")
    ap.add_argument("--n", type=int, default=5000, help="images (COCO 5k test split size)")
    ap.add_argument("--n-attack", type=int, default=2048, help="images attacked by PGD-10")
    ap.add_argument("--n-corrupt", type=int, default=512, help="images per corruption cell")
    ap.add_argument("--n-grid", type=int, default=5000, help="images of the 20-cell grid")
    ap.add_argument("--batch-size", type=int, default=None, help="fixed batch size (default: from free memory)")
    ap.add_argument("--precision", default=None, help="bf16 (default on CUDA) or float32")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--compile", default=False, nargs="?", const=True,
                    help="torch.compile the image tower (optionally a mode: reduce-overhead = CUDA graphs)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of the GPU (default: by name)")
    ap.add_argument("--small", action="store_true", help="CPU smoke: ViT-B-32, a few images (automatic without CUDA)")
    args = ap.parse_args()
    dev = vlmkit.resolve_device(args.device)
    small = args.small or dev.type != "cuda"
    if small:
        args.models = args.models or ["ViT-B-32"]
        args.n, args.n_attack, args.n_corrupt, args.n_grid = min(args.n, 32), min(args.n_attack, 4), \
            min(args.n_corrupt, 4), min(args.n_grid, 12)
        args.batch_size = args.batch_size or 16
    args.models = args.models or ["ViT-B-32", "ViT-L-14"]
    if args.precision is None:
        args.precision = "bf16" if dev.type == "cuda" else None
    if args.precision in ("float32", "fp32"):
        args.precision = None

    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "none"
    peak = args.peak_tflops or next((v for k, v in PEAKS.items() if k in gpu), None)
    rows = {arch: bench_model(arch, args, dev) for arch in args.models}

    print(f"\nbench_gpu: device {dev} ({gpu}), torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"precision {args.precision or 'float32'}, compile {args.compile}, channels_last {args.channels_last}"
          f"{', SMALL mode' if small else ''}")
    print(f"images: embed {args.n}, PGD-10 {args.n_attack}, corruptions {args.n_corrupt} x 19 x 5, "
          f"grid {args.n_grid} (5 captions each); bf16 peak {f'{peak:.0f} TFLOP/s' if peak else 'unknown'}")

    def pct(img_s: float, flop: float) -> str:
        return f"{100 * img_s * flop / (peak * 1e12):.1f}%" if peak else "n/a"

    head = f"{'model':<10}{'GFLOP/img':>10}{'embed img/s':>13}{'%peak':>7}{'PGD-10 img/s':>14}{'%peak':>7}" \
           f"{'corrupt19x5 img/s':>19}{'grid20 s':>10}{'grid img/s':>12}{'%peak':>7}"
    print(head)
    print("-" * len(head))
    for arch, r in rows.items():
        f = r["gflop"] * 1e9
        print(f"{arch:<10}{r['gflop']:>10.1f}{r['embed']:>13.1f}{pct(r['embed'], f):>7}{r['pgd']:>14.2f}"
              f"{pct(r['pgd'], 20 * f):>7}{r['corrupt']:>19.1f}{r['grid_s']:>10.1f}{r['grid']:>12.1f}"
              f"{pct(r['grid'], f):>7}")
    for arch, r in rows.items():
        print(f"{arch}: batch sizes embed {int(r['embed_bs'])}, PGD {int(r['pgd_bs'])}; "
              f"{int(r['n_corruptions'])} corruptions; grid {int(r['grid_cells'])} cells + clean on {int(r['grid_n'])} images")
    if dev.type != "cuda":
        print("no GPU here: GPU numbers are still to be measured (run without --small on a CUDA machine)")


if __name__ == "__main__":
    main()
