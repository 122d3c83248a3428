"""The results of a grid folder: one file per finished cell, merged atomically.

Layout under ``out_dir``::

    cells/<model-slug>/<dataset>/<run key>/<cell key>.parquet   rows of one finished cell (written atomically)
    results.parquet, results.csv                                all cell files merged (rewritten atomically)

The run key (:class:`~vlmkit.evaluate.runner.Runner`) hashes everything that changes a cell's
numbers besides the cell itself, so a cell is done only when its file exists under the same run key:
an interrupted grid resumes where it stopped, nothing finished is recomputed, a changed input
(templates, subset, image size, seed, weights ...) is recomputed, and no partial cell can appear in
the table. Concurrent workers write disjoint files, so their results never collide. Temporary files
left by a writer that was killed are removed when a store is opened again.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from vlmkit.errors import InputError
from vlmkit.results import COLUMNS, atomic_write, merge_files, remove_stale_temporaries, write_table

#: Row order of a merged table.
SORT_BY = ["model", "dataset", "family", "perturbation", "severity", "params", "metric"]


def slug(text: str) -> str:
    """File-system-safe version of a model spec or dataset name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:120] or "_"


def check_out_dir(out_dir: str | Path) -> Path:
    """``out_dir`` as a Path, or an :class:`InputError` when it (or a parent) is a file or not writable."""
    out = Path(out_dir)
    for p in [out, *out.parents]:
        if p.exists():
            if not p.is_dir():
                raise InputError(f"out_dir={str(out_dir)!r}: {str(p)!r} is a file, not a folder")
            break
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"out_dir={str(out_dir)!r} cannot be created: {e.strerror or e}") from None
    return out


class ResultsStore:
    """Per-cell result files plus the merged table of one grid folder.

    Opening a store removes temporary files that killed writers left behind (see
    :func:`vlmkit.results.remove_stale_temporaries`).
    """

    def __init__(self, out_dir: str | Path) -> None:
        self.root = Path(out_dir)
        self.cells_dir = self.root / "cells"
        self.removed = remove_stale_temporaries(self.root) if self.root.is_dir() else []

    def cell_path(self, model: str, dataset: str, run: str, key: str) -> Path:
        return self.cells_dir / slug(model) / slug(dataset) / run / f"{key}.parquet"

    def is_done(self, model: str, dataset: str, run: str, key: str) -> bool:
        return self.cell_path(model, dataset, run, key).is_file()

    def write_cell(self, model: str, dataset: str, run: str, key: str, rows: Iterable[Mapping[str, Any]]) -> Path:
        """The rows of one finished cell as its parquet file (atomic). Columns are the union of the rows' keys
        in first-seen order (a row lacking one holds null there); types are inferred per column by pyarrow,
        as ``DataFrame.to_parquet`` infers them, without the DataFrame in between."""
        rows = list(rows)
        names = list(dict.fromkeys(k for r in rows for k in r))
        table = pa.table({k: [r.get(k) for r in rows] for k in names}) if names else pa.table({})
        path = self.cell_path(model, dataset, run, key)
        atomic_write(path, lambda p: pq.write_table(table, p))
        return path

    def read_cell(self, model: str, dataset: str, run: str, key: str) -> pd.DataFrame:
        return pd.read_parquet(self.cell_path(model, dataset, run, key))

    def files(self) -> list[Path]:
        return sorted(self.cells_dir.rglob("*.parquet")) if self.cells_dir.is_dir() else []

    def merge(self) -> pd.DataFrame:
        """Concatenate every cell file into ``results.parquet``/``results.csv`` (atomic) and return it.

        Rows of every run stored in the folder are kept (each carries its ``run`` key and ``config``),
        so runs with different seeds or templates sit side by side, told apart by those columns.
        """
        df = merge_files(self.files(), sort_by=SORT_BY, columns=COLUMNS)
        write_table(df, self.root)
        return df

    def table(self) -> pd.DataFrame:
        path = self.root / "results.parquet"
        return pd.read_parquet(path) if path.is_file() else self.merge()


__all__ = ["ResultsStore", "SORT_BY", "check_out_dir", "slug"]
