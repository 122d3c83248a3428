"""Figures for notebooks and the HTML report (matplotlib, headless-safe).

Every function takes tensors or tidy tables and returns a :class:`matplotlib.figure.Figure`; saving
is the caller's choice (:func:`save`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt  # the backend is the caller's: inline in notebooks, Agg where there is no display
import numpy as np
import pandas as pd
import torch

from vlmkit.errors import InputError


def save(fig: plt.Figure, path: str | Path, dpi: int = 110) -> Path:
    """Save ``fig`` as PNG (parents created) and close it."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return p


def image_grid(images: torch.Tensor, titles: Sequence[str] | None = None, ncols: int = 8,
               size: float = 1.6) -> plt.Figure:
    """Show float ``(N, 3, H, W)`` in [0, 1] or uint8 images in a grid with optional titles."""
    if images.ndim != 4:
        raise InputError(f"images must be (N, 3, H, W), got {tuple(images.shape)}")
    x = images.detach().cpu()
    x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
    n = len(x)
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + (0.3 * nrows if titles else 0)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(x[i].permute(1, 2, 0).clamp(0, 1).numpy())
            if titles is not None:
                ax.set_title(str(titles[i]), fontsize=7)
    fig.tight_layout()
    return fig


def log_spectrum(x: torch.Tensor) -> torch.Tensor:
    """Centred log-magnitude spectrum ``(B, H, W)`` averaged over channels."""
    f = torch.fft.fftshift(torch.fft.fft2(x.float()), dim=(-2, -1))
    return torch.log1p(f.abs()).mean(dim=1)


def degradation_curves(df: pd.DataFrame, metric: str, x: str = "severity", line: str = "model",
                       panel: str = "perturbation", clean_label: str = "clean") -> plt.Figure:
    """One panel per perturbation: ``metric`` vs ``x``, one line per ``line`` (clean value at x=0)."""
    d = df[df["metric"] == metric]
    if d.empty:
        raise InputError(f"no rows for metric {metric!r}; metrics present: {sorted(df['metric'].unique())}")
    clean = d[d["kind"] == "clean"] if "kind" in d else d.iloc[:0]
    pert = d[d["kind"] == "perturbation"] if "kind" in d else d
    panels = sorted(pert[panel].unique()) or [clean_label]
    ncols = min(4, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.6 * nrows), squeeze=False, sharey=True)
    for ax, p in zip(axes.flat, panels):
        for name, g in pert[pert[panel] == p].groupby(line):
            g = g.groupby(x, as_index=False)["value"].mean().sort_values(x)
            c = clean[clean[line] == name]["value"]
            xs = ([0] if len(c) else []) + g[x].tolist()
            ys = ([float(c.iloc[0])] if len(c) else []) + g["value"].tolist()
            ax.plot(xs, ys, marker="o", ms=3, label=str(name))
        ax.set_title(str(p), fontsize=9)
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    axes[0, 0].set_ylabel(metric)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def drift_histograms(drift: torch.Tensor, control: torch.Tensor, title: str = "", bins: int = 30) -> plt.Figure:
    """Drift vs control-drift distributions (Wani et al. 2026, Fig. 1 style)."""
    fig, ax = plt.subplots(figsize=(4.2, 2.8))
    hi = float(max(drift.max(), control.max())) * 1.05 + 1e-9
    edges = np.linspace(0, hi, bins + 1)
    ax.hist(control.cpu().numpy(), bins=edges, alpha=0.55, label="control (other image)")
    ax.hist(drift.cpu().numpy(), bins=edges, alpha=0.55, label="drift (perturbed)")
    ax.set_xlabel("1 − cos")
    ax.set_ylabel("images")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def heatmap(values: np.ndarray | torch.Tensor, xlabels: Sequence[str] | None = None,
            ylabels: Sequence[str] | None = None, title: str = "", cmap: str = "viridis",
            center: bool = False) -> plt.Figure:
    """Annotated-free heat map of a 2-D array (e.g. layer × head deltas, Fourier heat maps)."""
    v = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    fig, ax = plt.subplots(figsize=(0.35 * v.shape[1] + 2.2, 0.35 * v.shape[0] + 1.6))
    kw = {}
    if center:
        m = float(np.abs(v).max()) or 1.0
        kw = {"vmin": -m, "vmax": m}
        cmap = "coolwarm"
    im = ax.imshow(v, cmap=cmap, aspect="auto", **kw)
    if xlabels is not None:
        ax.set_xticks(range(len(xlabels)), labels=[str(s) for s in xlabels], fontsize=7, rotation=90)
    if ylabels is not None:
        ax.set_yticks(range(len(ylabels)), labels=[str(s) for s in ylabels], fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def radar(scores: pd.DataFrame, title: str = "") -> plt.Figure:
    """Radar chart: rows = models, columns = task × scenario axes, values in [0, 1]."""
    if scores.empty or scores.shape[1] < 3:
        raise InputError(f"radar needs at least 3 axes (columns), got {list(scores.columns)}")
    axes_names = list(scores.columns)
    angles = np.linspace(0, 2 * np.pi, len(axes_names), endpoint=False).tolist()
    fig = plt.figure(figsize=(4.6, 4.6))
    ax = fig.add_subplot(111, polar=True)
    for model, row in scores.iterrows():
        vals = row.to_numpy(dtype=float).tolist()
        ax.plot(angles + angles[:1], vals + vals[:1], label=str(model))
        ax.fill(angles + angles[:1], vals + vals[:1], alpha=0.12)
    ax.set_xticks(angles, labels=axes_names, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper right", bbox_to_anchor=(1.3, 1.1))
    fig.tight_layout()
    return fig
