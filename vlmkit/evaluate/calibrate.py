"""Calibration of label-map corruptions in perception-metric units: the severity that costs a given mIoU.

A grid over mask corruptions (:mod:`vlmkit.perturb.masks`) is comparable across corruptions only when its
axis is what the corruption costs the perception module, not its native severity (Cheng, "Semantic
Misalignment in Vision-Language Models under Perceptual Degradation"). :func:`calibrate` finds the
severity whose corrupted maps lose ``target_miou_drop`` of mean IoU against the clean maps;
:func:`calibrate_grid` does it for several targets (sharing the evaluations).

**The drop.** With the clean map as the reference its own mIoU is 1, so the drop at severity ``s`` is::

    drop(s) = 1 − mean_b mIoU(corrupt(masks, s, generator=seed)_b, masks_b)

where ``mIoU`` is :func:`vlmkit.metrics.segmentation.mean_iou` — per image, the mean over the classes
present in either map of the class IoU (PASCAL VOC's Jaccard index, Everingham et al. 2010), pixels
ignored in the clean map left out — averaged over the images that have a labelled pixel. The corruption
draws from a generator seeded with ``seed`` afresh at every severity, so ``drop`` is a deterministic
function of ``s`` (monotone for the shipped corruptions, whose changed set grows with severity).

**The search and its stated tolerance.** Bisection on ``s`` in ``[lo, hi]`` (Burden & Faires,
"Numerical Analysis", §2.1) keeps a bracket with ``drop(a) < target < drop(b)``, so it also finds a
crossing of a non-monotone drop. It stops at the first severity whose drop is within ``tol`` (default
0.01, absolute mIoU) of the target, or after ``max_iter`` halvings / when the bracket collapses on a step
of a stepwise drop (object-level corruptions change the drop one object at a time). It returns the
severity of the closest drop seen; :attr:`Calibration.within_tolerance` says whether
``|drop − target| <= tol`` held, and a ``UserWarning`` is issued when it did not (a step larger than
``2·tol``: use more images or a finer corruption). A target beyond the drop reached at ``hi`` (or below
the drop at ``lo``) raises :class:`~vlmkit.errors.InputError`.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from vlmkit.errors import InputError
from vlmkit.metrics.segmentation import mean_iou
from vlmkit.perturb.masks import check_masks, list_mask_corruptions
from vlmkit.registry import MASK_CORRUPTIONS

__all__ = ["Calibration", "calibrate", "calibrate_grid", "miou_drop"]


@dataclass(frozen=True)
class Calibration:
    """The result of :func:`calibrate`.

    Attributes:
        corruption: The corruption's registry name.
        severity: The severity found (the closest achieved drop among those tried).
        drop: The mIoU drop achieved at ``severity``.
        target: The requested mIoU drop.
        tol: The stated tolerance (absolute mIoU).
        iterations: Number of drop evaluations the search made (cached ones not counted again).
        curve: Every ``(severity, drop)`` evaluated for this search, sorted by severity.
        seed: Seed of the corruption's generator.
        params: Extra keyword arguments passed to the corruption.
    """

    corruption: str
    severity: float
    drop: float
    target: float
    tol: float
    iterations: int
    curve: tuple[tuple[float, float], ...]
    seed: int = 0
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def error(self) -> float:
        """``drop − target``."""
        return self.drop - self.target

    @property
    def within_tolerance(self) -> bool:
        """Whether ``|drop − target| <= tol``."""
        return abs(self.error) <= self.tol + 1e-12


def miou_drop(corruption: str, severity: float, masks: torch.Tensor, *, seed: int = 0, n_classes: int | None = None,
              ignore_index: int = 255, params: Mapping[str, Any] | None = None) -> float:
    """The mean mIoU drop ``1 − mean_b mIoU(corrupted_b, clean_b)`` of one corruption at one severity.

    Args:
        corruption: A registered mask corruption (:func:`vlmkit.perturb.masks.list_mask_corruptions`).
        severity: Its severity.
        masks: Clean label maps ``(B, H, W)`` int64.
        seed: Seed of the corruption's generator (a fresh ``torch.Generator`` on ``masks.device``).
        n_classes: Number of classes for the mIoU (default: inferred from the maps).
        ignore_index: Unlabelled id, left out of the mIoU and passed to the corruption.
        params: Extra keyword arguments of the corruption.

    Raises:
        InputError: Unknown corruption, bad maps, or every pixel ignored.
    """
    fn = _corruption(corruption)
    g = torch.Generator(device=masks.device)
    g.manual_seed(int(seed))
    out = fn(masks, severity, generator=g, ignore_index=ignore_index, **dict(params or {}))  # (B, H, W)
    miou = mean_iou(out, masks, n_classes=n_classes, ignore_index=ignore_index)  # (B,), NaN: all ignored
    ok = ~torch.isnan(miou)
    if not bool(ok.any()):
        raise InputError("masks: every pixel is ignore_index; the mIoU drop is undefined")
    return float(1.0 - miou[ok].double().mean())


def _corruption(name: Any) -> Any:
    if not isinstance(name, str) or name not in list_mask_corruptions():
        raise InputError(f"corruption={name!r} is not a registered mask corruption; expected one of "
                         f"{list_mask_corruptions()}")
    return MASK_CORRUPTIONS.get(name)


def _number(arg: str, v: Any, lo: float | None = None, hi: float | None = None, positive: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
        raise InputError(f"{arg} must be a finite number, got {v!r}")
    x = float(v)
    if (lo is not None and x < lo) or (hi is not None and x > hi) or (positive and x <= 0):
        rng = "> 0" if positive else f"in [{lo}, {hi}]"
        raise InputError(f"{arg} must be {rng}, got {x}")
    return x


class _Curve:
    """Memoised ``severity -> drop`` of one corruption on one set of maps (shared by a grid's searches)."""

    def __init__(self, corruption: str, masks: torch.Tensor, seed: int, n_classes: int | None, ignore_index: int,
                 params: Mapping[str, Any]) -> None:
        self.args = (corruption, masks)
        self.kw = {"seed": seed, "n_classes": n_classes, "ignore_index": ignore_index, "params": params}
        self.values: dict[float, float] = {}

    def __call__(self, s: float) -> tuple[float, bool]:
        """The drop at ``s`` and whether it was computed now (not cached)."""
        if s in self.values:
            return self.values[s], False
        d = miou_drop(self.args[0], s, self.args[1], **self.kw)
        self.values[s] = d
        return d, True


def _search(curve: _Curve, corruption: str, target: float, tol: float, lo: float, hi: float, max_iter: int,
            seed: int, params: Mapping[str, Any]) -> Calibration:
    tried: dict[float, float] = {}
    evals = 0

    def f(s: float) -> float:
        nonlocal evals
        d, new = curve(s)
        evals += new
        tried[s] = d
        return d

    d_lo, d_hi = f(lo), f(hi)
    if target > d_hi + tol:
        raise InputError(f"calibrate: target_miou_drop={target:g} is beyond what {corruption!r} reaches: its mIoU "
                         f"drop at hi={hi:g} is {d_hi:.4f} (tolerance {tol:g}); ask for a smaller drop, raise hi "
                         f"within the corruption's severity range, or strengthen it through params (e.g. max_radius, "
                         f"max_area)")
    if target < d_lo - tol:
        raise InputError(f"calibrate: target_miou_drop={target:g} is below the mIoU drop {d_lo:.4f} that "
                         f"{corruption!r} already causes at lo={lo:g}; lower lo")
    a, b = lo, hi
    for _ in range(max_iter):
        best = min(tried, key=lambda s: (abs(tried[s] - target), s))
        if abs(tried[best] - target) <= tol:
            break
        mid = 0.5 * (a + b)
        if mid in (a, b):  # the bracket collapsed on a step of the drop
            break
        if f(mid) < target:
            a = mid
        else:
            b = mid
    best = min(tried, key=lambda s: (abs(tried[s] - target), s))
    cal = Calibration(corruption=corruption, severity=best, drop=tried[best], target=target, tol=tol, iterations=evals,
                      curve=tuple(sorted(tried.items())), seed=seed, params=dict(params))
    if not cal.within_tolerance:
        warnings.warn(f"calibrate: {corruption!r} reached drop {cal.drop:.4f} for target {target:g} (tolerance "
                      f"{tol:g}) at severity {best:.6g}: the drop jumps there (stepwise corruption or too few images)",
                      UserWarning, stacklevel=3)
    return cal


def _prepare(corruption: str, masks: Any, seed: Any, n_classes: Any, tol: Any, lo: Any, hi: Any, max_iter: Any,
             ignore_index: Any, params: Any) -> tuple[float, float, float, int]:
    _corruption(corruption)
    check_masks(masks)
    if masks.numel() == 0:
        raise InputError("masks is empty; calibration needs label maps with pixels")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise InputError(f"seed must be an int, got {seed!r}")
    if n_classes is not None and (isinstance(n_classes, bool) or not isinstance(n_classes, numbers.Integral)
                                  or n_classes < 1):
        raise InputError(f"n_classes must be a positive int or None, got {n_classes!r}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise InputError(f"ignore_index must be an int, got {ignore_index!r}")
    if params is not None and not isinstance(params, Mapping):
        raise InputError(f"params must be a mapping of the corruption's keyword arguments, got {type(params).__name__}")
    s_lo, s_hi = MASK_CORRUPTIONS.meta(corruption)["severity_range"]
    lo_, hi_ = _number("lo", lo, s_lo, s_hi), _number("hi", hi, s_lo, s_hi)
    if not lo_ < hi_:
        raise InputError(f"lo must be below hi, got lo={lo_}, hi={hi_}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, numbers.Integral) or max_iter < 1:
        raise InputError(f"max_iter must be an int >= 1, got {max_iter!r}")
    return _number("tol", tol, positive=True), lo_, hi_, int(max_iter)


def calibrate(corruption: str, target_miou_drop: float, masks: torch.Tensor, *, seed: int = 0,
              n_classes: int | None = None, tol: float = 0.01, lo: float = 0.0, hi: float = 1.0, max_iter: int = 30,
              ignore_index: int = 255, params: Mapping[str, Any] | None = None) -> Calibration:
    """The severity of ``corruption`` whose maps lose ``target_miou_drop`` mIoU against the clean ``masks``.

    Bisection of the deterministic drop (module docstring): the result's drop is within ``tol`` of the
    target whenever :attr:`Calibration.within_tolerance` (otherwise a warning says the drop jumps over the
    target; the closest severity is returned).

    Args:
        corruption: A registered mask corruption (``erode``, ``dilate``, ``drop_small``, ``confuse``, ``merge``).
        target_miou_drop: The mIoU drop wanted, in [0, 1].
        masks: Clean label maps ``(B, H, W)`` int64 (the reference and the corruption's input).
        seed: Seed of the corruption's generator (the same at every severity).
        n_classes: Number of classes for the mIoU (default: inferred).
        tol: Stated tolerance on the achieved drop (absolute mIoU).
        lo, hi: Severity bracket (inside the corruption's ``severity_range``).
        max_iter: Most bisection steps.
        ignore_index: Unlabelled id.
        params: Extra keyword arguments of the corruption (``max_radius``, ``pairs`` ...).

    Returns:
        A :class:`Calibration`.

    Raises:
        InputError: Bad arguments (before any work), or a target beyond the drop at ``hi`` (below the drop
            at ``lo``); the message gives the reachable drop.
    """
    tol_, lo_, hi_, it = _prepare(corruption, masks, seed, n_classes, tol, lo, hi, max_iter, ignore_index, params)
    target = _number("target_miou_drop", target_miou_drop, 0.0, 1.0)
    curve = _Curve(corruption, masks, int(seed), n_classes, int(ignore_index), dict(params or {}))
    return _search(curve, corruption, target, tol_, lo_, hi_, it, int(seed), dict(params or {}))


def calibrate_grid(corruption: str, drops: Sequence[float], masks: torch.Tensor, *, seed: int = 0,
                   n_classes: int | None = None, tol: float = 0.01, lo: float = 0.0, hi: float = 1.0,
                   max_iter: int = 30, ignore_index: int = 255,
                   params: Mapping[str, Any] | None = None) -> list[Calibration]:
    """:func:`calibrate` for several target drops (a grid axis in mIoU units), sharing evaluated severities.

    Args:
        corruption: A registered mask corruption.
        drops: Target mIoU drops, each in [0, 1].
        masks, seed, n_classes, tol, lo, hi, max_iter, ignore_index, params: As :func:`calibrate`.

    Returns:
        One :class:`Calibration` per target, in order (``iterations`` counts only new evaluations).

    Raises:
        InputError: Bad arguments, or a target out of reach (checked for all targets before searching).
    """
    tol_, lo_, hi_, it = _prepare(corruption, masks, seed, n_classes, tol, lo, hi, max_iter, ignore_index, params)
    if isinstance(drops, (str, bytes)) or not isinstance(drops, Sequence) or not len(drops):
        raise InputError(f"drops must be a non-empty sequence of target mIoU drops, got {drops!r}")
    targets = [_number(f"drops[{i}]", d, 0.0, 1.0) for i, d in enumerate(drops)]
    curve = _Curve(corruption, masks, int(seed), n_classes, int(ignore_index), dict(params or {}))
    (d_lo, _), (d_hi, _) = curve(lo_), curve(hi_)
    out = [t for t in targets if not d_lo - tol_ <= t <= d_hi + tol_]
    if out:
        raise InputError(f"calibrate_grid: target drops {out} are out of reach of {corruption!r}: its mIoU drop is "
                         f"{d_lo:.4f} at lo={lo_:g} and {d_hi:.4f} at hi={hi_:g} (tolerance {tol_:g}); ask for drops "
                         f"in that range, or strengthen the corruption through params (e.g. max_radius, max_area)")
    return [_search(curve, corruption, t, tol_, lo_, hi_, it, int(seed), dict(params or {})) for t in targets]
