"""The results table of a grid: one file per finished cell, merged atomically.

Layout under ``out_dir``::

    cells/<model-slug>/<dataset>/<cell-key>.parquet   rows of one finished cell (written atomically)
    results.parquet, results.csv                      all cell files merged (rewritten atomically)

A cell counts as done when its file exists, so an interrupted grid resumes where it stopped, nothing
finished is recomputed and no partial cell can appear in the table. Concurrent workers (local
processes, cluster jobs) write disjoint cell files, so their results never collide.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from vlmkit.results import COLUMNS, atomic_write, write_table


def slug(text: str) -> str:
    """File-system-safe version of a model spec or dataset name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:120] or "_"


class ResultsStore:
    """Per-cell result files plus the merged table of one grid folder."""

    def __init__(self, out_dir: str | Path) -> None:
        self.root = Path(out_dir)
        self.cells_dir = self.root / "cells"

    def cell_path(self, model: str, dataset: str, key: str) -> Path:
        return self.cells_dir / slug(model) / slug(dataset) / f"{key}.parquet"

    def is_done(self, model: str, dataset: str, key: str) -> bool:
        return self.cell_path(model, dataset, key).is_file()

    def write_cell(self, model: str, dataset: str, key: str, rows: Iterable[Mapping[str, Any]]) -> Path:
        df = pd.DataFrame(list(rows))
        path = self.cell_path(model, dataset, key)
        atomic_write(path, lambda p: df.to_parquet(p, index=False))
        return path

    def read_cell(self, model: str, dataset: str, key: str) -> pd.DataFrame:
        return pd.read_parquet(self.cell_path(model, dataset, key))

    def merge(self) -> pd.DataFrame:
        """Concatenate every cell file into ``results.parquet``/``results.csv`` (atomic) and return it."""
        files = sorted(self.cells_dir.rglob("*.parquet")) if self.cells_dir.is_dir() else []
        frames = [pd.read_parquet(f) for f in files]
        df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
        if len(df):
            df = df.sort_values(["model", "dataset", "family", "perturbation", "severity", "params", "metric"],
                                kind="stable", ignore_index=True)
        write_table(df, self.root)
        return df

    def table(self) -> pd.DataFrame:
        path = self.root / "results.parquet"
        return pd.read_parquet(path) if path.is_file() else self.merge()
