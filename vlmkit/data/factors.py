"""Per-image factor annotations (ImageNet-X layout and plain CSVs), aligned to a labelled dataset.

A factor annotation file lists, per image, the factors of variation it shows, so accuracy and error
ratios can be tabulated factor by factor (:mod:`vlmkit.metrics.factors`). Two layouts are read:

* **ImageNet-X** (Idrissi et al., "ImageNet-X: Understanding Model Mistakes with Factor of Variation
  Annotations", ICLR 2023; the ``imagenet_x_{val,train}_{top,multi}_factor.jsonl`` files of
  ``facebookresearch/imagenetx``, also as CSV): ``file_name``, ``class``, the 16 binary factor columns
  :data:`IMAGENET_X_FACTORS` (1 = the factor is present), free-text ``justification``/``one_word``,
  and, where present, ``metaclass`` and a categorical ``top_factor``. The factors are the 16 columns
  (+ ``top_factor``), their values must be 0/1.
* **Any per-image CSV/JSONL**: ``file_name`` + one column per factor, categorical (strings) or binary
  (0/1), e.g. the ``factors.csv`` of :func:`vlmkit.toyworld.factors.export_factor_set`. Every column
  but the file column and :data:`NON_FACTOR_COLUMNS` is a factor unless ``columns`` names them.

Annotations are matched to the dataset's files by name: a dataset path ``/data/val/images/x.JPEG`` matches
an annotation ``file_name`` equal to its longest trailing part that occurs (``images/x.JPEG``, ``x.JPEG``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from vlmkit.data.files import need_columns, read_csv
from vlmkit.errors import (
    DataError,
    DataNotFoundError,
    EmptyDatasetError,
    InputError,
    did_you_mean,
)

#: The 16 binary factors of ImageNet-X, in the paper's order (``imagenet_x.utils.FACTORS``).
IMAGENET_X_FACTORS: tuple[str, ...] = (
    "pose", "background", "pattern", "color", "smaller", "shape", "partial_view", "subcategory", "texture",
    "larger", "darker", "object_blocking", "person_blocking", "style", "brighter", "multiple_objects",
)
#: Columns that are never factors by default: class labels and ImageNet-X's free-text fields.
NON_FACTOR_COLUMNS: tuple[str, ...] = ("class", "label", "justification", "one_word", "metaclass")
_TRUE = {"1", "true", "yes"}
_FALSE = {"0", "false", "no"}
_MISSING = {"", "nan"}  # an empty cell, or pandas' NaN written to CSV


def _read_records(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """Header and rows of a ``.csv``, ``.jsonl`` or ``.json`` (a list of records) annotation file."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return read_csv(path)
    if suffix not in (".jsonl", ".json"):
        raise DataError(f"factor annotations {path}: expected a .csv, .jsonl or .json file, "
                        f"got {suffix or 'no suffix'!r}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"factor annotations {path} is not UTF-8 text: {e}") from e
    rows: list[Any]
    if suffix == ".json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"factor annotations {path} is not valid JSON: {e.msg} at line {e.lineno}") from e
    else:
        rows = []
        for i, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(f"factor annotations {path} line {i} is not a JSON record: {e.msg}") from e
    bad = next((i for i, r in enumerate(rows) if not isinstance(r, dict)), None)
    if bad is not None:
        raise DataError(f"factor annotations {path}: record {bad + 1} is a {type(rows[bad]).__name__}, expected an "
                        "object {\"file_name\": ..., factor: value, ...}")
    header: list[str] = []
    for r in rows:
        header += [k for k in r if k not in header]
    if not header:
        raise EmptyDatasetError(f"factor annotations {path} holds no records")
    return header, rows


def _cell(value: Any) -> Any:
    """One annotation value: NaN for missing, else the value (strings stripped)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return math.nan
    if isinstance(value, str):
        v = value.strip()
        return math.nan if v.lower() in _MISSING else v
    return value


def _binary(values: list[Any]) -> list[Any] | None:
    """The values as 0/1 ints (NaN kept) when every present one is 0/1/true/false, else None."""
    out: list[Any] = []
    for v in values:
        if isinstance(v, float) and math.isnan(v):
            out.append(math.nan)
        elif isinstance(v, bool) or (isinstance(v, (int, float)) and v in (0, 1)):
            out.append(int(v))
        elif isinstance(v, str) and v.lower() in _TRUE | _FALSE:
            out.append(1 if v.lower() in _TRUE else 0)
        else:
            return None
    return out


def _column(name: str, values: list[Any], path: Path, must_be_binary: bool) -> pd.Series:
    bits = _binary(values)
    if must_be_binary and bits is None:
        bad = next(v for v in values if _binary([v]) is None)
        raise DataError(f"factor annotations {path}: ImageNet-X factor {name!r} must hold 0/1, got {bad!r}")
    if bits is not None and any(not (isinstance(b, float) and math.isnan(b)) for b in bits):
        if any(isinstance(b, float) for b in bits):
            return pd.Series(bits, dtype="float64", name=name)  # NaN for missing
        return pd.Series(bits, dtype="int64", name=name)
    return pd.Series([v if isinstance(v, float) and math.isnan(v) else str(v) for v in values], dtype=object,
                     name=name)


def _names(file_names: Any) -> list[str]:
    if hasattr(file_names, "paths"):  # an ImageDataset
        file_names = file_names.paths
    if isinstance(file_names, (str, Path)):
        raise InputError("file_names must be a sequence of file names (or a dataset with .paths), got one "
                         f"{type(file_names).__name__}: {str(file_names)!r}")
    try:
        names = [Path(f).as_posix() if isinstance(f, Path) else str(f) for f in file_names]
    except TypeError:
        raise InputError(f"file_names must be a sequence of file names (or a dataset with .paths), "
                         f"got {type(file_names).__name__}") from None
    if not names:
        raise InputError("file_names is empty: need the dataset's files in order")
    return names


def _match(name: str, keys: dict[str, int]) -> int | None:
    """Row of the longest trailing part of ``name`` that is an annotation key."""
    if name in keys:
        return keys[name]
    parts = [p for p in name.replace("\\", "/").split("/") if p]
    for k in range(len(parts)):
        key = "/".join(parts[k:])
        if key in keys:
            return keys[key]
    return None


def load_factor_annotations(path: str | Path, file_names: Sequence[str | Path] | Any, *,
                            file_column: str = "file_name", columns: Sequence[str] | None = None,
                            missing: str = "raise") -> pd.DataFrame:
    """Per-image factor labels aligned to a dataset's file order.

    Args:
        path: The annotation file: ``.csv``, ``.jsonl`` (one JSON record per line, ImageNet-X's format) or
            ``.json`` (a list of records).
        file_names: The dataset's files in order (e.g. ``dataset.paths``), or the dataset itself (anything
            with ``.paths``). Matched to ``file_column`` by their longest trailing path part.
        file_column: The column naming each image.
        columns: The factor columns to return; default: ImageNet-X's 16 factors (+ ``top_factor``) when
            the file has all of them, else every column but ``file_column`` and :data:`NON_FACTOR_COLUMNS`.
        missing: A dataset file without annotation: ``"raise"``, or ``"nan"`` to leave its row missing
            (NaN; the metrics then leave it out of that factor's rows).

    Returns:
        One row per entry of ``file_names`` (same order), one column per factor; binary columns (0/1,
        true/false) as ``int64`` (``float64`` with NaN where a value is missing: an empty cell, ``nan``,
        JSON ``null``, or an unmatched file with ``missing="nan"``), others as strings
        (object, NaN where missing). The index is the matched annotation file name (``None`` where
        unmatched) and ``attrs["layout"]`` is ``"imagenet-x"`` or ``"generic"``.

    Raises:
        DataNotFoundError: The file does not exist.
        DataError: Unreadable file, missing file or factor column, duplicated file names, an ImageNet-X
            factor that is not 0/1, or (``missing="raise"``) dataset files without annotations (the
            message names them, with close matches).
        InputError: Bad ``file_names``, ``columns`` or ``missing``.
    """
    if missing not in ("raise", "nan"):
        raise InputError(f"missing={missing!r}; expected 'raise' or 'nan'")
    names = _names(file_names)
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataNotFoundError(f"factor annotations not found: {p}")
    header, rows = _read_records(p)
    need_columns(header, [file_column], p)
    if not rows:
        raise EmptyDatasetError(f"factor annotations {p} have a header but no rows")
    imagenet_x = all(f in header for f in IMAGENET_X_FACTORS)
    if columns is not None:
        if isinstance(columns, str):
            columns = [columns]
        cols = list(columns)
        if not cols:
            raise InputError("columns is empty: name at least one factor column (or pass None for all)")
        if file_column in cols:
            raise InputError(f"columns names the file column {file_column!r}; list factor columns only")
        need_columns(header, cols, p)
    elif imagenet_x:
        cols = list(IMAGENET_X_FACTORS) + (["top_factor"] if "top_factor" in header else [])
    else:
        cols = [c for c in header if c != file_column and c not in NON_FACTOR_COLUMNS]
        if not cols:
            raise DataError(f"factor annotations {p} have no factor column: its columns are {header}; expected "
                            f"{file_column!r} plus one column per factor")
    keys: dict[str, int] = {}
    key_of: list[str] = []
    for i, r in enumerate(rows):
        fn = r.get(file_column)
        fn = "" if fn is None else str(fn).strip().replace("\\", "/")
        if not fn:
            raise DataError(f"factor annotations {p}: record {i + 1} has an empty {file_column!r}")
        if fn in keys:
            raise DataError(f"factor annotations {p}: file {fn!r} is annotated twice (records {keys[fn] + 1} and "
                            f"{i + 1})")
        keys[fn] = i
        key_of.append(fn)
    matched = [_match(n, keys) for n in names]
    unmatched = [n for n, m in zip(names, matched) if m is None]
    if unmatched and missing == "raise":
        first = Path(unmatched[0]).name
        raise DataError(
            f"{len(unmatched)} of {len(names)} dataset files have no entry in {p} (column {file_column!r}), e.g. "
            f"{unmatched[:3]}.{did_you_mean(first, list(keys)[:100_000])} Pass missing='nan' to keep them unannotated"
        )
    if len(unmatched) == len(names):
        raise DataError(f"none of the {len(names)} dataset files is annotated in {p} (column {file_column!r}); "
                        f"e.g. {names[0]!r} vs annotated {next(iter(keys))!r}")
    data: dict[str, pd.Series] = {}
    for c in cols:
        values = [math.nan if m is None else _cell(rows[m].get(c)) for m in matched]
        data[c] = _column(c, values, p, must_be_binary=imagenet_x and c in IMAGENET_X_FACTORS)
    index = pd.Index([None if m is None else key_of[m] for m in matched], name=file_column)
    table = pd.DataFrame(data, columns=cols)
    table.index = index
    table.attrs.update(layout="imagenet-x" if imagenet_x else "generic", source=str(p),
                       unmatched=len(unmatched))
    return table


__all__ = ["IMAGENET_X_FACTORS", "NON_FACTOR_COLUMNS", "load_factor_annotations"]
