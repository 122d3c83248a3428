"""Label-map checks and the registration of mask corruptions (the contract of :mod:`vlmkit.perturb.masks`).

:func:`register_mask_corruption` wraps a corruption with the input checks and the severity-0 identity of
the contract; renderers register through :func:`vlmkit.perturb.masks.renderers.register_renderer`.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable
from typing import Any

import torch

from vlmkit.errors import InputError
from vlmkit.registry import MASK_CORRUPTIONS

Tensor = torch.Tensor
MaskFn = Callable[..., Tensor]


# ============================================================================================ checks


def check_masks(masks: Any, name: str = "masks") -> Tensor:
    """Validate a batch of label maps: an int64 tensor ``(B, H, W)`` of ids ``>= 0``.

    Raises:
        InputError: Naming ``name`` and what was expected (type, dtype with a hint, shape, negative ids).
    """
    if not isinstance(masks, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor of label maps (B, H, W) int64, got {type(masks).__name__}")
    if masks.dtype != torch.int64:
        hint = " (convert with .long())" if not masks.is_floating_point() and masks.dtype != torch.bool else ""
        raise InputError(f"{name} must be an int64 tensor of class ids, got dtype {masks.dtype}{hint}")
    if masks.ndim != 3:
        raise InputError(f"{name} must have shape (B, H, W), got {tuple(masks.shape)}")
    if masks.numel() and int(masks.min()) < 0:
        raise InputError(f"{name} must hold class ids >= 0, got {int(masks.min())}")
    return masks


def check_ids(background: Any, ignore_index: Any) -> None:
    """Check that ``background`` and ``ignore_index`` are different class ids (ints ``>= 0``).

    Raises:
        InputError: Naming the argument and what was expected.
    """
    for arg, v in (("background", background), ("ignore_index", ignore_index)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
            raise InputError(f"{arg} must be a class id (int >= 0), got {v!r}")
    if background == ignore_index:
        raise InputError(f"background and ignore_index must differ, both are {background}")


def _check_severity(name: str, severity: Any, lo: float, hi: float) -> float:
    if isinstance(severity, bool) or not isinstance(severity, numbers.Real) or not math.isfinite(float(severity)):
        raise InputError(f"{name}: severity must be a finite number in [{lo}, {hi}], got {severity!r}")
    s = float(severity)
    if not lo <= s <= hi:
        raise InputError(f"{name}: severity={s} is out of range; expected a number in [{lo}, {hi}]")
    return s


# ======================================================================================= registration


def register_mask_corruption(name: str, family: str, severity_range: tuple[float, float] = (0.0, 1.0),
                             **meta: Any) -> Callable[[MaskFn], MaskFn]:
    """Register a label-map corruption in :data:`vlmkit.registry.MASK_CORRUPTIONS` with input checks.

    The wrapper validates ``masks`` (:func:`check_masks`), the severity (a finite number in
    ``severity_range``), ``background`` and ``ignore_index`` before any work, returns a copy of the input
    at severity 0 (the identity the contract promises), and checks the output's shape and dtype. Its
    ``raw`` attribute is the unchecked function. Registered with ``kind="corruption"``, ``family`` and
    ``severity_range``.

    Args:
        name: Registry name.
        family: Group ("boundary", "dropout", "confusion", "merging").
        severity_range: Closed range of the continuous severity (the calibration searches it).
        **meta: Extra metadata; ``batched=True`` claims that a batch gives, bit for bit, the maps of one
            call per image (no randomness), ``batched=False`` that it does not.
    """
    lo, hi = float(severity_range[0]), float(severity_range[1])

    def deco(fn: MaskFn) -> MaskFn:
        @functools.wraps(fn)
        def wrapped(masks: Tensor, severity: float, *, generator: torch.Generator | None = None,
                    background: int = 0, ignore_index: int = 255, **params: Any) -> Tensor:
            check_masks(masks)
            s = _check_severity(name, severity, lo, hi)
            check_ids(background, ignore_index)
            if generator is not None and not isinstance(generator, torch.Generator):
                raise InputError(f"{name}: generator must be a torch.Generator or None, got {type(generator).__name__}")
            if s == 0.0 or masks.numel() == 0:
                return masks.clone()
            out = fn(masks, s, generator=generator, background=background, ignore_index=ignore_index, **params)
            if out.shape != masks.shape or out.dtype != masks.dtype:
                raise InputError(f"{name} returned {tuple(out.shape)} {out.dtype} for input {tuple(masks.shape)} "
                                 f"{masks.dtype}")
            return out

        wrapped.raw = fn  # type: ignore[attr-defined]
        return MASK_CORRUPTIONS.register(name, kind="corruption", family=family, severity_range=(lo, hi),
                                         **meta)(wrapped)

    return deco


def list_mask_corruptions(pattern: str = "*", **meta: Any) -> list[str]:
    """Names of the registered label-map corruptions (``kind="corruption"``) matching a glob and metadata."""
    return MASK_CORRUPTIONS.list(pattern, kind="corruption", **meta)


__all__ = ["MaskFn", "check_ids", "check_masks", "list_mask_corruptions", "register_mask_corruption"]
