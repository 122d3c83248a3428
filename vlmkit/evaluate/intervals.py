"""Per-item outcomes behind each metric, and the interval the engine writes beside its value.

A task's :meth:`~vlmkit.evaluate.task.Task.metrics` may return, instead of a number, :class:`Items`: the
per-item outcomes the number is computed from (per image: hit@k, correct, flip, drift, margin; per
caption with the caption's image as the sampled unit; confidence and correctness for ECE; clean and
perturbed confidence for AUROC). The runner turns them into the row's ``value`` and its interval
(:func:`interval`), so intervals never need the model again:

* plain proportions (0/1 outcomes, one per sampled unit): Wilson's score interval (Wilson 1927);
* outcomes grouped by a sampled unit (t2i: captions grouped by their image, COCO's five captions):
  the cluster bootstrap — images are resampled with all their captions (percentile);
* everything else: the bootstrap over items (percentile or BCa, Efron 1987).

The resamples are seeded once per run (model × dataset × grid seed): every metric of every cell over the
same units reads the same draws of the images (a joint bootstrap with common random numbers, as
:func:`vlmkit.stats.retrieval_bootstrap`), drawn once and shared.

``value`` is unchanged by all this: it is the metric as before (the mean of the outcomes, or the
task's own number).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vlmkit.errors import InputError
from vlmkit.stats import bootstrap_ci, wilson_ci
from vlmkit.stats.bootstrap import interval as percentile_interval
from vlmkit.stats.bootstrap import resample_counts, resample_indices, resampled_sums

#: Statistics an :class:`Items` can carry.
STATISTICS = ("mean", "median", "ratio", "ece", "auroc")
#: Interval methods a grid may ask for (``ci_method``).
CI_METHODS = ("percentile", "bca")


@dataclass
class Items:
    """Per-item outcomes behind one metric.

    Attributes:
        values: ``(n,)`` outcomes, or ``(n, 2)`` for ``ratio`` (numerator, denominator), ``ece``
            (confidence, correct) and ``auroc`` (in-distribution score, out-of-distribution score).
        statistic: How the metric is computed from them (:data:`STATISTICS`).
        binary: The outcomes are 0/1 (Wilson's interval when ungrouped).
        groups: The sampled unit of each item ``(n,)`` when items share one (a caption's image).
        value: The metric's value when the task computed it itself (default: the statistic of ``values``).
        n_bins: Confidence bins of ``ece``.
    """

    values: Any
    statistic: str = "mean"
    binary: bool = False
    groups: Any = None
    value: float | None = None
    n_bins: int = 15

    def __post_init__(self) -> None:
        v = self.values.detach().float().cpu().numpy() if isinstance(self.values, torch.Tensor) else np.asarray(self.values)
        self.values = v.astype(np.float64)
        if self.statistic not in STATISTICS:
            raise InputError(f"Items.statistic={self.statistic!r}; expected one of {STATISTICS}")
        want = 1 if self.statistic in ("mean", "median") else 2
        if self.values.ndim != want or (want == 2 and self.values.shape[1] != 2) or len(self.values) == 0:
            raise InputError(f"Items for {self.statistic!r} need shape {'(n,)' if want == 1 else '(n, 2)'} with "
                             f"n >= 1, got {self.values.shape}")
        if self.groups is not None:
            g = self.groups.cpu().numpy() if isinstance(self.groups, torch.Tensor) else np.asarray(self.groups)
            if g.shape != (len(self.values),):
                raise InputError(f"Items.groups must give one unit per item, shape ({len(self.values)},), got {g.shape}")
            self.groups = np.unique(g, return_inverse=True)[1]  # units numbered 0..U-1

    def point(self) -> float:
        """The metric from the outcomes (or the task's own value)."""
        if self.value is not None:
            return float(self.value)
        if self.statistic == "mean":
            return float(self.values.mean())
        if self.statistic == "median":
            return float(np.median(self.values))
        return float(_statistic(self.statistic, self.n_bins)(self.values[None])[0])

    @property
    def per_item(self) -> np.ndarray | None:
        """Outcomes a paired comparison can use (mean-type metrics), else None."""
        return self.values if self.statistic == "mean" else None


def _ratio(batch: np.ndarray) -> np.ndarray:
    return batch[..., 0].mean(1) / np.clip(batch[..., 1].mean(1), 1e-12, None)


def _ece(n_bins: int):  # type: ignore[no-untyped-def]
    def ece(batch: np.ndarray) -> np.ndarray:
        """Expected calibration error per sample of a batch ``(B, n, 2)`` (confidence, correct), equal-width
        bins (Guo et al. 2017): ``Σ_b |Σ_{i∈b} (correct_i − conf_i)| / n``."""
        conf, correct = batch[..., 0], batch[..., 1]
        B, n = conf.shape
        bins = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)  # (B, n): bin (lo, hi]
        flat = (bins + (np.arange(B) * n_bins)[:, None]).ravel()
        gap = np.bincount(flat, weights=(correct - conf).ravel(), minlength=B * n_bins).reshape(B, n_bins)
        return np.abs(gap).sum(1) / n
    return ece


def _auroc(batch: np.ndarray) -> np.ndarray:
    """AUROC of in- vs out-of-distribution scores per sample of a batch ``(B, n, 2)``: the Mann–Whitney U
    statistic over the ``n × n`` pairs, ties counted half (as :func:`vlmkit.metrics.auroc`)."""
    from scipy.stats import rankdata

    n = batch.shape[1]
    ranks = rankdata(np.concatenate([batch[..., 0], batch[..., 1]], axis=1), method="average", axis=1)  # (B, 2n)
    return (ranks[:, :n].sum(1) - n * (n + 1) / 2) / (n * n)


def _statistic(name: str, n_bins: int = 15) -> Any:
    return {"mean": "mean", "median": "median", "ratio": _ratio, "ece": _ece(n_bins), "auroc": _auroc}[name]


@functools.lru_cache(maxsize=4)
def _counts(units: int, n_boot: int, seed: int) -> np.ndarray:
    """Read-only multiplicities ``(n_boot, U)`` of the units in each resample, shared by a run's metrics (the
    images, and a subset such as a cell's unflipped images, which differs per cell: four kept, so a run's
    per-cell subsets do not evict its images' draw; 8 MB each at 1000 units)."""
    counts = resample_counts(resample_indices(units, n_boot, seed), units)
    counts.flags.writeable = False
    return counts


@functools.lru_cache(maxsize=2)
def _int_counts(units: int, n_boot: int, seed: int) -> np.ndarray:
    """:func:`_counts` as the smallest integer type that holds their running sums (int16 up to 32767 units)."""
    counts = _counts(units, n_boot, seed).astype(np.int16 if units <= np.iinfo(np.int16).max else np.int32)
    counts.flags.writeable = False
    return counts


def _resampled_medians(v: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Median of each resample ``(n_boot,)`` from its multiplicities ``counts`` ``(n_boot, n)`` of the finite
    outcomes ``v`` ``(n,)``, without gathering the resamples: over ``v`` sorted, the running count of resample
    ``b`` first reaches ``k`` at its ``k``-th smallest value. With ``k = ⌈n/2⌉`` and ``⌊n/2⌋ + 1`` (one value
    when ``n`` is odd) the mean of the two is ``np.median`` of the gathered resample, bit for bit."""
    n = len(v)
    order = np.argsort(v, kind="stable")
    s = v[order]  # (n,)
    k1, k2 = (n + 1) // 2, n // 2 + 1
    out = np.empty(len(counts))
    step = max(1, (1 << 22) // n)  # rows per block: ~4M running counts at a time
    for r0 in range(0, len(counts), step):
        run = np.cumsum(counts[r0:r0 + step, order], axis=1, dtype=counts.dtype)  # (rows, n)
        lo, hi = (run < k1).sum(1), (run < k2).sum(1)  # (rows,) positions of the k-th smallest
        out[r0:r0 + step] = (s[lo] + s[hi]) / 2
    return out


def interval(items: Items, *, n_boot: int = 1000, ci: float = 0.95, method: str = "percentile",
             seed: int = 0) -> tuple[float, float, float, str]:
    """``(value, ci_low, ci_high, ci_method)`` of one metric's outcomes (see the module docstring).

    Args:
        items: The outcomes.
        n_boot: Bootstrap resamples.
        ci: Confidence level.
        method: ``"percentile"`` or ``"bca"`` for the item bootstrap.
        seed: Seeds the resamples (the runner derives one from the grid's seed for the whole run).
    """
    value = items.point()
    v, n = items.values, len(items.values)
    if n < 2:
        return value, float("nan"), float("nan"), "none"
    if items.groups is not None:  # cluster bootstrap: units resampled with all their items
        units = int(items.groups.max()) + 1
        counts = _counts(units, n_boot, seed)  # (n_boot, U)
        if items.statistic == "ratio":  # Σ numerators / Σ denominators of the resampled units' items
            sums = np.bincount(items.groups, weights=v[:, 0], minlength=units)  # (U,)
            sizes = np.bincount(items.groups, weights=v[:, 1], minlength=units)  # (U,)
        elif items.statistic == "mean":
            sums = np.bincount(items.groups, weights=v, minlength=units)  # (U,)
            sizes = np.bincount(items.groups, minlength=units).astype(np.float64)  # (U,)
        else:
            raise InputError(f"Items.groups works with the mean and ratio statistics, not {items.statistic!r}")
        with np.errstate(invalid="ignore", divide="ignore"):
            boot = resampled_sums(counts, sums) / resampled_sums(counts, sizes)  # (n_boot,)
        boot = boot[np.isfinite(boot)]
        if len(boot) == 0:
            return value, float("nan"), float("nan"), "none"
        lo, hi = percentile_interval(value, boot, ci=ci, method="percentile")
        return value, float(lo), float(hi), "cluster-percentile"
    if items.binary and items.statistic == "mean":
        w = wilson_ci(int(round(v.sum())), n, ci=ci)
        return value, w.low, w.high, "wilson"
    if items.statistic == "mean" and method == "percentile":  # the run's shared draw as counts: one product
        boot = resampled_sums(_counts(n, n_boot, seed), v) / n  # (n_boot,) = the resamples' means, as bootstrap_ci's
        lo, hi = percentile_interval(value, boot, ci=ci, method="percentile")
        return value, float(lo), float(hi), "percentile"
    if items.statistic == "ratio" and method == "percentile" and np.isfinite(v).all():  # one product, two columns
        counts = _counts(n, n_boot, seed)  # (n_boot, n)
        both = resampled_sums(counts, v) / n  # (n_boot, 2)
        boot = both[:, 0] / np.clip(both[:, 1], 1e-12, None)  # (n_boot,) as _ratio's
        lo, hi = percentile_interval(value, boot, ci=ci, method="percentile")
        return value, float(lo), float(hi), "percentile"
    if items.statistic == "median" and method == "percentile" and np.isfinite(v).all():
        boot = _resampled_medians(v, _int_counts(n, n_boot, seed))  # (n_boot,) = bootstrap_ci's resample medians
        lo, hi = percentile_interval(value, boot, ci=ci, method="percentile")
        return value, float(lo), float(hi), "percentile"
    r = bootstrap_ci(v, _statistic(items.statistic, items.n_bins), n_boot=n_boot, ci=ci, method=method, seed=seed)
    return value, r.low, r.high, r.method


__all__ = ["CI_METHODS", "Items", "STATISTICS", "interval"]
