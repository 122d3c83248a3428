"""Tidy result tables: one row per model × dataset × perturbation × severity × metric, written atomically.

A table lives in a folder as ``results.parquet`` (the source of truth) plus ``results.csv`` (for
eyes and spreadsheets). Every write goes to a temporary file in the same folder followed by
``os.replace``, so a killed run never leaves a partial table behind.
"""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

import vlmkit

COLUMNS = ["model", "dataset", "perturbation", "params", "severity", "metric", "value", "n", "seed",
           "vlmkit_version", "time"]


def make_row(*, model: str, dataset: str, metric: str, value: float, n: int, seed: int, perturbation: str = "none",
             params: Mapping[str, Any] | None = None, severity: float = 0, **extra: Any) -> dict[str, Any]:
    """One tidy result row (``params`` stored as canonical JSON so rows compare and group cleanly)."""
    row = {"model": model, "dataset": dataset, "perturbation": perturbation,
           "params": json.dumps(dict(params or {}), sort_keys=True), "severity": severity, "metric": metric,
           "value": float(value), "n": int(n), "seed": int(seed), "vlmkit_version": vlmkit.__version__,
           "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    row.update(extra)
    return row


#: Temporary files of :func:`atomic_write`: ``.<name>.<host>.<pid>.<random>.tmp``.
_TMP_SUFFIX = ".tmp"


def _writer_tag() -> str:
    return f"{socket.gethostname().replace('.', '-')}.{os.getpid()}"


def atomic_write(path: Path, write: Any) -> None:
    """Write ``path`` through ``write(tmp_path)`` to a temporary file in the same folder, then ``os.replace``.

    A killed writer leaves either the old file or the new one, never a partial one; the temporary
    file names the writer's host and process, so :func:`remove_stale_temporaries` can clean it later.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_writer_tag()}.", suffix=_TMP_SUFFIX)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


#: Columns kept in parquet only: per-item outcome vectors (for paired comparisons) and a captioning cell's
#: captions (JSON, to recompute its language metrics) do not belong in a CSV.
PARQUET_ONLY = ("outcomes", "captions")


def csv_view(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` without the :data:`PARQUET_ONLY` columns (what every ``.csv`` of vlmkit holds)."""
    return df.drop(columns=[c for c in PARQUET_ONLY if c in df.columns])


def write_table(rows: Iterable[Mapping[str, Any]] | pd.DataFrame, folder: str | os.PathLike) -> Path:
    """Write rows as ``folder/results.parquet`` and ``folder/results.csv`` atomically; returns the parquet path."""
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    cols = [c for c in COLUMNS if c in df.columns] + [c for c in df.columns if c not in COLUMNS]
    df = df[cols]
    folder = Path(folder)
    atomic_write(folder / "results.parquet", lambda p: df.to_parquet(p, index=False))
    atomic_write(folder / "results.csv", lambda p: csv_view(df).to_csv(p, index=False))
    return folder / "results.parquet"


def read_table(folder: str | os.PathLike) -> pd.DataFrame:
    """Read ``folder/results.parquet`` (empty frame with the standard columns when absent)."""
    path = Path(folder) / "results.parquet"
    if not path.is_file():
        return pd.DataFrame(columns=COLUMNS)
    return pd.read_parquet(path)


def provenance_label(prov: Mapping[str, Any]) -> str:
    """A one-line description of a robust fine-tuned model for result tables (its ``robust.json``):
    ``fare(eps=4/255, steps=300) of toy:rn on toy-shapes, seed 0``."""
    eps = prov.get("eps")
    eps_s = f"{round(eps * 255, 3):g}/255" if isinstance(eps, (int, float)) else str(eps)
    return (f"{prov.get('method')}(eps={eps_s}, steps={prov.get('steps')}) of {prov.get('base_model')} "
            f"on {prov.get('data')}, seed {prov.get('seed')}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(root: str | os.PathLike, max_age_s: float = 24 * 3600) -> list[Path]:
    """Delete temporary files of :func:`atomic_write` under ``root`` whose writer is gone.

    A file is stale when its writer ran on this host and that process no longer exists, or when it is
    older than ``max_age_s`` (writers on other hosts of a cluster). A temporary file that names no
    writer (written before writers were named) is stale after a minute. Files of live writers are kept,
    so a resumed run never removes the file a concurrent worker is writing. Returns the removed paths.
    """
    pattern = re.compile(r"^\..+\.(?P<host>[^.]+)\.(?P<pid>\d+)\.[^.]+\.tmp$")
    host, now, removed = _writer_tag().split(".")[0], time.time(), []
    for f in Path(root).rglob(f".*{_TMP_SUFFIX}"):
        m = pattern.match(f.name)
        try:
            age = now - f.stat().st_mtime
        except FileNotFoundError:  # finished or removed meanwhile
            continue
        if m is None:
            stale = age > 60
        else:
            stale = age > max_age_s or (m["host"] == host and not _pid_alive(int(m["pid"])))
        if stale:
            f.unlink(missing_ok=True)
            removed.append(f)
    return removed


def result_files(folder: str | os.PathLike) -> list[Path]:
    """Every ``results.parquet`` below ``folder`` (a notebook run or a whole grid), sorted by path.

    Files under a ``report/`` or a ``cells/`` folder (relative to ``folder``) are left out: the first
    holds report outputs, the second a grid's per-cell copies of rows that are also in the run folders.

    Args:
        folder: Where to look (recursively); a missing folder has no files.

    Returns:
        The paths, sorted.
    """
    root = Path(folder)
    return [f for f in sorted(root.rglob("results.parquet"))
            if not {"report", "cells"} & set(f.relative_to(root).parts[:-1])]


def merge_files(files: Iterable[str | os.PathLike], *, sort_by: Sequence[str] | None = None,
                columns: Sequence[str] | None = None,
                with_columns: Callable[[Path], Mapping[str, Any]] | None = None) -> pd.DataFrame:
    """Read parquet result files and concatenate them into one table: the one merge of vlmkit.

    Row order (stable and deterministic): file by file in the order of ``files``, each file's rows in
    their stored order; then, when ``sort_by`` is given, a stable sort by those of its columns the table
    has (absent ones are skipped), so rows that tie keep that order. Callers that want an order
    independent of how ``files`` was listed pass them sorted (e.g. by path or by run id).

    Columns: the union of every file's columns (empty files included), in first-seen order, so files
    with differing extra columns merge; a row lacks (NaN/None) the columns its file did not have.
    Files without rows add no rows (nor influence the dtypes).

    Args:
        files: Parquet files to merge.
        sort_by: Columns to sort the merged rows by (stable), e.g. ``["model", "dataset", "metric"]``.
        columns: Columns of the result when no file has any column (e.g. no files at all).
        with_columns: ``path -> {column: value}``: constant columns set on every row of that file
            (added after its own columns, replacing same-named ones), e.g. the run folder it came from.

    Returns:
        The merged table with a fresh ``RangeIndex``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    runs: list[list[pa.Table]] = []  # consecutive files with rows and one schema: one conversion to pandas a run
    names: dict[str, None] = {}  # union of the columns, in first-seen order
    for f in files:
        path = Path(f)
        # one thread: arrow's pool would fight torch's OpenMP workers, still spinning after a forward pass
        table = pq.read_table(path, use_threads=False, use_pandas_metadata=True)
        for k, v in (with_columns(path) if with_columns is not None else {}).items():
            col = pa.array([v] * table.num_rows)
            at = table.schema.get_field_index(k)
            table = table.set_column(at, k, col) if at >= 0 else table.append_column(k, col)
        index = {c for c in (table.schema.pandas_metadata or {}).get("index_columns", []) if isinstance(c, str)}
        names.update(dict.fromkeys(str(c) for c in table.column_names if c not in index))  # as read_parquet's
        if table.num_rows:
            if runs and runs[-1][0].schema.equals(table.schema, check_metadata=True):
                runs[-1].append(table)
            else:
                runs.append([table])
    if not names:
        return pd.DataFrame(columns=list(columns or []))
    if not runs:
        return pd.DataFrame(columns=list(names))
    frames = [pa.concat_tables(run).to_pandas(use_threads=False) for run in runs]
    out = pd.concat(frames, ignore_index=True, sort=False) if len(frames) > 1 else frames[0]
    out = out.reindex(columns=list(names))
    keys = [c for c in (sort_by or []) if c in out.columns]
    if keys:
        out = out.sort_values(keys, kind="stable", ignore_index=True)
    return out
