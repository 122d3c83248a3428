"""Accuracy and error ratios factor by factor (ImageNet-X; Tu et al.'s visual factors).

ImageNet-X (Idrissi, Bouchacourt, Balestriero, Evtimov, Hazirbas, Ballas, Vincent, Drozdzal, Lopez-Paz &
Ibrahim, "ImageNet-X: Understanding Model Mistakes with Factor of Variation Annotations", ICLR 2023,
§3) annotates each validation image with the factors of variation it shows (pose, background, colour,
size ...) and summarises a model's mistakes per factor by the **error ratio**::

    error_ratio(f = v) = P(error | f = v) / P(error)
                       = (errors among images with f = v / images with f = v) / (errors / images)

A ratio above 1 means the model errs more often than usual on images showing ``f = v``; 1 means the
factor is independent of the model's mistakes. Tu, Gu, Chen & Zhang ("A Closer Look at the Robustness
of Contrastive Language-Image Pre-Training (CLIP)", NeurIPS 2023) use the same table to compare CLIP
models along visual factors. For binary ImageNet-X factors (``1`` = the factor is present) the paper's
ratio is the one of ``value = 1``.

Everything here is a function of per-image outcomes: ``correct`` may be top-1 hits of a classifier,
retrieval hits (an image whose caption is in the top K) or any other per-image success, and
``factors`` maps a factor name to one label per image (strings, integers, booleans; ``None``/NaN
marks an image without an annotation for that factor, which then counts in the overall error rate
but in none of that factor's rows).

Uncertainty: percentile bootstrap (Efron & Tibshirani 1993, *An Introduction to the Bootstrap*, §13.3)
resampling **images** jointly, so the numerator and the denominator of the ratio move together. The
resamples are ``numpy.random.default_rng(seed).integers(0, N, (n_boot, N))`` — the same draw as
:func:`vlmkit.stats.resample_indices` (the metrics room does not import ``stats``) — and quantiles are
numpy's linear ones. Accuracy intervals are Wilson score intervals (Wilson 1927, JASA 22(158)).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from vlmkit.errors import InputError
from vlmkit.registry import METRICS
from vlmkit.stats.bootstrap import resample_counts, resampled_sums

_REFERENCE = "Idrissi et al. 2023 (ImageNet-X), §3: error ratio = P(error | factor) / P(error)"
_BINARY_MODES = ("present", "both")
_ABSENT = object()  # stands in for a missing annotation in comparisons
# elements of the (resamples x images) count matrix processed per block (bounds memory at ~32 MB)
_BOOT_BLOCK = 1 << 22

RATIO_COLUMNS = ("factor", "value", "n", "n_errors", "error_rate", "overall_error_rate", "error_ratio",
                 "ratio_low", "ratio_high")
ACCURACY_COLUMNS = ("factor", "value", "n", "n_correct", "accuracy", "accuracy_low", "accuracy_high",
                    "overall_accuracy")


# ---------------------------------------------------------------------------------------------- checks
def _as_1d(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    elif isinstance(x, pd.Series):
        x = x.to_numpy()
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as e:  # ragged lists and the like
        raise InputError(f"{name} must be a 1-D array, got {type(x).__name__} ({e})") from None
    if arr.ndim != 1:
        raise InputError(f"{name} must be a 1-D array (one entry per image), got shape {arr.shape}")
    return arr


def _check_correct(correct: Any) -> np.ndarray:
    """``correct`` as a bool array ``(N,)``; accepts bool or 0/1 numbers."""
    arr = _as_1d(correct, "correct")
    if arr.size == 0:
        raise InputError("correct is empty: need at least one image")
    if arr.dtype == bool:
        return arr
    if not np.issubdtype(arr.dtype, np.number):
        raise InputError(f"correct must hold booleans or 0/1, got dtype {arr.dtype}")
    bad = ~np.isin(arr, (0, 1))
    if bad.any():
        raise InputError(f"correct must hold booleans or 0/1, got {arr[bad][0]!r} at index {int(np.argmax(bad))}")
    return arr.astype(bool)


def _missing(arr: np.ndarray) -> np.ndarray:
    """Bool ``(N,)``: entries that are ``None`` or NaN (no annotation)."""
    if arr.dtype.kind == "f":
        return np.isnan(arr)
    if arr.dtype == object:
        return np.asarray(pd.isna(arr), dtype=bool)
    return np.zeros(arr.shape, dtype=bool)


def _is_binary(values: list[Any]) -> bool:
    """ImageNet-X style 0/1 factor: every annotated value is a bool or a number equal to 0 or 1."""
    ok = all(isinstance(v, (bool, np.bool_)) or
             (isinstance(v, (int, float, np.integer, np.floating)) and v in (0, 1)) for v in values)
    return bool(values) and ok


def _sorted_values(values: np.ndarray) -> list[Any]:
    uniq = list(pd.unique(values))
    try:
        return sorted(uniq)
    except TypeError:  # mixed types: order of appearance
        return uniq


def _plain(v: Any) -> Any:
    """numpy scalars as Python values (tidy tables, JSON)."""
    return v.item() if isinstance(v, np.generic) else v


def _check_factors(factors: Mapping[str, Any] | pd.DataFrame, n: int) -> dict[str, np.ndarray]:
    if not isinstance(factors, (Mapping, pd.DataFrame)):
        raise InputError(f"factors must be a mapping (or DataFrame) of factor name -> labels (N,), "
                         f"got {type(factors).__name__}")
    names = list(factors.columns if isinstance(factors, pd.DataFrame) else factors.keys())
    if not names:
        raise InputError("factors is empty: name at least one factor")
    out: dict[str, np.ndarray] = {}
    for name in names:
        if not isinstance(name, str) or not name:
            raise InputError(f"factor names must be non-empty strings, got {name!r}")
        arr = _as_1d(factors[name], f"factors[{name!r}]")
        if len(arr) != n:
            raise InputError(f"factors[{name!r}] has {len(arr)} labels but correct has {n} images")
        if arr.dtype.kind == "f" and np.isinf(arr).any():
            raise InputError(f"factors[{name!r}] holds infinite values; use None/NaN for a missing annotation")
        out[name] = arr
    return out


def _check_binary(binary: str) -> str:
    if binary not in _BINARY_MODES:
        raise InputError(f"binary={binary!r}; expected one of {_BINARY_MODES} ('present': only value 1 of a "
                         "0/1 factor, 'both': values 0 and 1)")
    return binary


def _groups(factors: dict[str, np.ndarray], binary: str) -> tuple[list[tuple[str, Any]], np.ndarray]:
    """The (factor, value) rows and their membership matrix ``(N, R)`` bool."""
    rows: list[tuple[str, Any]] = []
    cols: list[np.ndarray] = []
    for name, arr in factors.items():
        miss = _missing(arr)
        present = arr[~miss]
        values = _sorted_values(present)
        if _is_binary([_plain(v) for v in values]):
            values = [1] if binary == "present" else [0, 1]
            numeric = np.where(miss, -1, arr).astype(float) if arr.dtype == object else arr.astype(float)
            for v in values:
                rows.append((name, v))
                cols.append(~miss & (numeric == v))
            continue
        safe = arr
        if arr.dtype == object and miss.any():  # compare without touching None/NaN/pd.NA
            safe = arr.copy()
            safe[miss] = _ABSENT
        for v in values:
            rows.append((name, _plain(v)))
            cols.append(~miss & np.asarray(safe == v, dtype=bool))
    n = len(next(iter(factors.values())))
    member = np.stack(cols, axis=1) if cols else np.zeros((n, 0), dtype=bool)  # (N, R)
    return rows, member


# ---------------------------------------------------------------------------------------------- metrics
def _bootstrap_ratios(err: np.ndarray, member: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Error ratio of each row in each resample ``(n_boot, R)``; NaN where undefined.

    Resample ``b`` draws ``N`` images with replacement (``default_rng(seed).integers(0, N, (n_boot, N))``);
    its counts matrix ``(B, N)`` times the membership matrices gives every row's images and errors.
    """
    n = len(err)
    idx = np.random.default_rng(seed).integers(0, n, (n_boot, n))  # (B, N)
    m = member.astype(np.float64)  # (N, R)
    me = m * err[:, None]  # (N, R) errors inside each row
    e = err.astype(np.float64)  # (N,)
    block = max(1, _BOOT_BLOCK // n)
    out = np.empty((n_boot, member.shape[1]), dtype=np.float64)
    for s in range(0, n_boot, block):
        rows = idx[s:s + block]  # (b, N)
        b = rows.shape[0]
        counts = resample_counts(rows, n)  # (b, N)
        overall = resampled_sums(counts, e) / n  # (b,)
        n_row = resampled_sums(counts, m)  # (b, R)
        k_row = resampled_sums(counts, me)  # (b, R)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = (k_row / n_row) / overall[:, None]
        ratio[(n_row == 0) | (overall[:, None] == 0)] = np.nan
        out[s:s + b] = ratio
    return out


@METRICS.register("factor_error_ratios", kind="predictions", reference=_REFERENCE)
def factor_error_ratios(correct: Any, factors: Mapping[str, Any] | pd.DataFrame, *, n_boot: int = 1000,
                        seed: int = 0, ci: float = 0.95, binary: str = "present") -> pd.DataFrame:
    """Error ratio per (factor, value): ``P(error | factor = value) / P(error)`` (ImageNet-X, §3).

    Args:
        correct: Per-image success ``(N,)``, bool or 0/1 (numpy, torch or a list): top-1 hits, retrieval
            hits, answer correctness ...
        factors: Factor name -> one label per image ``(N,)`` (a mapping or a DataFrame whose columns are
            the factors, e.g. :func:`vlmkit.data.factors.load_factor_annotations`). ``None``/NaN marks a
            missing annotation: the image counts in the overall error rate, in none of that factor's rows.
        n_boot: Bootstrap resamples of the images for the ratio's interval (0: no interval, NaN bounds).
        seed: Seed of the resampling.
        ci: Confidence level of the percentile interval.
        binary: For a 0/1 factor (ImageNet-X: 1 = the factor is present), ``"present"`` reports only the
            row ``value = 1`` (the paper's ratio), ``"both"`` the rows 0 and 1.

    Returns:
        One row per (factor, value), factors in the given order and values sorted, with columns
        ``factor, value, n`` (images with that value), ``n_errors``, ``error_rate`` (``n_errors / n``),
        ``overall_error_rate`` (errors / all ``N`` images), ``error_ratio`` and the percentile interval
        ``ratio_low, ratio_high``. ``error_ratio`` is **NaN when the overall error rate is 0** (no
        mistakes at all: the ratio is 0/0); the interval is NaN then too. Resamples in which a row has
        no image or no error at all are left out of that row's interval (NaN when none remains).

    Raises:
        InputError: ``correct`` is not 1-D bool/0-1 or empty, a factor's labels are not ``(N,)``, no factor
            is given, or an option is out of range.
    """
    ok = _check_correct(correct)
    fac = _check_factors(factors, len(ok))
    binary = _check_binary(binary)
    if not isinstance(n_boot, (int, np.integer)) or isinstance(n_boot, bool) or n_boot < 0:
        raise InputError(f"n_boot must be a non-negative integer (0: no interval), got {n_boot!r}")
    if not 0 < ci < 1:
        raise InputError(f"ci must be a confidence level in (0, 1), got {ci!r}")
    err = ~ok  # (N,)
    n = len(err)
    rows, member = _groups(fac, binary)  # member: (N, R)
    overall = float(err.mean())
    n_row = member.sum(axis=0)  # (R,)
    k_row = (member & err[:, None]).sum(axis=0)  # (R,)
    rate = np.where(n_row > 0, k_row / np.maximum(n_row, 1), np.nan)  # (R,)
    ratio = rate / overall if overall > 0 else np.full(len(rows), np.nan)
    low = np.full(len(rows), np.nan)
    high = np.full(len(rows), np.nan)
    if n_boot > 0 and overall > 0 and rows:
        boot = _bootstrap_ratios(err, member, int(n_boot), int(seed))  # (B, R)
        alpha = (1 - ci) / 2
        for r in range(len(rows)):
            b = boot[:, r]
            b = b[np.isfinite(b)]
            if b.size:
                low[r], high[r] = np.quantile(b, [alpha, 1 - alpha])
    table = pd.DataFrame({
        "factor": [f for f, _ in rows],
        "value": pd.Series([v for _, v in rows], dtype=object),
        "n": n_row.astype(np.int64),
        "n_errors": k_row.astype(np.int64),
        "error_rate": rate.astype(np.float64),
        "overall_error_rate": np.full(len(rows), overall),
        "error_ratio": np.asarray(ratio, dtype=np.float64),
        "ratio_low": low,
        "ratio_high": high,
    }, columns=list(RATIO_COLUMNS))
    table.attrs.update(n_images=n, n_boot=int(n_boot), ci=float(ci), seed=int(seed), method="percentile")
    return table


def wilson_interval(successes: int, n: int, ci: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (Wilson 1927, "Probable Inference, the Law of Succession, and
    Statistical Inference", JASA 22(158)); ``(nan, nan)`` for ``n = 0``."""
    if n <= 0:
        return math.nan, math.nan
    from statistics import NormalDist

    z = NormalDist().inv_cdf(1 - (1 - ci) / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@METRICS.register("accuracy_by_factor", kind="predictions",
                  reference="Idrissi et al. 2023 (ImageNet-X); Tu et al. 2023 (visual factors); Wilson 1927")
def accuracy_by_factor(correct: Any, factors: Mapping[str, Any] | pd.DataFrame, *, ci: float = 0.95,
                       binary: str = "both") -> pd.DataFrame:
    """Accuracy (or retrieval hit rate) as a function of one factor at a time.

    Args:
        correct: Per-image success ``(N,)``, bool or 0/1.
        factors: Factor name -> one label per image ``(N,)`` (``None``/NaN: not annotated), as in
            :func:`factor_error_ratios`.
        ci: Confidence level of the Wilson score interval of each accuracy.
        binary: For a 0/1 factor, ``"both"`` (rows 0 and 1) or ``"present"`` (row 1 only).

    Returns:
        One row per (factor, value): ``factor, value, n, n_correct, accuracy, accuracy_low,
        accuracy_high`` (Wilson interval) and ``overall_accuracy`` (over all ``N`` images).

    Raises:
        InputError: As :func:`factor_error_ratios`.
    """
    ok = _check_correct(correct)
    fac = _check_factors(factors, len(ok))
    binary = _check_binary(binary)
    if not 0 < ci < 1:
        raise InputError(f"ci must be a confidence level in (0, 1), got {ci!r}")
    rows, member = _groups(fac, binary)  # (N, R)
    n_row = member.sum(axis=0)
    c_row = (member & ok[:, None]).sum(axis=0)
    bounds = [wilson_interval(int(c), int(m), ci) for c, m in zip(c_row, n_row)]
    table = pd.DataFrame({
        "factor": [f for f, _ in rows],
        "value": pd.Series([v for _, v in rows], dtype=object),
        "n": n_row.astype(np.int64),
        "n_correct": c_row.astype(np.int64),
        "accuracy": np.where(n_row > 0, c_row / np.maximum(n_row, 1), np.nan),
        "accuracy_low": [b[0] for b in bounds],
        "accuracy_high": [b[1] for b in bounds],
        "overall_accuracy": np.full(len(rows), float(ok.mean())),
    }, columns=list(ACCURACY_COLUMNS))
    table.attrs.update(n_images=len(ok), ci=float(ci), method="wilson")
    return table


__all__ = ["ACCURACY_COLUMNS", "RATIO_COLUMNS", "accuracy_by_factor", "factor_error_ratios", "wilson_interval"]
