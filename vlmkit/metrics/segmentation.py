"""Metrics of binary segmentation masks: foreground IoU and pixel accuracy per image.

Masks are ``(B, H, W)`` tensors, bool or probabilities binarised at a threshold.
"""

from __future__ import annotations

import torch

from vlmkit.errors import InputError
from vlmkit.registry import METRICS


def _binary(m: torch.Tensor, threshold: float) -> torch.Tensor:
    return m if m.dtype == torch.bool else m > threshold


def _mask_pair(pred: torch.Tensor, target: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    if pred.shape != target.shape or pred.ndim != 3:
        raise InputError(f"expected pred and target masks (B, H, W) of one shape, got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}")
    return _binary(pred, threshold), _binary(target.to(pred.device), 0.5)


@METRICS.register("foreground_iou", kind="mask")
def foreground_iou(pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Foreground intersection-over-union per image ``(B,)``.

    Args:
        pred: Predicted masks ``(B, H, W)``: bool, or probabilities binarised at ``threshold``.
        target: Ground-truth masks ``(B, H, W)`` (bool or {0, 1}).
        threshold: Probability threshold for float predictions.

    Returns:
        ``|P ∩ T| / |P ∪ T|`` per image; 1 when both masks are empty.
    """
    p, t = _mask_pair(pred, target, threshold)
    inter = (p & t).flatten(1).sum(1).float()
    union = (p | t).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


@METRICS.register("pixel_accuracy", kind="mask")
def pixel_accuracy(pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Share of pixels whose foreground/background label is right, per image ``(B,)``."""
    p, t = _mask_pair(pred, target, threshold)
    return (p == t).flatten(1).float().mean(1)


__all__ = ["foreground_iou", "pixel_accuracy"]
