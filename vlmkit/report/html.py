"""Standalone HTML report from every results table under a run or grid folder.

``build_report(folder)`` reads all ``results.parquet`` files below ``folder`` (a notebook run or a
whole grid), writes summary tables (CSV + HTML), degradation-curve figures per key metric and a
radar chart of task × scenario scores per model into ``folder/report/``, and returns the path of
``report.html``; figures are PNG files beside it, referenced by relative paths.
"""

from __future__ import annotations

import html
import time
from pathlib import Path

import pandas as pd

import vlmkit
from vlmkit.errors import DataNotFoundError
from vlmkit.report.figures import degradation_curves, radar, save
from vlmkit.results import atomic_write, merge_files, result_files

KEY_METRICS = ("i2t_R@1", "t2i_R@1", "top1", "drift_mean", "IFR", "attack_word_rate")


def collect_results(folder: str | Path) -> pd.DataFrame:
    """All results rows under ``folder``: each ``results.parquet`` once, a ``run`` column naming its folder.

    The files are those of :func:`vlmkit.results.result_files` (not under ``report/`` or ``cells/``),
    merged in path order by :func:`vlmkit.results.merge_files`.

    Args:
        folder: A notebook run folder or a whole grid folder.

    Returns:
        The rows, with ``run`` the file's folder relative to ``folder`` (``"."`` for ``folder`` itself).

    Raises:
        DataNotFoundError: ``folder`` does not exist or holds no results table.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DataNotFoundError(f"report folder {str(root)!r} does not exist")
    files = result_files(root)
    if not files:
        raise DataNotFoundError(f"no results.parquet under {str(root)!r}: run a notebook or grid first")
    return merge_files(files, with_columns=lambda f: {"run": str(f.parent.relative_to(root))})


def summary_table(df: pd.DataFrame, metrics: tuple[str, ...] = KEY_METRICS) -> pd.DataFrame:
    """Model × dataset × cell label → key metrics (mean over runs/seeds)."""
    d = df[df["metric"].isin(metrics)]
    label = "label" if "label" in d else "perturbation"
    return d.pivot_table(index=["model", "dataset", label], columns="metric", values="value", aggfunc="mean").round(4)


def radar_scores(df: pd.DataFrame) -> pd.DataFrame:
    """Per model, a [0, 1] score per task × scenario: the mean of the task's accuracy-type metric
    (i2t R@1 for retrieval sets, top-1 for zero-shot sets) over clean and each perturbation family."""
    rows = []
    for (model, dataset), g in df.groupby(["model", "dataset"]):
        metric = "i2t_R@1" if (g["metric"] == "i2t_R@1").any() else "top1"
        g = g[g["metric"] == metric]
        kind = g["kind"] if "kind" in g else pd.Series("perturbation", index=g.index)
        fam = g["family"] if "family" in g else g["perturbation"]
        for scen, v in g[kind.isin(["clean", "perturbation", "attack"])].groupby(fam)["value"].mean().items():
            rows.append({"model": model, "axis": f"{dataset}:{scen}", "value": v})
    return pd.DataFrame(rows).pivot_table(index="model", columns="axis", values="value") if rows else pd.DataFrame()


def build_report(folder: str | Path, title: str | None = None) -> Path:
    """Write ``folder/report/report.html`` (+ tables and figures) and return its path."""
    root = Path(folder)
    df = collect_results(root)
    out = root / "report"
    (out / "figures").mkdir(parents=True, exist_ok=True)
    table = summary_table(df)
    table.to_csv(out / "summary.csv")
    figures: list[tuple[str, str]] = []
    for metric in KEY_METRICS:
        if metric in set(df["metric"]) and ("kind" not in df or (df[df.metric == metric]["kind"] == "perturbation").any()):
            name = f"figures/degradation_{metric.replace('@', 'at')}.png"
            save(degradation_curves(df, metric), out / name)
            figures.append((f"{metric} vs severity", name))
    scores = radar_scores(df)
    if scores.shape[1] >= 3:
        save(radar(scores.fillna(0).clip(0, 1), title="task × scenario"), out / "figures/radar.png")
        figures.append(("task × scenario performance per model", "figures/radar.png"))
        scores.round(4).to_csv(out / "radar_scores.csv")
    parts = [f"<h1>{html.escape(title or f'vlmkit report: {root.name}')}</h1>",
             f"<p>{len(df)} result rows from {df['run'].nunique()} run(s); models: "
             f"{html.escape(', '.join(sorted(df['model'].unique())))}; vlmkit {vlmkit.__version__}; "
             f"built {time.strftime('%Y-%m-%d %H:%M')}</p>",
             "<h2>Summary</h2>", table.to_html(classes="summary", border=0)]
    if scores.shape[1] >= 1:
        parts += ["<h2>Task × scenario scores</h2>", scores.round(3).to_html(classes="radar", border=0)]
    parts.append("<h2>Figures</h2>")
    for caption, src in figures:
        parts.append(f'<figure><img src="{src}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}'
                     "</figcaption></figure>")
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>vlmkit report</title><style>"
            "body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;font-size:12px}"
            "td,th{padding:2px 8px;border-bottom:1px solid #ddd}img{max-width:100%}figure{margin:1em 0}"
            "</style></head><body>" + "\n".join(parts) + "</body></html>")
    path = out / "report.html"
    atomic_write(path, lambda p: Path(p).write_text(page, encoding="utf-8"))
    return path
