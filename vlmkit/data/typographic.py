"""Typographic-attack sets: SCAM (real post-it attacks) and RTA-100.

Both give, per image, the true object class and the attack word written in the image, as indices
into one class list (the sorted union of object labels and attack words), so zero-shot accuracy
against the true label and the attack success rate come from the same logits.

* **SCAM** (Westerhoff et al., 2025, arXiv 2504.04893): ``root/{scam,noscam,synthscam}/<id>.jpg``
  and ``root/labels.csv`` with ``id,object_label,attack_word,postit_area_pct``. ``scam`` has a
  handwritten attack word on a post-it, ``noscam`` the same photo with a blank note, ``synthscam``
  the word rendered in a typeface.
* **RTA-100** (Azuma & Matsui, 2023, "Defense-Prefix for Preventing Typographic Attacks on CLIP",
  arXiv 2304.04512; github.com/azuma164/Defense-Prefix): one folder of images whose file name
  holds the annotation, ``label=<true class>_text=<attack word>.<ext>`` (e.g.
  ``label=dog_text=cat.png``). The released zip unpacks to ``ours/data/``; either that folder or a
  root containing it may be given.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vlmkit.data.files import check_dir, need_columns, read_csv
from vlmkit.data.images import IMAGE_EXTENSIONS, ImageDataset, OnError, check_on_error
from vlmkit.errors import DataError, DataNotFoundError, EmptyDatasetError, did_you_mean

#: SCAM variants: folder name -> file-name prefix in the original release.
SCAM_VARIANTS: dict[str, str] = {"scam": "SCAM", "noscam": "NoSCAM", "synthscam": "SynthSCAM"}
_RTA_NAME = re.compile(r"^label=(?P<label>.+?)_text=(?P<text>.+)$")


@dataclass(frozen=True)
class TypographicItem:
    """One item of a :class:`TypographicImages`."""

    index: int
    path: Path
    label: int
    attack_label: int
    classname: str
    attack_word: str


class TypographicImages(ImageDataset):
    """Images carrying a misleading word, with their true class and the attack word.

    Args:
        paths: Image file per item, length ``N``.
        labels: True class index per item.
        attack_labels: Class index of the attack word per item.
        classnames: The class list both index into.
        variant: Which rendering (``"scam"``, ``"noscam"``, ``"synthscam"``, ``"rta100"`` ...).
        postit_area_pct: Optional per-item area of the note in percent of the image.
        name: Dataset name for messages and summaries.
        on_error: Default policy of :meth:`load_images` for unreadable images.

    Attributes:
        labels: ``LongTensor (N,)`` true classes.
        attack_labels: ``LongTensor (N,)`` classes named by the attack words.
        postit_area_pct: ``FloatTensor (N,)`` or None.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        labels: Sequence[int] | torch.Tensor,
        attack_labels: Sequence[int] | torch.Tensor,
        classnames: Sequence[str],
        *,
        variant: str,
        postit_area_pct: Sequence[float] | torch.Tensor | None = None,
        name: str = "typographic",
        on_error: OnError = "raise",
    ) -> None:
        super().__init__(paths, name=name, on_error=on_error)
        self.labels: torch.Tensor = torch.as_tensor(labels, dtype=torch.long).reshape(-1)  # (N,)
        self.attack_labels: torch.Tensor = torch.as_tensor(attack_labels, dtype=torch.long).reshape(-1)  # (N,)
        self._classnames = [str(c) for c in classnames]
        self.variant = variant
        self.postit_area_pct: torch.Tensor | None = (
            None if postit_area_pct is None else torch.as_tensor(postit_area_pct, dtype=torch.float32).reshape(-1)
        )
        n, c = len(self.paths), len(self._classnames)
        lens = {len(self.labels), len(self.attack_labels)}
        if self.postit_area_pct is not None:
            lens.add(len(self.postit_area_pct))
        if lens != {n}:
            raise DataError(f"{name}: per-item arrays have lengths {sorted(lens)} for {n} images")
        for t in (self.labels, self.attack_labels):
            if n and (int(t.min()) < 0 or int(t.max()) >= c):
                raise DataError(f"{name}: a label is outside [0, {c}) classes")

    @property
    def classnames(self) -> list[str]:
        """The class list (sorted union of true labels and attack words)."""
        return list(self._classnames)

    @property
    def attack_words(self) -> list[str]:
        """The attack word of each item."""
        return [self._classnames[i] for i in self.attack_labels.tolist()]

    @property
    def true_classnames(self) -> list[str]:
        """The true class name of each item."""
        return [self._classnames[i] for i in self.labels.tolist()]

    def __getitem__(self, i: int) -> TypographicItem:
        j = self._index(i)
        lab, att = int(self.labels[j]), int(self.attack_labels[j])
        return TypographicItem(j, self.paths[j], lab, att, self._classnames[lab], self._classnames[att])

    def _select(self, indices: list[int]) -> TypographicImages:
        pick = (lambda t: t[indices] if indices else t[:0])
        return TypographicImages(
            [self.paths[i] for i in indices], pick(self.labels), pick(self.attack_labels), self._classnames,
            variant=self.variant,
            postit_area_pct=None if self.postit_area_pct is None else pick(self.postit_area_pct),
            name=self.name, on_error=self.on_error,
        )

    def summary(self) -> dict[str, Any]:
        """``{"type", "name", "images", "variant", "classes", "true_classes", "attack_words"}``."""
        return {
            **super().summary(),
            "variant": self.variant,
            "classes": len(self._classnames),
            "true_classes": int(self.labels.unique().numel()),
            "attack_words": int(self.attack_labels.unique().numel()),
        }


def _find_scam_image(folder: Path, image_id: str, variant: str) -> Path:
    """``folder/<id>.jpg``; else ``<id>`` or ``<Prefix>_<id>`` with any image suffix (original names)."""
    direct = folder / f"{image_id}.jpg"
    if direct.is_file():
        return direct
    prefix = SCAM_VARIANTS[variant]
    stems = (image_id, f"{prefix}_{image_id}", f"{prefix}_{image_id.removeprefix('SCAM_')}")
    for stem in stems:
        for ext in IMAGE_EXTENSIONS:
            p = folder / f"{stem}{ext}"
            if p.is_file():
                return p
    return direct  # missing: reported by check_files


def load_scam(root: str | Path, variant: str = "scam", *, on_error: OnError = "raise") -> TypographicImages:
    """Load one variant of the SCAM typographic-attack benchmark.

    Args:
        root: Folder with ``labels.csv`` and the ``scam/``, ``noscam/``, ``synthscam/`` folders.
        variant: ``"scam"`` (handwritten word), ``"noscam"`` (blank note) or ``"synthscam"``
            (typed word); the original spellings ``SCAM``/``NoSCAM``/``SynthSCAM`` also work.
        on_error: ``"raise"`` on a missing image file, or ``"skip"`` to drop it with a warning.

    Returns:
        A :class:`TypographicImages` whose class list is the sorted union of object labels and
        attack words; ``labels`` index the object, ``attack_labels`` the attack word.

    Raises:
        ValueError: Unknown ``variant``.
        DataNotFoundError: ``root``, ``labels.csv``, the variant folder or an image is missing.
        DataError: ``labels.csv`` lacks a required column.
        EmptyDatasetError: ``labels.csv`` has no rows.
    """
    check_on_error(on_error)
    key = str(variant).lower()
    if key not in SCAM_VARIANTS:
        raise ValueError(
            f"unknown SCAM variant {variant!r}; expected one of {list(SCAM_VARIANTS)}."
            f"{did_you_mean(key, SCAM_VARIANTS)}"
        )
    base = check_dir(root, "SCAM root")
    csv_path = base / "labels.csv"
    if not csv_path.is_file():
        raise DataNotFoundError(f"SCAM labels file not found: {csv_path}")
    folder = check_dir(base / key, f"SCAM {key!r} image folder")
    header, rows = read_csv(csv_path)
    need_columns(header, ["id", "object_label", "attack_word"], csv_path)
    if not rows:
        raise EmptyDatasetError(f"SCAM labels file {csv_path} has no rows")
    for r, row in enumerate(rows, start=2):
        if not row["id"] or not row["object_label"] or not row["attack_word"]:
            raise DataError(f"{csv_path.name} line {r}: empty id, object_label or attack_word ({row})")
    classes = sorted({r["object_label"] for r in rows} | {r["attack_word"] for r in rows})
    index = {c: i for i, c in enumerate(classes)}
    area = None
    if "postit_area_pct" in header:
        try:
            area = [float(r["postit_area_pct"]) if r["postit_area_pct"] else float("nan") for r in rows]
        except ValueError as e:
            raise DataError(f"{csv_path}: non-numeric postit_area_pct: {e}") from e
    ds = TypographicImages(
        [_find_scam_image(folder, r["id"], key) for r in rows],
        [index[r["object_label"]] for r in rows],
        [index[r["attack_word"]] for r in rows],
        classes, variant=key, postit_area_pct=area, name=f"scam/{key}", on_error=on_error,
    )
    ds.check_files(on_error)
    return ds


def parse_rta100_name(filename: str) -> tuple[str, str]:
    """``"label=dog_text=cat.png"`` -> ``("dog", "cat")``.

    Raises:
        DataError: The name does not follow ``label=<class>_text=<word>.<ext>``.
    """
    m = _RTA_NAME.match(Path(filename).stem)
    if not m or not m["label"] or not m["text"]:
        raise DataError(
            f"RTA-100 file name {filename!r} does not follow 'label=<class>_text=<attack word>.<ext>'"
        )
    return m["label"], m["text"]


def load_rta100(root: str | Path, *, on_error: OnError = "raise") -> TypographicImages:
    """Load RTA-100 (or any folder named ``label=<class>_text=<word>.<ext>``).

    Files are sorted by name; non-image files are ignored.

    Args:
        root: The image folder, or a folder containing ``ours/data`` (the released zip's layout).
        on_error: ``"raise"`` on an image whose name does not parse, or ``"skip"`` to ignore it
            with a warning (also the default policy of ``load_images``).

    Raises:
        DataNotFoundError: ``root`` does not exist.
        DataError: A file name does not follow the pattern (``on_error="raise"``).
        EmptyDatasetError: No image files.
    """
    check_on_error(on_error)
    base = check_dir(root, "RTA-100 root")
    if (base / "ours" / "data").is_dir():
        base = base / "ours" / "data"
    files = sorted(p for p in base.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise EmptyDatasetError(f"RTA-100 folder {base} has no image files")
    parsed: list[tuple[Path, str, str]] = []
    bad: list[Path] = []
    for p in files:
        try:
            parsed.append((p, *parse_rta100_name(p.name)))
        except DataError:
            if on_error == "raise":
                raise
            bad.append(p)
    if bad:
        warnings.warn(f"RTA-100: skipped {len(bad)} file(s) with unparseable names, e.g. {bad[0].name}", stacklevel=2)
    if not parsed:
        raise EmptyDatasetError(f"RTA-100 folder {base}: no file name follows 'label=<class>_text=<word>.<ext>'")
    classes = sorted({lab for _, lab, _ in parsed} | {txt for _, _, txt in parsed})
    index = {c: i for i, c in enumerate(classes)}
    return TypographicImages(
        [p for p, _, _ in parsed], [index[lab] for _, lab, _ in parsed], [index[t] for _, _, t in parsed],
        classes, variant="rta100", name="rta100", on_error=on_error,
    )
