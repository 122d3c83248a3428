"""Export toy-world data sets in the data layer's standard layouts.

* :func:`export_retrieval` — COCO captions: ``images/<id>.png`` + ``captions.json`` with
  ``{"images": [{id, file_name, width, height}], "annotations": [{id, image_id, caption}]}``.
* :func:`export_classification` — ``images/<file>.png`` + ``labels.csv`` (``file,label``) +
  ``classes.txt`` (one class per line, in label order).
* :func:`export_typographic` — SCAM layout: ``scam/``, ``noscam/``, ``synthscam/`` of ``<id>.png`` +
  ``labels.csv`` (``id,object_label,attack_word,postit_area_pct``).

Each export also writes ``ground_truth.json`` (attributes and boxes per image, no masks) and uses the
held-out export seed by default, never a training seed.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm.auto import tqdm

from .evaluate import EXPORT_SEED
from .grammar import describe, sample_caption
from .world import COLOR_NAMES, SHAPES, Scene, render_spec, render_typographic, sample_spec, scene_rng, single_object_spec


def scene_record(scene: Scene) -> dict[str, Any]:
    """JSON-serialisable ground truth of a scene (attributes and boxes; masks omitted)."""
    return {
        "background": scene.background,
        "objects": [
            {
                "shape": o.shape,
                "color": o.color,
                "size": o.size,
                "position": o.position,
                "bbox": list(o.bbox),
                "visible_fraction": round(o.visible_fraction, 4),
            }
            for o in scene.objects
        ],
        "sign": None
        if scene.sign is None
        else {
            "word": scene.sign.word,
            "box": list(scene.sign.box),
            "word_box": None if scene.sign.word_box is None else list(scene.sign.word_box),
            "font": scene.sign.font,
        },
    }


def _save(scene: Scene, path: Path) -> None:
    Image.fromarray(scene.image).save(path)


def export_retrieval(
    root: str | Path, n: int = 1000, seed: int = EXPORT_SEED, size: int = 64, captions_per_image: int = 1,
    progress: bool = True,
) -> Path:
    """Write a COCO-captions retrieval set.

    The first caption of each image is the complete :func:`~vlmkit.toyworld.grammar.describe`
    caption; further ones are sampled from the training grammar.

    Args:
        root: Output folder (created).
        n: Number of images.
        seed: Scene stream seed.
        size: Image side.
        captions_per_image: Captions per image (>= 1).
        progress: Show a progress bar.

    Returns:
        ``root`` as a Path.
    """
    if captions_per_image < 1:
        raise ValueError(f"captions_per_image={captions_per_image} must be >= 1")
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, anns, gt = [], [], {}
    for i in tqdm(range(n), desc="retrieval", disable=not progress):
        scene = render_spec(sample_spec(scene_rng(seed, i)), size)
        name = f"{i:06d}.png"
        _save(scene, root / "images" / name)
        images.append({"id": i, "file_name": name, "width": size, "height": size})
        caps = [describe(scene)]
        rng = scene_rng(seed, i, 1)
        caps += [sample_caption(scene, rng) for _ in range(captions_per_image - 1)]
        for c in caps:
            anns.append({"id": len(anns), "image_id": i, "caption": c})
        gt[name] = scene_record(scene)
    (root / "captions.json").write_text(json.dumps({"images": images, "annotations": anns}))
    (root / "ground_truth.json").write_text(json.dumps(gt))
    return root


def export_classification(
    root: str | Path, n: int = 1000, seed: int = EXPORT_SEED, size: int = 64, task: str = "shape",
    progress: bool = True,
) -> Path:
    """Write a classification set of single-object scenes (no sign).

    Args:
        root: Output folder (created).
        n: Number of images.
        seed: Scene stream seed.
        size: Image side.
        task: ``"shape"`` (classes :data:`SHAPES`) or ``"color"`` (classes :data:`COLOR_NAMES`).
        progress: Show a progress bar.

    Returns:
        ``root`` as a Path.
    """
    classes = {"shape": SHAPES, "color": COLOR_NAMES, "colour": COLOR_NAMES}.get(task)
    if classes is None:
        raise ValueError(f"task={task!r}; expected 'shape' or 'color'")
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows, gt = [], {}
    for i in tqdm(range(n), desc=f"classification/{task}", disable=not progress):
        scene = render_spec(single_object_spec(scene_rng(seed, i, 2)), size)
        name = f"{i:06d}.png"
        _save(scene, root / "images" / name)
        obj = scene.objects[0]
        rows.append((name, obj.shape if task == "shape" else obj.color))
        gt[name] = scene_record(scene)
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "label"])
        w.writerows(rows)
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    (root / "ground_truth.json").write_text(json.dumps(gt))
    return root


def export_typographic(
    root: str | Path, n: int = 500, seed: int = EXPORT_SEED, size: int = 64, progress: bool = True
) -> Path:
    """Write a SCAM-layout typographic set.

    ``scam/`` holds the object with a misleading shape word on a label, ``noscam/`` the same label
    blank, ``synthscam/`` the word in an unseen font on a yellow post-it. ``object_label`` is the
    object's shape, ``attack_word`` the written shape name, ``postit_area_pct`` the label's area in
    percent of the image.

    Returns:
        ``root`` as a Path.
    """
    root = Path(root)
    for sub in ("scam", "noscam", "synthscam"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rows, gt = [], {}
    for i in tqdm(range(n), desc="typographic", disable=not progress):
        scam, blank, synth, word = render_typographic(scene_rng(seed, i, 4), size)
        ident = f"{i:06d}"
        _save(scam, root / "scam" / f"{ident}.png")
        _save(blank, root / "noscam" / f"{ident}.png")
        _save(synth, root / "synthscam" / f"{ident}.png")
        rows.append((ident, scam.objects[0].shape, word, round(scam.sign.area_pct, 2)))
        gt[ident] = {"scam": scene_record(scam), "synthscam": scene_record(synth)}
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "object_label", "attack_word", "postit_area_pct"])
        w.writerows(rows)
    (root / "ground_truth.json").write_text(json.dumps(gt))
    return root
