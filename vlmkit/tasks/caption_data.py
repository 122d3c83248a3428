"""Caption sets: images with their ground-truth objects, label maps and reference captions.

:class:`CaptionSet` is what the ``captioning`` task reads: for each image, the objects a faithful caption
names (CHAIR's ground truth), optionally a label map (the perception module's output that the
perception-realistic corruptions degrade, :mod:`vlmkit.perturb.masks`) and reference captions. Loaders:

* :func:`load_toy_captions` — the toy world: visible objects' shapes, a shape label map (0 background,
  ``1 + SHAPES.index(shape)`` per visible object pixel), the grammar's complete caption;
* :func:`load_caption_folder` — a Cityscapes-style folder: ``images/<stem>.<ext>``, ``labels/<stem>.png``
  (one class id per pixel; 255 ignored), ``classes.txt`` (one class name per line, line ``k`` = id
  ``k``), optional ``captions.json`` (``{stem: [captions]}``); an image's objects are the classes covering
  at least ``min_pixels`` of its label map;
* :func:`load_coco_caption_set` — COCO captions JSON + images, objects from an instances JSON (CHAIR's
  segmentation ground truth) and/or the reference captions' mentions (CHAIR's caption ground truth).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vlmkit.data.captions import load_coco_captions
from vlmkit.data.images import IMAGE_EXTENSIONS, ImageDataset
from vlmkit.errors import DataError, DataNotFoundError

#: Safety questions asked of every image whose class is in the set's safety-critical subset.
QUESTION_TEMPLATE = "is there a {} ?"


class CaptionSet(ImageDataset):
    """Images to caption, with what a faithful caption names.

    Args:
        paths: One image per item.
        objects: Ground-truth object classes per image (CHAIR's ground truth).
        references: Reference captions per image (may be empty lists).
        label_paths: A label map per image (``(H, W)`` class ids, PNG), or None.
        classes: Class name per label id (id 0 is background unless it names a class).
        vocabulary: The object-synonym table of the metrics: ``"toy"``, ``"coco"`` or a table file.
        safety: The safety-critical classes (reported apart; the safety questions ask about them).
        name: Dataset name.
    """

    task = "captioning"

    def __init__(self, paths: Sequence[str | Path], objects: Sequence[Sequence[str]], *,
                 references: Sequence[Sequence[str]] | None = None, label_paths: Sequence[str | Path] | None = None,
                 classes: Sequence[str] = (), vocabulary: str = "coco", safety: Sequence[str] = (),
                 name: str = "captions") -> None:
        super().__init__(paths, name=name)
        n = len(self.paths)
        self.objects = [sorted({str(o) for o in objs}) for objs in objects]
        self.references = [list(r) for r in references] if references is not None else [[] for _ in range(n)]
        self.label_paths = [Path(p) for p in label_paths] if label_paths is not None else None
        self.classes, self.vocabulary, self.safety = list(classes), vocabulary, tuple(safety)
        lens = {len(self.objects), len(self.references), len(self.label_paths) if self.label_paths else n}
        if lens != {n}:
            raise DataError(f"{name}: {n} images but {len(self.objects)} object lists, {len(self.references)} "
                            f"reference lists, {len(self.label_paths or [])} label maps")

    def _select(self, indices: list[int]) -> CaptionSet:
        return CaptionSet([self.paths[i] for i in indices], [self.objects[i] for i in indices],
                          references=[self.references[i] for i in indices],
                          label_paths=[self.label_paths[i] for i in indices] if self.label_paths else None,
                          classes=self.classes, vocabulary=self.vocabulary, safety=self.safety, name=self.name)

    def content_hash(self) -> str:
        from vlmkit.runtime import stable_hash

        return stable_hash(super().content_hash(), self.objects, self.references, self.classes, self.vocabulary,
                           self.safety, [str(p) for p in self.label_paths or []])

    def load_masks(self, size: int) -> torch.Tensor | None:
        """Label maps ``(N, size, size)`` int64, resized (nearest) and centre-cropped like the images, or None."""
        if not self.label_paths:
            return None
        out = []
        for p in self.label_paths:
            m = Image.open(p)
            w, h = m.size
            s = size / min(w, h)
            m = m.resize((max(size, round(w * s)), max(size, round(h * s))), Image.NEAREST)
            left, top = (m.size[0] - size) // 2, (m.size[1] - size) // 2
            out.append(np.asarray(m.crop((left, top, left + size, top + size)), dtype=np.int64))
        return torch.from_numpy(np.stack(out))  # (N, S, S)

    @property
    def questions(self) -> list[str]:
        """The safety questions (one per safety-critical class)."""
        return [QUESTION_TEMPLATE.format(c) for c in self.safety]


def export_toy_captions(root: str | Path, n: int = 64, seed: int = 0, size: int = 64) -> Path:
    """Write ``n`` toy scenes as a caption folder (:func:`load_caption_folder`'s layout) plus the toy world's
    vocabulary marker; scenes come from a stream disjoint from training (``1_000_003 * (seed + 1) + 29``)."""
    from vlmkit.toyworld.grammar import describe, visible_objects
    from vlmkit.toyworld.world import SHAPES, sample_scene

    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    caps = {}
    for i in range(n):
        scene = sample_scene(1_000_003 * (seed + 1) + 29, i, size=size)
        label = np.zeros(scene.image.shape[:2], np.uint8)  # (H, W)
        for o in scene.objects:
            if o in visible_objects(scene):
                label[o.visible] = 1 + SHAPES.index(o.shape)
        stem = f"{i:06d}"
        Image.fromarray(scene.image).save(root / "images" / f"{stem}.png")
        Image.fromarray(label).save(root / "labels" / f"{stem}.png")
        caps[stem] = [describe(scene)]
    (root / "classes.txt").write_text("\n".join(["background", *SHAPES]) + "\n")
    (root / "captions.json").write_text(json.dumps(caps))
    return root


def load_caption_folder(root: str | Path, *, vocabulary: str = "coco", safety: Sequence[str] = (),
                        min_pixels: int = 16, name: str | None = None) -> CaptionSet:
    """A Cityscapes-style caption folder (see the module docstring).

    Raises:
        DataNotFoundError: No such folder, no ``images/``, ``labels/`` or ``classes.txt``, or an image without
            its label map.
    """
    root = Path(root)
    for need in ("images", "labels", "classes.txt"):
        if not (root / need).exists():
            raise DataNotFoundError(f"caption folder {str(root)!r} has no {need!r} (expected images/, labels/, "
                                    "classes.txt and optionally captions.json)")
    classes = [c.strip() for c in (root / "classes.txt").read_text().splitlines() if c.strip()]
    images = sorted(p for p in (root / "images").iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    labels = []
    for p in images:
        lp = root / "labels" / f"{p.stem}.png"
        if not lp.is_file():
            raise DataNotFoundError(f"caption folder {str(root)!r}: no label map labels/{p.stem}.png for {p.name}")
        labels.append(lp)
    refs = json.loads((root / "captions.json").read_text()) if (root / "captions.json").is_file() else {}
    objects = []
    for lp in labels:
        ids, counts = np.unique(np.asarray(Image.open(lp)), return_counts=True)
        objects.append([classes[i] for i, c in zip(ids.tolist(), counts.tolist())
                        if 0 < i < len(classes) and c >= min_pixels])
    return CaptionSet(images, objects, references=[refs.get(p.stem, []) for p in images], label_paths=labels,
                      classes=classes, vocabulary=vocabulary, safety=safety, name=name or root.name)


def load_toy_captions(root: str | Path, n: int = 64, seed: int = 0, size: int = 64) -> CaptionSet:
    """The toy world's caption set (exported once under ``root``): shapes as objects, the shape label map,
    ``toy`` synonyms and the designated safety-critical shapes (:data:`vlmkit.metrics.captions.SAFETY_CRITICAL_TOY`)."""
    from vlmkit.metrics.captions import SAFETY_CRITICAL_TOY

    folder = Path(root) / f"toy-captions-n{n}-s{seed}-px{size}"
    if not (folder / "captions.json").is_file():
        export_toy_captions(folder, n=n, seed=seed, size=size)
    return load_caption_folder(folder, vocabulary="toy", safety=SAFETY_CRITICAL_TOY, min_pixels=1, name="toy-captions")


def load_coco_caption_set(captions_json: str | Path, images: str | Path, *, instances_json: str | Path | None = None,
                          safety: Sequence[str] = (), name: str | None = None) -> CaptionSet:
    """COCO captions as a caption set: objects from ``instances_json`` (category names) when given, united
    with the objects the reference captions mention (CHAIR's two ground truths, Rohrbach et al. 2018)."""
    from vlmkit.metrics.captions import gt_objects_from_captions, gt_objects_from_coco_instances

    ds = load_coco_captions(captions_json, images)
    per_image: dict[int, list[str]] = {}
    for t, i in enumerate(ds.text_to_image.tolist()):
        per_image.setdefault(i, []).append(ds.captions[t])
    refs = [per_image.get(i, []) for i in range(len(ds))]
    objects = gt_objects_from_captions(refs, "coco")
    if instances_json is not None:
        ids = [int(x) for x in ds.image_ids]  # COCO ids (the instances JSON's image_id)
        objects = [a | b for a, b in zip(objects, gt_objects_from_coco_instances(instances_json, ids))]
    return CaptionSet(ds.paths, objects, references=refs, vocabulary="coco", safety=safety,
                      name=name or ds.name)


__all__ = ["CaptionSet", "QUESTION_TEMPLATE", "export_toy_captions", "load_caption_folder", "load_coco_caption_set",
           "load_toy_captions"]
