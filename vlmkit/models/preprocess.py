"""How a model turns ``[0, 1]`` pixels into its input: :class:`PreprocessConfig` (travels with the model)
and :func:`resize_and_normalise`, the differentiable resize + crop/pad + normalise every family and task
model applies inside its forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

_INTERP = {"bicubic", "bilinear", "nearest", "area"}
_RESIZE_MODES = {"shortest", "squash", "longest"}


@dataclass(frozen=True)
class PreprocessConfig:
    """How a model turns ``[0, 1]`` pixels into its input tensor (travels with the model).

    Attributes:
        size: Model input ``(H, W)``.
        mean: Per-channel mean subtracted after resizing.
        std: Per-channel std divided after subtracting the mean.
        interpolation: "bicubic", "bilinear", "nearest" or "area".
        resize_mode: "shortest" (shorter side to size, then centre crop — OpenAI CLIP / open_clip),
            "squash" (resize to size ignoring aspect — SigLIP), or "longest" (longer side to size, then
            centre pad with ``fill``).
        fill: Pad value in ``[0, 1]`` for "longest".
    """

    size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    fill: float = 0.0

    def __post_init__(self) -> None:
        if self.interpolation not in _INTERP:
            raise ValueError(f"interpolation={self.interpolation!r}; expected one of {sorted(_INTERP)}")
        if self.resize_mode not in _RESIZE_MODES:
            raise ValueError(f"resize_mode={self.resize_mode!r}; expected one of {sorted(_RESIZE_MODES)}")


def resize_and_normalise(x: torch.Tensor, cfg: PreprocessConfig) -> torch.Tensor:
    """Differentiable version of the model's resize + crop/pad + normalise.

    Follows torchvision's ``Resize(size)`` → ``CenterCrop(size)`` conventions on tensors (antialiased
    interpolation when down-sampling, the same rounding of the new size and crop offsets), so it
    equals open_clip's ``preprocess`` applied to the same float tensor.

    Args:
        x: Float images in [0, 1] ``(B, 3, H, W)``.
        cfg: The model's preprocessing.

    Returns:
        Normalised model input ``(B, 3, *cfg.size)``.
    """
    th, tw = cfg.size
    H, W = x.shape[-2:]
    if (H, W) != (th, tw):
        if cfg.resize_mode == "squash":
            x = _interp(x, (th, tw), cfg.interpolation)
        elif cfg.resize_mode == "shortest":
            short, long = (H, W) if H <= W else (W, H)
            target = min(th, tw)
            new_short, new_long = target, int(target * long / short)
            nh, nw = (new_short, new_long) if H <= W else (new_long, new_short)
            if (nh, nw) != (H, W):
                x = _interp(x, (nh, nw), cfg.interpolation)
            x = _center_crop(x, (th, tw))
        else:  # longest: fit inside, pad the rest
            scale = min(th / H, tw / W)
            nh, nw = max(1, round(H * scale)), max(1, round(W * scale))
            x = _interp(x, (nh, nw), cfg.interpolation)
            pt, pl = (th - nh) // 2, (tw - nw) // 2
            x = F.pad(x, (pl, tw - nw - pl, pt, th - nh - pt), value=cfg.fill)
    mean = torch.tensor(cfg.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def _interp(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    if mode in ("nearest", "area"):
        return F.interpolate(x, size=size, mode=mode)
    return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=True)


def _center_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    th, tw = size
    H, W = x.shape[-2:]
    if H < th or W < tw:  # torchvision pads with zeros first
        pl, pt = max(0, (tw - W) // 2), max(0, (th - H) // 2)
        x = F.pad(x, (pl, max(0, tw - W - pl), pt, max(0, th - H - pt)))
        H, W = x.shape[-2:]
    top = int(round((H - th) / 2.0))
    left = int(round((W - tw) / 2.0))
    return x[..., top : top + th, left : left + tw]


__all__ = ["PreprocessConfig", "resize_and_normalise"]
