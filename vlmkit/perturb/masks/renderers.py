"""Renderers of corrupted perception into the image (``kind="render"`` in
:data:`vlmkit.registry.MASK_CORRUPTIONS`): a palette overlay, or the dropped objects blurred or inpainted
away; :func:`render` dispatches by name and :func:`corrupt_and_render` corrupts and renders in one call.

See :mod:`vlmkit.perturb.masks` for the renderer contract.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vlmkit.errors import InputError
from vlmkit.perturb.kernels import common
from vlmkit.perturb.masks.base import check_ids, check_masks, list_mask_corruptions
from vlmkit.registry import MASK_CORRUPTIONS
from vlmkit.validate import check_images

Tensor = torch.Tensor


# ========================================================================================= renderers


def voc_palette(n: int = 256) -> Tensor:
    """The PASCAL VOC colour map ``(n, 3)`` float in [0, 1] (bit-interleaved ids, VOC devkit ``labelcolormap``,
    Everingham et al. 2010): id 0 black, 1 dark red, 2 dark green, ..., 255 light grey."""
    return torch.from_numpy(_voc_palette(int(n)).copy())


@functools.lru_cache(maxsize=4)
def _voc_palette(n: int) -> np.ndarray:
    out = np.zeros((n, 3), dtype=np.float32)
    for i in range(n):
        c, rgb = i, [0, 0, 0]
        for j in range(8):
            for ch in range(3):
                rgb[ch] |= ((c >> ch) & 1) << (7 - j)
            c >>= 3
        out[i] = rgb
    out /= 255.0
    out.flags.writeable = False
    return out


def dropped_pixels(clean_masks: Tensor, corrupted_masks: Tensor, background: int = 0,
                   ignore_index: int = 255) -> Tensor:
    """Bool ``(B, H, W)``: pixels of an object in the clean map (not background, not ignore) that the
    corrupted map calls background — dropped objects and eroded boundaries."""
    return (clean_masks != background) & (clean_masks != ignore_index) & (corrupted_masks == background)


def register_renderer(name: str, **meta: Any) -> Callable[[Callable[..., Tensor]], Callable[..., Tensor]]:
    """Register a renderer in :data:`vlmkit.registry.MASK_CORRUPTIONS` (``kind="render"``) with input checks.

    The wrapper validates the images (:func:`vlmkit.validate.check_images`), both label maps
    (:func:`check_masks`, shapes ``(B, H, W)`` matching the images), ``background`` and ``ignore_index``.
    """

    def deco(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        @functools.wraps(fn)
        def wrapped(images: Tensor, clean_masks: Tensor, corrupted_masks: Tensor, *, background: int = 0,
                    ignore_index: int = 255, **params: Any) -> Tensor:
            check_images(images, "images")
            check_masks(clean_masks, "clean_masks")
            check_masks(corrupted_masks, "corrupted_masks")
            want = (images.shape[0], *images.shape[-2:])
            for arg, m in (("clean_masks", clean_masks), ("corrupted_masks", corrupted_masks)):
                if tuple(m.shape) != want:
                    raise InputError(f"{name}: {arg} must have shape (B, H, W) = {want} to match images "
                                     f"{tuple(images.shape)}, got {tuple(m.shape)}")
            check_ids(background, ignore_index)
            return fn(images, clean_masks.to(images.device), corrupted_masks.to(images.device),
                      background=background, ignore_index=ignore_index, **params)

        wrapped.raw = fn  # type: ignore[attr-defined]
        return MASK_CORRUPTIONS.register(name, kind="render", **meta)(wrapped)

    return deco


def list_renderers() -> list[str]:
    """Names of the registered renderers (``kind="render"``)."""
    return MASK_CORRUPTIONS.list(kind="render")


@register_renderer("overlay")
def render_overlay(images: Tensor, clean_masks: Tensor, corrupted_masks: Tensor, *, background: int = 0,
                   ignore_index: int = 255, alpha: float = 0.5, paint_background: bool = False) -> Tensor:
    """Alpha-blend the corrupted map's PASCAL VOC palette colours onto the image: ``(1 − α)·x + α·colour``
    at painted pixels (every class but background — unless ``paint_background`` — and ignore_index);
    other pixels are unchanged. Ids above 255 use the palette modulo 256.

    Args:
        images: ``(B, 3, H, W)`` float in [0, 1].
        clean_masks: Clean label maps (unused; the common signature).
        corrupted_masks: The label maps drawn.
        alpha: Opacity of the overlay in [0, 1].
        paint_background: Also paint background pixels (black at alpha).
    """
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0.0 <= float(alpha) <= 1.0:
        raise InputError(f"overlay: alpha must be a number in [0, 1], got {alpha!r}")
    pal = voc_palette().to(device=images.device, dtype=images.dtype)  # (256, 3)
    colour = pal[corrupted_masks % 256].permute(0, 3, 1, 2)  # (B, 3, H, W)
    paint = corrupted_masks != ignore_index
    if not paint_background:
        paint &= corrupted_masks != background
    blended = (1.0 - float(alpha)) * images + float(alpha) * colour
    return torch.where(paint.unsqueeze(1), blended, images)


@register_renderer("blur_dropped")
def render_blur_dropped(images: Tensor, clean_masks: Tensor, corrupted_masks: Tensor, *, background: int = 0,
                        ignore_index: int = 255, sigma: float | None = None) -> Tensor:
    """Region blur of what the perception module dropped: :func:`dropped_pixels` take the image blurred by
    a strong Gaussian (``scipy.ndimage.gaussian_filter`` semantics, nearest borders); every other pixel is
    left bit-identical.

    Args:
        images: ``(B, 3, H, W)`` float in [0, 1].
        clean_masks, corrupted_masks: Label maps ``(B, H, W)``.
        sigma: Blur standard deviation in pixels (default ``max(1, min(H, W) / 16)``).
    """
    if sigma is None:
        sigma = max(1.0, min(images.shape[-2:]) / 16.0)
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not sigma > 0:
        raise InputError(f"blur_dropped: sigma must be a positive number of pixels, got {sigma!r}")
    hole = dropped_pixels(clean_masks, corrupted_masks, background, ignore_index).unsqueeze(1)  # (B, 1, H, W)
    if not bool(hole.any()):
        return images.clone()
    blurred = common.gaussian_filter(images, float(sigma), mode="nearest").clamp(0.0, 1.0)
    return torch.where(hole, blurred, images)


def _box_sum(x: Tensor) -> Tensor:
    """Sum over each pixel's 3×3 neighbourhood (zeros outside), per channel: ``(B, C, H, W)``."""
    w = torch.ones(x.shape[1], 1, 3, 3, dtype=x.dtype, device=x.device)
    return F.conv2d(x, w, padding=1, groups=x.shape[1])


@register_renderer("inpaint_dropped")
def render_inpaint_dropped(images: Tensor, clean_masks: Tensor, corrupted_masks: Tensor, *, background: int = 0,
                           ignore_index: int = 255, smooth_iters: int = 20) -> Tensor:
    """Inpaint what the perception module dropped from the surrounding background, so the missed object
    disappears from the image; every other pixel is left bit-identical.

    Diffusion inpainting (Oliveira et al., "Fast Digital Image Inpainting", VIIP 2001), batched: the
    sources are the clean map's background pixels (never another object or an ignored pixel); the hole
    (:func:`dropped_pixels`) is filled from its rim inwards with the mean of the already-known
    3×3 neighbours (onion peel, propagating across other objects without using their colours), then
    ``smooth_iters`` Jacobi iterations of the Laplace equation inside the hole smooth the fill. An image
    with no background pixel at all fills its hole with the mean colour of its non-dropped pixels.

    Args:
        images: ``(B, 3, H, W)`` float in [0, 1].
        clean_masks, corrupted_masks: Label maps ``(B, H, W)``.
        smooth_iters: Diffusion iterations after the fill (0: onion peel only).
    """
    if isinstance(smooth_iters, bool) or not isinstance(smooth_iters, numbers.Integral) or smooth_iters < 0:
        raise InputError(f"inpaint_dropped: smooth_iters must be an int >= 0, got {smooth_iters!r}")
    hole = dropped_pixels(clean_masks, corrupted_masks, background, ignore_index).unsqueeze(1)  # (B, 1, H, W)
    if not bool(hole.any()):
        return images.clone()
    x = images
    known = (clean_masks == background).unsqueeze(1).to(x.dtype)  # (B, 1, H, W): the sources
    none = known.flatten(1).sum(1) == 0  # (B,) images without a background pixel
    if bool(none.any()):
        rest = (~hole).to(x.dtype)
        mean = (x * rest).flatten(2).sum(2) / rest.flatten(2).sum(2).clamp_min(1)  # (B, 3)
        fallback = mean.view(-1, 3, 1, 1).expand_as(x)
    val = x * known  # (B, 3, H, W)
    for _ in range(x.shape[-2] + x.shape[-1]):  # onion peel: each pass fills one more ring
        cnt = _box_sum(known)
        new = (known == 0) & (cnt > 0)
        if not bool(new.any()):
            break
        val = torch.where(new, _box_sum(val) / cnt.clamp_min(1), val)
        known = torch.where(new, torch.ones_like(known), known)
    for _ in range(int(smooth_iters)):  # Jacobi: hole pixels take the mean of their 4-neighbours
        p = F.pad(val, (1, 1, 1, 1), mode="replicate")
        avg = 0.25 * (p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:])
        val = torch.where(hole, avg, val)
    if bool(none.any()):
        val = torch.where(none.view(-1, 1, 1, 1), fallback, val)
    return torch.where(hole, val.clamp(0.0, 1.0), x)


def render(images: Tensor, clean_masks: Tensor, corrupted_masks: Tensor, mode: str = "overlay",
           **params: Any) -> Tensor:
    """Render corrupted perception into the image with the renderer ``mode`` (``"overlay"``,
    ``"blur_dropped"``, ``"inpaint_dropped"``; :func:`list_renderers`).

    Raises:
        InputError: ``mode`` is not a registered renderer (the message lists them).
    """
    if not isinstance(mode, str) or mode not in MASK_CORRUPTIONS or MASK_CORRUPTIONS.meta(mode).get("kind") != "render":
        raise InputError(f"render: mode={mode!r} is not a renderer; expected one of {list_renderers()}")
    return MASK_CORRUPTIONS.get(mode)(images, clean_masks, corrupted_masks, **params)


def corrupt_and_render(images: Tensor, masks: Tensor, corruption: str, severity: float, render: str = "overlay",
                       *, generator: torch.Generator | None = None, background: int = 0, ignore_index: int = 255,
                       corruption_params: Mapping[str, Any] | None = None,
                       render_params: Mapping[str, Any] | None = None) -> tuple[Tensor, Tensor]:
    """Corrupt the label maps and render the result into the images.

    Args:
        images: ``(B, 3, H, W)`` float in [0, 1].
        masks: Clean label maps ``(B, H, W)`` int64.
        corruption: A registered corruption (:func:`list_mask_corruptions`).
        severity: Its severity.
        render: A registered renderer (:func:`list_renderers`).
        generator: Source of the corruption's randomness.
        background, ignore_index: Ids shared by corruption and renderer.
        corruption_params, render_params: Extra keyword arguments of each.

    Returns:
        ``(images_out (B, 3, H, W), corrupted_masks (B, H, W))``.

    Raises:
        InputError: Unknown corruption or renderer, or bad input.
    """
    check_images(images, "images")
    if not isinstance(corruption, str) or corruption not in list_mask_corruptions():
        raise InputError(f"corruption={corruption!r} is not a mask corruption; expected one of {list_mask_corruptions()}")
    if not isinstance(render, str) or render not in list_renderers():
        raise InputError(f"render={render!r} is not a renderer; expected one of {list_renderers()}")
    check_masks(masks)
    if tuple(masks.shape) != (images.shape[0], *images.shape[-2:]):
        raise InputError(f"masks must have shape (B, H, W) = {(images.shape[0], *images.shape[-2:])} to match "
                         f"images {tuple(images.shape)}, got {tuple(masks.shape)}")
    corrupted = MASK_CORRUPTIONS.get(corruption)(masks, severity, generator=generator, background=background,
                                                 ignore_index=ignore_index, **dict(corruption_params or {}))
    out = MASK_CORRUPTIONS.get(render)(images, masks, corrupted, background=background, ignore_index=ignore_index,
                                       **dict(render_params or {}))
    return out, corrupted


__all__ = ["corrupt_and_render", "dropped_pixels", "list_renderers", "register_renderer", "render",
           "render_blur_dropped", "render_inpaint_dropped", "render_overlay", "voc_palette"]
