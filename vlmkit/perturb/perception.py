"""Perception-realistic corruptions as a perturbation: degrade the perception module's label maps, render the
result into what the VLM sees.

The semantic-misalignment study (Cheng, "Semantic Misalignment in Vision-Language Models under Perceptual
Degradation") degrades the *output of perception* — a segmentation mask losing boundaries, small objects,
confusing classes, merging regions — rather than pixels, and asks how the VLM's language follows.
:func:`mask_corruption` applies one registered mask corruption (:data:`vlmkit.registry.MASK_CORRUPTIONS`:
``erode``, ``dilate``, ``drop_small``, ``confuse``, ``merge``) to each image's label map and renders it
(``overlay``: the corrupted mask drawn over the image; ``blur_dropped`` / ``inpaint_dropped``: the objects
the corrupted perception lost are blurred or removed from the image). The label maps come from the dataset
(the task's ``masks`` context, per image); severity is the corruption's own continuous severity, which
:func:`vlmkit.evaluate.calibrate.calibrate` maps to an mIoU drop (:func:`vlmkit.evaluate.cells.mask_cells`
lays a grid out in those units).
"""

from __future__ import annotations

from typing import Any

import torch

from vlmkit.errors import InputError
from vlmkit.perturb.base import register_perturbation
from vlmkit.perturb.masks import corrupt_and_render, list_mask_corruptions, list_renderers


@register_perturbation("mask_corruption", family="perception", severities=None, needs=("masks",))
def mask_corruption(x: torch.Tensor, severity: float = 0.5, *, masks: torch.Tensor | None = None,
                    corruption: str = "drop_small", render: str = "inpaint_dropped", miou_drop: float | None = None,
                    generator: torch.Generator | None = None, **params: Any) -> torch.Tensor:
    """Corrupt each image's label map with ``corruption`` at ``severity`` and render it with ``render``.

    Args:
        x: Images ``(B, 3, H, W)`` in [0, 1].
        severity: The corruption's severity in [0, 1] (0: the image unchanged but for ``overlay``).
        masks: Label maps ``(B, H, W)`` int64 aligned with ``x`` (the dataset's; passed by the engine).
        corruption: A registered mask corruption.
        render: ``overlay``, ``blur_dropped`` or ``inpaint_dropped``.
        miou_drop: The calibration target this severity was found for (recorded in the cell, not used).
        generator: Randomness of stochastic corruptions (``confuse``, ``merge``).
        **params: The corruption's own parameters (``max_area``, ``pairs`` ...).

    Raises:
        InputError: No label maps, or maps of another size than the images.
    """
    if masks is None:
        raise InputError("mask_corruption needs the dataset's label maps (a caption or segmentation set with "
                         "labels); this dataset has none")
    if corruption not in list_mask_corruptions():
        raise InputError(f"mask_corruption: corruption={corruption!r}; expected one of {list_mask_corruptions()}")
    if render not in list_renderers():
        raise InputError(f"mask_corruption: render={render!r}; expected one of {list_renderers()}")
    m = masks.to(x.device).long()
    if tuple(m.shape) != (x.shape[0], *x.shape[-2:]):
        raise InputError(f"mask_corruption: label maps {tuple(m.shape)} do not match images {tuple(x.shape)}")
    out, _ = corrupt_and_render(x, m, corruption, float(severity), render, generator=generator,
                                corruption_params=params or None)
    return out  # (B, 3, H, W)


__all__ = ["mask_corruption"]
