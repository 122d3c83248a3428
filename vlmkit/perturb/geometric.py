"""Geometric perturbations (family ``"geometric"``): translate, pad+crop, scale, scale+pad, rotate, crop.

These are the transformation families of studies of CLIP's (in)stability under small, semantically
irrelevant image shifts: integer translation, padding then cropping back (a random shift with a
filled border), zoom about the centre, shrinking onto a filled canvas, rotation, and cropping a
region then resizing it back.

Conventions:

* positive ``dx`` moves content right, positive ``dy`` moves it down; positive ``degrees`` rotate
  counter-clockwise (as displayed, like ``torchvision.transforms.functional.rotate``);
* ``fill`` is a float in [0, 1] or one value per channel; areas uncovered by the transformed image
  take it exactly (bilinear sampling blends it across the one-pixel boundary);
* integer translations and pad+crop are exact (slicing); sub-pixel ones, scale, rotation and crop use
  ``F.affine_grid`` + ``F.grid_sample`` (``align_corners=False``) and are batched, with per-image
  parameters where random.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from vlmkit.errors import InputError
from vlmkit.perturb.base import default_generator, register_perturbation

Fill = float | Sequence[float]

# severity -> default parameter tables (index severity - 1)
TRANSLATE_FRAC = (0.02, 0.05, 0.1, 0.15, 0.25)  # shift (dx = dy) as a fraction of width/height
PAD_FRAC = (0.02, 0.05, 0.1, 0.15, 0.25)  # pad p as a fraction of the shorter side
SCALE_FACTOR = (1.1, 1.2, 1.35, 1.5, 1.75)  # zoom-in factors about the centre
SCALE_PAD_FACTOR = (0.9, 0.8, 0.7, 0.6, 0.5)  # shrink factors onto a filled canvas
ROTATE_DEGREES = (5.0, 10.0, 15.0, 30.0, 45.0)
CROP_FRAC = (0.9, 0.8, 0.7, 0.6, 0.5)  # side fraction kept before resizing back


def _sev(table: Sequence[float], severity: int | float) -> float:
    return float(table[int(severity) - 1])


def fill_tensor(fill: Fill, x: torch.Tensor) -> torch.Tensor:
    """``fill`` as a ``(1, 3, 1, 1)`` tensor like ``x``; a float or 3 values in [0, 1]."""
    vals = [float(fill)] * 3 if isinstance(fill, (int, float)) else [float(f) for f in fill]
    if len(vals) != 3 or not all(0.0 <= f <= 1.0 for f in vals):
        raise InputError(f"fill={fill!r} must be a float in [0, 1] or three values in [0, 1] (one per channel)")
    return torch.tensor(vals, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)


def warp_affine(x: torch.Tensor, theta: torch.Tensor, fill: Fill = 0.0, mode: str = "bilinear") -> torch.Tensor:
    """Sample ``x`` through affine maps ``theta (B, 2, 3)`` (output→input, normalised coordinates).

    Pixels whose source lies outside the image take ``fill`` (a warped coverage mask blends it at
    the border). Returns ``(B, 3, H, W)`` clamped to [0, 1].
    """
    B, _, H, W = x.shape
    fill_t = fill_tensor(fill, x)  # (1, 3, 1, 1)
    grid = F.affine_grid(theta.to(x.dtype), [B, 1, H, W], align_corners=False)  # (B, H, W, 2)
    ones = torch.ones(B, 1, H, W, device=x.device, dtype=x.dtype)
    both = torch.cat([x, ones], dim=1)  # (B, 4, H, W)
    warped = F.grid_sample(both, grid, mode=mode, padding_mode="zeros", align_corners=False)
    img, cover = warped[:, :3], warped[:, 3:]  # (B, 3, H, W), (B, 1, H, W)
    return (img + (1 - cover) * fill_t).clamp(0, 1)


def _shift_int(x: torch.Tensor, dx: int, dy: int, fill: Fill) -> torch.Tensor:
    B, C, H, W = x.shape
    out = fill_tensor(fill, x).expand(B, C, H, W).clone()  # (B, 3, H, W)
    if abs(dx) >= W or abs(dy) >= H:
        return out
    src_y = slice(max(0, -dy), H - max(0, dy))
    dst_y = slice(max(0, dy), H - max(0, -dy))
    src_x = slice(max(0, -dx), W - max(0, dx))
    dst_x = slice(max(0, dx), W - max(0, -dx))
    out[:, :, dst_y, dst_x] = x[:, :, src_y, src_x]
    return out


@register_perturbation("translate", "geometric")
def translate(x: torch.Tensor, severity: int = 1, *, generator: torch.Generator | None = None,
              dx: float | None = None, dy: float | None = None, fill: Fill = 0.0) -> torch.Tensor:
    """Shift the image by ``(dx, dy)`` pixels (right, down), filling the uncovered border.

    Integer shifts are exact (``out[..., y, x] = x[..., y - dy, x - dx]``); fractional ones use bilinear
    sampling.

    Args:
        x: Images ``(B, 3, H, W)`` in [0, 1].
        severity: 1..5 → ``dx = round(f·W)``, ``dy = round(f·H)`` with ``f`` in :data:`TRANSLATE_FRAC`.
        generator: Unused (deterministic).
        dx: Horizontal shift in pixels (overrides severity; ``dy`` then defaults to 0).
        dy: Vertical shift in pixels (overrides severity; ``dx`` then defaults to 0).
        fill: Border value (float or per channel) in [0, 1].
    """
    H, W = x.shape[-2:]
    if dx is None and dy is None:
        f = _sev(TRANSLATE_FRAC, severity)
        dx, dy = round(f * W), round(f * H)
    dx, dy = float(dx or 0), float(dy or 0)
    if not (math.isfinite(dx) and math.isfinite(dy)):
        raise InputError(f"translate: dx={dx!r}, dy={dy!r} must be finite pixel offsets")
    if dx.is_integer() and dy.is_integer():
        return _shift_int(x, int(dx), int(dy), fill)
    theta = torch.tensor([[1.0, 0.0, -2 * dx / W], [0.0, 1.0, -2 * dy / H]], device=x.device)
    return warp_affine(x, theta.expand(x.shape[0], 2, 3), fill)


@register_perturbation("pad_crop", "geometric")
def pad_crop(x: torch.Tensor, severity: int = 1, *, generator: torch.Generator | None = None,
             pad: int | None = None, mode: str = "random", fill: Fill = 0.0) -> torch.Tensor:
    """Pad ``pad`` pixels of ``fill`` on every side, then crop ``(H, W)`` back.

    ``mode="random"`` draws the crop offset per image uniformly in ``[0, 2·pad]²`` from ``generator``
    (a random integer shift of up to ``pad`` pixels with a filled border); ``mode="center"`` crops the
    centre (the identity, kept for grids that sweep the mode).

    Args:
        x: Images ``(B, 3, H, W)`` in [0, 1].
        severity: 1..5 → ``pad = max(1, round(f·min(H, W)))`` with ``f`` in :data:`PAD_FRAC`.
        generator: Source of the offsets (default: seeded with 0).
        pad: Explicit padding in pixels (overrides severity).
        mode: "random" or "center".
        fill: Pad value (float or per channel) in [0, 1].
    """
    B, C, H, W = x.shape
    p = max(1, round(_sev(PAD_FRAC, severity) * min(H, W))) if pad is None else pad
    if not isinstance(p, int) or p < 0:
        raise InputError(f"pad_crop: pad={pad!r} must be a non-negative int (pixels)")
    if mode not in ("random", "center"):
        raise InputError(f"pad_crop: mode={mode!r} must be 'random' or 'center'")
    fill_t = fill_tensor(fill, x)
    padded = fill_t.expand(B, C, H + 2 * p, W + 2 * p).clone()  # (B, 3, H+2p, W+2p)
    padded[:, :, p:p + H, p:p + W] = x
    if mode == "center":
        return padded[:, :, p:p + H, p:p + W].clone()
    g = default_generator(x, generator)
    off = torch.randint(0, 2 * p + 1, (B, 2), generator=g, device=x.device)  # (B, 2): (top, left)
    rows = off[:, 0, None] + torch.arange(H, device=x.device)  # (B, H)
    cols = off[:, 1, None] + torch.arange(W, device=x.device)  # (B, W)
    b = torch.arange(B, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]]  # (B, H, W, 3)
    return out.permute(0, 3, 1, 2).contiguous()


@register_perturbation("scale", "geometric")
def scale(x: torch.Tensor, severity: int = 1, *, generator: torch.Generator | None = None,
          factor: float | None = None, fill: Fill = 0.0) -> torch.Tensor:
    """Zoom about the centre by ``factor`` (> 1 zooms in and crops, < 1 zooms out and fills), same size out.

    Args:
        x: Images ``(B, 3, H, W)`` in [0, 1].
        severity: 1..5 → zoom-in factor in :data:`SCALE_FACTOR`.
        generator: Unused (deterministic).
        factor: Explicit zoom factor > 0 (overrides severity).
        fill: Value for uncovered pixels when zooming out.
    """
    s = _sev(SCALE_FACTOR, severity) if factor is None else float(factor)
    if not (math.isfinite(s) and s > 0):
        raise InputError(f"scale: factor={factor!r} must be a positive finite number")
    theta = torch.tensor([[1 / s, 0.0, 0.0], [0.0, 1 / s, 0.0]], device=x.device)
    return warp_affine(x, theta.expand(x.shape[0], 2, 3), fill)


@register_perturbation("scale_pad", "geometric")
def scale_pad(x: torch.Tensor, severity: int = 1, *, generator: torch.Generator | None = None,
              factor: float | None = None, fill: Fill = 0.0) -> torch.Tensor:
    """Shrink the image by ``factor`` in (0, 1] (antialiased resize) and centre it on a ``fill`` canvas.

    Args:
        x: Images ``(B, 3, H, W)`` in [0, 1].
        severity: 1..5 → factor in :data:`SCALE_PAD_FACTOR`.
        generator: Unused (deterministic).
        factor: Explicit shrink factor in (0, 1] (overrides severity).
        fill: Canvas value (float or per channel) in [0, 1].
    """
    B, C, H, W = x.shape
    s = _sev(SCALE_PAD_FACTOR, severity) if factor is None else float(factor)
    if not (0 < s <= 1):
        raise InputError(f"scale_pad: factor={factor!r} must be in (0, 1]")
    nh, nw = max(1, round(H * s)), max(1, round(W * s))
    small = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    out = fill_tensor(fill, x).expand(B, C, H, W).clone()  # (B, 3, H, W)
    top, left = (H - nh) // 2, (W - nw) // 2
    out[:, :, top:top + nh, left:left + nw] = small
    return out.clamp(0, 1)


@register_perturbation("rotate", "geometric")
def rotate(x: torch.Tensor, severity: int = 1, *, generator: torch.Generator | None = None,
           degrees: float | None = None, fill: Fill = 0.0) -> torch.Tensor:
    """Rotate about the image centre by ``degrees`` counter-clockwise; corners take ``fill``.

    For square images a rotation by 90° equals ``torch.rot90(x, 1, dims=(2, 3))`` up to float rounding
    (pixel centres map onto pixel centres).

    Args:
        x: Images ``(B, 3, H, W)`` in [0, 1].
        severity: 1..5 → angle in :data:`ROTATE_DEGREES`.
        generator: Unused (deterministic).
        degrees: Explicit angle (overrides severity).
        fill: Value of the uncovered corners (float or per channel) in [0, 1].
    """
    H, W = x.shape[-2:]
    a = math.radians(_sev(ROTATE_DEGREES, severity) if degrees is None else float(degrees))
    c, s = math.cos(a), math.sin(a)
    # output→input map in pixel units about the centre (y down): [xi, yi] = R(+a) [xo, yo] gives a
    # counter-clockwise rotation as displayed; normalised coordinates rescale by the aspect ratio.
    theta = torch.tensor([[c, -s * H / W, 0.0], [s * W / H, c, 0.0]], device=x.device, dtype=torch.float64)
    return warp_affine(x, theta.float().expand(x.shape[0], 2, 3), fill)


@register_perturbation("crop", "geometric")
def crop(x: torch.Tensor, severity: int = 1, *, generator: torch.Generator | None = None,
         fraction: float | None = None, position: str = "center") -> torch.Tensor:
    """Crop a ``fraction`` of each side and resize it back to ``(H, W)`` (bilinear).

    Args:
        x: Images ``(B, 3, H, W)`` in [0, 1].
        severity: 1..5 → side fraction in :data:`CROP_FRAC`.
        generator: Source of the crop positions when ``position="random"`` (default: seeded with 0).
        fraction: Explicit side fraction in (0, 1] (overrides severity).
        position: "center" or "random" (uniform per image, inside the image).
    """
    B = x.shape[0]
    f = _sev(CROP_FRAC, severity) if fraction is None else float(fraction)
    if not (0 < f <= 1):
        raise InputError(f"crop: fraction={fraction!r} must be in (0, 1]")
    if position not in ("center", "random"):
        raise InputError(f"crop: position={position!r} must be 'center' or 'random'")
    theta = torch.zeros(B, 2, 3, device=x.device)
    theta[:, 0, 0] = f
    theta[:, 1, 1] = f
    if position == "random":
        g = default_generator(x, generator)
        theta[:, :, 2] = (torch.rand(B, 2, generator=g, device=x.device) * 2 - 1) * (1 - f)  # centre offsets
    return warp_affine(x, theta, 0.0)


__all__ = ["crop", "fill_tensor", "pad_crop", "rotate", "scale", "scale_pad", "translate", "warp_affine"]
