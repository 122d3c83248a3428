"""Input checks shared by every room that takes images (models, perturbations, attacks)."""

from __future__ import annotations

import math
from typing import Any

import torch

from vlmkit.errors import InputError


def check_images(x: Any, name: str = "x", check_range: bool = True, allow_empty: bool = True) -> torch.Tensor:
    """Validate a batch of float images ``(B, 3, H, W)`` in ``[0, 1]``.

    Raises:
        InputError: Naming the argument and what was expected (type, dtype with a uint8 hint, shape,
            empty batch, value range).
    """
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor of float images (B, 3, H, W) in [0, 1], got {type(x).__name__}")
    if not x.is_floating_point():
        hint = " (uint8 images: convert with x.float() / 255)" if x.dtype == torch.uint8 else ""
        raise InputError(f"{name} must be a float tensor in [0, 1], got dtype {x.dtype}{hint}")
    if x.ndim != 4 or x.shape[1] != 3:
        raise InputError(f"{name} must have shape (B, 3, H, W), got {tuple(x.shape)}")
    if x.shape[0] == 0 and not allow_empty:
        raise InputError(f"{name} is an empty batch (B=0)")
    if check_range and x.numel():
        lo, hi = map(float, torch.aminmax(x.detach()))  # one pass over the batch
        if math.isnan(lo) or math.isnan(hi) or lo < -1e-4 or hi > 1 + 1e-4:
            raise InputError(f"{name} must hold values in [0, 1] (un-normalised pixels), got range [{lo:.4g}, {hi:.4g}]")
    return x
