"""Per-latent statistics of SAE latents over a data set, and how well latents track known factors.

* :func:`latent_statistics` — activation frequency, mean magnitude when active, and the entropy of the
  labels of the images that activate each latent; one tidy row per latent and condition (clean,
  perturbed, adversarial ...), ready to scatter-plot (:func:`vlmkit.interpret.plotting.plot_latent_stats`).
* :func:`factor_auroc` — for every value of a ground-truth factor (a colour, a shape), the latent
  whose activation best separates images with that value from the rest (AUROC, the Mann–Whitney U
  statistic with ties counted half).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.stats import rankdata

from vlmkit.errors import InputError


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def latent_statistics(acts: Any, labels: Sequence[Any] | None = None, condition: str = "clean",
                      threshold: float = 0.0) -> pd.DataFrame:
    """Statistics of each latent over ``N`` images.

    Args:
        acts: Latent activations ``(N, K)``.
        labels: One label per image (class, shape ...), for the label entropy.
        condition: Name of the data condition, stored in the table.
        threshold: A latent is active on an image when its activation exceeds this.

    Returns:
        Columns ``latent, condition, frequency`` (share of images where active), ``n_active``,
        ``mean_active`` (mean activation over those images; NaN if never active), ``label_entropy``
        (bits, entropy of the labels of those images; NaN without labels or activations).
    """
    A = _np(acts).astype(np.float64)
    if A.ndim != 2:
        raise InputError(f"acts must be (N, K), got shape {A.shape}")
    N, K = A.shape
    active = A > threshold  # (N, K)
    n_active = active.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_active = np.where(n_active > 0, (A * active).sum(0) / np.maximum(n_active, 1), np.nan)
    entropy = np.full(K, np.nan)
    if labels is not None:
        lab = np.asarray(list(labels))
        if len(lab) != N:
            raise InputError(f"got {len(lab)} labels for {N} images")
        _, codes = np.unique(lab, return_inverse=True)
        onehot = np.eye(codes.max() + 1)[codes]  # (N, L)
        counts = active.T.astype(np.float64) @ onehot  # (K, L)
        tot = counts.sum(1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            p = counts / tot
            h = -np.nansum(np.where(p > 0, p * np.log2(p), 0.0), axis=1)
        entropy = np.where(tot[:, 0] > 0, h, np.nan)
    return pd.DataFrame({"latent": np.arange(K), "condition": condition, "frequency": n_active / N,
                         "n_active": n_active, "mean_active": mean_active, "label_entropy": entropy})


def latent_statistics_by_condition(conditions: Mapping[str, tuple[Any, Sequence[Any] | None]],
                                   threshold: float = 0.0) -> pd.DataFrame:
    """:func:`latent_statistics` for several conditions ``{name: (acts, labels)}``, stacked."""
    return pd.concat([latent_statistics(a, lab, name, threshold) for name, (a, lab) in conditions.items()],
                     ignore_index=True)


def auroc_per_latent(acts: Any, positive: Any) -> np.ndarray:
    """AUROC of every latent's activation as a score for the binary ``positive`` ``(N,)`` → ``(K,)``."""
    A = _np(acts).astype(np.float64)
    y = _np(positive).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise InputError("AUROC needs both positive and negative images")
    ranks = rankdata(A, axis=0)  # (N, K) average ranks of ties
    return (ranks[y].sum(0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def factor_auroc(acts: Any, factors: Mapping[str, Sequence[Any]], min_count: int = 5) -> pd.DataFrame:
    """The best latent for every value of every ground-truth factor.

    Args:
        acts: Latent activations over images ``(N, K)``.
        factors: ``{factor: one value per image}``, e.g. ``{"color": [...], "shape": [...]}``.
        min_count: Skip values with fewer positive (or negative) images.

    Returns:
        Columns ``factor, value, n_pos, best_latent, auroc`` (one row per factor value).
    """
    rows = []
    for factor, vals in factors.items():
        v = np.asarray(list(vals))
        for value in sorted(set(v.tolist()), key=str):
            y = v == value
            if y.sum() < min_count or (~y).sum() < min_count:
                continue
            au = auroc_per_latent(acts, y)
            best = int(np.nanargmax(au))
            rows.append(dict(factor=factor, value=value, n_pos=int(y.sum()), best_latent=best, auroc=float(au[best])))
    return pd.DataFrame(rows, columns=["factor", "value", "n_pos", "best_latent", "auroc"])
