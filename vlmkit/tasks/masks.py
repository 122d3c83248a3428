"""Referring-segmentation data: images, each with a text prompt and a binary mask.

* :class:`SegmentationSet` (image, prompt, binary mask) and :func:`decode_mask`;
* :func:`load_segmentation_folder` — a PhraseCut-style folder (``images/``, ``masks/``, ``prompts.csv``);
* :func:`load_toy_segmentation` — export (once, with
  :func:`vlmkit.toyworld.task_sets.export_toy_segmentation`) and load a set made from the toy world's
  ground-truth masks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vlmkit.data.files import check_dir, read_csv, read_json
from vlmkit.data.images import ImageDataset, OnError, check_mode, check_on_error, check_size, open_image, resize_square
from vlmkit.errors import DataError, DataNotFoundError, EmptyDatasetError, did_you_mean
from vlmkit.runtime import stable_hash
from vlmkit.toyworld import EXPORT_SEED
from vlmkit.toyworld.task_sets import export_toy_segmentation


def decode_mask(path: Path, size: int, mode: str = "squash") -> np.ndarray:
    """Read a binary mask file to bool ``(S, S)``: nearest resize with the image geometry of ``mode``.

    A pixel is foreground when its grey value is above 127, or above 0 in masks stored as {0, 1}.

    Raises:
        DataNotFoundError: The file is missing.
        DataError: The file is not a readable image.
    """
    arr = np.asarray(open_image(path, "L", what="mask file"))
    fg = arr > (0 if arr.max() <= 1 else 127)
    m = resize_square(Image.fromarray(fg.astype(np.uint8) * 255), size, mode, interpolation="nearest")
    return np.asarray(m) > 127


class SegmentationSet(ImageDataset):
    """Images, each with a text prompt and the binary mask of what the prompt names.

    Args:
        paths: Image file per item.
        mask_paths: Mask file per item (same original size as its image).
        prompts: Referring expression per item (``"a red star"``).
        name: Dataset name.
        on_error: Policy of :meth:`load_images` for unreadable images.

    Raises:
        DataError: Lengths disagree or a prompt is empty.
    """

    task = "segmentation"

    def __init__(self, paths: Sequence[str | Path], mask_paths: Sequence[str | Path], prompts: Sequence[str], *,
                 name: str = "segmentation", on_error: OnError = "raise") -> None:
        super().__init__(paths, name=name, on_error=on_error)
        self.mask_paths = [Path(p) for p in mask_paths]
        self.prompts = [str(p) for p in prompts]
        if not len(self.paths) == len(self.mask_paths) == len(self.prompts):
            raise DataError(f"{name}: {len(self.paths)} images, {len(self.mask_paths)} masks and {len(self.prompts)} "
                            "prompts: expected one mask and one prompt per image")
        for i, p in enumerate(self.prompts):
            if not p.strip():
                raise DataError(f"{name}: item {i} ({self.paths[i].name}) has an empty prompt")

    def _select(self, indices: list[int]) -> SegmentationSet:
        return SegmentationSet([self.paths[i] for i in indices], [self.mask_paths[i] for i in indices],
                               [self.prompts[i] for i in indices], name=self.name, on_error=self.on_error)

    def __getitem__(self, i: int) -> dict[str, Any]:
        j = self._index(i)
        return {"index": j, "path": self.paths[j], "mask_path": self.mask_paths[j], "prompt": self.prompts[j]}

    def content_hash(self) -> str:
        """Hash of the images, the masks and the prompts."""
        from vlmkit.data.images import file_digest

        return stable_hash(super().content_hash(), [file_digest(p) for p in self.mask_paths], self.prompts)

    def check_files(self, on_error: OnError | None = None) -> None:
        super().check_files(on_error)
        missing = [p for p in self.mask_paths if not p.is_file()]
        if missing:
            raise DataNotFoundError(f"{self.name}: mask file not found: {missing[0]}"
                                    + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))

    def load_masks(self, size: int, mode: str = "squash") -> torch.Tensor:
        """Every mask decoded to bool ``(N, S, S)`` with the geometry :meth:`load_images` uses for ``mode``.

        Raises:
            DataError: A mask's original size differs from its image's (the message names both files).
        """
        size, mode = check_size(size), check_mode(mode)
        self.check_files()
        out = np.zeros((len(self), size, size), dtype=bool)
        for i, (ip, mp) in enumerate(zip(self.paths, self.mask_paths)):
            with Image.open(ip) as im, Image.open(mp) as mm:
                if im.size != mm.size:
                    raise DataError(f"{self.name}: mask {mp} is {mm.size[0]}x{mm.size[1]} but its image {ip} is "
                                    f"{im.size[0]}x{im.size[1]}; masks must match their images pixel for pixel")
            out[i] = decode_mask(mp, size, mode)
        return torch.from_numpy(out)

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "prompts": len(set(self.prompts))}


_COLUMNS = ("image", "mask", "prompt")


def _read_annotations(path: Path) -> list[dict[str, str]]:
    if path.suffix.lower() == ".json":
        data = read_json(path, "annotation file")
        if isinstance(data, dict):
            data = data.get("annotations", data.get("items"))
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise DataError(f"annotation file {path} must hold a JSON list of {{image, mask, prompt}} objects "
                            "(or {'annotations': [...]})")
        rows = [{k: str(v) for k, v in r.items()} for r in data]
        header = sorted({k for r in rows for k in r})
    else:
        header, rows = read_csv(path)
    if not rows:
        raise EmptyDatasetError(f"annotation file {path} has no items")
    for col in _COLUMNS:
        if any(col not in r for r in rows):
            raise DataError(f"annotation file {path} has no {col!r} field (in at least one item); expected "
                            f"{list(_COLUMNS)}, found {header}.{did_you_mean(col, header)}")
    return rows


def load_segmentation_folder(root: str | Path, annotations: str | Path | None = None, *, images_dir: str = "images",
                             masks_dir: str = "masks", name: str | None = None,
                             on_error: OnError = "raise") -> SegmentationSet:
    """Load a PhraseCut-style referring-segmentation folder.

    Layout::

        root/images/<file>            the images
        root/masks/<file>.png         one binary mask per item (white/1 = the referred region)
        root/prompts.csv              columns image, mask, prompt (paths relative to images/, masks/)
        (or root/prompts.json         a list of {"image", "mask", "prompt"} objects)

    Several items may share an image (one per referring expression).

    Args:
        root: The folder.
        annotations: The CSV/JSON file (default: ``root/prompts.csv`` or ``root/prompts.json``).
        images_dir, masks_dir: Sub-folders the paths are relative to.
        name: Dataset name (default: the folder name).
        on_error: Image decoding policy.

    Raises:
        DataNotFoundError: The folder, the annotation file, an image or a mask is missing.
        DataError: A field is missing, a prompt is empty, or the file cannot be parsed.
        EmptyDatasetError: No items.
    """
    check_on_error(on_error)
    base = check_dir(root, "segmentation folder")
    if annotations is None:
        found = [base / f for f in ("prompts.csv", "prompts.json") if (base / f).is_file()]
        if not found:
            raise DataNotFoundError(f"{base} has no prompts.csv or prompts.json; expected images/, masks/ and a CSV "
                                    "with columns image, mask, prompt (or pass annotations=...)")
        ann = found[0]
    else:
        ann = Path(annotations).expanduser()
        ann = ann if ann.is_absolute() or ann.is_file() else base / ann
        if not ann.is_file():
            raise DataNotFoundError(f"annotation file not found: {ann}")
    rows = _read_annotations(ann)
    for r, row in enumerate(rows, start=1):
        for col in _COLUMNS:
            if not row[col].strip():
                raise DataError(f"{ann.name} item {r}: empty {col!r} value")
    ds = SegmentationSet([base / images_dir / r["image"] for r in rows], [base / masks_dir / r["mask"] for r in rows],
                         [r["prompt"] for r in rows], name=name or base.name, on_error=on_error)
    ds.check_files(on_error)
    return ds


def load_toy_segmentation(root: str | Path, n: int = 64, seed: int = 0, size: int = 64) -> SegmentationSet:
    """Export (once) and load a toy-world segmentation set under ``root/toy-segmentation-n{n}-s{seed}-px{size}``."""
    folder = Path(root) / f"toy-segmentation-n{n}-s{seed}-px{size}"
    if not (folder / "prompts.csv").is_file():
        export_toy_segmentation(folder, n=n, seed=EXPORT_SEED + 7919 * (seed + 1), size=size)
    return load_segmentation_folder(folder, name="toy-segmentation")


__all__ = ["SegmentationSet", "decode_mask", "load_segmentation_folder", "load_toy_segmentation"]
