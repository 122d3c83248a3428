"""Report sections of the grid's newer axes, from the same tidy rows as the studies:

* :func:`text_section` — text-side perturbations (``kind="text"`` cells): retrieval / zero-shot scores and
  answer flips under perturbed captions or prompts, per perturbation and severity;
* :func:`probe_section` — invariance vs sensitivity of text embeddings (``kind="probe"`` rows of
  :func:`vlmkit.evaluate.axes.invariance_sensitivity`);
* :func:`transfer_section` — transfer matrices (attack cells with a ``source``) with the white-box diagonal;
* :func:`factor_section` — factor-by-factor error ratios (``kind="factor"`` rows of
  :func:`vlmkit.evaluate.axes.factor_rows`).
"""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from vlmkit.errors import InputError
from vlmkit.evaluate.axes import transfer_matrix
from vlmkit.report.section import Section, shown

SCORE_METRICS = ("i2t_R@1", "t2i_R@1", "top1")


def _kind(df: pd.DataFrame) -> pd.Series:
    return df["kind"] if "kind" in df else pd.Series(None, index=df.index)


def _grouped_bars(ax: plt.Axes, series: list[tuple[str, pd.DataFrame]], categories: list[str],
                  ticks: list[str] | None = None, rotation: int = 30) -> None:
    """Bars of ``value`` per category (rows of each frame, indexed by category), one colour per series, with
    ``ci_low`` / ``ci_high`` whiskers; the ticks under each group."""
    w = 0.8 / max(1, len(series))
    for i, (label, g) in enumerate(series):
        g = g.reindex(categories)
        x = np.arange(len(categories)) + i * w
        ax.bar(x, g["value"], w, color=f"C{i}", label=label)
        ax.errorbar(x, g["value"], yerr=[(g["value"] - g["ci_low"]).clip(lower=0),
                                         (g["ci_high"] - g["value"]).clip(lower=0)], fmt="none", ecolor="k", lw=0.7)
    ax.set_xticks(np.arange(len(categories)) + w * (len(series) - 1) / 2, ticks or categories, rotation=rotation,
                  fontsize=7)


def text_section(df: pd.DataFrame) -> Section | None:
    """Scores, answer flips and text drift under perturbed captions / class names / templates."""
    text = df[_kind(df) == "text"]
    if text.empty:
        return None
    keep = text[text["metric"].isin([*SCORE_METRICS, "IFR", "text_drift_mean"])]
    table = keep.assign(shown=shown(keep)).pivot_table(index=["model", "dataset", "label"], columns="metric",
                                                       values="shown", aggfunc="first")
    score = next((m for m in SCORE_METRICS if (text["metric"] == m).any()), None)
    clean = df[(_kind(df) == "clean") & (df["metric"] == score)]

    def draw() -> plt.Figure:
        d = text[text["metric"] == score]
        names = sorted(d["perturbation"].unique())
        fig, axes = plt.subplots(1, len(names), figsize=(2.6 * len(names) + 0.6, 2.8), squeeze=False, sharey=True)
        for ax, name in zip(axes[0], names):
            for i, ((model, ds), g) in enumerate(d[d["perturbation"] == name].groupby(["model", "dataset"])):
                c0 = clean[(clean["model"] == model) & (clean["dataset"] == ds)]["value"]
                g = g.sort_values("severity")
                x = [0, *g["severity"]] if len(c0) else list(g["severity"])
                y = [float(c0.iloc[0]), *g["value"]] if len(c0) else list(g["value"])
                ax.plot(x, y, marker="o", ms=3, color=f"C{i}", label=f"{model} · {ds}")
                if "ci_low" in g:
                    ax.fill_between(g["severity"], g["ci_low"], g["ci_high"], color=f"C{i}", alpha=0.15, lw=0)
            ax.set_title(name, fontsize=9)
            ax.set_xlabel("severity")
        axes[0, 0].set_ylabel(score)
        axes[0, -1].legend(fontsize=6)
        fig.tight_layout()
        return fig

    return Section("text", "Text-side perturbations: captions and prompts",
                   f"The images stay clean; the captions (retrieval) or class names / templates (zero-shot) are "
                   f"perturbed and re-encoded. {score} per text perturbation against severity (severity 0 = clean "
                   "texts), with IFR (images whose top caption or class changed) and text drift (cosine distance "
                   "of each text's embedding from its clean one).", table, draw)


def probe_section(df: pd.DataFrame) -> Section | None:
    """Invariance (meaning-preserving rewrites) vs sensitivity (meaning-changing ones), per model."""
    probe = df[_kind(df) == "probe"]
    if probe.empty:
        return None
    table = probe.assign(shown=shown(probe)).pivot_table(index=["model", "dataset"], columns="label",
                                                         values="shown", aggfunc="first")
    first = [c for c in ("invariance", "sensitivity", "ratio") if c in table.columns]
    table = table[first + [c for c in table.columns if c not in first]]

    def draw() -> plt.Figure:
        d = probe[probe["metric"] == "text_drift_mean"]
        d = d[~d["label"].isin(["invariance", "sensitivity"])]
        groups = list(d.groupby(["model", "dataset"]))
        fig, ax = plt.subplots(figsize=(max(4.5, 0.9 * d["label"].nunique() * max(1, len(groups)) / 2), 3))
        kinds = sorted(d["label"].unique(), key=lambda k: (not bool(d[d["label"] == k]["preserves_meaning"].iloc[0]), k))
        _grouped_bars(ax, [(f"{model} · {ds}", g.set_index("label")) for (model, ds), g in groups], kinds)
        ax.set_ylabel("text drift (1 − cos) from the original")
        ax.set_title("meaning-preserving (left) vs meaning-changing rewrites", fontsize=9)
        ax.legend(fontsize=6)
        fig.tight_layout()
        return fig

    return Section("probes", "Invariance vs sensitivity of the text encoder",
                   "For the same caption, a meaning-preserving rewrite (synonym, paraphrase) should move its embedding "
                   "little and a meaning-changing one (another colour, object, count, position) a lot; 'ratio' is "
                   "sensitivity / invariance with its interval (captions resampled). On the toy world the changes "
                   "come from the scene's ground truth, so each changed caption is known to be false.", table, draw)


def transfer_section(df: pd.DataFrame) -> Section | None:
    """One transfer matrix per attack and dataset (robust score of each target on each source's images)."""
    atk = df[_kind(df) == "attack"]
    if atk.empty or not atk["params"].map(lambda p: "source" in json.loads(p or "{}")).any():
        return None
    mats = []
    for ds in sorted(atk["dataset"].unique()):
        d = df[df["dataset"] == ds]
        metric = next((m for m in ("i2t_R@1", "top1", "iou_mean", "accuracy") if (d["metric"] == m).any()), "IFR")
        try:
            mats.append((ds, metric, transfer_matrix(d, metric), transfer_matrix(d, metric, with_interval=True)))
        except InputError:  # no transfer cells on this dataset, or several attacks: shown in the appendix
            continue
    if not mats:
        return None
    table = pd.concat({f"{ds} · {metric}": shown_m for ds, metric, _, shown_m in mats}, names=["dataset · metric"])

    def draw() -> plt.Figure:
        fig, axes = plt.subplots(1, len(mats), figsize=(3.8 * len(mats), 3.2), squeeze=False)
        for ax, (ds, metric, m, _) in zip(axes[0], mats):
            im = ax.imshow(m.values.astype(float), cmap="viridis", vmin=0, vmax=1)
            ax.set_xticks(range(m.shape[1]), m.columns, rotation=30, fontsize=7)
            ax.set_yticks(range(m.shape[0]), m.index, fontsize=7)
            for i in range(m.shape[0]):
                for j in range(m.shape[1]):
                    if np.isfinite(m.values[i, j]):
                        ax.text(j, i, f"{m.values[i, j]:.2f}", ha="center", va="center", fontsize=7, color="w")
            ax.set_xlabel("target (measured)")
            ax.set_ylabel("source (crafted on)")
            ax.set_title(f"{metric} · {ds}", fontsize=9)
            fig.colorbar(im, ax=ax, fraction=0.046)
        fig.tight_layout()
        return fig

    return Section("transfer", "Transfer attacks: source → target",
                   "Adversarial images crafted on each source model (or an ensemble, 'a+b') and measured on each "
                   "target: the target's score (R@1 on retrieval sets, top-1 on classification sets). The diagonal is the white-box attack (source = target); a row "
                   "whose off-diagonal cells stay high does not transfer.", table, draw)


def factor_section(df: pd.DataFrame) -> Section | None:
    """Accuracy and error ratio per factor value (one factor forced at a time where the set says so)."""
    fac = df[_kind(df) == "factor"]
    if fac.empty:
        return None
    table = fac.assign(shown=shown(fac, 2)).pivot_table(index=["model", "dataset", "family", "label"],
                                                        columns="metric", values="shown", aggfunc="first")

    def draw() -> plt.Figure:
        d = fac[fac["metric"] == "error_ratio"]
        factors = list(dict.fromkeys(d["family"]))
        fig, axes = plt.subplots(1, len(factors), figsize=(2.4 * len(factors) + 0.6, 3), squeeze=False, sharey=True)
        for ax, f in zip(axes[0], factors):
            g = d[d["family"] == f]
            labels = list(dict.fromkeys(g["label"]))
            _grouped_bars(ax, [(m, g[g["model"] == m].set_index("label")) for m in sorted(g["model"].unique())],
                          labels, [lab.split("=", 1)[1] for lab in labels], rotation=45)
            ax.axhline(1, color="k", lw=0.8, ls="--")
            ax.set_title(f, fontsize=9)
        axes[0, 0].set_ylabel("error ratio P(err | value) / P(err)")
        axes[0, -1].legend(fontsize=6)
        fig.tight_layout()
        return fig

    return Section("factors", "Factor by factor: where the errors are",
                   "Each factor forced to each of its values, the others at their training distribution (toy world), "
                   "or the user's per-image factor labels (ImageNet-X layout): accuracy and the error ratio "
                   "P(error | value) / P(error) (Idrissi et al. 2022) with bootstrap intervals; above the dashed line "
                   "the value concentrates errors, near it the model ignores the factor.", table, draw)


def attack_section(df: pd.DataFrame) -> Section | None:
    """Every attack cell with its score and its cost (forward / backward passes and seconds per image), so
    attacks — and robust models under them — are compared at equal compute."""
    atk = df[(_kind(df) == "attack") & df["metric"].isin([*SCORE_METRICS, "IFR"])]
    if atk.empty or "forward_passes" not in atk:
        return None
    cost = atk.groupby(["model", "dataset", "label"])[["forward_passes", "backward_passes", "attack_s_per_image"]].first()
    table = atk.assign(shown=shown(atk)).pivot_table(index=["model", "dataset", "label"], columns="metric",
                                                     values="shown", aggfunc="first").join(cost)
    table = table.rename(columns={"forward_passes": "fwd passes/img", "backward_passes": "bwd passes/img",
                                  "attack_s_per_image": "s/img"})

    def draw() -> plt.Figure:
        fig, ax = plt.subplots(figsize=(5.2, 3.2))
        for i, ((model, ds), g) in enumerate(atk.groupby(["model", "dataset"])):
            score = next((m for m in SCORE_METRICS if (g["metric"] == m).any()), "IFR")
            g = g[g["metric"] == score].dropna(subset=["forward_passes"])
            ax.scatter(g["forward_passes"] + g["backward_passes"], g["value"], s=16, color=f"C{i}",
                       label=f"{model} · {ds} ({score})")
        ax.set_xlabel("passes per image (forward + backward)")
        ax.set_ylabel("score under attack")
        ax.set_title("robustness against attack compute", fontsize=9)
        ax.legend(fontsize=6)
        fig.tight_layout()
        return fig

    return Section("attacks", "Attacks and their cost",
                   "Each attack cell: the score under attack (R@1 / top-1) and the answers it changed (IFR), with what "
                   "it cost per image — forward and backward passes of the model and seconds on this machine — so that "
                   "attacks and robust models are compared at equal compute.", table, draw)


def _semantics(df: pd.DataFrame) -> Section | None:
    from vlmkit.report.semantics import semantics_section

    return semantics_section(df)


#: The newer axes' sections, in report order (the semantic-misalignment study first).
AXIS_SECTIONS = (_semantics, text_section, probe_section, transfer_section, factor_section, attack_section)

__all__ = ["AXIS_SECTIONS", "attack_section", "factor_section", "probe_section", "text_section", "transfer_section"]
