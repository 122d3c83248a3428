"""What every report section is built from: :class:`Section`, the number format with intervals
(:func:`shown`), and the paired model comparisons (:func:`comparisons`, :func:`mark_significant`,
:func:`comparison_section`) that mark a model significantly different from the reference.

The study sections (:mod:`vlmkit.report.studies`) and the newer axes' sections (:mod:`vlmkit.report.axes`,
:mod:`vlmkit.report.semantics`) build on these.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from vlmkit.errors import InputError


@dataclass
class Section:
    """One study section of the report.

    Attributes:
        key: Short id (``frequency``, ``corruptions``, ``natural``, ``instability``).
        title: Heading.
        text: Two sentences on what is measured and how to read it.
        table: The headline table.
        draw: Draws the headline figure (called when the figure is wanted, so that finding the sections
            draws nothing).
    """

    key: str
    title: str
    text: str
    table: pd.DataFrame
    draw: Callable[[], plt.Figure]

    @property
    def figure(self) -> plt.Figure:
        """The headline figure, drawn once on first access."""
        if not hasattr(self, "_figure"):
            self._figure = self.draw()
        return self._figure


def shown(d: pd.DataFrame, digits: int = 3) -> pd.Series:
    """Each row's value as text with its interval and a mark when it differs significantly from the
    reference model (``0.750 [0.55, 0.90] *``; see :func:`comparisons`)."""
    out = d["value"].map(lambda v: f"{v:.{digits}f}")
    if "ci_low" in d:
        ok = d["ci_low"].notna() & d["ci_high"].notna()
        out = out.where(~ok, out + " [" + d["ci_low"].map(lambda v: f"{v:.2f}") + ", "
                        + d["ci_high"].map(lambda v: f"{v:.2f}") + "]")
    if "significant" in d:
        out = out.where(~d["significant"].fillna(False).astype(bool), out + " *")
    return out


#: Metrics the report compares between models (paired, on the same items).
COMPARED = ("i2t_R@1", "t2i_R@1", "i2t_R@5", "t2i_R@5", "top1", "attack_word_rate", "IFR", "IV", "drift_mean",
            "iou_mean", "accuracy")


def _has_outcomes(df: pd.DataFrame) -> pd.Series:
    if "outcomes" not in df:
        return pd.Series(False, index=df.index)
    return df["outcomes"].map(lambda o: o is not None and not isinstance(o, float) and len(o) > 0)


def comparisons(df: pd.DataFrame, reference: str | None = None, metrics: tuple[str, ...] = COMPARED,
                ci: float = 0.95, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Every model against the reference model on the same images, per dataset × cell × metric: the paired
    difference with its bootstrap interval, exact McNemar (0/1 outcomes) or paired-bootstrap p-values,
    Holm-corrected across all the comparisons of the table (:func:`vlmkit.stats.compare`).

    Args:
        df: Engine rows with per-item ``outcomes``.
        reference: The reference model (default: per dataset, the first model in sorted order).
        metrics: Metrics compared.
        ci, n_boot, seed: As :func:`vlmkit.stats.compare`.

    Returns:
        The comparisons (``a`` the reference, ``b`` the other model), with ``p_adjusted`` and
        ``significant`` over the whole table; empty when nothing can be paired.
    """
    from vlmkit.stats import compare, holm

    d = df[_has_outcomes(df) & df["metric"].isin(metrics)]
    by = ["dataset", "label", "metric"] + (["seed"] if "seed" in d and d["seed"].nunique() > 1 else [])
    # one row per model and cell: notebooks of a run that evaluate the same set (the clean cell of 02, 03 and
    # 04) store the same outcomes more than once
    d = d.drop_duplicates(subset=["model", *by], keep="first")
    parts = []
    for ds, g in d.groupby("dataset"):
        models = sorted(g["model"].unique())
        ref = reference if reference in models else models[0]
        for other in (m for m in models if m != ref):
            pair = g[g["model"].isin([ref, other])]
            for metric in sorted(set(pair["metric"])):
                both = pair[pair["metric"] == metric]
                if both["model"].nunique() < 2:
                    continue
                try:
                    parts.append(compare(both, a=ref, b=other, metric=metric, by=by, ci=ci, n_boot=n_boot,
                                         seed=seed, correction=None))
                except InputError:  # no common cell, or unequal item sets: nothing to pair
                    continue
    if not parts:
        return pd.DataFrame()
    out = pd.concat(parts, ignore_index=True)
    out["p_adjusted"] = holm(out["p_value"].to_numpy(dtype=float))
    out["significant"] = out["p_adjusted"] < 1 - ci
    return out.sort_values(["p_adjusted", "dataset", "metric"], kind="stable").reset_index(drop=True)


def mark_significant(df: pd.DataFrame, comp: pd.DataFrame) -> pd.DataFrame:
    """``df`` with a ``significant`` column: the row's model differs from the reference after correction."""
    if comp.empty:
        return df.assign(significant=False)
    keys = ["dataset", "label", "metric"]
    sig = comp[comp["significant"]].rename(columns={"b": "model"})[[*keys, "model"]].assign(significant=True)
    sig = sig.drop_duplicates([*keys, "model"])
    cols = [c for c in df.columns if c != "significant"]
    out = df[cols].merge(sig, on=[*keys, "model"], how="left") if "label" in df else df.assign(significant=False)
    out["significant"] = out["significant"].fillna(False).astype(bool)
    out.index = df.index
    return out


def comparison_section(comp: pd.DataFrame, top: int = 20) -> Section | None:
    """The paired comparisons against the reference model: a forest plot of the largest differences and the
    table of every comparison (see :func:`comparisons`)."""
    if comp.empty:
        return None
    cols = [c for c in ("dataset", "label", "metric", "a", "b", "value_a", "value_b", "diff", "ci_low", "ci_high",
                        "p_adjusted", "significant", "test", "n") if c in comp]
    table = comp[cols].round(4)
    shown_rows = comp.reindex(comp["diff"].abs().sort_values(ascending=False).index).head(top)

    def draw() -> plt.Figure:
        fig, ax = plt.subplots(figsize=(7.5, 0.28 * len(shown_rows) + 1.4))
        y = np.arange(len(shown_rows))[::-1]
        for yi, r in zip(y, shown_rows.itertuples()):
            color = "C3" if r.significant else "0.55"
            ax.plot([r.ci_low, r.ci_high], [yi, yi], color=color, lw=1.2)
            ax.plot([r.diff], [yi], "o", color=color, ms=3.5)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(y, [f"{r.a} − {r.b} | {r.dataset} | {r.label} | {r.metric}" for r in shown_rows.itertuples()],
                      fontsize=6.5)
        ax.set_xlabel("difference (reference − model), 95% interval; red: significant after Holm", fontsize=8)
        fig.tight_layout()
        return fig

    n_sig = int(comp["significant"].sum())
    text = (f"Each model against the reference model ({', '.join(sorted(comp['a'].unique()))}) on the same images, "
            f"per dataset, cell and metric: the paired difference with its bootstrap interval and the p-value of "
            f"exact McNemar (0/1 outcomes) or the paired bootstrap, Holm-corrected across all {len(comp)} "
            f"comparisons; {n_sig} are significant. The figure shows the {min(top, len(comp))} largest differences.")
    return Section("comparisons", "Model comparisons (paired, Holm-corrected)", text, table, draw)


__all__ = ["COMPARED", "Section", "comparison_section", "comparisons", "mark_significant", "shown"]
