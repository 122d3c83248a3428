"""Rank correlations with bootstrap intervals (does one measure predict another across grid cells?).

Spearman's ρ (Pearson correlation of the ranks) and Kendall's τ-b (concordant minus discordant pairs,
tie-corrected), computed by :mod:`scipy.stats`; the interval is the percentile bootstrap over the paired
observations (Efron & Tibshirani 1993, §13.3) — the cells of a grid are the sampled unit — and the p-value
scipy's test of no association. With fewer than 3 pairs, or a constant side, the correlation is NaN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vlmkit.errors import InputError

METHODS = ("spearman", "kendall")


@dataclass(frozen=True)
class Correlation:
    """A rank correlation: value, percentile interval, p-value, number of pairs and method."""

    value: float
    low: float
    high: float
    p_value: float
    n: int
    method: str


def _corr(x: np.ndarray, y: np.ndarray, method: str) -> tuple[float, float]:
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan")
    from scipy import stats as sps  # lazy: scipy.stats costs ~1 s at import
    r = sps.spearmanr(x, y) if method == "spearman" else sps.kendalltau(x, y)
    return float(r.statistic), float(r.pvalue)


def rank_correlation(x: Any, y: Any, *, method: str = "spearman", n_boot: int = 1000, ci: float = 0.95,
                     seed: int = 0) -> Correlation:
    """Spearman's ρ or Kendall's τ-b of paired observations with a percentile bootstrap interval.

    Args:
        x, y: Paired values ``(n,)`` (e.g. per grid cell: the perception drop and a semantic failure rate).
        method: ``"spearman"`` or ``"kendall"``.
        n_boot: Bootstrap resamples of the pairs (resamples with a constant side are left out).
        ci: Confidence level.
        seed: Seeds the resampling.

    Raises:
        InputError: Shapes differ, non-finite values, or an unknown method.
    """
    if method not in METHODS:
        raise InputError(f"method={method!r}; expected one of {METHODS}")
    a, b = np.asarray(x, dtype=float).reshape(-1), np.asarray(y, dtype=float).reshape(-1)
    if a.shape != b.shape or not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise InputError(f"x and y must be finite and paired, got shapes {a.shape} and {b.shape}")
    value, p = _corr(a, b, method)
    lo = hi = float("nan")
    if np.isfinite(value):
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, len(a), size=(n_boot, len(a)))  # (n_boot, n)
        boot = np.array([_corr(a[i], b[i], method)[0] for i in idx])
        boot = boot[np.isfinite(boot)]
        if len(boot):
            lo, hi = (float(v) for v in np.quantile(boot, [(1 - ci) / 2, (1 + ci) / 2]))
    return Correlation(value, lo, hi, p, len(a), method)


__all__ = ["Correlation", "METHODS", "rank_correlation"]
