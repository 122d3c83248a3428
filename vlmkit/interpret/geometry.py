"""Between the model's patch grid and the user's image frame.

A :class:`vlmkit.VLM` resizes (and crops or pads) images inside; heat maps on its patch grid must be
mapped back through the same geometry to overlay the image the user passed, and masks/boxes given in
the image frame must be mapped forward onto the grid. Both directions follow
:func:`vlmkit.models.preprocess.resize_and_normalise`:

* ``squash``: the grid covers the whole image;
* ``shortest`` (resize the short side, centre-crop): the grid covers the central crop; pixels outside
  it were never seen by the model and get heat 0;
* ``longest`` (fit inside, centre-pad): the grid covers the image plus padding; the padding is cut off.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from vlmkit.models.preprocess import PreprocessConfig, resize_and_normalise


def _bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def grid_to_image(maps: torch.Tensor, cfg: PreprocessConfig, image_size: tuple[int, int]) -> torch.Tensor:
    """Upsample patch-grid maps ``(B, gh, gw)`` bilinearly onto the image frame ``(B, H, W)``.

    Args:
        maps: Maps on the model's patch grid.
        cfg: The model's preprocessing (how the image became the model input).
        image_size: ``(H, W)`` of the images the user passed.
    """
    H, W = image_size
    th, tw = cfg.size
    m = maps[:, None].float()  # (B, 1, gh, gw)
    if (H, W) == (th, tw) or cfg.resize_mode == "squash":
        return _bilinear(m, (H, W))[:, 0]
    if cfg.resize_mode == "shortest":
        short, long = (H, W) if H <= W else (W, H)
        target = min(th, tw)
        new_long = int(target * long / short)
        nh, nw = (target, new_long) if H <= W else (new_long, target)
        top = int(round((nh - th) / 2.0))
        left = int(round((nw - tw) / 2.0))
        sy, sx = H / nh, W / nw
        y0, y1 = round(top * sy), round((top + th) * sy)
        x0, x1 = round(left * sx), round((left + tw) * sx)
        # the crop may extend past the resized image (torchvision pads first): clip to the frame
        up = _bilinear(m, (max(1, y1 - y0), max(1, x1 - x0)))[:, 0]  # (B, h, w)
        out = maps.new_zeros((maps.shape[0], H, W), dtype=torch.float32)
        cy0, cx0 = max(0, y0), max(0, x0)
        cy1, cx1 = min(H, y1), min(W, x1)
        out[:, cy0:cy1, cx0:cx1] = up[:, cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
        return out
    # longest: the image sits inside the model input, the rest is padding
    scale = min(th / H, tw / W)
    nh, nw = max(1, round(H * scale)), max(1, round(W * scale))
    pt, pl = (th - nh) // 2, (tw - nw) // 2
    full = _bilinear(m, (th, tw))[:, :, pt : pt + nh, pl : pl + nw]
    return _bilinear(full, (H, W))[:, 0]


def image_to_grid(masks: torch.Tensor, cfg: PreprocessConfig, grid: tuple[int, int]) -> torch.Tensor:
    """Share of each patch covered by a mask given in the image frame, ``(B, H, W)`` → ``(B, gh, gw)``.

    The mask goes through the model's own resize/crop/pad (with area interpolation), then is averaged
    over each patch, so values are coverage fractions in [0, 1].
    """
    x = masks.float()[:, None].expand(-1, 3, -1, -1)  # (B, 3, H, W)
    geo = replace(cfg, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), interpolation="area", fill=0.0)
    model_frame = resize_and_normalise(x, geo)[:, 0:1]  # (B, 1, th, tw)
    return F.adaptive_avg_pool2d(model_frame, grid)[:, 0]


def minmax_normalise(maps: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Per-map min-max scaling to [0, 1] over all but the first dimension (constant maps become 0)."""
    flat = maps.flatten(1)
    lo = flat.min(1).values.view(-1, *([1] * (maps.ndim - 1)))
    hi = flat.max(1).values.view(-1, *([1] * (maps.ndim - 1)))
    return (maps - lo) / (hi - lo).clamp_min(eps)


def boxes_to_masks(boxes: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Pixel boxes ``(B, 4)`` as ``(x0, y0, x1, y1)`` with exclusive ends → bool masks ``(B, H, W)``."""
    H, W = image_size
    b = torch.as_tensor(boxes, dtype=torch.long).view(-1, 4)
    ys = torch.arange(H).view(1, H, 1)
    xs = torch.arange(W).view(1, 1, W)
    return ((ys >= b[:, 1, None, None]) & (ys < b[:, 3, None, None])
            & (xs >= b[:, 0, None, None]) & (xs < b[:, 2, None, None]))
