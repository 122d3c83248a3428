"""Benchmark: vlmkit's batched ImageNet-C corruptions vs the reference ``imagecorruptions`` 1.1.2.

Every corruption x severity on a batch of ``--batch`` (64) real photos at ``--size`` (224) px, the two
implementations timed in the same run, cell by cell and alternately (so both see the same machine load):

* vlmkit corrupts the whole batch in one call: a contiguous float32 ``(B, 3, H, W)`` tensor in [0, 1], as
  ``vlmkit.data.to_float`` makes it; one ``torch.Generator`` per severity;
* the reference loops image by image over uint8 PIL images (``Image.fromarray`` + the corruption +
  ``np.asarray`` of its result, the way it is used), on the first ``k`` photos of the batch; its time is
  per image (ms per image = time / k). ``k`` is per cell: as many of the batch's photos as its warm-up says
  fit in ``--ref-seconds`` (0.25 s) a call, at least 8 -- so a cheap reference (JPEG, pixelate, impulse
  noise ...) is timed on the same 64 photos as vlmkit, over a comparable stretch of time, and a slow one
  (glass blur: 3.5 s an image) on 8; ``--ref-images N`` fixes ``k`` instead.

Each cell is the best of ``--repeats`` (3) runs on each side (after one untimed warm-up call per side and
severity: codec/filter initialisation, caches). vlmkit runs on ``--threads`` (1) torch threads, like the
single-threaded reference. Printed: a corruption x severity table (vlmkit ms/img,
reference ms/img, ratio = reference / vlmkit), per corruption its total ratio and its minimum ratio over the
severities, the overall ratio (sum of reference time / sum of vlmkit time) and the smallest cell ratio, and
the machine load (``os.getloadavg()``) at the start and the end. Both sides run in one process under the
allocator policy ``import vlmkit`` sets (:mod:`vlmkit.allocator`: freed batch buffers are reused from the
heap rather than page-faulted afresh); ``VLMKIT_MALLOC=system`` measures on glibc's defaults instead.

    python benchmarks/bench_corruptions.py --data ../shared/data [--threads 0] [--severities 1,3,5]
        [--names pixelate,jpeg_compression] [--device cuda] [--ref-seconds 0.25 | --ref-images 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import vlmkit.allocator  # noqa: E402 -- after the path set-up
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


def best_of(fn: Callable[[], None], repeats: int, device: str = "cpu") -> float:
    """Smallest wall time (s) of ``repeats`` calls of ``fn``."""
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def load_line(tag: str) -> str:
    one, five, fifteen = os.getloadavg()
    return f"{tag}: machine load (1, 5, 15 min) = {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} CPUs"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--ref-images", type=int, default=None,
                    help="images the reference runs on in every cell (0: skip it; default: --ref-seconds decides)")
    ap.add_argument("--ref-seconds", type=float, default=0.25,
                    help="per cell, the reference runs on as many photos as fit in this many seconds a call "
                         "(judged from its warm-up call), at least 8 and at most the batch")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per cell and side (best is kept)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1, as the reference; 0: torch's default -- on a shared 2-core machine its "
                         "2-thread OpenMP regions stall whenever another process runs)")
    ap.add_argument("--names", default=",".join(C.CORRUPTIONS))
    ap.add_argument("--severities", default="1,2,3,4,5")
    args = ap.parse_args()
    if (args.ref_images is not None and args.ref_images < 0) or args.ref_seconds <= 0:
        raise SystemExit(f"--ref-images {args.ref_images} / --ref-seconds {args.ref_seconds}: expected >= 0 / > 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(load_line("start"), flush=True)

    photos = load_photos(args.data, args.batch, args.size)
    x = (torch.from_numpy(photos).permute(0, 3, 1, 2).float() / 255).contiguous().to(args.device)  # (B, 3, H, W)
    names = [n for n in args.names.split(",") if n]
    sevs = [int(s) for s in args.severities.split(",") if s]
    ref = None
    if args.ref_images != 0:
        from _imagecorruptions_shim import load_imagecorruptions
        from PIL import Image

        ref = load_imagecorruptions()

    rows: list[tuple[str, int, float, float, int]] = []  # name, severity, vlmkit s/img, reference s/img, its images
    for n in names:
        fn = getattr(C, n)
        for s in sevs:
            fn(x[:2], s, generator=torch.Generator(device=args.device).manual_seed(s))  # warm-up
            k = 0
            if ref is not None:
                np.random.seed(0)
                t0 = time.perf_counter()
                np.asarray(getattr(ref, n)(Image.fromarray(photos[0]), s))
                warm = time.perf_counter() - t0  # one image, cold: an over-estimate, so k errs low
                k = min(len(photos), args.ref_images or max(8, int(args.ref_seconds / max(warm, 1e-9))))
            ref_photos = photos[:k]
            def run_ours(fn: Callable[..., torch.Tensor] = fn, s: int = s) -> None:
                fn(x, s, generator=torch.Generator(device=args.device).manual_seed(s))

            def run_ref(n: str = n, s: int = s, ref_photos: np.ndarray = ref_photos) -> None:
                np.random.seed(0)
                for p in ref_photos:
                    np.asarray(getattr(ref, n)(Image.fromarray(p), s))

            ours, theirs = float("inf"), float("inf") if ref is not None else float("nan")
            for _ in range(args.repeats):  # alternate the two sides
                ours = min(ours, best_of(run_ours, 1, args.device) / args.batch)
                if ref is not None:
                    theirs = min(theirs, best_of(run_ref, 1) / k)
            rows.append((n, s, ours, theirs, k))
            print(f"  {n:18s} s{s}  vlmkit {ours * 1e3:8.3f} ms/img  reference {theirs * 1e3:8.3f} ms/img "
                  f"({k} imgs)  x{theirs / ours:6.2f}", flush=True)

    print()
    print(f"device={args.device} threads={torch.get_num_threads()} batch={args.batch} (one call per cell) "
          f"size={args.size}px severities={','.join(map(str, sevs))} best of {args.repeats}")
    print(f"allocator: vlmkit.allocator tuned={vlmkit.allocator.tune_allocator()} for both sides (same process; "
          f"VLMKIT_MALLOC=system runs on glibc's defaults)")
    if ref is not None:
        rule = (f"{min(args.ref_images, args.batch)}" if args.ref_images else
                f"the first k (column 'ref imgs': what fits {args.ref_seconds:g} s a call, at least 8)")
        print(f"reference: imagecorruptions 1.1.2 image by image on {rule} of the {args.batch} photos; "
              f"ms per image = its time / k")
    print()
    print(f"{'corruption':18s} {'sev':>3s} {'vlmkit ms/img':>14s} {'ref ms/img':>11s} {'ref imgs':>9s} {'ratio':>7s}")
    for n, s, a, b, k in rows:
        print(f"{n:18s} {s:3d} {a * 1e3:14.3f} {b * 1e3:11.3f} {k:9d} {b / a:7.2f}")
    print()
    print(f"{'corruption':18s} {'vlmkit ms/img':>14s} {'ref ms/img':>11s} {'ratio':>7s} {'min ratio':>10s}  (sum over severities)")
    for n in names:
        sel = [r for r in rows if r[0] == n]
        a, b = sum(r[2] for r in sel), sum(r[3] for r in sel)
        worst = min(sel, key=lambda r: r[3] / r[2])
        print(f"{n:18s} {a * 1e3:14.3f} {b * 1e3:11.3f} {b / a:7.2f} {worst[3] / worst[2]:10.2f}  (s{worst[1]})")
    ta, tb = sum(r[2] for r in rows), sum(r[3] for r in rows)
    worst = min(rows, key=lambda r: r[3] / r[2])
    print(f"{'TOTAL':18s} {ta * 1e3:14.3f} {tb * 1e3:11.3f} {tb / ta:7.2f} {worst[3] / worst[2]:10.2f}  "
          f"({worst[0]} s{worst[1]})")
    print(f"overall: vlmkit {ta * args.batch:.2f} s vs reference {tb * args.batch:.2f} s for the {args.batch} photos "
          f"(x{tb / ta:.1f}); smallest cell ratio x{worst[3] / worst[2]:.2f} ({worst[0]} s{worst[1]}); "
          f"cells below 1x: {sum(r[3] < r[2] for r in rows)} of {len(rows)}")
    print(load_line("end"))


if __name__ == "__main__":
    main()
