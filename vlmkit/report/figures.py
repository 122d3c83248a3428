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


def degradation_curves(df: pd.DataFrame, metric: str, x: str = "severity", line: str | Sequence[str] = "model",
                       panel: str = "perturbation", clean_label: str = "clean") -> plt.Figure:
    """One panel per perturbation: ``metric`` vs ``x``, one line per ``line`` (clean value at x=0), with a band
    for the rows' intervals (``ci_low``/``ci_high``) where they have them.

    ``line`` may name several columns (``["model", "dataset"]``): one line per combination.
    """
    d = df[df["metric"] == metric]
    if not isinstance(line, str):
        cols = list(line)
        line = " | ".join(cols)
        d = d.assign(**{line: d[cols].astype(str).agg(" | ".join, axis=1)}) if len(d) else d.assign(**{line: ""})
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
            cols = [c for c in ("value", "ci_low", "ci_high") if c in g]
            g = g.groupby(x, as_index=False)[cols].mean().sort_values(x)
            c = clean[clean[line] == name]
            head = c[cols].iloc[:1].assign(**{x: 0}) if len(c) else c.iloc[:0]
            g = pd.concat([head, g], ignore_index=True) if len(head) else g
            (ln,) = ax.plot(g[x], g["value"], marker="o", ms=3, label=str(name))
            if "ci_low" in g and g["ci_low"].notna().any():  # the 95% interval of each point
                ax.fill_between(g[x].astype(float), g["ci_low"].astype(float), g["ci_high"].astype(float),
                                color=ln.get_color(), alpha=0.12, lw=0)
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


def radar(scores: pd.DataFrame, title: str = "", low: pd.DataFrame | None = None,
          high: pd.DataFrame | None = None) -> plt.Figure:
    """Radar chart: rows = models, columns = task × scenario axes, values in [0, 1]; ``low``/``high`` (same
    shape) draw each value's interval as a whisker along its axis."""
    if scores.empty or scores.shape[1] < 3:
        raise InputError(f"radar needs at least 3 axes (columns), got {list(scores.columns)}")
    import textwrap

    axes_names = list(scores.columns)
    angles = np.linspace(0, 2 * np.pi, len(axes_names), endpoint=False).tolist()
    fig = plt.figure(figsize=(6.4, 5.6))
    ax = fig.add_subplot(111, polar=True)
    for model, row in scores.iterrows():
        vals = row.to_numpy(dtype=float).tolist()
        line, = ax.plot(angles + angles[:1], vals + vals[:1], label=str(model), lw=1.6)
        ax.fill(angles + angles[:1], vals + vals[:1], alpha=0.10)
        if low is not None and high is not None and model in low.index:
            for ang, lo, hi in zip(angles, low.loc[model].to_numpy(float), high.loc[model].to_numpy(float)):
                if np.isfinite(lo) and np.isfinite(hi):
                    ax.plot([ang, ang], [max(lo, 0), min(hi, 1)], color=line.get_color(), lw=2.2, alpha=0.55)
    ax.set_xticks(angles, labels=[textwrap.fill(str(a), 16) for a in axes_names], fontsize=7.5)
    ax.tick_params(axis="x", pad=14)
    ax.set_ylim(0, 1)
    ax.set_yticks([0.25, 0.5, 0.75, 1.0], labels=["0.25", "0.5", "0.75", "1"], fontsize=6, color="0.45")
    ax.set_rlabel_position(90 / max(1, len(axes_names)))
    ax.set_title(title, fontsize=10, pad=18)
    ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.08, 1.08), frameon=False)
    fig.tight_layout()
    return fig


def drift_distributions(drifts: dict[str, torch.Tensor], title: str = "", bins: int = 30) -> plt.Figure:
    """Drift vs control drift per perturbation family, one panel each (Wani et al. 2026, Fig. 1).

    Args:
        drifts: ``{"control": (N,), family: (M,)}`` as :func:`vlmkit.evaluate.family_drift` returns.
        title: Figure title (e.g. the model).
        bins: Histogram bins (shared edges within a panel).
    """
    import seaborn as sns

    if "control" not in drifts or len(drifts) < 2:
        raise InputError(f"drift_distributions needs 'control' and at least one family, got {sorted(drifts)}")
    fams = [k for k in drifts if k != "control"]
    ncols = min(4, len(fams))
    nrows = math.ceil(len(fams) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.9 * ncols, 2.3 * nrows), squeeze=False, sharey=False)
    control = drifts["control"].float().cpu().numpy()
    for ax, fam in zip(axes.flat, fams):
        d = drifts[fam].float().cpu().numpy()
        edges = np.linspace(0, max(float(d.max()), float(control.max())) * 1.05 + 1e-9, bins + 1)
        sns.histplot(control, bins=edges, stat="density", color="0.6", alpha=0.6, ax=ax, label="control")
        sns.histplot(d, bins=edges, stat="density", color="C3", alpha=0.55, ax=ax, label="perturbed")
        ax.set_title(fam, fontsize=9)
        ax.set_xlabel("1 − cos", fontsize=8)
        ax.set_ylabel("")
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(fams):]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def item_titles(dataset: object, indices: Sequence[int], width: int = 28) -> list[str]:
    """Short titles of dataset items: a caption, a class name, ``class / 'word'`` for typographic sets, or a question."""
    titles = []
    for i in indices:
        if hasattr(dataset, "image_to_texts"):  # captioned images
            t = dataset.captions[dataset.image_to_texts[i][0]]
        elif hasattr(dataset, "references") and hasattr(dataset, "objects"):  # caption sets: reference or objects
            t = dataset.references[i][0] if dataset.references[i] else ", ".join(dataset.objects[i]) or "(no object)"
        elif hasattr(dataset, "attack_words"):  # typographic
            t = f"{dataset.true_classnames[i]} / '{dataset.attack_words[i]}'"
        elif hasattr(dataset, "prompts"):  # segmentation
            t = str(dataset.prompts[i])
        elif hasattr(dataset, "questions"):
            t = str(dataset.questions[i])
        elif hasattr(dataset, "labels") and hasattr(dataset, "classnames"):
            t = str(dataset.classnames[int(dataset.labels[i])])
        else:
            t = str(i)
        titles.append(t if len(t) <= width else t[: width - 1] + "…")
    return titles


def dataset_gallery(dataset: object, n: int = 6, size: int = 64, ncols: int = 6, cache_dir: str | Path | None = None
                    ) -> plt.Figure:
    """The first ``n`` images of a dataset with their captions / labels, titled with the dataset's name."""
    k = min(n, len(dataset))  # type: ignore[arg-type]
    x = dataset.load_images(size, cache_dir=cache_dir, progress=False)[:k]  # type: ignore[attr-defined]
    fig = image_grid(x, item_titles(dataset, range(k), width=22), ncols=min(ncols, k), size=1.4)
    fig.suptitle(f"{getattr(dataset, 'name', '')} ({len(dataset)} images)", y=1.02, fontsize=10)  # type: ignore[arg-type]
    return fig
