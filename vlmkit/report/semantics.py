"""Report section of the semantic-misalignment study: captions under perceptual degradation.

:func:`semantics_section` reads a captioning grid's tidy rows (``task="captioning"``): per model and cell,
hallucination (CHAIR-i/s), omission (all objects and the safety-critical ones), safety-judgment flips and
caption drift next to the perception cost of the cell (mIoU of the corrupted masks, PSNR), and the rank
correlations of :func:`vlmkit.evaluate.semantics.perception_semantics` with a scatter per model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import pandas as pd

from vlmkit.evaluate.semantics import cell_measures, perception_semantics
from vlmkit.report.section import Section, shown

if TYPE_CHECKING:
    import torch

    from vlmkit.evaluate.cells import Cell

#: The headline columns, in order.
HEADLINE = ("miou_mean", "psnr_mean", "chair_i", "chair_s", "recall", "omission_rate", "safety_omission_rate",
            "safety_flip_rate", "caption_drift_mean", "caption_control_drift_mean")


def semantics_section(df: pd.DataFrame, n_boot: int = 500) -> Section | None:
    """Perception cost vs language failures of a captioning grid (see the module docstring)."""
    task = df["task"] if "task" in df else pd.Series("", index=df.index)
    cap = df[task == "captioning"]
    if cap.empty:
        return None
    keep = cap[cap["metric"].isin(HEADLINE)]
    table = keep.assign(shown=shown(keep)).pivot_table(index=["model", "dataset", "label"], columns="metric",
                                                       values="shown", aggfunc="first")
    table = table[[c for c in HEADLINE if c in table.columns]]
    corr = perception_semantics(cap, n_boot=n_boot)
    wide = cell_measures(cap)

    def draw() -> plt.Figure:
        sem = [s for s in ("chair_i", "omission_rate", "safety_flip_rate") if s in wide]
        fig, axes = plt.subplots(1, max(1, len(sem)), figsize=(3.4 * max(1, len(sem)), 3.1), squeeze=False)
        for ax, s in zip(axes[0], sem):
            for i, ((model, ds), g) in enumerate(wide.groupby(["model", "dataset"])):
                ax.scatter(g["miou_drop"], g[s], s=18, color=f"C{i}", label=f"{model} · {ds}")
                r = corr[(corr.model == model) & (corr.dataset == ds) & (corr.perception == "miou_drop")
                         & (corr.semantic == s) & (corr.method == "spearman")]
                if len(r):
                    ax.text(0.02, 0.96 - 0.08 * i, f"ρ={r.value.iloc[0]:.2f} [{r.ci_low.iloc[0]:.2f}, "
                            f"{r.ci_high.iloc[0]:.2f}]", transform=ax.transAxes, fontsize=7, color=f"C{i}", va="top")
            ax.set_xlabel("perception drop (1 − mIoU of the masks)")
            ax.set_ylabel(s)
        axes[0, -1].legend(fontsize=6, loc="lower right")
        fig.suptitle("does perception predict semantics? one point per cell", fontsize=9)
        fig.tight_layout()
        return fig

    if not corr.empty:
        c = corr[corr.perception == "miou_drop"].copy()
        c["shown"] = [f"{v:.2f} [{lo:.2f}, {hi:.2f}]" for v, lo, hi in zip(c.value, c.ci_low, c.ci_high)]
        ctab = c.pivot_table(index=["model", "dataset", "method"], columns="semantic", values="shown", aggfunc="first")
        table = pd.concat({"cells": table, "rank correlation with 1 − mIoU": ctab}, names=["part"])
    text = ("Each cell degrades what the model sees — pixels, or the perception module's masks (boundaries eroded, "
            "small objects dropped, classes confused) rendered back into the image — and each image is captioned. "
            "CHAIR-i is the share of mentioned objects that are not there, omission the share of present objects "
            "not mentioned (safety: the designated safety-critical classes), safety flips the images whose yes/no "
            "answer to a safety question changed; the correlations ask whether the perception cost predicts them.")
    return Section("semantics", "Semantic misalignment under perceptual degradation", text, table, draw)


def cell_title(cell: Cell) -> str:
    """A short title: ``erode · ΔmIoU 0.05`` for a calibrated mask-corruption cell, else the cell's label."""
    if cell.kind == "perturbation" and cell.name == "mask_corruption":
        return f"{cell.params.get('corruption')} · ΔmIoU {cell.params.get('miou_drop')}"
    return cell.label()


def caption_gallery(images: torch.Tensor, captions: list[str], titles: list[str], ncols: int = 4,
                    width: int = 34) -> plt.Figure:
    """Images ``(N, 3, H, W)`` in [0, 1] with their captions below (wrapped) and a title each."""
    import textwrap

    n = len(images)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 3.3 * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, img, cap, title in zip(axes.ravel(), images, captions, titles):
        ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
        ax.set_title(title, fontsize=7)
        ax.text(0.5, -0.03, textwrap.fill(cap, width), transform=ax.transAxes, ha="center", va="top", fontsize=6.5)
    fig.tight_layout()
    return fig


__all__ = ["HEADLINE", "caption_gallery", "cell_title", "semantics_section"]
