"""Compare two models across a tidy result table, and aggregate runs across seeds.

:func:`compare` pairs the rows of model (or setting) ``a`` and ``b`` group by group (dataset, label,
metric), tests each difference on the per-item outcomes the rows carry, and corrects the p-values for
the number of groups (Holm 1979). :func:`across_seeds` summarises runs that differ only in their seed
by a t-interval across seeds: the variability between training/perturbation seeds, which the
within-run bootstrap (items resampled, seed fixed) does not see; the two are kept in separate columns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from vlmkit.errors import InputError, did_you_mean
from vlmkit.stats.tests import holm, mcnemar_exact, paired_bootstrap

#: Default pairing keys of :func:`compare` (``label`` names a grid cell: perturbation, params, severity).
DEFAULT_BY = ("dataset", "label", "metric")
#: Used when a table has no ``label`` column (tables of :func:`vlmkit.results.make_row`).
FALLBACK_BY = ("dataset", "perturbation", "params", "severity", "metric")
#: Columns :func:`across_seeds` never groups by: they differ between runs of the same setting.
RUN_COLUMNS = ("time", "vlmkit_version", "run", "run_id", "outcomes")


def _selector(spec: Mapping[str, Any] | str, name: str, table: pd.DataFrame) -> dict[str, Any]:
    if isinstance(spec, str):
        spec = {"model": spec}
    if not isinstance(spec, Mapping) or not spec:
        raise InputError(f"{name} must be a model name or a non-empty dict column -> value, got {spec!r}")
    missing = [c for c in spec if c not in table.columns]
    if missing:
        raise InputError(f"{name} selects by column(s) {missing} the table does not have; columns: "
                         f"{list(table.columns)}")
    return dict(spec)


def _label(sel: Mapping[str, Any]) -> str:
    return str(sel["model"]) if list(sel) == ["model"] else ", ".join(f"{k}={v}" for k, v in sel.items())


def _rows(table: pd.DataFrame, sel: Mapping[str, Any], name: str) -> pd.DataFrame:
    mask = np.ones(len(table), dtype=bool)
    for k, v in sel.items():
        mask &= (table[k] == v).to_numpy()
    rows = table[mask]
    if rows.empty:
        k0 = next(iter(sel))
        seen = sorted(map(str, table[k0].dropna().unique()))
        hint = did_you_mean(str(sel[k0]), seen) if isinstance(sel[k0], str) else ""
        raise InputError(f"{name}={dict(sel)} matches no row of the table (for the metric asked); "
                         f"{k0} values present: {seen[:10]}.{hint}")
    return rows


def _key(row: pd.Series, by: Sequence[str]) -> tuple:
    return tuple(None if (not isinstance(v, (list, tuple, np.ndarray, dict)) and pd.isna(v)) else v
                 for v in (row[c] for c in by))


def _outcomes(row: pd.Series, col: str, who: str, key: tuple) -> np.ndarray:
    v = row[col]
    if v is None or (np.isscalar(v) and pd.isna(v)):
        raise InputError(f"the {who} row of group {key} has no per-item outcomes in column {col!r}")
    arr = np.asarray(v, dtype=np.float64)
    if arr.ndim != 1 or arr.shape[0] < 2:
        raise InputError(f"column {col!r} of the {who} row of group {key} must hold a vector of >= 2 per-item "
                         f"outcomes, got shape {arr.shape}")
    return arr


def compare(table: pd.DataFrame, *, a: Mapping[str, Any] | str, b: Mapping[str, Any] | str, metric: str,
            by: Sequence[str] | None = None, outcome_col: str = "outcomes", n_boot: int = 1000, ci: float = 0.95,
            seed: int = 0, correction: str | None = "holm", method: str = "percentile") -> pd.DataFrame:
    """Paired test of ``a`` against ``b`` on one metric, per group, with multiple-testing correction.

    Rows are selected by ``metric`` and by ``a``/``b``; within each group of ``by`` columns the one
    a-row and the one b-row are paired (their outcome vectors must cover the same items in the same
    order, e.g. the images of one dataset and grid cell). Per group:

    * 0/1 outcomes (correctness, Recall@k hits): exact McNemar p-value (:func:`mcnemar_exact`) and the
      paired-bootstrap interval of the difference in accuracy (``test = "mcnemar_exact"``);
    * other outcomes: paired bootstrap interval and p-value (:func:`paired_bootstrap`,
      ``test = "paired_bootstrap"``).

    Every group uses the same ``seed``, so a group's result does not depend on the other groups. The
    p-values are then Holm-adjusted across the groups (``correction="holm"``; ``None`` keeps them).
    ``value_a``/``value_b`` are the means of the outcome vectors (the ``value`` column is not read), so
    ``diff = value_a − value_b``.

    Args:
        table: Tidy rows (:mod:`vlmkit.results`) with a per-item ``outcome_col`` (list or array per row).
        a: Rows of the first side: a model name or a dict ``{column: value}`` (e.g. ``{"model": "toy:rn"}``).
        b: Rows of the second side, same form.
        metric: Value of the ``metric`` column to compare.
        by: Pairing columns; default ``dataset, label, metric`` (``dataset, perturbation, params,
            severity, metric`` when the table has no ``label``), leaving out those absent from the table
            and those ``a``/``b`` select on.
        outcome_col: Column holding the per-item outcomes.
        n_boot: Bootstrap resamples per group.
        ci: Confidence level; a group is ``significant`` when ``p_adjusted < 1 − ci``.
        seed: Seed of every group's resampling.
        correction: ``"holm"`` or ``None``.
        method: Bootstrap interval method, ``"percentile"`` or ``"bca"``.

    Returns:
        One row per paired group: the ``by`` columns, ``a``, ``b``, ``metric``, ``value_a``, ``value_b``,
        ``diff``, ``ci_low``, ``ci_high``, ``p_value``, ``p_adjusted``, ``significant``, ``test``, ``n``,
        ``effect_size`` (Cohen's ``d_z``).
    """
    if not isinstance(table, pd.DataFrame):
        raise InputError(f"table must be a pandas DataFrame, got {type(table).__name__}")
    for col in ("metric", outcome_col):
        if col not in table.columns:
            raise InputError(f"table has no {col!r} column; columns: {list(table.columns)}")
    if correction not in ("holm", None, "none"):
        raise InputError(f"correction={correction!r}; expected 'holm' or None")
    rows = table[table["metric"] == metric]
    if rows.empty:
        seen = sorted(map(str, table["metric"].dropna().unique()))
        raise InputError(f"metric={metric!r} matches no row; metrics present: {seen}.{did_you_mean(metric, seen)}")
    sel_a, sel_b = _selector(a, "a", table), _selector(b, "b", table)
    if by is None:
        by = DEFAULT_BY if "label" in table.columns else FALLBACK_BY
        by = [c for c in by if c in table.columns]
    else:
        by = list(by)
        missing = [c for c in by if c not in table.columns]
        if missing:
            raise InputError(f"by names column(s) {missing} the table does not have; columns: {list(table.columns)}")
    keys = [c for c in by if c not in sel_a and c not in sel_b]
    ra, rb = _rows(rows, sel_a, "a"), _rows(rows, sel_b, "b")

    def index(part: pd.DataFrame, who: str) -> dict[tuple, pd.Series]:
        out: dict[tuple, pd.Series] = {}
        for _, row in part.iterrows():
            k = _key(row, keys)
            if k in out:
                raise InputError(f"{who} has more than one row in group {dict(zip(keys, k))} (metric {metric!r}); "
                                 f"add the column that tells them apart (e.g. seed) to `by` or to the selection")
            out[k] = row
        return out

    ia, ib = index(ra, "a"), index(rb, "b")
    common = [k for k in ia if k in ib]
    if not common:
        raise InputError(f"a and b share no group of {keys}: a has {list(ia)[:5]}, b has {list(ib)[:5]}")

    out = []
    for k in common:
        xa, xb = _outcomes(ia[k], outcome_col, "a", k), _outcomes(ib[k], outcome_col, "b", k)
        if xa.shape != xb.shape:
            raise InputError(f"group {dict(zip(keys, k))}: the outcome vectors of a and b differ in length "
                             f"({xa.shape[0]} vs {xb.shape[0]}); they must cover the same items in the same order")
        boot = paired_bootstrap(xa, xb, n_boot=n_boot, ci=ci, method=method, seed=seed)
        binary = bool(np.isin(xa, (0.0, 1.0)).all() and np.isin(xb, (0.0, 1.0)).all())
        res = mcnemar_exact(xa, xb) if binary else boot
        out.append({**dict(zip(keys, k)), "a": _label(sel_a), "b": _label(sel_b), "metric": metric,
                    "value_a": float(xa.mean()), "value_b": float(xb.mean()), "diff": boot.diff,
                    "ci_low": boot.low, "ci_high": boot.high, "p_value": res.p_value, "test": res.method,
                    "n": int(xa.shape[0]), "effect_size": boot.effect_size})
    df = pd.DataFrame(out)
    p = df["p_value"].to_numpy(dtype=np.float64)
    df["p_adjusted"] = holm(p) if correction == "holm" else p
    df["significant"] = df["p_adjusted"] < 1 - ci
    cols = [*keys, "a", "b", *(["metric"] if "metric" not in keys else []), "value_a", "value_b", "diff",
            "ci_low", "ci_high", "p_value", "p_adjusted", "significant", "test", "n", "effect_size"]
    return df[cols]


def across_seeds(table: pd.DataFrame, *, seed_col: str = "seed", value_col: str = "value",
                 by: Sequence[str] | None = None, ci: float = 0.95) -> pd.DataFrame:
    """Mean, standard deviation and t-interval of a value across runs that differ only in their seed.

    The interval is ``mean ± t_{(1+ci)/2, s−1} · sd / √s`` over the ``s`` seeds of a group (Student's
    t, ``sd`` with ddof 1): it measures seed-to-seed variability and is kept apart from the within-run
    bootstrap intervals. A group with one seed has NaN ``seed_sd`` and interval.

    Args:
        table: Tidy rows, one per run × setting.
        seed_col: Column holding the seed.
        value_col: Column holding the value to aggregate.
        by: Columns that define a setting; default every column except ``seed_col``, ``value_col``
            and the per-run columns (``time``, ``vlmkit_version``, ``run``, ``run_id``, ``outcomes``) and
            those holding unhashable values (lists, arrays).
        ci: Confidence level.

    Returns:
        One row per setting: the ``by`` columns, ``seed_mean``, ``seed_sd``, ``n_seeds``, ``seed_ci_low``,
        ``seed_ci_high``.
    """
    if not 0 < ci < 1:
        raise InputError(f"ci must be a confidence level in (0, 1), got {ci!r}")
    for col in (seed_col, value_col):
        if col not in table.columns:
            raise InputError(f"table has no {col!r} column; columns: {list(table.columns)}")
    if by is None:
        def hashable(c: str) -> bool:
            return not table[c].map(lambda v: isinstance(v, (list, dict, np.ndarray, set))).any()

        by = [c for c in table.columns if c not in (seed_col, value_col, *RUN_COLUMNS) and hashable(c)]
    else:
        by = list(by)
        missing = [c for c in by if c not in table.columns]
        if missing:
            raise InputError(f"by names column(s) {missing} the table does not have; columns: {list(table.columns)}")
    values = pd.to_numeric(table[value_col], errors="coerce")
    if values.isna().any():
        raise InputError(f"column {value_col!r} holds {int(values.isna().sum())} missing or non-numeric value(s)")
    df = table.assign(__value=values.astype(np.float64))
    out = []
    groups = df.groupby(by, dropna=False, sort=True) if by else [((), df)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        if g[seed_col].duplicated().any():
            raise InputError(f"group {dict(zip(by, key))} has several rows per seed "
                             f"({sorted(g[seed_col][g[seed_col].duplicated()].unique().tolist())}); pass `by` with "
                             "the column(s) that tell them apart")
        v = g["__value"].to_numpy()
        s = v.shape[0]
        mean = float(v.mean())
        sd = float(v.std(ddof=1)) if s > 1 else float("nan")
        from scipy.stats import t as student_t  # lazy: scipy.stats costs ~1 s at import
        half = float(student_t.ppf(1 - (1 - ci) / 2, s - 1)) * sd / np.sqrt(s) if s > 1 else float("nan")
        out.append({**dict(zip(by, key)), "seed_mean": mean, "seed_sd": sd, "n_seeds": s,
                    "seed_ci_low": mean - half, "seed_ci_high": mean + half})
    return pd.DataFrame(out, columns=[*by, "seed_mean", "seed_sd", "n_seeds", "seed_ci_low", "seed_ci_high"])
