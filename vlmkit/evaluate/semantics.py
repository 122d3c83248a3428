"""The semantic-misalignment study's grid and its question: does perception predict semantics?

* :func:`mask_cells` — perception-realistic corruption cells laid out in *perception-metric* units: for
  each mask corruption and each target mIoU drop, the severity :func:`vlmkit.evaluate.calibrate.calibrate`
  finds on the dataset's own label maps, as a ``mask_corruption`` perturbation cell (rendered into the image
  the VLM sees).
* :func:`perception_semantics` — across the cells of a captioning grid, the rank correlation (Spearman's ρ,
  Kendall's τ, bootstrap intervals over cells) between the perception drop the cell cost (1 − mIoU, or the
  pixel metric PSNR) and each semantic failure (CHAIR-i, omission, safety omission, safety flips, caption
  drift), per model (Cheng, "Semantic Misalignment in Vision-Language Models under Perceptual
  Degradation": conventional perception metrics predict the language failures poorly).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from vlmkit.errors import InputError
from vlmkit.evaluate.cells import Cell
from vlmkit.stats.correlation import rank_correlation

#: Semantic failures related to perception by :func:`perception_semantics` (higher = worse).
SEMANTIC = ("chair_i", "chair_s", "omission_rate", "safety_omission_rate", "safety_flip_rate", "caption_drift_mean")
#: Perception measures of a cell: the mIoU drop its corrupted masks cost, and the images' PSNR drop.
PERCEPTION = ("miou_drop", "psnr_drop")


def mask_cells(dataset: Any, corruptions: Sequence[str] = ("erode", "drop_small", "confuse"),
               drops: Sequence[float] = (0.05, 0.1, 0.2), *, render: str = "inpaint_dropped", seed: int = 0,
               size: int = 64, tol: float = 0.01) -> list[Cell]:
    """Calibrated ``mask_corruption`` cells: one per corruption × reachable target mIoU drop.

    Args:
        dataset: A set with label maps (:class:`vlmkit.tasks.caption_data.CaptionSet`, ``load_masks``).
        corruptions: Registered mask corruptions.
        drops: Target mIoU drops (against the clean maps), e.g. ``[0.05, 0.1, 0.2]``.
        render: How the corrupted perception reaches the VLM (``overlay``, ``blur_dropped``, ``inpaint_dropped``).
        seed: Seeds stochastic corruptions during calibration.
        size: The decode size the grid measures at (the maps are resized like the images).
        tol: Calibration tolerance on the drop.

    Returns:
        Cells whose ``severity`` is the calibrated one and whose params record ``corruption``, ``render`` and the
        target ``miou_drop``; a target a corruption cannot reach is left out (a warning says which).

    Raises:
        InputError: The dataset has no label maps.
    """
    import warnings

    from vlmkit.evaluate.calibrate import calibrate

    masks = dataset.load_masks(size) if hasattr(dataset, "load_masks") else None
    if masks is None:
        raise InputError(f"mask_cells: dataset {getattr(dataset, 'name', '')!r} has no label maps")
    cells = []
    for c in corruptions:
        for d in drops:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    cal = calibrate(c, float(d), masks, seed=seed, tol=tol)
            except InputError as e:
                warnings.warn(f"mask_cells: {c} cannot reach an mIoU drop of {d}: {e}", stacklevel=2)
                continue
            cells.append(Cell("perturbation", "mask_corruption", round(float(cal.severity), 6),
                              {"corruption": c, "render": render, "miou_drop": float(d)}))
    return cells


def cell_measures(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, dataset, cell) of a captioning grid: the perception measures and the semantic
    failures (columns), from the tidy rows."""
    cap = rows[(rows.get("task", pd.Series("", index=rows.index)) == "captioning")]
    if cap.empty:
        return pd.DataFrame()
    wide = cap.pivot_table(index=["model", "dataset", "label"], columns="metric", values="value", aggfunc="first")
    wide["miou_drop"] = 1 - wide["miou_mean"] if "miou_mean" in wide else float("nan")
    if "psnr_mean" in wide:  # 1 / PSNR: 0 for the clean images (infinite PSNR), higher = more degraded
        wide["psnr_drop"] = (1 / wide["psnr_mean"].clip(lower=1e-6)).fillna(0.0)
    return wide.reset_index()


def perception_semantics(rows: pd.DataFrame, *, methods: Sequence[str] = ("spearman", "kendall"),
                         n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Rank correlation between each perception measure and each semantic failure across cells, per model.

    Returns:
        One row per (model, dataset, perception, semantic, method): ``value, ci_low, ci_high, p_value, n``
        (cells, the clean cell included as the zero point).
    """
    wide = cell_measures(rows)
    out = []
    for (model, ds), g in wide.groupby(["model", "dataset"]):
        for p in PERCEPTION:
            if p not in g:
                continue
            for s in SEMANTIC:
                if s not in g:
                    continue
                ok = g[[p, s]].dropna()
                for m in methods:
                    r = rank_correlation(ok[p].values, ok[s].values, method=m, n_boot=n_boot, seed=seed)
                    out.append({"model": model, "dataset": ds, "perception": p, "semantic": s, "method": m,
                                "value": r.value, "ci_low": r.low, "ci_high": r.high, "p_value": r.p_value, "n": r.n})
    return pd.DataFrame(out)


def captions_of(rows: pd.DataFrame, model: str, dataset: str, label: str) -> list[str]:
    """The captions a captioning cell stored with its rows (dataset order).

    Raises:
        InputError: No such cell, or its rows hold no captions.
    """
    import json

    sel = rows[(rows.model == model) & (rows.dataset == dataset) & (rows.label == label)]
    if sel.empty or "captions" not in sel or not isinstance(sel["captions"].iloc[0], str):
        raise InputError(f"no captions stored for {model!r} on {dataset!r} at {label!r}")
    return list(json.loads(sel["captions"].iloc[0]))


__all__ = ["PERCEPTION", "SEMANTIC", "captions_of", "cell_measures", "mask_cells", "perception_semantics"]
