"""Matplotlib figures for the interpretability tools (heat-map overlays, head grids, sweeps, latents).

Every function returns the :class:`matplotlib.figure.Figure` (or draws into a given ``ax``) and
never calls ``plt.show()``, so notebooks decide how to display or save.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from vlmkit.errors import InputError
from vlmkit.interpret.geometry import grid_to_image
from vlmkit.models.preprocess import PreprocessConfig


def _img(x: Any) -> np.ndarray:
    """(3, H, W) float [0, 1] / uint8, or (H, W, 3) → (H, W, 3) float in [0, 1]."""
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.ndim == 3 and a.shape[0] == 3 and a.shape[-1] != 3:
        a = a.transpose(1, 2, 0)
    a = a.astype(np.float32)
    return a / 255.0 if a.max() > 1.0 else a


def _map(m: Any) -> np.ndarray:
    return (m.detach().cpu().numpy() if isinstance(m, torch.Tensor) else np.asarray(m)).astype(np.float32)


def overlay(image: Any, heatmap: Any, ax: Any = None, alpha: float = 0.5, cmap: str = "jet",
            title: str | None = None) -> Any:
    """Draw ``heatmap`` ``(H, W)`` in [0, 1] over ``image`` on ``ax`` (a new figure when None).

    The heat map is resized to the image when their sizes differ. Returns the axis.
    """
    import matplotlib.pyplot as plt

    img, hm = _img(image), _map(heatmap)
    if hm.shape != img.shape[:2]:
        hm = torch.nn.functional.interpolate(torch.from_numpy(hm)[None, None], size=img.shape[:2],
                                             mode="bilinear", align_corners=False)[0, 0].numpy()
    if ax is None:
        _, ax = plt.subplots(figsize=(3, 3))
    ax.imshow(img)
    ax.imshow(hm, cmap=cmap, alpha=alpha, vmin=0.0, vmax=1.0)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=8)
    return ax


def plot_relevance(images: torch.Tensor, maps: torch.Tensor, titles: Sequence[str] | None = None,
                   ncols: int = 6, alpha: float = 0.5, cmap: str = "jet") -> Any:
    """A grid of image + heat-map overlays: ``images`` ``(B, 3, H, W)``, ``maps`` ``(B, H, W)``."""
    import matplotlib.pyplot as plt

    if len(images) != len(maps):
        raise InputError(f"{len(images)} images but {len(maps)} maps")
    B = len(images)
    ncols = max(1, min(ncols, B))
    nrows = -(-B // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.2 * ncols, 2.2 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i < B:
            overlay(images[i], maps[i], ax=ax, alpha=alpha, cmap=cmap, title=titles[i] if titles else None)
        else:
            ax.set_axis_off()
    fig.tight_layout()
    return fig


def plot_head_maps(image: Any, maps: torch.Tensor, alpha: float = 0.55, cmap: str = "jet",
                   cfg: PreprocessConfig | None = None) -> Any:
    """Per-head attention overlays for one image: ``maps`` ``(L, heads, gh, gw)`` (each map rescaled
    to [0, 1]), one row per layer, one column per head.

    Args:
        image: ``(3, H, W)`` or ``(H, W, 3)`` image.
        maps: Per-head maps on the patch grid (one image of :func:`vlmkit.interpret.head_attention_maps`).
        cfg: The model's preprocessing (``vlm.preprocess_cfg``): maps go through its crop/pad onto the
            image frame (:func:`vlmkit.interpret.geometry.grid_to_image`); without it they are stretched.
    """
    import matplotlib.pyplot as plt

    m = _map(maps)
    if m.ndim != 4:
        raise InputError(f"maps must be (L, heads, gh, gw) for one image, got shape {m.shape}")
    L, H = m.shape[:2]
    if cfg is not None:
        size = _img(image).shape[:2]
        m = grid_to_image(torch.from_numpy(m).flatten(0, 1), cfg, size).reshape(L, H, *size).numpy()
    fig, axes = plt.subplots(L, H, figsize=(1.8 * H, 1.8 * L), squeeze=False)
    for li in range(L):
        for hi in range(H):
            a = m[li, hi]
            a = (a - a.min()) / max(float(a.max() - a.min()), 1e-12)
            overlay(image, a, ax=axes[li, hi], alpha=alpha, cmap=cmap, title=f"L{li} H{hi}")
    fig.tight_layout()
    return fig


def plot_head_sweep(table: pd.DataFrame, condition: str | None = None, metric: str | None = None,
                    value: str = "delta", ax: Any = None, cmap: str = "RdBu_r") -> Any:
    """Layer × head heat map of a :func:`vlmkit.interpret.heads.head_mask_sweep` column (or of a
    :func:`region_attention` table with ``value="ratio"``). Returns the figure."""
    import matplotlib.pyplot as plt

    from vlmkit.interpret.heads import per_head_scores

    M = per_head_scores(table, value, condition, metric).numpy()
    if ax is None:
        fig, ax = plt.subplots(figsize=(0.6 * M.shape[1] + 2, 0.5 * M.shape[0] + 1.5))
    else:
        fig = ax.figure
    lim = float(np.nanmax(np.abs(M))) or 1.0
    kw = dict(vmin=-lim, vmax=lim) if cmap == "RdBu_r" else {}
    im = ax.imshow(M, cmap=cmap, aspect="auto", **kw)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_xticks(range(M.shape[1]))
    ax.set_yticks(range(M.shape[0]))
    label = " / ".join(x for x in (condition, metric) if x)
    ax.set_title(f"{value} {label}".strip(), fontsize=9)
    fig.colorbar(im, ax=ax)
    return fig


def plot_latent_stats(table: pd.DataFrame, x: str = "frequency", y: str = "label_entropy",
                      hue: str = "condition", ax: Any = None, logx: bool = True) -> Any:
    """Scatter of two :func:`vlmkit.interpret.latents.latent_statistics` columns, one colour per
    condition. Returns the figure."""
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(4.5, 3.5))
    else:
        fig = ax.figure
    for name, t in table.groupby(hue, sort=False):
        ax.scatter(t[x], t[y], s=8, alpha=0.6, label=str(name))
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.legend(fontsize=8)
    return fig
