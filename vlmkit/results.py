"""Tidy result tables: one row per model × dataset × perturbation × severity × metric, written atomically.

A table lives in a folder as ``results.parquet`` (the source of truth) plus ``results.csv`` (for
eyes and spreadsheets). Every write goes to a temporary file in the same folder followed by
``os.replace``, so a killed run never leaves a partial table behind.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterable, Mapping
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


def atomic_write(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_table(rows: Iterable[Mapping[str, Any]] | pd.DataFrame, folder: str | os.PathLike) -> Path:
    """Write rows as ``folder/results.parquet`` and ``folder/results.csv`` atomically; returns the parquet path."""
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    cols = [c for c in COLUMNS if c in df.columns] + [c for c in df.columns if c not in COLUMNS]
    df = df[cols]
    folder = Path(folder)
    atomic_write(folder / "results.parquet", lambda p: df.to_parquet(p, index=False))
    atomic_write(folder / "results.csv", lambda p: df.to_csv(p, index=False))
    return folder / "results.parquet"


def read_table(folder: str | os.PathLike) -> pd.DataFrame:
    """Read ``folder/results.parquet`` (empty frame with the standard columns when absent)."""
    path = Path(folder) / "results.parquet"
    if not path.is_file():
        return pd.DataFrame(columns=COLUMNS)
    return pd.read_parquet(path)
