"""Labelled images for zero-shot classification: ImageFolder layouts and ``file,label`` CSVs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vlmkit.data.files import check_dir, need_columns, read_csv, read_json
from vlmkit.data.images import IMAGE_EXTENSIONS, ImageDataset, OnError, check_on_error
from vlmkit.errors import DataError, DataNotFoundError, EmptyDatasetError, did_you_mean


@dataclass(frozen=True)
class LabelledItem:
    """One item of a :class:`LabelledImages`."""

    index: int
    path: Path
    label: int
    classname: str


class LabelledImages(ImageDataset):
    """Images with one class label each.

    Args:
        paths: Image file per item, length ``N``.
        labels: Class index per item, length ``N``.
        classnames: Display name per class (index = label).
        name: Dataset name for messages and summaries.
        on_error: Default policy of :meth:`load_images` for unreadable images.

    Attributes:
        labels: ``LongTensor (N,)`` of class indices into :attr:`classnames`.

    Raises:
        DataError: Lengths disagree or a label is outside ``[0, len(classnames))``.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        labels: Sequence[int] | torch.Tensor,
        classnames: Sequence[str],
        *,
        name: str = "labelled",
        on_error: OnError = "raise",
    ) -> None:
        super().__init__(paths, name=name, on_error=on_error)
        self.labels: torch.Tensor = torch.as_tensor(labels, dtype=torch.long).reshape(-1)  # (N,)
        self._classnames: list[str] = [str(c) for c in classnames]
        if len(self.labels) != len(self.paths):
            raise DataError(f"{name}: {len(self.paths)} images but {len(self.labels)} labels")
        if len(self.labels) and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self._classnames)):
            raise DataError(f"{name}: a label is outside [0, {len(self._classnames)}) classes")

    @property
    def classnames(self) -> list[str]:
        """Display name of each class (index = label)."""
        return list(self._classnames)

    @property
    def num_classes(self) -> int:
        """Number of classes in the label space (not only those present)."""
        return len(self._classnames)

    def __getitem__(self, i: int) -> LabelledItem:
        j = self._index(i)
        lab = int(self.labels[j])
        return LabelledItem(j, self.paths[j], lab, self._classnames[lab])

    def _select(self, indices: list[int]) -> LabelledImages:
        return LabelledImages(
            [self.paths[i] for i in indices], self.labels[indices] if indices else [], self._classnames,
            name=self.name, on_error=self.on_error,
        )

    def summary(self) -> dict[str, Any]:
        """``{"type", "name", "images", "classes", "classes_present"}``."""
        return {
            **super().summary(),
            "classes": self.num_classes,
            "classes_present": int(self.labels.unique().numel()),
        }


def read_classnames(source: Sequence[str] | str | Path, column: str | None = None) -> list[str]:
    """A class list from a sequence, or a file: ``.json`` list, ``.txt`` (one per line) or ``.csv``.

    Args:
        source: The names, or a path to a file holding them.
        column: For a CSV, the column to read (default: ``class_name`` if present, else the last).

    Raises:
        DataNotFoundError: The file does not exist.
        DataError: The file cannot be parsed or the column is missing.
    """
    if not isinstance(source, (str, Path)):
        return [str(c) for c in source]
    path = Path(source).expanduser()
    if not path.is_file():
        raise DataNotFoundError(f"class list file not found: {path}")
    if path.suffix.lower() == ".json":
        data = read_json(path, "class list")
        if isinstance(data, dict):
            data = data.get("classnames", data.get("classes"))
        if not isinstance(data, list):
            raise DataError(f"class list {path} must hold a JSON list (or {{'classnames': [...]}})")
        return [str(c) for c in data]
    if path.suffix.lower() == ".csv":
        header, rows = read_csv(path)
        col = column or ("class_name" if "class_name" in header else header[-1])
        need_columns(header, [col], path)
        return [r[col] for r in rows]
    return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def _parse_label(value: str, keys: dict[str, int], n_classes: int, where: str) -> int:
    if value in keys:
        return keys[value]
    try:
        idx = int(value)
    except ValueError:
        raise DataError(
            f"label {value!r} ({where}) is not in the class list of {n_classes} classes.{did_you_mean(value, keys)}"
        ) from None
    if not 0 <= idx < n_classes:
        raise DataError(f"label index {idx} ({where}) is outside [0, {n_classes}) for a class list of {n_classes}")
    return idx


def load_labelled_csv(
    csv_path: str | Path,
    image_root: str | Path,
    classnames: Sequence[str] | str | Path | None = None,
    *,
    file_column: str = "file",
    label_column: str = "label",
    class_keys: Sequence[str] | None = None,
    on_error: OnError = "raise",
    name: str | None = None,
) -> LabelledImages:
    """Load images listed in a CSV with a file column and a label column.

    A label is either a class **name** (matched against ``class_keys``, default ``classnames``) or
    an integer class **index**. Example for an ImageNet ``labels.csv`` with columns
    ``file,class_index,wnid,class_name``::

        load_labelled_csv(csv, images, imagenet_classnames(), label_column="class_index")
        load_labelled_csv(csv, images, imagenet_classnames(), label_column="wnid",
                          class_keys=imagenet_wnids())

    Args:
        csv_path: The CSV (header row required).
        image_root: Folder the file column is relative to.
        classnames: Display names in class order, or a file holding them (see
            :func:`read_classnames`). When None, labels must be names and the classes are their
            sorted unique values.
        file_column: Column with image paths.
        label_column: Column with the labels.
        class_keys: What name labels are matched against, aligned with ``classnames`` (e.g. wnids).
        on_error: ``"raise"`` on a missing image, or ``"skip"`` to drop it with a warning.
        name: Dataset name (default: the CSV's parent folder name).

    Raises:
        DataNotFoundError: The CSV, the image root or an image file is missing.
        DataError: A required column is missing, or a label is not in the class list (the message
            names the label, row and file, with close matches).
        EmptyDatasetError: The CSV has no rows.
    """
    check_on_error(on_error)
    path = Path(csv_path).expanduser()
    if not path.is_file():
        raise DataNotFoundError(f"labels CSV not found: {path}")
    root = check_dir(image_root, "image root")
    header, rows = read_csv(path)
    need_columns(header, [file_column, label_column], path)
    if not rows:
        raise EmptyDatasetError(f"labels CSV {path} has a header but no rows")
    if classnames is None:
        if class_keys is not None:
            raise ValueError("class_keys needs classnames (the display names aligned with the keys)")
        names = sorted({r[label_column] for r in rows})
        ints = [n for n in names if n.lstrip("-").isdigit()]
        if ints and len(ints) == len(names):
            raise DataError(
                f"CSV {path} column {label_column!r} holds integer class indices; pass classnames= "
                "(e.g. vlmkit.data.imagenet_classnames()) to name the classes"
            )
    else:
        names = read_classnames(classnames)
    keys_list = [str(k) for k in class_keys] if class_keys is not None else names
    if len(keys_list) != len(names):
        raise ValueError(f"class_keys has {len(keys_list)} entries but classnames has {len(names)}")
    keys = {k: i for i, k in enumerate(keys_list)}
    paths: list[Path] = []
    labels: list[int] = []
    for r, row in enumerate(rows, start=2):  # row 1 is the header
        where = f"{path.name} line {r}, file {row[file_column]!r}"
        if not row[file_column]:
            raise DataError(f"empty {file_column!r} value in {path.name} line {r}")
        labels.append(_parse_label(row[label_column], keys, len(names), where))
        paths.append(root / row[file_column])
    ds = LabelledImages(paths, labels, names, name=name or path.parent.name, on_error=on_error)
    ds.check_files(on_error)
    return ds


def load_image_folder(
    root: str | Path,
    classes: Sequence[str] | None = None,
    classnames: Sequence[str] | None = None,
    *,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    on_error: OnError = "raise",
    name: str | None = None,
) -> LabelledImages:
    """Load an ImageFolder layout: ``root/<class folder>/<image>``.

    Args:
        root: The folder of class folders.
        classes: Folder names in label order (default: the sorted subfolders, as torchvision).
            Folders not listed raise an error.
        classnames: Display names aligned with ``classes`` (default: the folder names). E.g. for
            an ImageNet folder of wnids: ``classes=imagenet_wnids(), classnames=imagenet_classnames()``.
        extensions: File suffixes (lower case) counted as images; other files are ignored.
        on_error: Default policy of ``load_images`` for unreadable images.
        name: Dataset name (default: the folder name).

    Raises:
        DataNotFoundError: ``root`` does not exist.
        DataError: A subfolder is not in ``classes``, or ``classnames`` has the wrong length.
        EmptyDatasetError: No class folder or no image was found.
    """
    check_on_error(on_error)
    base = check_dir(root, "image folder root")
    folders = sorted(d.name for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not folders:
        raise EmptyDatasetError(f"image folder {base} has no class subfolders")
    cls = [str(c) for c in classes] if classes is not None else folders
    index = {c: i for i, c in enumerate(cls)}
    for f in folders:
        if f not in index:
            raise DataError(f"class folder {base / f} is not in the class list.{did_you_mean(f, cls)}")
    names = [str(c) for c in classnames] if classnames is not None else cls
    if len(names) != len(cls):
        raise DataError(f"classnames has {len(names)} entries but there are {len(cls)} classes")
    exts = {e.lower() for e in extensions}
    paths: list[Path] = []
    labels: list[int] = []
    for f in folders:
        for p in sorted((base / f).iterdir()):
            if p.is_file() and p.suffix.lower() in exts and not p.name.startswith("."):
                paths.append(p)
                labels.append(index[f])
    if not paths:
        raise EmptyDatasetError(f"image folder {base} has class folders but no image files ({sorted(exts)})")
    return LabelledImages(paths, labels, names, name=name or base.name, on_error=on_error)
