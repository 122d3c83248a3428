"""Bootstrap intervals of retrieval Recall@1/5/10 (both directions): vectorised vs a loop over resamples.

One retrieval grid cell: ``N_img`` images × ``5 · N_img`` captions (random unit embeddings, each caption
a noisy copy of its image), ``--n-boot`` (1000) resamples of the images with their captions.

* **vectorised**: ``vlmkit.stats.retrieval_recall_ci`` — per-item hits once from the full matrix, then
  one ``(n_boot, N_img)`` count matrix re-weights them (timed whole, and split into the two parts);
* **loop**: the straightforward reference — for each resample, take the resampled images' rows and
  their captions' columns of the similarity matrix and recompute Recall@k with
  ``vlmkit.metrics.recall_at_k`` (top-k on the full gallery). It runs ``--loop-resamples`` (20)
  resamples and its time is extrapolated linearly to ``--n-boot`` (stated in the printout); its
  values are checked against the vectorised bootstrap distribution on those resamples.

    python benchmarks/bench_stats.py                 # 1000 images × 5000 captions (< 1 min)
    python benchmarks/bench_stats.py --full          # 5000 images × 25000 captions (COCO 5k test size)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vlmkit.metrics import recall_at_k
from vlmkit.stats import (
    resample_indices,
    retrieval_bootstrap,
    retrieval_items,
    retrieval_recall_ci,
)


def make_cell(n_img: int, per_image: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Similarity matrix ``(N_img, per_image · N_img)`` float32 and the image of each caption."""
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(n_img, dim, generator=g), dim=-1)
    t2i = torch.arange(n_img).repeat_interleave(per_image)  # (T,)
    txt = F.normalize(img[t2i] + 0.6 * torch.randn(len(t2i), dim, generator=g), dim=-1)
    return img @ txt.T, t2i  # (N, T), (T,)


def loop_bootstrap(sims: torch.Tensor, t2i: torch.Tensor, idx: np.ndarray, ks: tuple[int, ...]) -> dict[str, list]:
    """Recall@k recomputed resample by resample (the reference the vectorised path replaces)."""
    n_img = sims.shape[0]
    caps_of = [torch.nonzero(t2i == i).flatten() for i in range(n_img)]
    out: dict[str, list] = {f"{d}_R@{k}": [] for k in ks for d in ("i2t", "t2i")}
    for row in idx:
        sel = torch.as_tensor(row)
        rows = sims[sel]  # (n, T): the drawn images against every caption
        pos_i = t2i[None, :] == sel[:, None]  # (n, T)
        caps = torch.cat([caps_of[i] for i in row])  # captions of the drawn images, with multiplicity
        cols = sims[:, caps].T  # (C, N): those captions against every image
        pos_t = torch.arange(n_img)[None, :] == t2i[caps][:, None]  # (C, N)
        for k in ks:
            out[f"i2t_R@{k}"].append(float(recall_at_k(rows, pos_i, k).double().mean()))
            out[f"t2i_R@{k}"].append(float(recall_at_k(cols, pos_t, k).double().mean()))
    return out


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-img", type=int, default=1000, help="images of the cell (captions: --per-image × this)")
    ap.add_argument("--full", action="store_true", help="the full size: 5000 images × 25000 captions")
    ap.add_argument("--per-image", type=int, default=5)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--loop-resamples", type=int, default=20, help="resamples the loop runs (0: skip the loop)")
    ap.add_argument("--repeats", type=int, default=3, help="timings of the vectorised path (median reported)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.full:
        args.n_img = 5000
    if args.threads:
        torch.set_num_threads(args.threads)
    ks = (1, 5, 10)

    sims, t2i = make_cell(args.n_img, args.per_image, args.dim, args.seed)
    n_txt = sims.shape[1]
    load = os.getloadavg()
    print(f"cell: {args.n_img} images × {n_txt} captions, ks={ks}, n_boot={args.n_boot}, "
          f"threads={torch.get_num_threads()}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
          f"(cpus: {os.cpu_count()})")

    t_all, ci = timed(lambda: retrieval_recall_ci(sims, t2i, ks, n_boot=args.n_boot, seed=args.seed), args.repeats)
    t_items, items = timed(lambda: retrieval_items(sims, t2i, ks), args.repeats)
    t_boot, _ = timed(lambda: retrieval_bootstrap(items, n_boot=args.n_boot, seed=args.seed), args.repeats)
    rows = [("vectorised: whole retrieval_recall_ci", args.repeats, t_all),
            ("  of which per-item hits (ranks, once)", args.repeats, t_items),
            ("  of which the bootstrap (re-weighting)", args.repeats, t_boot)]

    t_loop = None
    if args.loop_resamples > 0:
        idx = resample_indices(args.n_img, args.loop_resamples, args.seed)  # the first resamples of the same seed
        t0 = time.perf_counter()
        ref = loop_bootstrap(sims, t2i, idx, ks)
        t_loop = (time.perf_counter() - t0) * args.n_boot / args.loop_resamples
        rows.append((f"loop over resamples (extrapolated ×{args.n_boot / args.loop_resamples:g})",
                     args.loop_resamples, t_loop))
        # the vectorised distribution on the same first resamples (same seed, same draws)
        first = retrieval_bootstrap(items, n_boot=args.loop_resamples, seed=args.seed)
        err = max(float(np.abs(np.asarray(ref[k]) - first[k]).max()) for k in ref)
        print(f"loop vs vectorised on the {args.loop_resamples} shared resamples: max |Δ recall| = {err:.1e}")

    print(f"| {'method':<48} | {'resamples timed':>15} | {f's / cell ({args.n_boot} resamples)':>28} |"
          f" {'loop / this':>11} |")
    print(f"|{'-' * 50}|{'-' * 17}|{'-' * 30}|{'-' * 13}|")
    for name, n_timed, t in rows:
        ratio = f"{t_loop / t:>10.1f}x" if t_loop is not None else f"{'-':>11}"
        print(f"| {name:<48} | {n_timed:>15} | {t:>28.3f} | {ratio} |")
    if t_loop is not None:
        print(f"(the loop ran {args.loop_resamples} resamples; its time per cell is extrapolated linearly to "
              f"{args.n_boot})")
    print("estimates [95% percentile CI]: " + ", ".join(f"{k} {c.estimate:.3f} [{c.low:.3f}, {c.high:.3f}]"
                                                         for k, c in ci.items()))


if __name__ == "__main__":
    main()
