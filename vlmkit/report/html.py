"""Standalone HTML report from every results table under a run or grid folder.

``build_report(folder)`` reads all ``results.parquet`` files below ``folder`` (a notebook run or a
whole grid) and writes ``folder/report/report.html``: a section per study found in the results
(:mod:`vlmkit.report.studies`: headline table, figure, how to read them), then a collapsible appendix
with the summary of every cell; every row as ``results.csv``, figures as PNG files beside it.
"""

from __future__ import annotations

import html
import time
from pathlib import Path

import pandas as pd

import vlmkit
from vlmkit.errors import DataNotFoundError
from vlmkit.report.figures import degradation_curves, radar, save
from vlmkit.results import atomic_write, csv_view, merge_files, result_files

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


_CSS = ("body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1100px;padding:0 1em;color:#222}"
        "h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}"
        ".table{overflow-x:auto;max-width:100%}table{border-collapse:collapse;font-size:12px}"
        "td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right;white-space:nowrap}"
        "th{background:#f6f6f6}img{max-width:100%;height:auto}figure{margin:1em 0}"
        "figcaption{font-size:12px;color:#555}p.read{max-width:60em}details{margin:1em 0}"
        "summary{cursor:pointer;font-weight:600}")


def _table_html(df: pd.DataFrame, cls: str) -> str:
    return f'<div class="table">{df.to_html(classes=cls, border=0, na_rep="–")}</div>'


def build_report(folder: str | Path, title: str | None = None) -> Path:
    """Write ``folder/report/report.html`` and return its path.

    The page reads like the studies: for each study found in the results
    (:func:`vlmkit.report.studies.study_sections`) its headline table, its figure and how to read them;
    then, for results no study claims, the degradation curves of the key metrics; then an appendix
    (collapsed) with the summary of every model × dataset × cell. Every row is in ``results.csv``
    beside the page, the summary in ``summary.csv``, each section's table in ``<section>.csv``;
    figures are PNG files in ``figures/``.
    """
    from vlmkit.report.studies import study_sections

    root = Path(folder)
    df = collect_results(root)
    out = root / "report"
    (out / "figures").mkdir(parents=True, exist_ok=True)
    atomic_write(out / "results.csv", lambda p: csv_view(df).to_csv(p, index=False))
    table = summary_table(df)
    table.to_csv(out / "summary.csv")
    sections = study_sections(df)
    models = ", ".join(sorted(df["model"].unique()))
    parts = [f"<h1>{html.escape(title or f'vlmkit report: {root.name}')}</h1>",
             f"<p>{len(df)} result rows from {df['run'].nunique()} run(s) on {df['dataset'].nunique()} dataset(s); "
             f"models: {html.escape(models)}; vlmkit {vlmkit.__version__}; built {time.strftime('%Y-%m-%d %H:%M')}. "
             'Every row: <a href="results.csv">results.csv</a>.</p>']
    if sections:
        parts.append("<p>Studies in these results: " + ", ".join(
            f'<a href="#{s.key}">{html.escape(s.title)}</a>' for s in sections) + ".</p>")
    for s in sections:
        fig_path = f"figures/{s.key}.png"
        save(s.figure, out / fig_path)
        s.table.to_csv(out / f"{s.key}.csv")
        parts += [f'<h2 id="{s.key}">{html.escape(s.title)}</h2>', f'<p class="read">{html.escape(s.text)}</p>',
                  f'<figure><img src="{fig_path}" alt="{html.escape(s.title)}"></figure>',
                  _table_html(s.table, "headline"),
                  f'<p><a href="{s.key}.csv">{s.key}.csv</a></p>']
    figures: list[tuple[str, str]] = []
    if not sections:  # results of no study: the degradation curves of the key metrics
        for metric in KEY_METRICS:
            if metric in set(df["metric"]) and ("kind" not in df or (df[df.metric == metric]["kind"] == "perturbation").any()):
                name = f"figures/degradation_{metric.replace('@', 'at')}.png"
                save(degradation_curves(df, metric, line=["model", "dataset"]), out / name)
                figures.append((f"{metric} vs severity", name))
        scores = radar_scores(df)
        if scores.shape[1] >= 3:
            save(radar(scores.fillna(0).clip(0, 1), title="task × scenario"), out / "figures/radar.png")
            figures.append(("task × scenario performance per model", "figures/radar.png"))
        if figures:
            parts.append("<h2>Figures</h2>")
        for caption, src in figures:
            parts.append(f'<figure><img src="{src}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}'
                         "</figcaption></figure>")
    parts.append('<h2 id="appendix">Appendix</h2>')
    if "seed" in df and df["seed"].nunique() > 1:  # runs that differ only in seed: the spread across seeds
        from vlmkit.stats import across_seeds

        key = df[df["metric"].isin(KEY_METRICS)]
        by = [c for c in ("model", "dataset", "label", "metric") if c in key]
        seeds = across_seeds(key, by=by)
        seeds.to_csv(out / "across_seeds.csv", index=False)
        parts += [f"<details><summary>Across {df['seed'].nunique()} seeds: mean, sd and t-interval "
                  '(<a href="across_seeds.csv">across_seeds.csv</a>)</summary>',
                  _table_html(seeds.round(4), "seeds"), "</details>"]
    parts += [f"<details><summary>Summary of every model × dataset × cell ({len(table)} rows; "
               '<a href="summary.csv">summary.csv</a>)</summary>', _table_html(table, "summary"), "</details>"]
    page = ("<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
            f"<title>vlmkit report</title><style>{_CSS}</style></head><body>" + "\n".join(parts) + "</body></html>")
    path = out / "report.html"
    atomic_write(path, lambda p: Path(p).write_text(page, encoding="utf-8"))
    return path
