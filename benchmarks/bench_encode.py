"""Image-embedding throughput (img/s): data decoded per batch vs resident uint8, CPU and CUDA.

    python benchmarks/bench_encode.py --model open_clip:ViT-B-32 --batch-size 32 --n 128 --data ../shared/data

Prints one row per (device, data path). "decode per batch" reads + decodes + resizes JPEGs for every
batch (what a naive DataLoader loop does); "resident uint8" decodes once (vlmkit's image cache) and
only converts uint8→float on the device per batch. Model weights are random unless the spec names
weights: throughput depends on the architecture, not the values.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import vlmkit
from vlmkit.data import decode_image, imagenet_classnames, load_labelled_csv


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def bench(vlm: vlmkit.VLM, paths: list[Path], resident: torch.Tensor, batch_size: int, dtype: str | None,
          repeats: int) -> dict[str, float]:
    dev = vlm.device
    size = max(vlm.image_size)
    out = {}
    with torch.inference_mode(), vlmkit.autocast(dev, dtype):
        vlm.encode_image(resident[:batch_size].to(dev).float() / 255)  # warm-up
        _sync(dev)
        t0 = time.perf_counter()
        for _ in range(repeats):
            for i in range(0, len(paths), batch_size):
                xb = torch.stack([torch.from_numpy(decode_image(p, size)) for p in paths[i:i + batch_size]])
                vlm.encode_image(xb.to(dev).float() / 255)
        _sync(dev)
        out["decode per batch"] = repeats * len(paths) / (time.perf_counter() - t0)
        res = resident.to(dev)
        _sync(dev)
        t0 = time.perf_counter()
        for _ in range(repeats):
            for i in range(0, len(res), batch_size):
                vlm.encode_image(res[i:i + batch_size].float() / 255)
        _sync(dev)
        out["resident uint8"] = repeats * len(res) / (time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="open_clip:ViT-B-32")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--n", type=int, default=128, help="images")
    ap.add_argument("--data", default="../shared/data", help="folder with imagenet-samples/")
    ap.add_argument("--devices", nargs="*", default=None, help="default: cpu, plus cuda when available")
    ap.add_argument("--dtype", default=None, help="autocast dtype on CUDA, e.g. bf16")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()

    vlmkit.seed_everything(0)
    root = Path(args.data) / "imagenet-samples"
    ds = load_labelled_csv(root / "labels.csv", root / "images", imagenet_classnames(),
                           label_column="class_index").subset(args.n, seed=0)
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    rows = []
    for d in devices:
        vlm = vlmkit.load_model(args.model, device=d)
        resident = ds.load_images(size=max(vlm.image_size), progress=False)  # (N, 3, S, S) uint8, decoded once
        dtype = args.dtype if d.startswith("cuda") else None
        for path, ips in bench(vlm, list(ds.paths), resident, args.batch_size, dtype, args.repeats).items():
            rows.append((d, dtype or "fp32", path, ips))
    print(f"\nmodel {args.model}, batch {args.batch_size}, {len(ds)} images, torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads")
    print(f"{'device':<8}{'dtype':<7}{'data':<18}{'img/s':>10}")
    for d, dt, path, ips in rows:
        print(f"{d:<8}{dt:<7}{path:<18}{ips:>10.1f}")
    for d in devices:
        r = {p: v for dd, _, p, v in rows if dd == d}
        print(f"{d}: resident uint8 / decode per batch = {r['resident uint8'] / r['decode per batch']:.2f}x")


if __name__ == "__main__":
    main()
