"""Speed of the blockwise Monosemanticity Score against the direct double loop over image pairs.

    python benchmarks/bench_ms.py                     # N = 5000 images, K = 1024 latents, D = 384
    python benchmarks/bench_ms.py --n 2000 --k 256    # smaller

The blockwise version (:func:`vlmkit.interpret.monosemanticity_score`) scores all ``K`` latents at once.
The loop (:func:`vlmkit.interpret.monosemanticity_score_loop`: Σ_{n<m} in pure Python over a
precomputed similarity matrix) is timed on ``--loop-latents`` latents at the full ``N`` and
**extrapolated linearly to all K latents** (its cost is exactly K × the per-latent cost); the table
says so. Both agree on the timed latents to float precision (checked and printed).

Activations are SAE-like (ReLU of a shifted Gaussian: ~10% active), embeddings are clustered unit
vectors; the numbers do not depend on the values, only on N, K, D.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from vlmkit.interpret.monosemanticity import monosemanticity_score, monosemanticity_score_loop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=5000, help="images")
    ap.add_argument("--k", type=int, default=1024, help="latents")
    ap.add_argument("--d", type=int, default=384, help="embedding dimension of the separate encoder")
    ap.add_argument("--block", type=int, default=1024, help="block size of the blockwise version")
    ap.add_argument("--loop-latents", type=int, default=2, help="latents the double loop is timed on")
    ap.add_argument("--repeats", type=int, default=3, help="timings of the blockwise version (median)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    g = torch.Generator().manual_seed(args.seed)
    acts = torch.relu(torch.randn(args.n, args.k, generator=g) - 1.3)  # (N, K), ~10% active
    centres = torch.randn(20, args.d, generator=g)
    emb = centres[torch.randint(0, 20, (args.n,), generator=g)] + torch.randn(args.n, args.d, generator=g)  # (N, D)

    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        ms = monosemanticity_score(acts, emb, block_size=args.block)
        times.append(time.perf_counter() - t0)
    t_block = float(np.median(times))

    latents = list(range(args.loop_latents))
    t0 = time.perf_counter()
    ref = monosemanticity_score_loop(acts.numpy(), emb.numpy(), latents=latents)
    t_loop_sub = time.perf_counter() - t0
    # the loop's precomputed similarity matrix is shared by all latents: time it apart, count it once
    t0 = time.perf_counter()
    e = emb.numpy().astype(np.float64)
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    (e @ e.T).tolist()
    t_sim = time.perf_counter() - t0
    per_latent = max(t_loop_sub - t_sim, 1e-9) / len(latents)
    t_loop_all = t_sim + per_latent * args.k
    err = float(np.max(np.abs(ms.numpy()[latents] - ref)))

    print(f"Monosemanticity Score, N={args.n} images, K={args.k} latents, D={args.d}, "
          f"torch threads={torch.get_num_threads()}, block={args.block}")
    print("| method | latents timed | time (s) | time for all K latents (s) |")
    print("|---|---|---|---|")
    print(f"| blockwise matrix products | {args.k} | {t_block:.2f} | {t_block:.2f} (median of {args.repeats}) |")
    print(f"| direct double loop (pure Python, n<m) | {len(latents)} | {t_loop_sub:.2f} | "
          f"{t_loop_all:.0f} (extrapolated: {per_latent:.2f} s/latent x {args.k} + {t_sim:.2f} s similarities) |")
    print(f"speed-up (extrapolated loop / blockwise): {t_loop_all / t_block:.0f}x")
    print(f"max |blockwise - loop| on the timed latents: {err:.2e}")


if __name__ == "__main__":
    main()
