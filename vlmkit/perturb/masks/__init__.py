"""Perception-realistic corruptions of segmentation label maps, and their rendering into the image.

Degradations of a perception module's *output* rather than of pixels (Cheng, "Semantic Misalignment in
Vision-Language Models under Perceptual Degradation"): a segmenter that under- or over-segments
boundaries, misses small objects, confuses look-alike classes or merges neighbouring regions. Each
corruption is a pure function on label maps; a renderer then turns the corrupted perception into what a
VLM sees (a coloured overlay, or the missed objects blurred or inpainted away).

**Label maps** are int64 tensors ``(B, H, W)`` of class ids ``>= 0``; ``background`` (default 0) is the
"nothing" class and ``ignore_index`` (default 255) marks unlabelled pixels, which no corruption changes
and which count as a region boundary. Every other id is a foreground (object) class.

**Objects and regions.** Where a corruption works on objects (``drop_small``, ``confuse``, ``merge``), an
object / region is one **8-connected component of one foreground class in one image** (labelled with
``scipy.ndimage.label``): two touching objects of one class are one region, one class split in two
places is two regions.

**The corruption contract** (registered in :data:`vlmkit.registry.MASK_CORRUPTIONS` with
``kind="corruption"`` by :func:`register_mask_corruption`, which validates the input)::

    fn(masks: LongTensor (B, H, W), severity: float, *, generator=None, background=0, ignore_index=255,
       **params) -> LongTensor (B, H, W)

* **continuous severity** in ``[0, 1]`` (the registry meta ``severity_range``), so that
  :func:`vlmkit.evaluate.calibrate.calibrate` can search it; severity 0 returns the input unchanged (a
  copy), and for a fixed generator the set of changed pixels only grows with severity (``merge``: the set
  of merges only grows; a pixel can return to its own class when a chain of merges ends in a region of
  that class);
* pure (the input is never modified), batched, deterministic given ``generator``: random corruptions
  draw one uniform field ``(B, H, W)`` from it whatever the severity (``None``: a generator seeded with
  0), so with a fixed seed the result is a monotone function of severity;
* ``erode``, ``dilate`` and ``drop_small`` use no randomness and are **batch independent** (a batch
  gives the concatenation of its images' results); ``confuse`` and ``merge`` depend on each image's
  slice of the random field, like the image perturbations of :mod:`vlmkit.perturb.base`.

**Renderers** (``kind="render"`` in the same registry; :func:`render` dispatches by name)::

    fn(images (B, 3, H, W) float in [0, 1], clean_masks, corrupted_masks, **params) -> images

``overlay`` alpha-blends a fixed palette of the corrupted map onto the image; ``blur_dropped`` and
``inpaint_dropped`` change only the *dropped* pixels (:func:`dropped_pixels`: an object in the clean map,
background in the corrupted one) and leave every other pixel bit-identic

Modules: :mod:`.base` (label-map checks, :func:`register_mask_corruption`), :mod:`.corruptions` (the
corruptions) and :mod:`.renderers` (the renderers, :func:`render`, :func:`corrupt_and_render`).
Importing this package imports them all, so every corruption and renderer is registered
(:data:`vlmkit.registry.MASK_CORRUPTIONS` lists this package).
"""

from __future__ import annotations

from vlmkit.perturb.masks.base import MaskFn as MaskFn
from vlmkit.perturb.masks.base import check_masks, list_mask_corruptions, register_mask_corruption
from vlmkit.perturb.masks.corruptions import confusable_pairs, confuse, dilate, drop_small, erode, merge
from vlmkit.perturb.masks.renderers import (
    corrupt_and_render,
    dropped_pixels,
    list_renderers,
    register_renderer,
    render,
    render_blur_dropped,
    render_inpaint_dropped,
    render_overlay,
    voc_palette,
)

__all__ = [
    "check_masks", "confusable_pairs", "confuse", "corrupt_and_render", "dilate", "drop_small",
    "dropped_pixels", "erode", "list_mask_corruptions", "list_renderers", "merge", "register_mask_corruption",
    "register_renderer", "render", "render_blur_dropped", "render_inpaint_dropped", "render_overlay",
    "voc_palette",
]
