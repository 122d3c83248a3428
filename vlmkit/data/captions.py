"""Captioned images for image-text retrieval: COCO captions JSON and Karpathy splits.

A :class:`CaptionedImages` holds ``N`` images and ``T`` captions (several per image) with the maps
between them, so retrieval metrics can use ``positive_mask()`` ``(N, T)`` directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vlmkit.data.files import check_dir, read_json
from vlmkit.data.images import ImageDataset, OnError, check_on_error
from vlmkit.errors import DataError, EmptyDatasetError, did_you_mean


@dataclass(frozen=True)
class CaptionedItem:
    """One image of a :class:`CaptionedImages` with its captions."""

    index: int
    path: Path
    image_id: str
    captions: list[str]
    caption_indices: list[int]


class CaptionedImages(ImageDataset):
    """Images with several captions each.

    Args:
        paths: Image file per image, length ``N``.
        captions: Flat list of all captions, length ``T``.
        text_to_image: Image index of each caption, length ``T``.
        image_ids: Identifier per image (COCO id or file name); defaults to the file names.
        name: Dataset name for messages and summaries.
        on_error: Default policy of :meth:`load_images` for unreadable images.

    Attributes:
        captions: ``T`` caption strings; captions of one image are contiguous.
        text_to_image: ``LongTensor (T,)``: caption index -> image index.
        image_to_texts: ``N`` lists of caption indices.

    Raises:
        DataError: Lengths disagree, a caption points to no image, or an image has no caption.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        captions: Sequence[str],
        text_to_image: Sequence[int] | torch.Tensor,
        *,
        image_ids: Sequence[str] | None = None,
        name: str = "captions",
        on_error: OnError = "raise",
    ) -> None:
        super().__init__(paths, name=name, on_error=on_error)
        t2i = torch.as_tensor(text_to_image, dtype=torch.long).reshape(-1)  # (T,)
        if len(captions) != len(t2i):
            raise DataError(f"{name}: {len(captions)} captions but {len(t2i)} text_to_image entries")
        n = len(self.paths)
        if len(t2i) and (int(t2i.min()) < 0 or int(t2i.max()) >= n):
            raise DataError(f"{name}: text_to_image has an index outside [0, {n}) images")
        self.captions: list[str] = [str(c) for c in captions]
        self.text_to_image: torch.Tensor = t2i
        self.image_to_texts: list[list[int]] = [[] for _ in range(n)]
        for t, i in enumerate(t2i.tolist()):
            self.image_to_texts[i].append(t)
        empty = [i for i, ts in enumerate(self.image_to_texts) if not ts]
        if empty:
            raise DataError(f"{name}: image {self.paths[empty[0]]} has no caption ({len(empty)} such images)")
        ids = image_ids if image_ids is not None else [p.name for p in self.paths]
        self.image_ids: list[str] = [str(x) for x in ids]
        if len(self.image_ids) != n:
            raise DataError(f"{name}: {len(self.image_ids)} image ids for {n} images")

    @property
    def num_texts(self) -> int:
        """Number of captions ``T``."""
        return len(self.captions)

    def __getitem__(self, i: int) -> CaptionedItem:
        j = self._index(i)
        ts = self.image_to_texts[j]
        return CaptionedItem(j, self.paths[j], self.image_ids[j], [self.captions[t] for t in ts], list(ts))

    def positive_mask(self, device: str | torch.device = "cpu") -> torch.Tensor:
        """Boolean ``(N, T)`` mask: ``[i, t]`` is True when caption ``t`` describes image ``i``."""
        mask = torch.zeros(len(self), self.num_texts, dtype=torch.bool)  # (N, T)
        mask[self.text_to_image, torch.arange(self.num_texts)] = True
        return mask.to(device)

    def _unit(self) -> str:
        return "images"

    def _select(self, indices: list[int]) -> CaptionedImages:
        caps: list[str] = []
        t2i: list[int] = []
        for new, old in enumerate(indices):
            for t in self.image_to_texts[old]:
                caps.append(self.captions[t])
                t2i.append(new)
        return CaptionedImages(
            [self.paths[i] for i in indices], caps, t2i,
            image_ids=[self.image_ids[i] for i in indices], name=self.name, on_error=self.on_error,
        )

    def summary(self) -> dict[str, Any]:
        """``{"type", "name", "images", "captions", "min/max_captions_per_image"}``."""
        per = [len(ts) for ts in self.image_to_texts]
        return {
            **super().summary(),
            "captions": self.num_texts,
            "min_captions_per_image": min(per, default=0),
            "max_captions_per_image": max(per, default=0),
        }


def _require(obj: Any, key: str, where: str, path: Path) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        have = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        hint = did_you_mean(key, obj) if isinstance(obj, dict) else ""
        raise DataError(f"{path}: {where} has no {key!r} key (found: {have}).{hint}")
    return obj[key]


def _finish(ds: CaptionedImages, on_error: OnError) -> CaptionedImages:
    if len(ds) == 0:
        raise EmptyDatasetError(f"{ds.name}: no captioned images")
    ds.check_files(on_error)
    return ds


def load_coco_captions(
    captions_json: str | Path, image_root: str | Path, *, on_error: OnError = "raise", name: str | None = None
) -> CaptionedImages:
    """Load a COCO captions file (``captions_val2017.json`` layout) and its image folder.

    The JSON is ``{"images": [{"id", "file_name", ...}], "annotations": [{"image_id", "caption"}]}``.
    Images keep the JSON order; captions are grouped per image in annotation order, with
    surrounding whitespace stripped. Images without any caption are dropped.

    Args:
        captions_json: Path of the captions JSON.
        image_root: Folder holding the ``file_name`` images.
        on_error: ``"raise"`` on a missing image file, or ``"skip"`` to drop it with a warning
            (also the default policy of ``load_images``).
        name: Dataset name (default: the JSON's file stem).

    Raises:
        DataNotFoundError: The JSON, the image root or an image file (``on_error="raise"``) is missing.
        DataError: Invalid JSON, a missing key, or an annotation whose ``image_id`` is not in ``images``.
        EmptyDatasetError: No image has a caption.
    """
    check_on_error(on_error)
    path = Path(captions_json).expanduser()
    data = read_json(path, "captions JSON")
    root = check_dir(image_root, "image root")
    images = _require(data, "images", "the top level", path)
    anns = _require(data, "annotations", "the top level", path)
    if not isinstance(images, list) or not isinstance(anns, list):
        raise DataError(f"{path}: 'images' and 'annotations' must be lists")
    order: list[Any] = []
    files: dict[Any, str] = {}
    for k, im in enumerate(images):
        iid = _require(im, "id", f"images[{k}]", path)
        files[iid] = str(_require(im, "file_name", f"images[{k}]", path))
        order.append(iid)
    caps: dict[Any, list[str]] = {iid: [] for iid in order}
    for k, ann in enumerate(anns):
        iid = _require(ann, "image_id", f"annotations[{k}]", path)
        cap = _require(ann, "caption", f"annotations[{k}]", path)
        if iid not in caps:
            raise DataError(
                f"{path}: annotations[{k}] (id {ann.get('id', '?')}) has image_id {iid!r}, "
                "which is not listed in 'images'"
            )
        if not isinstance(cap, str):
            raise DataError(f"{path}: annotations[{k}] caption must be a string, got {type(cap).__name__}")
        caps[iid].append(" ".join(cap.split()))
    kept = [iid for iid in order if caps[iid]]
    captions = [c for iid in kept for c in caps[iid]]
    t2i = [i for i, iid in enumerate(kept) for _ in caps[iid]]
    ds = CaptionedImages(
        [root / files[iid] for iid in kept], captions, t2i, image_ids=[str(iid) for iid in kept],
        name=name or path.stem, on_error=on_error,
    )
    return _finish(ds, on_error)


def load_karpathy(
    json_path: str | Path,
    image_root: str | Path,
    split: str | Sequence[str] = "test",
    *,
    on_error: OnError = "raise",
    name: str | None = None,
) -> CaptionedImages:
    """Load a Karpathy-split file (``dataset_coco.json``, ``dataset_flickr30k.json``).

    The JSON is ``{"images": [{"filename", "filepath"?, "split", "sentences": [{"raw", "tokens"}]}]}``;
    an image's path is ``image_root / filepath / filename`` (``filepath`` is present for COCO,
    e.g. ``val2014``, and absent for Flickr30k).

    Args:
        json_path: Path of the Karpathy JSON.
        image_root: Folder the ``filepath``/``filename`` are relative to.
        split: ``"test"``, ``"val"``, ``"train"``, ``"restval"`` or a list of them.
        on_error: ``"raise"`` or ``"skip"`` for missing/unreadable image files.
        name: Dataset name (default: ``<stem>:<split>``).

    Raises:
        DataNotFoundError: The JSON, the image root or an image file is missing.
        DataError: Invalid JSON or a missing key.
        EmptyDatasetError: No image belongs to ``split`` (the message lists the splits present).
    """
    check_on_error(on_error)
    path = Path(json_path).expanduser()
    data = read_json(path, "Karpathy split JSON")
    root = check_dir(image_root, "image root")
    images = _require(data, "images", "the top level", path)
    if not isinstance(images, list):
        raise DataError(f"{path}: 'images' must be a list")
    wanted = {split} if isinstance(split, str) else set(split)
    paths: list[Path] = []
    ids: list[str] = []
    captions: list[str] = []
    t2i: list[int] = []
    present: set[str] = set()
    for k, im in enumerate(images):
        sp = str(_require(im, "split", f"images[{k}]", path))
        present.add(sp)
        if sp not in wanted:
            continue
        fname = str(_require(im, "filename", f"images[{k}]", path))
        sents = _require(im, "sentences", f"images[{k}]", path)
        texts = []
        for s, sent in enumerate(sents):
            raw = sent.get("raw") if isinstance(sent, dict) else None
            if raw is None and isinstance(sent, dict) and "tokens" in sent:
                raw = " ".join(sent["tokens"])
            if not isinstance(raw, str):
                raise DataError(f"{path}: images[{k}].sentences[{s}] has no 'raw' text")
            texts.append(" ".join(raw.split()))
        if not texts:
            continue
        sub = im.get("filepath") or ""
        idx = len(paths)
        paths.append(root / sub / fname)
        ids.append(str(im.get("cocoid", im.get("imgid", fname))))
        captions.extend(texts)
        t2i.extend([idx] * len(texts))
    if not paths:
        raise EmptyDatasetError(
            f"{path}: no captioned images in split {sorted(wanted)}; splits present: {sorted(present)}."
            f"{did_you_mean(next(iter(wanted)), present) if len(wanted) == 1 else ''}"
        )
    label = split if isinstance(split, str) else "+".join(split)
    ds = CaptionedImages(paths, captions, t2i, image_ids=ids, name=name or f"{path.stem}:{label}", on_error=on_error)
    return _finish(ds, on_error)
