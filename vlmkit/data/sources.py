"""Datasets as a parameter: one ``datasets`` mapping (role -> spec) over the loaders of the data layer.

A notebook or grid run names its data with one mapping from a *role* (what the data is used for) to one
spec or a list of specs; each spec names a *format* (which loader reads it) and that format's keys::

    datasets = {
        "retrieval": [{"format": "toy"},
                      {"format": "karpathy", "path": "dataset_coco.json", "images": "coco", "split": "test"}],
        "classification": {"format": "csv", "path": "imagenet-samples/labels.csv",
                           "images": "imagenet-samples/images", "classes": "imagenet",
                           "label_column": "class_index"},
        "typographic": {"format": "scam", "path": "scam", "variants": ["scam", "noscam"]},
        "hard": {"format": "imagenet-a", "path": "imagenet-a", "n_images": 500},
    }
    specs = check_datasets(datasets)              # every error before any work
    sets = load_datasets(datasets, n_images=64, seed=0, root="outputs/run/data")
    sets["typographic"][1].name                   # "scam-noscam"

Keys every format takes: ``format``, ``name`` (the row name; default after source and split),
``n_images`` (this set's subset size, overriding the caller's) and ``models`` (the model specs that
evaluate this set instead of the grid's: attached to the loaded set as ``ds.models`` and honoured by
:func:`vlmkit.evaluate.models_for`). The toy world (``format: toy``)
fills every role with its own exported sets.

``shared_layout(DIR)`` gives the specs of the ``../shared/data`` layout (``coco-mini/``,
``imagenet-samples/``, ``scam/``), which is what ``--data DIR`` adds to a notebook's ``datasets``
(:func:`with_shared_layout`).

The roles, formats, row names and checks (:func:`~vlmkit.data.specs.check_datasets`) live in
:mod:`vlmkit.data.specs`; this module lays out the shared data and loads checked specs.

Toy sets, segmentation and question sets are loaded through :mod:`vlmkit.toyworld` and
:mod:`vlmkit.tasks`, imported inside the functions that need them (neither is imported with this module).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vlmkit.data.captions import load_coco_captions, load_karpathy
from vlmkit.data.classnames import (
    imagenet_a_wnids,
    imagenet_classnames,
    imagenet_r_wnids,
    imagenet_subset_classnames,
    imagenet_wnids,
)
from vlmkit.data.images import ImageDataset
from vlmkit.data.labelled import load_image_folder, load_labelled_csv, read_classnames
from vlmkit.data.typographic import SCAM_VARIANTS, load_rta100, load_scam
from vlmkit.data.specs import (
    DATASET_ROLES,
    check_datasets,
    spec_identity,
)
from vlmkit.errors import DataNotFoundError, InputError, did_you_mean

# ---------------------------------------------------------------------------------------------- shared layout


def shared_layout(data_path: str | Path) -> dict[str, list[dict[str, Any]]]:
    """The specs of a folder in the ``../shared/data`` layout (what ``--data DIR`` means).

    * ``retrieval``: ``coco-mini/`` (``captions.json`` + ``images/``, format coco); the same photos fill
      ``captioning`` (objects from their reference captions, the street-scene safety classes);
    * ``classification``: ``imagenet-samples/`` (``labels.csv`` + ``images/``, ``classes.csv``, labels
      in ``class_index``; format csv);
    * ``typographic``: ``scam/`` with its variants present (``scam``, ``scam-noscam``, ``scam-synthscam``).

    Only the parts present are included.

    Args:
        data_path: The folder.

    Returns:
        Role -> normalised specs, as :func:`~vlmkit.data.specs.check_datasets` returns.

    Raises:
        DataNotFoundError: The folder does not exist, or holds none of the three parts.
    """

    base = Path(data_path).expanduser().absolute()
    if not base.is_dir():
        raise DataNotFoundError(f"--data folder not found (or not a folder): {base}")
    raw: dict[str, Any] = {}
    coco = base / "coco-mini"
    if (coco / "captions.json").is_file() and (coco / "images").is_dir():
        raw["retrieval"] = [{"format": "coco", "path": str(coco / "captions.json"), "images": str(coco / "images")}]
        raw["captioning"] = [{"format": "coco", "path": str(coco / "captions.json"), "images": str(coco / "images"),
                              "name": "coco-mini-captions", "safety": ["person", "bicycle", "car", "motorcycle",
                                                                        "bus", "truck", "traffic light", "stop sign"]}]
    inet = base / "imagenet-samples"
    if (inet / "labels.csv").is_file() and (inet / "images").is_dir() and (inet / "classes.csv").is_file():
        raw["classification"] = [{"format": "csv", "path": str(inet / "labels.csv"), "images": str(inet / "images"),
                                  "classes": str(inet / "classes.csv"), "label_column": "class_index"}]
    scam = base / "scam"
    if (scam / "labels.csv").is_file() and any((scam / v).is_dir() for v in SCAM_VARIANTS):
        raw["typographic"] = [{"format": "scam", "path": str(scam)}]
    if not raw:
        raise DataNotFoundError(
            f"--data folder {base} holds none of coco-mini/ (captions.json, images/), imagenet-samples/ "
            "(labels.csv, classes.csv, images/) or scam/ (labels.csv, scam/, noscam/, synthscam/): the "
            "../shared/data layout"
        )
    return check_datasets(raw, where=f"--data {base}")


def with_shared_layout(datasets: Mapping[str, Any], data_path: str | Path | None) -> dict[str, list[dict[str, Any]]]:
    """``datasets`` with the specs of :func:`shared_layout` appended to the roles it names (what ``--data``
    does: a study that measures retrieval gets the shared photos' retrieval set, not its classification set).

    A shared spec equal to one already in ``datasets`` (same normalised spec) is not added twice.

    Args:
        datasets: Role -> spec(s), as for :func:`~vlmkit.data.specs.check_datasets`.
        data_path: A folder in the ``../shared/data`` layout; falsy: ``datasets`` alone.

    Returns:
        Role -> normalised specs.

    Raises:
        InputError, DataNotFoundError: As :func:`~vlmkit.data.specs.check_datasets` and :func:`shared_layout`.
    """

    own = check_datasets(datasets)
    if not data_path:
        return own
    merged = {role: list(specs) for role, specs in own.items()}
    for role, specs in shared_layout(data_path).items():
        if role not in merged:
            continue
        have = merged[role]
        have += [s for s in specs if all(spec_identity(s) != spec_identity(h) for h in have)]
    return check_datasets(merged, where=f"datasets + --data {data_path}")

# ---------------------------------------------------------------------------------------------- loading


def _classes_for_csv(spec: dict[str, Any]) -> tuple[Any, list[str] | None]:
    """(classnames, class_keys) for :func:`load_labelled_csv`."""
    classes = spec.get("classes")
    if classes == "imagenet":
        keys = imagenet_wnids() if spec.get("label_column") == "wnid" else None
        return imagenet_classnames(), keys
    return classes, None


def _load_one(spec: dict[str, Any], role: str, toy: Any) -> ImageDataset:
    fmt, name = spec["format"], spec["name"]
    if fmt == "toy":
        return toy(spec, role)
    if role == "captioning":
        from vlmkit.tasks.caption_data import load_caption_folder, load_coco_caption_set

        if fmt == "coco":
            return load_coco_caption_set(spec["path"], spec["images"], instances_json=spec.get("instances"),
                                         safety=spec.get("safety", ()), name=name)
        return load_caption_folder(spec["path"], vocabulary=spec.get("vocabulary", "coco"),
                                   safety=spec.get("safety", ()), name=name)
    if fmt == "coco":
        return load_coco_captions(spec["path"], spec["images"], name=name)
    if fmt == "karpathy":
        return load_karpathy(spec["path"], spec["images"], split=spec.get("split", "test"), name=name)
    if fmt == "csv":
        classnames, keys = _classes_for_csv(spec)
        return load_labelled_csv(spec["path"], spec["images"], classnames, file_column=spec.get("file_column", "file"),
                                 label_column=spec.get("label_column", "label"), class_keys=keys, name=name)
    if fmt == "imagefolder":
        classes, classnames = spec.get("classes"), spec.get("classnames")
        if classes == "imagenet":
            classes = imagenet_wnids()
            classnames = imagenet_classnames() if classnames in (None, "imagenet") else read_classnames(classnames)
        else:
            classes = None if classes is None else read_classnames(classes)
            classnames = None if classnames is None else read_classnames(classnames)
        return load_image_folder(spec["path"], classes, classnames, name=name)
    if fmt in ("imagenet-a", "imagenet-r"):
        wnids = imagenet_a_wnids() if fmt == "imagenet-a" else imagenet_r_wnids()
        return load_image_folder(spec["path"], wnids, imagenet_subset_classnames(fmt), name=name)
    if fmt == "scam":
        ds = load_scam(spec["path"], variant=spec["variants"][0])
        ds.name = name
        return ds
    if fmt == "rta100":
        ds = load_rta100(spec["path"])
        ds.name = name
        return ds
    if fmt == "segmentation":
        from vlmkit.tasks.masks import load_segmentation_folder

        return load_segmentation_folder(spec["path"], spec.get("annotations"), name=name)
    if fmt == "questions":
        from vlmkit.tasks.questions import load_question_jsonl

        return load_question_jsonl(spec["path"], spec.get("images"), name=name)
    raise InputError(f"unknown dataset format {fmt!r}")  # unreachable after check_datasets


def load_datasets(
    datasets: Mapping[str, Any],
    *,
    n_images: int | None,
    seed: int,
    root: str | Path,
    roles: Sequence[str] | None = None,
) -> dict[str, list[ImageDataset]]:
    """Load every dataset of a ``datasets`` mapping, each subset to ``n_images``.

    All specs are checked first (:func:`~vlmkit.data.specs.check_datasets`), so a typo fails before
    any image is read.
    Each set is then loaded whole and subset with ``ds.subset(n, seed=seed)`` where ``n`` is the
    spec's own ``n_images``, else ``n_images`` (capped at the set's size), else the whole set (a
    Karpathy spec loads only its split). The toy world is exported once under ``root/"toy"`` with
    ``n = n_images or 64`` images per set and ``seed`` (a toy spec with its own ``n_images`` gets its
    own export of that size), and its sets are shared across roles.

    Args:
        datasets: Role -> spec(s), as for :func:`~vlmkit.data.specs.check_datasets`.
        n_images: Images per set (None: whole sets; the toy world then exports 64).
        seed: Seed of the subsets and of the toy world's scenes.
        root: Folder for the toy world's exported sets (``root/"toy"``).
        roles: Only these roles (others are skipped; roles without specs are simply absent).

    Returns:
        Role -> loaded datasets (``ds.name`` set), in the specs' order.

    Raises:
        InputError, DataNotFoundError: As :func:`~vlmkit.data.specs.check_datasets`, or an unknown
            role in ``roles``.
        DataError, EmptyDatasetError: From the loaders (bad file contents), or a spec's ``n_images``
            larger than its set.
    """
    if n_images is not None and (isinstance(n_images, bool) or not isinstance(n_images, int) or n_images < 1):
        raise InputError(f"n_images must be a positive int or None (whole sets); got {n_images!r}")
    if roles is not None:
        for r in roles:
            if r not in DATASET_ROLES:
                raise InputError(f"roles: unknown role {r!r}; expected some of {list(DATASET_ROLES)}."
                                 f"{did_you_mean(str(r), DATASET_ROLES)}")

    specs = check_datasets(datasets)
    base = Path(root).expanduser() / "toy"
    toy_cache: dict[tuple[str, int], ImageDataset] = {}

    def toy(spec: dict[str, Any], role: str) -> ImageDataset:
        n = spec.get("n_images") or n_images or 64
        which = spec["sets"][0]
        key = (which, n)
        if key not in toy_cache:
            if which == "toy-segmentation":
                from vlmkit.tasks.masks import load_toy_segmentation

                toy_cache[key] = load_toy_segmentation(base, n=n, seed=seed)
            elif which == "toy-captions":
                from vlmkit.tasks.caption_data import load_toy_captions

                toy_cache[key] = load_toy_captions(base, n=n, seed=seed)
            elif which == "toy-factors":
                from vlmkit.toyworld.sets import load_toy_factor_set

                toy_cache[key] = load_toy_factor_set(base, n=n, seed=seed)
            elif which == "toy-questions":
                from vlmkit.tasks.questions import load_toy_questions

                toy_cache[key] = load_toy_questions(base, n_images=n, seed=seed)
            else:
                from vlmkit.toyworld.sets import load_toy_sets

                for k, ds in load_toy_sets(base, n=n, seed=seed).items():
                    toy_cache[(k, n)] = ds
        return toy_cache[key]

    out: dict[str, list[ImageDataset]] = {}
    for role, lst in specs.items():
        if roles is not None and role not in roles:
            continue
        loaded = []
        for spec in lst:
            ds = _load_one(spec, role, toy)
            own = spec.get("n_images")
            if spec["format"] == "toy":  # exported at its size (questions count per question, not image)
                src, ds = ds, ds.subset(None)  # a copy: the toy sets are shared across roles
                if getattr(src, "factors", None) is not None:  # same files, same order
                    ds.factors = src.factors
            elif own is not None:
                ds = ds.subset(own, seed=seed)
            elif n_images is not None and n_images < len(ds):
                ds = ds.subset(n_images, seed=seed)
            ds.name = spec["name"]
            if spec.get("models"):  # the models this set is evaluated with (vlmkit.evaluate.models_for)
                ds.models = list(spec["models"])
            if spec.get("factors"):  # per-image factor labels, aligned with this (subset's) file order
                from vlmkit.data.factors import load_factor_annotations

                ds.factors = load_factor_annotations(spec["factors"], ds)
            loaded.append(ds)
        out[role] = loaded
    return out


__all__ = ["load_datasets", "shared_layout", "with_shared_layout"]
