"""Checks and readers shared by the dataset loaders: folders that must exist, JSON files, CSV files with columns.

Every error names the file or folder and what was expected (see :mod:`vlmkit.errors`).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vlmkit.errors import DataError, DataNotFoundError, EmptyDatasetError, did_you_mean


def check_dir(path: str | Path, what: str) -> Path:
    """``path`` (``~`` expanded) when it is a folder.

    Args:
        path: The folder.
        what: What it is, for the message ("image root", "SCAM root" ...).

    Raises:
        DataNotFoundError: It does not exist or is not a folder.
    """
    p = Path(path).expanduser()
    if not p.is_dir():
        raise DataNotFoundError(f"{what} not found (or not a folder): {p}")
    return p


def read_json(path: Path, what: str) -> Any:
    """The JSON value in ``path``.

    Args:
        path: The file.
        what: What it is, for the message ("captions JSON", "class list" ...).

    Raises:
        DataNotFoundError: The file does not exist.
        DataError: It is not valid JSON (line and column named) or not UTF-8 text.
    """
    if not path.is_file():
        raise DataNotFoundError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{what} {path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from e
    except UnicodeDecodeError as e:
        raise DataError(f"{what} {path} is not UTF-8 text: {e}") from e


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The header and the rows of a CSV file (UTF-8, BOM tolerated; names and values stripped).

    Raises:
        DataError: The file cannot be parsed.
        EmptyDatasetError: It has no header row.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot parse CSV {path}: {e}") from e
    if not header:
        raise EmptyDatasetError(f"CSV {path} is empty (no header row)")
    return header, rows


def need_columns(header: Sequence[str], columns: Sequence[str], path: Path) -> None:
    """Check that a CSV ``header`` has every one of ``columns``.

    Raises:
        DataError: A column is missing; the message lists the columns present and near matches.
    """
    for col in columns:
        if col not in header:
            raise DataError(
                f"CSV {path} has no column {col!r}; its columns are {list(header)}.{did_you_mean(col, header)}"
            )


__all__ = ["check_dir", "need_columns", "read_csv", "read_json"]
