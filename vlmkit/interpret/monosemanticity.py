"""Monosemanticity Score (MS) of latents, computed blockwise as matrix products.

Definition (Pach, Karthik, Bouniot, Belongie & Akata 2025, "Sparse Autoencoders Learn Monosemantic
Features in Vision-Language Models", arXiv:2504.02821, §3 "Monosemanticity Score"): for latent ``k``
with activations ``a_k(x_n)`` on ``N`` images, min-max normalised over the images
``ã_n = (a_k(x_n) − min_n a_k) / (max_n a_k − min_n a_k)``, and the cosine similarity ``s_nm`` of the
images' embeddings ``e_n`` from a *separate* image encoder (DINOv2 in the paper), the score is the
activation-weighted mean pairwise similarity::

    MS_k = Σ_{n<m} ã_n ã_m s_nm / Σ_{n<m} ã_n ã_m

(the paper writes it with relevance weights ``r_nm = ã_n ã_m`` normalised over pairs ``n ≠ m``; the
symmetric sum over ``n ≠ m`` equals twice the sum over ``n < m`` in numerator and denominator).
``MS_k`` is high when the images that fire latent ``k`` look alike to the other encoder.

Blockwise evaluation: with ``Ã ∈ R^{N×K}`` and ``S = E Eᵀ``::

    numerator   = diag(Ãᵀ S Ã) − Σ_n Ã_nk² S_nn
    denominator = (Σ_n Ã_nk)² − Σ_n Ã_nk²

``diag(Ãᵀ S Ã) = Σ_blocks Σ_{n∈b} Ã_nk (S_b Ã)_nk`` with ``S_b = E_b Eᵀ`` one block of rows, so memory
stays ``O(block·N + N·K)`` and time ``O(N²(D + K))`` in BLAS instead of ``O(N² K)`` Python steps.
Latents that are constant over the images (never active) get ``NaN``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from vlmkit.errors import InputError
from vlmkit.registry import METRICS

ArrayLike = torch.Tensor | np.ndarray


def _t(x: ArrayLike, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return (x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))).to(dtype)


def minmax_per_latent(acts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Min-max normalise each column of ``acts`` ``(N, K)`` over the images; also returns which
    columns are non-constant ``(K,)`` (constant columns become 0)."""
    lo, hi = acts.min(0).values, acts.max(0).values
    span = hi - lo
    ok = span > 0
    return (acts - lo) / torch.where(ok, span, torch.ones_like(span)), ok


@METRICS.register("monosemanticity", kind="latents")
def monosemanticity_score(acts: ArrayLike, embeddings: ArrayLike, block_size: int = 1024,
                          device: str | torch.device = "cpu", progress: bool = False) -> torch.Tensor:
    """Monosemanticity Score of every latent ``(K,)`` (Pach et al. 2025; see the module docstring).

    Args:
        acts: Latent activations over images ``(N, K)`` (e.g. :func:`vlmkit.interpret.sae.sae_latents`
            of per-image rows).
        embeddings: Image embeddings from a separate encoder ``(N, D)`` (normalised here).
        block_size: Rows of the similarity matrix held at once.
        device: Where to compute.
        progress: tqdm bar over blocks.

    Returns:
        ``MS_k`` in [-1, 1] (float64, CPU); ``NaN`` for latents constant over the images.
    """
    A = _t(acts).to(device)
    E = F.normalize(_t(embeddings).to(device), dim=-1)  # (N, D)
    if A.ndim != 2 or E.ndim != 2 or A.shape[0] != E.shape[0]:
        raise InputError(f"acts (N, K) and embeddings (N, D) must have the same N, got {tuple(A.shape)} and "
                         f"{tuple(E.shape)}")
    N = A.shape[0]
    if N < 2:
        raise InputError(f"the score needs at least 2 images, got {N}")
    if block_size <= 0:
        raise InputError(f"block_size must be positive, got {block_size}")
    At, ok = minmax_per_latent(A)  # (N, K)
    diag_S = (E * E).sum(1)  # (N,) = 1 up to rounding
    num = torch.zeros(A.shape[1], dtype=torch.float64, device=device)
    for s in tqdm(range(0, N, block_size), desc="monosemanticity", leave=False, disable=not progress):
        Sb = E[s : s + block_size] @ E.T  # (b, N)
        num += (At[s : s + block_size] * (Sb @ At)).sum(0, dtype=torch.float64)  # (K,)
    sq = At.double().pow(2)
    num -= (sq * diag_S.double()[:, None]).sum(0)
    den = At.double().sum(0).pow(2) - sq.sum(0)
    ms = num / den.clamp_min(1e-300)
    ms[~ok | (den <= 0)] = float("nan")
    return ms.cpu()


def monosemanticity_score_loop(acts: ArrayLike, embeddings: ArrayLike,
                               latents: Sequence[int] | None = None) -> np.ndarray:
    """The definition as a direct double loop over image pairs ``n < m`` (reference; slow).

    Args:
        acts: ``(N, K)`` latent activations.
        embeddings: ``(N, D)`` image embeddings from a separate encoder.
        latents: Which latents to score (default: all).

    Returns:
        ``MS_k`` for the chosen latents (float64).
    """
    A = np.asarray(acts, dtype=np.float64)
    E = np.asarray(embeddings, dtype=np.float64)
    E = E / np.linalg.norm(E, axis=1, keepdims=True)
    S = (E @ E.T).tolist()  # pairwise cosine similarities, as Python lists for the loop
    N = A.shape[0]
    out = []
    for k in range(A.shape[1]) if latents is None else latents:
        col = A[:, k]
        lo, hi = col.min(), col.max()
        if hi <= lo:
            out.append(float("nan"))
            continue
        a = ((col - lo) / (hi - lo)).tolist()
        num = den = 0.0
        for n in range(N):
            an, Sn = a[n], S[n]
            for m in range(n + 1, N):
                w = an * a[m]
                num += w * Sn[m]
                den += w
        out.append(num / den if den > 0 else float("nan"))
    return np.asarray(out)
