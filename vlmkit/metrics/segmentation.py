"""Metrics of segmentation masks: foreground IoU and pixel accuracy per image (binary masks), and
mean IoU per image (multi-class label maps).

Binary masks are ``(B, H, W)`` tensors, bool or probabilities binarised at a threshold; label maps are
``(B, H, W)`` integer class ids.
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


@METRICS.register("mean_iou", kind="mask", reference="Everingham et al., IJCV 2010 (PASCAL VOC), per-image mIoU")
def mean_iou(pred: torch.Tensor, target: torch.Tensor, *, n_classes: int | None = None,
             ignore_index: int | None = 255) -> torch.Tensor:
    """Mean intersection-over-union of two label maps, per image ``(B,)``.

    The class-averaged Jaccard index of PASCAL VOC (Everingham et al., "The PASCAL Visual Object Classes
    Challenge", IJCV 2010), computed **per image**: for each image, ``IoU_c = |P_c ∩ T_c| / |P_c ∪ T_c|``
    over the classes ``c`` present in the prediction or the target of that image (classes absent from
    both are left out, like ``sklearn.metrics.jaccard_score(average="macro")`` on the image's flattened
    labels), then averaged over those classes. Average the ``(B,)`` result for a dataset figure.

    Pixels whose *target* is ``ignore_index`` are left out of both maps. A valid pixel whose prediction
    is ``ignore_index`` counts as a miss of its target class and adds no class of its own.

    Args:
        pred: Predicted label maps ``(B, H, W)``, integer class ids ``>= 0``.
        target: Reference label maps ``(B, H, W)`` of the same shape.
        n_classes: Number of classes (ids ``< n_classes``); default: the largest id in either map + 1.
        ignore_index: Target label left out of the score (``None``: none).

    Returns:
        ``(B,)`` float32 mIoU in [0, 1]; NaN for an image whose every target pixel is ``ignore_index``.

    Raises:
        InputError: Shapes differ, not 3-D, not integer, negative ids, or ids ``>= n_classes``.
    """
    if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise InputError("mean_iou: pred and target must be torch.Tensor label maps (B, H, W)")
    if pred.shape != target.shape or pred.ndim != 3:
        raise InputError(f"mean_iou: expected pred and target label maps (B, H, W) of one shape, got "
                         f"{tuple(pred.shape)} and {tuple(target.shape)}")
    if pred.is_floating_point() or target.is_floating_point() or pred.dtype == torch.bool:
        raise InputError(f"mean_iou: label maps must hold integer class ids, got {pred.dtype} and {target.dtype}")
    p, t = pred.long(), target.to(pred.device).long()
    valid = t != ignore_index if ignore_index is not None else torch.ones_like(t, dtype=torch.bool)  # (B, H, W)
    p_ok = valid & (p != ignore_index) if ignore_index is not None else valid
    if bool((p[p_ok] < 0).any()) or bool((t[valid] < 0).any()):
        raise InputError("mean_iou: class ids must be >= 0")
    top = int(max(p[p_ok].max() if p_ok.any() else -1, t[valid].max() if valid.any() else -1)) + 1
    if n_classes is None:
        n_classes = max(top, 1)
    elif top > n_classes:
        raise InputError(f"mean_iou: n_classes={n_classes} but the maps hold class id {top - 1}")
    B, C = p.shape[0], int(n_classes)
    pc = torch.where(p_ok, p, torch.full_like(p, C))  # predicted ignore -> an extra "void" column C
    b = torch.arange(B, device=p.device).view(B, 1, 1).expand_as(p)
    idx = ((b * C + t) * (C + 1) + pc)[valid]  # (n_valid,)
    conf = torch.bincount(idx, minlength=B * C * (C + 1)).view(B, C, C + 1).float()  # (B, C_true, C_pred + void)
    inter = torch.diagonal(conf[:, :, :C], dim1=1, dim2=2)  # (B, C)
    union = conf.sum(2) + conf[:, :, :C].sum(1) - inter  # (B, C): |T_c| + |P_c| - |T_c ∩ P_c|
    present = union > 0
    iou = torch.where(present, inter / union.clamp_min(1), torch.zeros_like(union))
    n = present.sum(1)
    return torch.where(n > 0, iou.sum(1) / n.clamp_min(1), torch.full_like(n, float("nan"), dtype=iou.dtype))


__all__ = ["foreground_iou", "mean_iou", "pixel_accuracy"]
