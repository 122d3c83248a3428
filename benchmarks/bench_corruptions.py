"""Benchmark: vlmkit's batched ImageNet-C corruptions vs the reference ``imagecorruptions`` 1.1.2.

All 19 corruptions x 5 severities on a batch of ``--batch`` (64) real photos at ``--size`` (224) px.
vlmkit corrupts the whole batch per call; the reference loops image by image. The reference runs on the
first ``--ref-images`` (8) photos only and its time is extrapolated per image to the full batch (stated in
the printout).

    python benchmarks/bench_corruptions.py --data ../shared/data [--device cuda] [--ref-images 8]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import vlmkit.perturb.corruptions as C  # noqa: E402


def load_photos(data: Path, n: int, size: int) -> np.ndarray:
    """(n, size, size, 3) uint8 photos from ``data/imagenet-samples/images`` (cycled if fewer)."""
    from PIL import Image

    files = sorted((data / "imagenet-samples" / "images").glob("*.jpg"))
    if not files:
        raise SystemExit(f"no photos under {data / 'imagenet-samples' / 'images'}")
    return np.stack([np.asarray(Image.open(files[i % len(files)]).convert("RGB").resize((size, size), Image.BILINEAR))
                     for i in range(n)])


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--ref-images", type=int, default=8, help="images the reference runs on (0: skip it)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--names", default=",".join(C.CORRUPTIONS))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    photos = load_photos(args.data, args.batch, args.size)
    x = (torch.from_numpy(photos).permute(0, 3, 1, 2).float() / 255).to(args.device)  # (B, 3, H, W)
    names = args.names.split(",")
    ref = None
    if args.ref_images:
        from _imagecorruptions_shim import load_imagecorruptions
        from PIL import Image

        ref = load_imagecorruptions()

    # warm-up (frost texture cache, CUDA context / kernels)
    for n in names:
        getattr(C, n)(x[:2], 1)
    sync(args.device)

    rows = []
    for n in names:
        t0 = time.perf_counter()
        for s in range(1, 6):
            g = torch.Generator(device=args.device).manual_seed(s)
            getattr(C, n)(x, s, generator=g)
        sync(args.device)
        ours = time.perf_counter() - t0
        theirs = float("nan")
        if ref is not None:
            np.random.seed(0)
            t0 = time.perf_counter()
            for s in range(1, 6):
                for p in photos[:args.ref_images]:
                    np.asarray(getattr(ref, n)(Image.fromarray(p), s))
            theirs = (time.perf_counter() - t0) / args.ref_images * args.batch
        rows.append((n, ours, theirs))
        print(f"  {n:18s} vlmkit {ours:8.3f} s   reference {theirs:8.2f} s   x{theirs / ours:7.1f}", flush=True)

    print()
    print(f"device={args.device} threads={torch.get_num_threads()} batch={args.batch} size={args.size}px, "
          f"5 severities per corruption")
    if ref is not None:
        print(f"reference: imagecorruptions 1.1.2 image by image on {args.ref_images} of the {args.batch} photos, "
              f"time extrapolated per image x{args.batch}")
    print(f"{'corruption':18s} {'vlmkit s/batch':>15s} {'ref s (x' + str(args.batch) + ')':>14s} {'ratio':>8s}")
    for n, a, b in rows:
        print(f"{n:18s} {a:15.3f} {b:14.2f} {b / a:8.1f}")
    ta, tb = sum(r[1] for r in rows), sum(r[2] for r in rows)
    print(f"{'TOTAL':18s} {ta:15.3f} {tb:14.2f} {tb / ta:8.1f}")


if __name__ == "__main__":
    main()
