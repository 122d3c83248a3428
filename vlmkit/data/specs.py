"""Dataset specs: the roles and formats, each spec's row name, and the checks of a ``datasets`` mapping
(role -> spec) before any data is read (:func:`check_datasets`).

Holds the roles (:data:`DATASET_ROLES`), the formats and the roles each can fill (:data:`DATASET_FORMATS`),
the per-format key tables (required and optional keys, which path keys must be files or folders), the
checks of one spec (paths made absolute, class lists, Karpathy splits, SCAM variants and toy sets expanded
to one spec per dataset), the name a spec's rows carry (:func:`dataset_name`) and the name checks across
roles. :mod:`vlmkit.data.sources` builds on it (the shared layout, loading).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vlmkit.data.typographic import SCAM_VARIANTS
from vlmkit.errors import DataNotFoundError, InputError, did_you_mean

#: What a dataset is used for; the keys of a ``datasets`` mapping.
DATASET_ROLES: tuple[str, ...] = ("retrieval", "classification", "typographic", "hard", "segmentation", "vqa",
                                   "factors", "captioning")

#: Format -> the roles it can fill.
DATASET_FORMATS: dict[str, tuple[str, ...]] = {
    "toy": DATASET_ROLES,
    "coco": ("retrieval", "captioning"),
    "caption-folder": ("captioning",),
    "karpathy": ("retrieval",),
    "csv": ("classification", "hard", "factors"),
    "imagefolder": ("classification", "hard", "factors"),
    "imagenet-a": ("hard",),
    "imagenet-r": ("hard",),
    "scam": ("typographic",),
    "rta100": ("typographic",),
    "segmentation": ("segmentation",),
    "questions": ("vqa",),
}

#: Splits of a Karpathy JSON.
KARPATHY_SPLITS: tuple[str, ...] = ("test", "val", "train", "restval")

#: Toy-world sets filling each role (``sets`` of a toy spec; default all of the role's).
TOY_SETS: dict[str, tuple[str, ...]] = {
    "retrieval": ("toy-retrieval",),
    "classification": ("toy-shapes",),
    "typographic": ("toy-typographic", "toy-blank-label"),
    "hard": ("toy-shapes",),
    "segmentation": ("toy-segmentation",),
    "vqa": ("toy-questions",),
    "factors": ("toy-factors",),
    "captioning": ("toy-captions",),
}

# ---------------------------------------------------------------------------------------------- names


def _karpathy_source(path: Path) -> str:
    """``coco``/``flickr30k``...: the JSON's ``dataset`` field, else a ``dataset_<x>.json`` file name's ``x``.

    The Karpathy files end with ``"dataset": "<x>"}``, so the field is read from the file's tail; a
    small file where it is elsewhere is parsed whole.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            f.seek(max(0, size - 4096))
            tail = f.read().decode("utf-8", errors="ignore")
        m = re.search(r'"dataset"\s*:\s*"([^"]+)"\s*}\s*$', tail)
        if m:
            return m[1]
        if size < 32 * 2**20:
            data = json.loads(path.read_text(encoding="utf-8"))
            src = data.get("dataset") if isinstance(data, dict) else None
            if isinstance(src, str) and src:
                return src
    except (OSError, ValueError):
        pass
    stem = path.stem
    return stem.removeprefix("dataset_") if stem.startswith("dataset_") and stem != "dataset_" else stem


def dataset_name(spec: Mapping[str, Any]) -> str:
    """The row name of the dataset a spec gives (its ``name`` when set).

    Defaults, after source and split: karpathy ``<dataset>-karpathy-<split>`` (``coco-karpathy-test``;
    the source from the JSON's ``dataset`` field, else a ``dataset_<x>.json`` file name); coco the
    images folder's parent folder (``coco-mini``); csv the CSV's folder (``imagenet-samples``);
    imagefolder, rta100 and segmentation the folder name (``rta100`` for RTA-100); imagenet-a/-r
    ``imagenet-a``/``imagenet-r``; scam ``scam``, ``scam-noscam``, ``scam-synthscam``; questions the
    JSONL's stem; toy the toy set's name (``toy-retrieval``, ``toy-shapes``, ``toy-typographic`` ...).
    A spec with several SCAM variants or toy sets (not normalised) is named after the first.

    Args:
        spec: A dataset spec (normalised by :func:`~vlmkit.data.specs.check_datasets` or not).

    Raises:
        InputError: The spec has no known ``format``, or lacks the key its name comes from.
    """
    if spec.get("name"):
        return str(spec["name"])
    fmt = str(spec.get("format", "")).lower()
    if fmt not in DATASET_FORMATS:
        raise InputError(f"dataset spec {dict(spec)!r} has no known 'format'; expected one of {list(DATASET_FORMATS)}")
    if fmt == "toy":
        sets = spec.get("sets")
        first = sets if isinstance(sets, str) else (sets[0] if sets else None)
        if not first:
            raise InputError("a toy spec's name depends on its role: check it with check_datasets "
                             "(or give 'sets')")
        return str(first)
    if fmt in ("imagenet-a", "imagenet-r"):
        return fmt
    if fmt == "scam":
        variants = spec.get("variants") or ["scam"]
        v = str(variants if isinstance(variants, str) else variants[0]).lower()
        v = {k.lower(): k for k in SCAM_VARIANTS}.get(v) or {p.lower(): k for k, p in SCAM_VARIANTS.items()}.get(v, v)
        return "scam" if v == "scam" else f"scam-{v}"
    if "path" not in spec:
        raise InputError(f"dataset spec {dict(spec)!r} (format {fmt!r}) has no 'path' to name it after")
    path = Path(spec["path"]).expanduser().absolute()
    if fmt == "karpathy":
        split = spec.get("split", "test")
        label = split if isinstance(split, str) else "+".join(split)
        return f"{_karpathy_source(path)}-karpathy-{label}"
    if fmt == "coco":
        if "images" not in spec:
            raise InputError(f"dataset spec {dict(spec)!r} (format 'coco') has no 'images' to name it after")
        return Path(spec["images"]).expanduser().absolute().parent.name
    if fmt == "csv":
        return path.parent.name
    if fmt == "rta100":
        return "rta100"
    if fmt == "questions":
        return path.stem
    return path.name  # imagefolder, segmentation



# ---------------------------------------------------------------------------------------------- checks

_COMMON_KEYS = ("format", "name", "n_images", "models")
# format -> (required keys, optional keys), besides the common ones
_FORMAT_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "toy": ((), ("sets",)),
    "coco": (("path", "images"), ("instances", "safety")),
    "caption-folder": (("path",), ("vocabulary", "safety")),
    "karpathy": (("path", "images"), ("split",)),
    "csv": (("path", "images"), ("classes", "label_column", "file_column", "factors")),
    "imagefolder": (("path",), ("classes", "classnames", "factors")),
    "imagenet-a": (("path",), ()),
    "imagenet-r": (("path",), ()),
    "scam": (("path",), ("variants",)),
    "rta100": (("path",), ()),
    "segmentation": (("path",), ("annotations",)),
    "questions": (("path",), ("images",)),
}
# what each path-like key must be: "file" or "dir" (per format; annotations is checked on its own)
_PATH_KINDS: dict[str, dict[str, str]] = {
    "coco": {"path": "file", "images": "dir", "instances": "file"},
    "caption-folder": {"path": "dir"},
    "karpathy": {"path": "file", "images": "dir"},
    "csv": {"path": "file", "images": "dir"},
    "imagefolder": {"path": "dir"},
    "imagenet-a": {"path": "dir"},
    "imagenet-r": {"path": "dir"},
    "scam": {"path": "dir"},
    "rta100": {"path": "dir"},
    "segmentation": {"path": "dir"},
    "questions": {"path": "file", "images": "dir"},
}


# ---------------------------------------------------------------------------------------------- checks


def _is_pathlike(v: Any) -> bool:
    return isinstance(v, (str, os.PathLike)) and str(v) != ""


def _str_list(v: Any, at: str, key: str, expected: str) -> list[str]:
    """``v`` as a list of strings (a single string counts as one); InputError otherwise."""
    if isinstance(v, str):
        return [v]
    if isinstance(v, (list, tuple)) and v and all(isinstance(x, str) and x for x in v):
        return list(v)
    raise InputError(f"{at}: key {key!r} must be {expected}; got {v!r}")


def _check_path(spec: dict[str, Any], key: str, kind: str, at: str) -> None:
    p = Path(spec[key]).expanduser().absolute()
    ok = p.is_file() if kind == "file" else p.is_dir()
    if not ok:
        what = "file" if kind == "file" else "folder"
        raise DataNotFoundError(f"{at}: key {key!r} ({spec['format']} format) must name an existing {what}; "
                                f"not found: {p}")
    spec[key] = str(p)


def _check_classes(v: Any, at: str, key: str) -> Any:
    """``"imagenet"``, a list of names, or an existing class-list file (made absolute)."""
    if isinstance(v, (list, tuple)):
        return _str_list(v, at, key, "'imagenet', a class-list file or a list of class names")
    if not _is_pathlike(v):
        raise InputError(f"{at}: key {key!r} must be 'imagenet', a class-list file (.csv, .txt, .json) or a list "
                         f"of class names; got {v!r}")
    if str(v).lower() == "imagenet":
        return "imagenet"
    p = Path(v).expanduser().absolute()
    if not p.is_file():
        raise DataNotFoundError(f"{at}: key {key!r} must be 'imagenet', a list of names or an existing class-list "
                                f"file; not found: {p}")
    return str(p)


def _check_spec(raw: Any, role: str, at: str) -> list[dict[str, Any]]:
    """One spec of ``role`` -> its normalised specs (one per dataset it gives)."""
    if isinstance(raw, str):  # shorthand: "toy"
        raw = {"format": raw}
    if not isinstance(raw, Mapping):
        raise InputError(f"{at}: a dataset spec must be a mapping with a 'format' key (or a list of them); "
                         f"got {type(raw).__name__} {raw!r}")
    spec = dict(raw)
    bad = [k for k in spec if not isinstance(k, str)]
    if bad:
        raise InputError(f"{at}: spec keys must be strings; got {bad[0]!r}")
    if "format" not in spec:
        raise InputError(f"{at}: the spec has no 'format' key; expected one of {list(DATASET_FORMATS)} "
                         f"(keys given: {sorted(spec)})")
    fmt = spec["format"]
    if not isinstance(fmt, str) or fmt.lower() not in DATASET_FORMATS:
        hint = did_you_mean(str(fmt).lower(), DATASET_FORMATS) if isinstance(fmt, str) else ""
        raise InputError(f"{at}: key 'format' is {fmt!r}, not a known dataset format; expected one of "
                         f"{list(DATASET_FORMATS)}.{hint}")
    fmt = spec["format"] = fmt.lower()
    if role not in DATASET_FORMATS[fmt]:
        ok = [f for f, roles in DATASET_FORMATS.items() if role in roles]
        raise InputError(f"{at}: format {fmt!r} cannot fill role {role!r} (it fills {list(DATASET_FORMATS[fmt])}); "
                         f"formats for {role!r}: {ok}")
    required, optional = _FORMAT_KEYS[fmt]
    allowed = (*_COMMON_KEYS, *required, *optional)
    for k in spec:
        if k not in allowed:
            raise InputError(f"{at}: unknown key {k!r} for format {fmt!r}; allowed keys: {list(allowed)}."
                             f"{did_you_mean(k, allowed)}")
    for k in required:
        if k not in spec or spec[k] is None:
            raise InputError(f"{at}: format {fmt!r} needs key {k!r} ({_describe(fmt, k)}); keys given: {sorted(spec)}")

    # common keys
    if "name" in spec and (not isinstance(spec["name"], str) or not spec["name"].strip()):
        raise InputError(f"{at}: key 'name' must be a non-empty string; got {spec['name']!r}")
    n = spec.get("n_images")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise InputError(f"{at}: key 'n_images' must be a positive int (or null for the whole set); got {n!r}")
    if "models" in spec:
        m = spec["models"]
        if not isinstance(m, (list, tuple)) or not all(isinstance(x, str) and x.strip() for x in m):
            raise InputError(f"{at}: key 'models' must be a list of model spec strings; got {m!r}")
        spec["models"] = list(m)

    if "safety" in spec:
        spec["safety"] = _str_list(spec["safety"], at, "safety", "a list of class names (the safety-critical subset)")
    # paths
    for key, kind in _PATH_KINDS.get(fmt, {}).items():
        if key in spec and spec[key] is not None:
            if not _is_pathlike(spec[key]):
                raise InputError(f"{at}: key {key!r} must be a path (string); got {spec[key]!r}")
            _check_path(spec, key, kind, at)
    if spec.get("images") is None:
        spec.pop("images", None)

    # format keys
    if fmt == "karpathy":
        split = spec.get("split", "test")
        splits = _str_list(split, at, "split", f"one of {list(KARPATHY_SPLITS)} or a list of them")
        for s in splits:
            if s not in KARPATHY_SPLITS:
                raise InputError(f"{at}: key 'split' is {s!r}; expected one of {list(KARPATHY_SPLITS)} "
                                 f"(or a list of them).{did_you_mean(s, KARPATHY_SPLITS)}")
        spec["split"] = splits[0] if len(splits) == 1 else splits
    if fmt in ("csv", "imagefolder"):
        if role == "factors" and spec.get("factors") is None:
            raise InputError(f"{at}: role 'factors' needs key 'factors': a per-image factor file (CSV with "
                             "file_name + one column per factor, or the ImageNet-X annotations)")
        if spec.get("factors") is not None:
            if not _is_pathlike(spec["factors"]):
                raise InputError(f"{at}: key 'factors' must be a path (string); got {spec['factors']!r}")
            _check_path(spec, "factors", "file", at)
    if fmt == "csv":
        if "classes" in spec and spec["classes"] is not None:
            spec["classes"] = _check_classes(spec["classes"], at, "classes")
        for key in ("label_column", "file_column"):
            if key in spec and (not isinstance(spec[key], str) or not spec[key]):
                raise InputError(f"{at}: key {key!r} must be a CSV column name (string); got {spec[key]!r}")
    elif fmt == "imagefolder":
        for key in ("classes", "classnames"):
            if key in spec and spec[key] is not None:
                spec[key] = _check_classes(spec[key], at, key)
        if spec.get("classnames") == "imagenet" and spec.get("classes") != "imagenet":
            raise InputError(f"{at}: key 'classnames' may be 'imagenet' only with classes: imagenet "
                             "(the wnid folders of ImageNet)")
    elif fmt == "segmentation":
        ann = spec.get("annotations")
        if ann is not None:
            if not _is_pathlike(ann):
                raise InputError(f"{at}: key 'annotations' must be a path (string); got {ann!r}")
            p = Path(ann).expanduser()
            p = p if p.is_absolute() or p.is_file() else Path(spec["path"]) / p
            if not p.is_file():
                raise DataNotFoundError(f"{at}: key 'annotations' must name an existing CSV/JSON file "
                                        f"(absolute, or relative to 'path'); not found: {p}")
            spec["annotations"] = str(p.absolute())
    elif fmt == "scam":
        return _expand(spec, _scam_variants(spec, at), at, "variants", _scam_suffix)
    elif fmt == "toy":
        valid = TOY_SETS[role]
        sets = _str_list(spec.get("sets", list(valid)), at, "sets", f"a list of {list(valid)}")
        for s in sets:
            if s not in valid:
                raise InputError(f"{at}: key 'sets' names {s!r}, not a toy set of role {role!r}; expected some "
                                 f"of {list(valid)}.{did_you_mean(s, valid)}")
        return _expand(spec, list(dict.fromkeys(sets)), at, "sets", lambda s: s.removeprefix("toy-"))
    spec["name"] = dataset_name(spec)
    return [spec]


def _describe(fmt: str, key: str) -> str:
    kinds = _PATH_KINDS.get(fmt, {})
    return {"file": "a file", "dir": "a folder"}.get(kinds.get(key, ""), "a value")


def _scam_variants(spec: dict[str, Any], at: str) -> list[str]:
    lower = {k.lower(): v for k, v in SCAM_VARIANTS.items()} | {v.lower(): k for k, v in SCAM_VARIANTS.items()}
    if spec.get("variants") is None:
        found = [v for v in SCAM_VARIANTS if (Path(spec["path"]) / v).is_dir()]
        if not found:
            raise DataNotFoundError(f"{at}: SCAM folder {spec['path']} has none of the variant folders "
                                    f"{list(SCAM_VARIANTS)} (key 'path')")
        return found
    out = []
    for v in _str_list(spec["variants"], at, "variants", f"a list of {list(SCAM_VARIANTS)}"):
        key = lower.get(v.lower())
        if key is None:
            raise InputError(f"{at}: key 'variants' names {v!r}; expected some of {list(SCAM_VARIANTS)}."
                             f"{did_you_mean(v.lower(), SCAM_VARIANTS)}")
        if not (Path(spec["path"]) / key).is_dir():
            raise DataNotFoundError(f"{at}: key 'variants' names {key!r} but its folder is missing: "
                                    f"{Path(spec['path']) / key}")
        out.append(key)
    return list(dict.fromkeys(out))


def _scam_suffix(variant: str) -> str:
    return variant


def _expand(spec: dict[str, Any], parts: list[str], at: str, key: str, suffix: Any) -> list[dict[str, Any]]:
    """One normalised spec per variant/set; with a ``name`` and several parts the first keeps the name and
    the others get ``name-<suffix>``."""
    out = []
    for i, part in enumerate(parts):
        one = {**spec, key: [part]}
        if "name" in spec and len(parts) > 1 and i > 0:
            one["name"] = f"{spec['name']}-{suffix(part)}"
        one["name"] = dataset_name(one)
        out.append(one)
    return out


def check_datasets(datasets: Mapping[str, Any], *, where: str = "datasets") -> dict[str, list[dict[str, Any]]]:
    """Check and normalise a ``datasets`` mapping before any data is read.

    Each role maps to one spec (a mapping with a ``format`` key), a list of specs, a bare format name
    (``"toy"``) or None / an empty list (no data for that role; the role is left out). The result has
    one spec per dataset: a SCAM spec with three variants, or the toy typographic spec (two sets),
    becomes one spec per variant/set (with ``variants``/``sets`` of one). Each normalised spec has its
    ``name`` filled in, its paths made absolute and its defaults (``split``, ``variants``, ``sets``)
    filled; checking a normalised mapping again gives the same mapping.

    Args:
        datasets: Role -> spec(s); roles in :data:`DATASET_ROLES`, formats in :data:`DATASET_FORMATS`.
        where: What the mapping is called in messages (a parameter or option name).

    Returns:
        Role -> list of normalised spec dicts, in the roles' and specs' given order.

    Raises:
        InputError: Not a mapping, an unknown role or format, a format that cannot fill its role, an
            unknown or missing key, a value of the wrong type (``split``, ``variants``, ``n_images``,
            ``models`` ...), or two different datasets with the same name.
        DataNotFoundError: A path that does not exist (or is a file where a folder is needed, or the
            other way round).
    """
    if not isinstance(datasets, Mapping):
        raise InputError(f"{where} must be a mapping of role -> dataset spec(s) with roles {list(DATASET_ROLES)}; "
                         f"got {type(datasets).__name__} {datasets!r}")
    out: dict[str, list[dict[str, Any]]] = {}
    for role, value in datasets.items():
        if role not in DATASET_ROLES:
            raise InputError(f"{where}: unknown role {role!r}; expected some of {list(DATASET_ROLES)}."
                             f"{did_you_mean(str(role), DATASET_ROLES)}")
        if value is None:
            continue
        many = isinstance(value, (list, tuple))
        items = list(value) if many else [value]
        specs: list[dict[str, Any]] = []
        for i, raw in enumerate(items):
            at = f"{where}[{role!r}][{i}]" if many else f"{where}[{role!r}]"
            specs += _check_spec(raw, role, at)
        if specs:
            out[role] = specs
    _check_names(out, where)
    return out


def spec_identity(spec: dict[str, Any]) -> dict[str, Any]:
    """What makes two normalised specs the same dataset: the spec without its ``models`` key.

    Args:
        spec: A normalised spec (from :func:`check_datasets`).

    Returns:
        A copy of ``spec`` without ``models``; equal for two specs that give the same dataset.
    """
    return {k: v for k, v in spec.items() if k != "models"}


def _check_names(specs: dict[str, list[dict[str, Any]]], where: str) -> None:
    """Names are unique within a role; across roles one name is one dataset (the same spec)."""
    seen: dict[str, tuple[str, dict[str, Any]]] = {}
    for role, lst in specs.items():
        here: set[str] = set()
        for spec in lst:
            name = spec["name"]
            if name in here:
                raise InputError(f"{where}[{role!r}]: two datasets are named {name!r}; give one of them "
                                 "another 'name'")
            here.add(name)
            if name in seen and spec_identity(seen[name][1]) != spec_identity(spec):
                raise InputError(f"{where}: the name {name!r} is used by two different datasets (roles "
                                 f"{seen[name][0]!r} and {role!r}); give one of them another 'name'")
            seen.setdefault(name, (role, spec))


__all__ = ["DATASET_FORMATS", "DATASET_ROLES", "KARPATHY_SPLITS", "TOY_SETS", "check_datasets", "dataset_name",
           "spec_identity"]
