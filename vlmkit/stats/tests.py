"""Paired comparisons of two models on the same items, and multiple-testing correction.

* **Paired bootstrap** of the difference ``a − b`` (Efron & Tibshirani 1993, §16): items are resampled
  jointly, so the correlation between the two models' outcomes on an item is kept.
* **Exact McNemar test** (McNemar 1947, "Note on the sampling error of the difference between
  correlated proportions or percentages", Psychometrika 12(2)) for paired 0/1 outcomes: a binomial
  test of the discordant pairs with p = 1/2.
* **Holm** step-down adjustment (Holm 1979, "A Simple Sequentially Rejective Multiple Test
  Procedure", Scand. J. Statist. 6(2)) of a family of p-values (family-wise error control).

Convention: every difference is ``diff = a − b`` (positive when ``a`` scores higher).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vlmkit.errors import InputError
from vlmkit.stats.bootstrap import (
    Statistic,
    as_array,
    check_options,
    interval,
    jackknife,
    resample_indices,
)


@dataclass(frozen=True)
class Comparison:
    """The difference ``a − b`` between two paired sets of outcomes, with its uncertainty.

    Attributes:
        diff: ``statistic(a) − statistic(b)``.
        low: Lower end of the interval of ``diff`` (NaN when the test gives none).
        high: Upper end.
        p_value: Two-sided p-value of ``diff = 0``.
        effect_size: Cohen's ``d_z = mean(a − b) / sd(a − b)`` of the per-item differences (0 when sd = 0).
        n: Number of paired items.
        method: ``"paired_bootstrap"`` or ``"mcnemar_exact"``.
        extra: Test-specific details (interval method, discordant counts ...).
    """

    diff: float
    low: float
    high: float
    p_value: float
    effect_size: float
    n: int
    method: str
    extra: dict[str, Any] = field(default_factory=dict)


def cohens_dz(d: np.ndarray) -> float:
    """Cohen's ``d_z`` of paired differences ``(n,)``: ``mean(d) / sd(d)`` (ddof 1).

    Undefined for a constant difference: 0 when ``sd`` is 0 up to rounding (``sd <= 1e-12 · max(1, |mean|)``).
    """
    if d.shape[0] < 2:
        return 0.0
    sd, mean = float(d.std(ddof=1)), float(d.mean())
    return mean / sd if sd > 1e-12 * max(1.0, abs(mean)) else 0.0


def _pair(a: Any, b: Any, statistic: Statistic) -> tuple[np.ndarray, np.ndarray]:
    nd = (1, 2) if callable(statistic) else (1,)
    x, y = as_array(a, "a", ndim=nd, min_n=2), as_array(b, "b", ndim=nd, min_n=2)
    if x.shape != y.shape:
        raise InputError(f"a and b must hold outcomes of the same items in the same order; got shapes "
                         f"{x.shape} and {y.shape}")
    return x, y


def _stat(statistic: Statistic, batch: np.ndarray) -> np.ndarray:
    """``statistic`` on ``(B, n, ...)`` → ``(B,)`` (names or callable, as :func:`bootstrap_ci`)."""
    if statistic == "mean":
        return batch.mean(axis=1)
    if statistic == "median":
        return np.median(batch, axis=1)
    if isinstance(statistic, str):
        raise InputError(f"statistic={statistic!r}; expected 'mean', 'median' or a callable (B, n, ...) -> (B,)")
    out = np.asarray(statistic(batch), dtype=np.float64)
    if out.shape != (batch.shape[0],):
        raise InputError(f"statistic must map a batch {batch.shape} to ({batch.shape[0]},), got {out.shape}")
    return out


def bootstrap_p_value(boot: np.ndarray) -> float:
    """Two-sided p-value of "difference = 0" by inverting the percentile interval.

    ``p = min(1, 2 · min(1 + #{δ*_b ≤ 0}, 1 + #{δ*_b ≥ 0}) / (B + 1))``: twice the share of bootstrap
    differences on the far side of 0 (0 itself counts on both sides), with the ``+1`` of Davison &
    Hinkley 1997 (Eq. 4.11) so that a finite resample never reports p = 0 (the smallest p is 2/(B+1)).
    The level-α percentile interval excludes 0 roughly when ``p < α``.
    """
    b = boot.shape[0]
    below, above = np.count_nonzero(boot <= 0), np.count_nonzero(boot >= 0)
    return float(min(1.0, 2 * (1 + min(below, above)) / (b + 1)))


def paired_bootstrap(a: Any, b: Any, *, statistic: Statistic = "mean", n_boot: int = 1000, ci: float = 0.95,
                     method: str = "percentile", seed: int = 0) -> Comparison:
    """Paired bootstrap of ``diff = statistic(a) − statistic(b)`` on the same items.

    Items are resampled jointly (one index matrix ``(B, n)`` for both); the interval is the
    percentile or BCa interval of the bootstrap differences (jackknife of the difference for BCa) and
    the p-value inverts the percentile interval (:func:`bootstrap_p_value`). Identical ``a`` and
    ``b`` give ``diff = 0``, a zero interval and ``p = 1``.

    Args:
        a: Per-item outcomes of model a ``(n,)`` (``(n, k)`` with a callable statistic).
        b: Per-item outcomes of model b, same items in the same order.
        statistic: ``"mean"``, ``"median"`` or a callable ``(B, n, ...) -> (B,)`` (applied to each side).
        n_boot: Number of resamples.
        ci: Confidence level.
        method: Interval method, ``"percentile"`` or ``"bca"``.
        seed: Seed of the resampling.

    Returns:
        :class:`Comparison` (``effect_size`` is Cohen's ``d_z`` of the per-item differences; for
        ``(n, k)`` outcomes that of their first column).
    """
    m = check_options(n_boot=n_boot, ci=ci, method=method)
    x, y = _pair(a, b, statistic)
    n = x.shape[0]
    d_items = (x - y) if x.ndim == 1 else (x - y)[:, 0]
    dz = cohens_dz(d_items)
    extra: dict[str, Any] = {"interval": m, "p_value_method": "percentile inversion",
                             "statistic": statistic if isinstance(statistic, str) else getattr(statistic, "__name__",
                                                                                               "callable")}
    if np.array_equal(x, y):
        est = float(_stat(statistic, x[None])[0])
        return Comparison(0.0, 0.0, 0.0, 1.0, 0.0, n, "paired_bootstrap",
                          {**extra, "value_a": est, "value_b": est})
    idx = resample_indices(n, n_boot, seed)  # (B, n)
    va, vb = float(_stat(statistic, x[None])[0]), float(_stat(statistic, y[None])[0])
    if statistic == "mean":  # linear: resample the per-item differences
        d = x - y
        diff, boot = float(d.mean()), d[idx].mean(axis=1)  # (B,)
        jack = jackknife(d, "mean") if m == "bca" else None
    else:
        diff = va - vb
        boot = _stat(statistic, x[idx]) - _stat(statistic, y[idx])  # (B,)
        jack = jackknife(x, statistic) - jackknife(y, statistic) if m == "bca" else None
    low, high = interval(diff, boot, ci=ci, method=m, jack=jack)  # type: ignore[arg-type]
    return Comparison(diff, low, high, bootstrap_p_value(boot), dz, n, "paired_bootstrap",
                      {**extra, "value_a": va, "value_b": vb, "n_boot": n_boot, "ci": ci})


def as_binary(x: Any, name: str) -> np.ndarray:
    """``x`` as a bool vector ``(n,)``; its values must be 0/1 (or bool)."""
    arr = as_array(x, name, ndim=(1,), min_n=1)
    if not np.isin(arr, (0.0, 1.0)).all():
        raise InputError(f"{name} must be binary (bool or 0/1) per-item correctness, got values such as "
                         f"{arr[~np.isin(arr, (0.0, 1.0))][:3].tolist()}")
    return arr.astype(bool)


def mcnemar_exact(a_correct: Any, b_correct: Any, *, ci: float = 0.95) -> Comparison:
    """Exact two-sided McNemar test (McNemar 1947) of paired correctness.

    With ``n_a`` = items only a gets right and ``n_b`` = items only b gets right, under the null
    ``n_a ~ Binomial(n_a + n_b, 1/2)``; ``p = min(1, 2 · P(X ≤ min(n_a, n_b)))`` (``p = 1`` without
    discordant pairs), as ``statsmodels``' ``mcnemar(table, exact=True)``. The interval is the Wald
    interval of the difference of paired proportions, ``diff ± z √((n_a + n_b) − (n_a − n_b)²/n) / n``
    (Agresti 2013, *Categorical Data Analysis*, §11.1.1); :func:`vlmkit.stats.compare` reports the
    paired-bootstrap interval instead.

    Args:
        a_correct: Per-item correctness of model a ``(n,)`` (bool or 0/1).
        b_correct: Per-item correctness of model b, same items in the same order.
        ci: Confidence level of the interval.

    Returns:
        :class:`Comparison` with ``diff = acc(a) − acc(b)`` and ``extra`` holding ``a_only``, ``b_only``
        (the discordant counts), ``both``, ``neither``, ``acc_a`` and ``acc_b``.
    """
    if not 0 < ci < 1:
        raise InputError(f"ci must be a confidence level in (0, 1), got {ci!r}")
    x, y = as_binary(a_correct, "a_correct"), as_binary(b_correct, "b_correct")
    if x.shape != y.shape:
        raise InputError(f"a_correct and b_correct must cover the same items; got {x.shape} and {y.shape}")
    n = x.shape[0]
    a_only, b_only = int((x & ~y).sum()), int((~x & y).sum())
    disc = a_only + b_only
    from scipy.stats import binom, norm  # lazy: scipy.stats costs ~1 s at import
    p = 1.0 if disc == 0 else float(min(1.0, 2 * binom.cdf(min(a_only, b_only), disc, 0.5)))
    diff = (a_only - b_only) / n
    half = float(norm.ppf(1 - (1 - ci) / 2)) * np.sqrt(max(0.0, disc - (a_only - b_only) ** 2 / n)) / n
    extra = {"a_only": a_only, "b_only": b_only, "both": int((x & y).sum()), "neither": int((~x & ~y).sum()),
             "acc_a": float(x.mean()), "acc_b": float(y.mean()), "interval": "wald", "ci": ci}
    return Comparison(float(diff), float(diff - half), float(diff + half), p,
                      cohens_dz(x.astype(np.float64) - y.astype(np.float64)), n, "mcnemar_exact", extra)


def holm(p_values: Any) -> np.ndarray:
    """Holm (1979) step-down adjusted p-values.

    With the ``m`` non-NaN p-values sorted ascending, ``p̃_(i) = max_{j ≤ i} min(1, (m − j + 1) p_(j))``
    (monotone, capped at 1), returned in the input order; NaN entries stay NaN and do not count in ``m``.

    Args:
        p_values: P-values ``(m,)`` (any shape is flattened), in [0, 1] or NaN.

    Returns:
        Adjusted p-values, float64, same shape as the input.
    """
    p = np.asarray(p_values, dtype=np.float64)
    flat = p.ravel()
    ok = ~np.isnan(flat)
    if ((flat[ok] < 0) | (flat[ok] > 1)).any():
        raise InputError(f"p_values must lie in [0, 1] (or be NaN), got {flat[ok][(flat[ok] < 0) | (flat[ok] > 1)][:3]}")
    out = np.full_like(flat, np.nan)
    vals = flat[ok]
    m = vals.shape[0]
    if m:
        order = np.argsort(vals, kind="stable")
        adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * vals[order]))
        res = np.empty(m)
        res[order] = adj
        out[ok] = res
    return out.reshape(p.shape)
