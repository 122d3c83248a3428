"""The report's study sections: each study found in a results table, with its headline table and figure.

The kit was built from four studies; each section reads the tidy rows of the engine (any grid, any
models, any datasets), keeps the rows that study measures, and returns a :class:`Section` (title,
two sentences on how to read it, headline table, figure), or ``None`` when the table holds none of
its rows:

* :func:`frequency_section` — frequency-domain adversarial noise vs retrieval: R@1/R@5 against ε per
  band, for band-limited noise and frequency-constrained PGD (Ilyas/Yin et al.'s Fourier view);
* :func:`corruption_section` — ImageNet-C corruptions and feature-level attacks vs retrieval:
  relative robustness (corrupted / clean R@1, Hendrycks & Dietterich 2019), calibration (ECE) and
  the MSP AUROC of clean vs corrupted (Hendrycks & Gimpel 2017);
* :func:`natural_section` — natural adversarial examples: zero-shot accuracy clean, under synthetic
  typographic attacks (semantic / random / empty label), on SCAM-style sets (accuracy and
  attack-word rate, Westerhoff et al. 2025), hard sets, segmentation and VQA;
* :func:`instability_section` — hidden instability (Wani et al. 2026): drift vs control drift per
  family, IFR/IV with the union row "Any", drift where the answer did not change, Dirichlet energy.

``study_sections(df)`` returns those present, in that order, then the newer axes' sections
(:mod:`vlmkit.report.axes`) and the model comparisons (:mod:`vlmkit.report.section`).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from vlmkit.evaluate.cells import eps_text
from vlmkit.registry import PERTURBATIONS
from vlmkit.report.axes import AXIS_SECTIONS
from vlmkit.report.figures import radar
from vlmkit.report.section import Section, comparison_section, comparisons, mark_significant, shown

RETRIEVAL_METRICS = ("i2t_R@1", "t2i_R@1", "i2t_R@5", "t2i_R@5")
#: Feature-level attacks (embedding-drift objective, the FARE threat model) shown beside the corruptions.
FEATURE_ATTACKS = ("feature_pgd",)
#: Perturbation families of the hidden-instability study's union row ("all" in the engine's rows).
ANY = "Any"


def _col(df: pd.DataFrame, name: str, default: object = None) -> pd.Series:
    return df[name] if name in df else pd.Series(default, index=df.index)


def _params(df: pd.DataFrame) -> pd.DataFrame:
    """The rows' ``params`` JSON as columns (``band``, ``eps``, ``mode`` ...)."""
    recs = [json.loads(p) if isinstance(p, str) and p else {} for p in _col(df, "params", "{}")]
    return pd.DataFrame(recs, index=df.index)


def frequency_section(df: pd.DataFrame) -> Section | None:
    """Retrieval R@1/R@5 against ε per frequency band, band-limited noise and frequency-constrained PGD."""
    d = df[(_col(df, "task") == "retrieval") & df["perturbation"].isin(["band_noise", "freq_pgd"])
           & df["metric"].isin(RETRIEVAL_METRICS)].copy()
    if d.empty:
        return None
    p = _params(d)
    d["band"] = _col(p, "band", "high").fillna("high").astype(str)
    d["eps"] = pd.to_numeric(_col(p, "eps"), errors="coerce")
    d = d[d["eps"].notna()]
    if d.empty:
        return None
    d["method"] = d["perturbation"].map({"band_noise": "noise", "freq_pgd": "PGD"})
    clean = df[(_col(df, "task") == "retrieval") & (_col(df, "kind") == "clean") & df["metric"].isin(RETRIEVAL_METRICS)]
    table = d.assign(shown=shown(d)).pivot_table(index=["model", "dataset", "method", "band", "metric"],
                                                 columns="eps", values="shown", aggfunc="first")
    table.columns = [f"ε={eps_text(float(c))}" for c in table.columns]
    c = clean.assign(shown=shown(clean)).groupby(["model", "dataset", "metric"])["shown"].first()
    table.insert(0, "clean", [c.get((m, ds, met), "–") for m, ds, _, _, met in table.index])
    metrics = [m for m in ("i2t_R@1", "t2i_R@1") if m in set(d["metric"])]
    methods = sorted(d["method"].unique())

    def draw() -> plt.Figure:
        fig, axes = plt.subplots(len(methods), len(metrics), figsize=(4.2 * len(metrics), 2.8 * len(methods)),
                                 squeeze=False, sharey=True)
        styles = {"low": "-", "mid": "--", "high": ":"}
        for i, meth in enumerate(methods):
            for j, met in enumerate(metrics):
                ax = axes[i, j]
                g = d[(d["method"] == meth) & (d["metric"] == met)]
                for (model, band), h in g.groupby(["model", "band"]):
                    cols = [c for c in ("value", "ci_low", "ci_high") if c in h]
                    h = h.groupby("eps")[cols].mean()
                    c0 = clean[(clean["model"] == model) & (clean["metric"] == met)]
                    if len(c0):  # the clean value at ε = 0
                        h = pd.concat([c0[cols].mean().to_frame(0.0).T, h])
                    color = f"C{sorted(d['model'].unique()).index(model)}"
                    ax.plot(h.index * 255, h["value"], marker="o", ms=3, ls=styles.get(band, "-"), color=color,
                            label=f"{model} {band}")
                    if "ci_low" in h:  # the interval of each point
                        ax.fill_between(h.index * 255, h["ci_low"], h["ci_high"], color=color, alpha=0.08)
                ax.set_title(f"{meth}: {met}", fontsize=9)
                ax.set_xlabel("ε (/255)")
                ax.grid(alpha=0.3)
        axes[0, 0].set_ylabel("recall")
        axes[0, -1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1))
        fig.tight_layout()
        return fig

    text = ("Retrieval recall of each model as the L∞ budget ε of band-limited noise and of frequency-constrained "
            "PGD (retrieval objective) grows, per frequency band. A model whose PGD curve falls fastest in one band "
            "relies on that band; noise curves that stay flat while PGD curves fall show the loss is adversarial, "
            "not a matter of energy. Each number shows its 95% interval; * marks a significant difference from the "
            "reference model on the same images (Holm-corrected).")
    return Section("frequency", "Frequency-domain adversarial noise vs retrieval", text, table, draw)


def _corruption_names() -> list[str]:
    return PERTURBATIONS.list(reference="imagecorruptions")


def corruption_section(df: pd.DataFrame) -> Section | None:
    """Relative robustness to ImageNet-C corruptions on retrieval, feature attacks, calibration and OOD."""
    names = _corruption_names()
    ret = df[_col(df, "task") == "retrieval"]
    d = ret[ret["perturbation"].isin(names) & (ret["metric"] == "i2t_R@1")]
    if d.empty:
        return None
    clean = ret[(_col(ret, "kind") == "clean") & (ret["metric"] == "i2t_R@1")].groupby(["model", "dataset"])["value"].mean()
    rows = []
    for (model, ds), g in d.groupby(["model", "dataset"]):
        c = clean.get((model, ds), np.nan)
        row = {"model": model, "dataset": ds, "clean R@1": c, "corrupted R@1": g["value"].mean(),
               "relative": g["value"].mean() / c if c else np.nan}
        for fam, h in g.groupby("family" if "family" in g else "perturbation"):
            row[f"rel. {fam}"] = h["value"].mean() / c if c else np.nan
        att = ret[(ret["model"] == model) & (ret["dataset"] == ds) & (_col(ret, "kind") == "attack")
                  & ret["perturbation"].isin(FEATURE_ATTACKS) & (ret["metric"] == "i2t_R@1")]
        for label, h in att.groupby("label" if "label" in att else "perturbation"):
            row[f"R@1 {label}"] = h["value"].mean()
        rows.append(row)
    zs = df[(_col(df, "task") == "zeroshot") & (_col(df, "kind").isin(["clean", "perturbation"]))]
    zs = zs[(zs["perturbation"].isin(names)) | (_col(zs, "kind") == "clean")]
    calib = []
    for (model, ds), g in zs.groupby(["model", "dataset"]):
        ece = g[g["metric"] == "ece"]
        pert = ece[_col(ece, "kind") == "perturbation"]
        if pert.empty:
            continue
        calib.append({"model": model, "dataset": ds, "ECE clean": ece[_col(ece, "kind") == "clean"]["value"].mean(),
                      "ECE corrupted": pert["value"].mean(),
                      "OOD AUROC (MSP)": g[g["metric"] == "ood_auroc"]["value"].mean()})
    table = pd.DataFrame(rows).set_index(["model", "dataset"])
    if calib:
        cal = pd.DataFrame(calib).set_index(["model", "dataset"])
        table = pd.concat([table, cal], axis=1)
    rel = d.groupby(["model", "dataset", "perturbation"])["value"].mean().reset_index()
    rel["relative"] = [v / clean.get((m, ds), np.nan) for m, ds, v in zip(rel["model"], rel["dataset"], rel["value"])]
    mat = rel.pivot_table(index=["model", "dataset"], columns="perturbation", values="relative")
    sev = d.groupby(["model", "dataset", "severity"])["value"].mean().reset_index()

    def draw() -> plt.Figure:
        fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 0.45 * len(mat) + 2.6), gridspec_kw={"width_ratios": [3, 1]})
        import seaborn as sns

        sns.heatmap(mat, ax=ax0, cmap="rocket", vmin=0, vmax=max(1.0, float(np.nanmax(mat.values))), cbar_kws={"shrink": 0.8},
                    yticklabels=[f"{m} | {ds}" for m, ds in mat.index])
        ax0.set_title("relative robustness (corrupted / clean i2t R@1)", fontsize=9)
        ax0.set_xlabel("")
        ax0.set_ylabel("")
        ax0.tick_params(labelsize=7)
        for (model, ds), g in sev.groupby(["model", "dataset"]):
            c = clean.get((model, ds), np.nan)
            ax1.plot([0, *g["severity"]], [c, *g["value"]], marker="o", ms=3, label=f"{model} | {ds}")
        ax1.set_xlabel("severity (0 = clean)")
        ax1.set_ylabel("mean i2t R@1")
        ax1.grid(alpha=0.3)
        ax1.legend(fontsize=6)
        fig.tight_layout()
        return fig

    text = ("Relative robustness is the mean i2t R@1 over the corruptions and severities divided by the clean R@1 "
            "(1 = unaffected); columns per family and per feature-level attack follow, and for classification sets "
            "the calibration error clean vs corrupted and how well the model's confidence tells corrupted from clean "
            "images (AUROC 0.5 = not at all).")
    return Section("corruptions", "Corruptions and feature-level attacks vs retrieval", text, table.round(3), draw)


#: Typographic perturbation modes of the synthetic attack (vlmkit.perturb.typographic).
TYPO_MODES = ("semantic", "random", "empty")


def natural_scores(df: pd.DataFrame, column: str = "value") -> pd.DataFrame:
    """Per model, the natural-adversarial scores present in ``df`` (columns; rows: models).

    Zero-shot accuracy clean (per classification set), under the synthetic typographic attack per mode,
    on typographic sets (accuracy, and ``1 − attack-word rate`` so that higher is better on every axis),
    segmentation IoU, VQA accuracy, and ``1 − ASR`` of the language-induced search (Hu et al.'s
    language-guided natural adversarial examples: the best feasible prompt's attack success at the last
    generation, mean over the searched classes).

    ``column="ci_low"`` / ``"ci_high"`` gives the lower / upper ends of the axes' intervals instead (for
    ``1 − rate`` axes the other end of the rate's interval; NaN where a score has none).
    """
    flip = {"value": "value", "ci_low": "ci_high", "ci_high": "ci_low"}[column]  # 1 − x swaps the ends

    def val(rows: pd.DataFrame, col: str = column) -> float:
        return float(rows[col].mean()) if col in rows else float("nan")

    out: dict[tuple[str, str], float] = {}
    task, kind = _col(df, "task"), _col(df, "kind")
    zs = df[task == "zeroshot"]
    typo_sets = set(zs[zs["metric"] == "attack_word_rate"]["dataset"])
    for (model, ds), g in zs.groupby(["model", "dataset"]):
        clean = g[_col(g, "kind") == "clean"]
        top1 = clean[clean["metric"] == "top1"]
        if not top1.empty:
            out[(model, f"{ds} top-1")] = val(top1)
        if ds in typo_sets:
            awr = clean[clean["metric"] == "attack_word_rate"]
            if not awr.empty:
                out[(model, f"{ds} 1−AWR")] = 1 - val(awr, flip)
            continue
        typo = g[(g["perturbation"] == "typographic") & (g["metric"] == "top1")]
        if not typo.empty:
            modes = _col(_params(typo), "mode", "auto").fillna("auto")
            for mode, h in typo.groupby(modes.values):
                out[(model, f"{ds} typo-{mode}")] = val(h)
    seg = df[(task == "segmentation") & (kind == "clean") & (df["metric"] == "iou_mean")]
    for (model, ds), g in seg.groupby(["model", "dataset"]):
        out[(model, f"{ds} IoU")] = val(g)
    vqa = df[(task == "answer_scoring") & (kind == "clean") & (df["metric"] == "accuracy")]
    for (model, ds), g in vqa.groupby(["model", "dataset"]):
        out[(model, f"{ds} VQA acc")] = val(g)
    lang = df[(df["perturbation"] == "language_search") & (df["metric"] == "asr_best_feasible")]
    if not lang.empty:  # the searched prompts' success at the last generation, mean over the searched classes
        gen = pd.to_numeric(_col(lang, "severity"), errors="coerce")
        last = lang[gen == gen.groupby(lang["model"]).transform("max")]
        for model, g in last.groupby("model"):
            out[(model, "language search 1−ASR")] = (1 - float(g["value"].fillna(0).mean()) if column == "value"
                                                      else float("nan"))  # a search's best prompt: no interval
    if not out:
        return pd.DataFrame()
    s = pd.Series(out)
    s.index = pd.MultiIndex.from_tuples(s.index, names=["model", "axis"])
    return s.unstack("axis")


def natural_section(df: pd.DataFrame) -> Section | None:
    """Radar per model over the natural-adversarial scores (see :func:`natural_scores`)."""
    if df.empty or "metric" not in df:
        return None
    zs = df[_col(df, "task") == "zeroshot"]
    has_typo = (zs["metric"] == "attack_word_rate").any() or (zs["perturbation"] == "typographic").any()
    if not has_typo:
        return None
    scores = natural_scores(df)
    if scores.empty:
        return None
    full = scores.dropna(axis=1)
    low, high = natural_scores(df, "ci_low"), natural_scores(df, "ci_high")

    def draw() -> plt.Figure:
        if full.shape[1] >= 3:
            fig = radar(full.clip(0, 1), title="natural adversarial examples (higher = more robust)",
                        low=low.reindex_like(full), high=high.reindex_like(full))
        else:
            fig, ax = plt.subplots(figsize=(6, 0.4 * scores.shape[1] + 1.5))
            scores.T.plot.barh(ax=ax)
            ax.set_xlim(0, 1)
            ax.set_title("natural adversarial examples (higher = more robust)", fontsize=9)
            fig.tight_layout()
        return fig

    text = ("Each axis is a score in [0, 1] where higher is better: zero-shot top-1 on clean and typographic sets, "
            "under a word written onto the image (semantic = a wrong class name, random = a random word, empty = a "
            "blank label, the control), 1 − the share of predictions moved to the written word (AWR), segmentation "
            "IoU, VQA accuracy and 1 − the success of prompts searched to fool the model while meaning the true class. A gap between the semantic and empty axes is the typographic attack's effect; "
            "models evaluated on different sets share only the axes they have in common in the radar; whiskers and "
            "brackets are 95% intervals.")
    shown_table = scores.T.round(3).astype(object)
    for c in shown_table.columns:
        for a in shown_table.index:
            v, lo, hi = scores.at[c, a], low.at[c, a] if a in low else np.nan, high.at[c, a] if a in high else np.nan
            shown_table.at[a, c] = ("–" if pd.isna(v) else f"{v:.3f}" + (f" [{lo:.2f}, {hi:.2f}]" if pd.notna(lo) else ""))
    return Section("natural", "Natural adversarial examples", text, shown_table, draw)


def instability_section(df: pd.DataFrame) -> Section | None:
    """Drift vs control drift, IFR/IV per family with the union row, drift of unflipped answers, Dirichlet energy."""
    kind = _col(df, "kind")
    fam = df[kind == "family"]
    if fam.empty:
        return None
    flips = fam[fam["metric"].isin(["IFR", "IV"])].copy()
    flips["family"] = _col(flips, "family").replace({"all": ANY})
    table = flips.assign(shown=shown(flips)).pivot_table(index=["model", "dataset", "family"], columns="metric",
                                                         values="shown", aggfunc="first")
    pert = df[kind.isin(["perturbation", "attack"])].copy()
    dm = ["drift_mean", "control_drift_mean", "drift_ratio", "drift_kept_mean", "prior_shift_mean"]
    per = pert[pert["metric"].isin(dm)]
    if not per.empty:  # drift metrics of each flip group: a perturbation, a registry family, or every cell
        agg = []
        for m, ds, group in table.index:
            g = per[(per["model"] == m) & (per["dataset"] == ds)]
            if group != ANY:
                g = g[(g["perturbation"] == group) if (g["perturbation"] == group).any() else (_col(g, "family") == group)]
            agg.append(g.groupby("metric")["value"].mean().rename((m, ds, group)))
        table = table.join(pd.DataFrame(agg).reindex(table.index), how="left")
    table = table[[c for c in ["IFR", "IV", *dm] if c in table.columns]]
    dir_rows = df[df["metric"].astype(str).str.startswith("dirichlet_L")].copy()
    ncols = 2 if not dir_rows.empty else 1

    def draw() -> plt.Figure:
        fig, axes = plt.subplots(1, ncols, figsize=(5.2 * ncols, 3.2), squeeze=False)
        ax = axes[0, 0]
        d = per[per["metric"].isin(["drift_mean", "control_drift_mean"])]
        if not d.empty:
            m = d.pivot_table(index=["perturbation"], columns=["model", "metric"], values="value", aggfunc="mean")
            x = np.arange(len(m.index))
            models = sorted({c[0] for c in m.columns})
            w = 0.8 / max(1, len(models))
            for i, model in enumerate(models):
                if (model, "drift_mean") in m:
                    ax.bar(x + i * w, m[(model, "drift_mean")], w, color=f"C{i}", label=f"{model} drift")
                if (model, "control_drift_mean") in m:
                    ax.plot(x + i * w, m[(model, "control_drift_mean")], "k_", ms=12, mew=2,
                            label="control drift" if i == 0 else None)
            ax.set_xticks(x + w * (len(models) - 1) / 2, m.index, rotation=30, fontsize=7)
            ax.set_ylabel("1 − cos (mean)")
            ax.set_title("drift per perturbation vs control drift (other images)", fontsize=9)
            ax.legend(fontsize=6)
        if not dir_rows.empty:
            dir_rows["layer"] = dir_rows["metric"].str.removeprefix("dirichlet_L").astype(int)
            dir_rows["condition"] = _col(dir_rows, "kind").where(_col(dir_rows, "kind") == "clean", "perturbed")
            ax = axes[0, 1]
            for (model, cond), g in dir_rows.groupby(["model", "condition"]):
                g = g.groupby("layer")["value"].mean()
                ax.plot(g.index, g.values, marker="o", ms=3, ls="-" if cond == "clean" else "--", label=f"{model} {cond}")
            ax.set_xlabel("layer")
            ax.set_ylabel("Dirichlet energy")
            ax.set_title("Dirichlet energy of the vision tokens", fontsize=9)
            ax.legend(fontsize=6)
        fig.tight_layout()
        return fig

    text = ("Drift is the cosine distance between an image's clean and perturbed embeddings; control drift is the "
            "distance between two different clean images, so drift near the control means the perturbation moved the "
            "embedding as far as a different image would. IFR is the share of images whose answer flipped under a "
            "cell, IV the share that flipped under any cell of the family ('Any': any cell at all); drift_kept is the "
            "drift of images whose answer did not change — the instability that accuracy does not show.")
    return Section("instability", "Hidden instability: drift, flips and Dirichlet energy", text, table.round(3), draw)


SECTIONS: tuple[Callable[[pd.DataFrame], Section | None], ...] = (
    frequency_section, corruption_section, natural_section, instability_section)


def study_sections(df: pd.DataFrame, reference: str | None = None, comparisons_table: pd.DataFrame | None = None
                   ) -> list[Section]:
    """Every study section whose rows are in ``df``, in the order of :data:`SECTIONS`, then the model
    comparisons; numbers carry their intervals and a mark where a model differs significantly from
    ``reference`` (default: the first model of each dataset in sorted order)."""
    if df.empty or "metric" not in df:
        return []
    # numbers as floats: a table concatenated with an empty one (a role without datasets) holds objects
    df = df.assign(**{c: pd.to_numeric(df[c], errors="coerce") for c in ("value", "ci_low", "ci_high") if c in df})
    comp = comparisons(df, reference) if comparisons_table is None else comparisons_table
    marked = mark_significant(df, comp)
    found = [s for s in (f(marked) for f in (*SECTIONS, *AXIS_SECTIONS)) if s is not None]
    last = comparison_section(comp)
    return found + ([last] if last is not None else [])


__all__ = ["ANY", "SECTIONS", "corruption_section", "frequency_section", "instability_section", "natural_scores",
           "natural_section", "study_sections"]
