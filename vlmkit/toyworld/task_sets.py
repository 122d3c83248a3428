"""Toy-world data for the kit's tasks beyond dual encoders: questions and referring-segmentation masks.

Made from the renderer's ground truth and written as files in the layouts the task loaders read
(this module knows nothing of :mod:`vlmkit.tasks`):

* :func:`toy_questions` / :func:`export_toy_questions` — counts, colours, shapes and POPE-style
  "is there a …?" questions with absent-object negatives: ``images/``, ``questions.jsonl``,
  ``ground_truth.json`` (read by :func:`vlmkit.tasks.load_question_jsonl`);
* :func:`export_toy_segmentation` — one nameable object per scene and its visible mask: ``images/``,
  ``masks/``, ``prompts.csv``, ``ground_truth.json`` (read by :func:`vlmkit.tasks.load_segmentation_folder`).

Both use the held-out export seed by default, never a training seed.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import DataError, InputError
from .evaluate import EXPORT_SEED
from .export import scene_record
from .grammar import article
from .world import COLOR_NAMES, SHAPES, render_spec, sample_spec, scene_rng

#: Columns of the segmentation layout's ``prompts.csv`` (what ``load_segmentation_folder`` reads).
SEGMENTATION_COLUMNS = ("image", "mask", "prompt")
NUMBER_WORDS = ("zero", "one", "two", "three", "four")
TOY_KINDS = ("count", "color", "shape", "exists")


def toy_questions(scene: Any, rng: Any, kinds: Sequence[str] = TOY_KINDS, pope: str = "random", n_options: int = 4,
                  min_visible: float = 0.35) -> list[dict[str, Any]]:
    """Questions about one toy scene from its ground truth.

    * ``count`` — "How many objects are there in the image?" (options one/two/three), asked only when
      every object is clearly visible;
    * ``color`` — "What colour is the {shape}?" for a visible object whose shape is unique in the scene;
    * ``shape`` — "What shape is the {colour} object?" for a visible object whose colour is unique;
    * ``exists`` — POPE's protocol (Li et al. 2023): one "yes" question about a visible object and one
      "no" question about an absent one. ``pope="random"`` asks about a shape absent from the scene
      ("Is there a heart in the image?"); ``pope="adversarial"`` asks about a present shape in a colour
      it does not have ("Is there a blue star in the image?"). A written word is not an object: a
      sign reading "heart" does not make "Is there a heart?" a yes — a typographic lure.

    Args:
        scene: A rendered :class:`~vlmkit.toyworld.Scene`.
        rng: ``numpy.random.Generator`` for choices and option order.
        kinds: Which kinds to ask.
        pope: ``"random"`` or ``"adversarial"`` negatives.
        n_options: Options of colour/shape questions (the answer and ``n_options − 1`` distractors).
        min_visible: Least visible share of an object that questions may refer to.

    Returns:
        Records ``{"question", "options", "answer", "kind"}``.
    """
    bad = [k for k in kinds if k not in TOY_KINDS]
    if bad:
        raise InputError(f"unknown question kinds {bad}; expected some of {TOY_KINDS}")
    if pope not in ("random", "adversarial"):
        raise InputError(f"pope={pope!r}; expected 'random' or 'adversarial'")
    if not 2 <= n_options <= len(COLOR_NAMES):
        raise InputError(f"n_options={n_options} must be in [2, {len(COLOR_NAMES)}]")
    objs = scene.objects
    vis = [o for o in objs if o.visible_fraction >= min_visible]
    out: list[dict[str, Any]] = []

    def mcq(question: str, answer: str, pool: Sequence[str], kind: str) -> dict[str, Any]:
        others = [c for c in pool if c != answer]
        picks = [others[i] for i in rng.permutation(len(others))[: n_options - 1]]
        opts = [answer, *picks]
        opts = [opts[i] for i in rng.permutation(len(opts))]
        return {"question": question, "options": opts, "answer": answer, "kind": kind}

    if "count" in kinds and vis and all(o.visible_fraction >= min_visible or o.visible_fraction == 0 for o in objs):
        n = len(vis)
        if 1 <= n <= 3:
            out.append({"question": "How many objects are there in the image?", "options": ["one", "two", "three"],
                        "answer": NUMBER_WORDS[n], "kind": "count"})
    shapes = [o.shape for o in objs]
    colors = [o.color for o in objs]
    if "color" in kinds:
        cands = [o for o in vis if shapes.count(o.shape) == 1]
        if cands:
            o = cands[int(rng.integers(len(cands)))]
            out.append(mcq(f"What colour is the {o.shape}?", o.color, COLOR_NAMES, "color"))
    if "shape" in kinds:
        cands = [o for o in vis if colors.count(o.color) == 1]
        if cands:
            o = cands[int(rng.integers(len(cands)))]
            out.append(mcq(f"What shape is the {o.color} object?", o.shape, SHAPES, "shape"))
    if "exists" in kinds and vis:
        o = vis[int(rng.integers(len(vis)))]
        if pope == "random":
            absent = [s for s in SHAPES if s not in shapes]
            neg = absent[int(rng.integers(len(absent)))] if absent else None
            pos_q, neg_q = f"Is there {article(o.shape)} {o.shape} in the image?", (
                None if neg is None else f"Is there {article(neg)} {neg} in the image?")
        else:
            pairs = {(ob.color, ob.shape) for ob in objs}
            wrong = [c for c in COLOR_NAMES if (c, o.shape) not in pairs]
            neg = wrong[int(rng.integers(len(wrong)))] if wrong else None
            pos_q = f"Is there {article(o.color)} {o.color} {o.shape} in the image?"
            neg_q = None if neg is None else f"Is there {article(neg)} {neg} {o.shape} in the image?"
        out.append({"question": pos_q, "options": ["yes", "no"], "answer": "yes", "kind": "exists"})
        if neg_q is not None:
            out.append({"question": neg_q, "options": ["yes", "no"], "answer": "no", "kind": "exists"})
    return out


def export_toy_questions(root: str | Path, n_images: int = 100, seed: int | None = None, size: int = 64,
                         kinds: Sequence[str] = TOY_KINDS, pope: str = "random", n_options: int = 4) -> Path:
    """Write a toy-world question set: ``images/<id>.png``, ``questions.jsonl`` and ``ground_truth.json``.

    Args:
        root: Output folder (created).
        n_images: Scenes rendered (each gives up to 5 questions, see :func:`toy_questions`).
        seed: Scene stream seed (default: the toy world's held-out export seed).
        size: Image side.
        kinds, pope, n_options: See :func:`toy_questions`.

    Returns:
        ``root`` as a Path (load it with :func:`vlmkit.tasks.load_question_jsonl` on ``root / "questions.jsonl"``).
    """
    seed = EXPORT_SEED if seed is None else int(seed)
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    lines, gt = [], {}
    for i in range(n_images):
        scene = render_spec(sample_spec(scene_rng(seed, i, 9)), size)
        stem = f"{i:06d}"
        Image.fromarray(scene.image).save(root / "images" / f"{stem}.png")
        gt[stem] = scene_record(scene)
        for j, rec in enumerate(toy_questions(scene, scene_rng(seed, i, 10), kinds, pope, n_options)):
            lines.append(json.dumps({"id": f"{stem}-{j}", "image": f"images/{stem}.png", **rec}))
    if not lines:
        raise DataError(f"no question could be asked about {n_images} toy scenes with kinds={list(kinds)}")
    (root / "questions.jsonl").write_text("\n".join(lines) + "\n")
    (root / "ground_truth.json").write_text(json.dumps(gt))
    return root


def export_toy_segmentation(root: str | Path, n: int = 200, seed: int | None = None, size: int = 64,
                            min_visible: float = 0.35) -> Path:
    """Write a toy-world referring-segmentation set in the :func:`vlmkit.tasks.load_segmentation_folder` layout.

    Each item is one scene of the renderer and one of its visible objects, named by colour and shape
    (``"a red star"``; only objects whose colour+shape is unique in the scene are chosen); its mask
    is the object's *visible* ground-truth mask (the pixels where it is on top).

    Args:
        root: Output folder (created).
        n: Number of items (scenes without a nameable object are skipped, drawing further scenes).
        seed: Scene stream seed (default: the toy world's held-out export seed).
        size: Image side.
        min_visible: Least visible share of an object that may be named.

    Returns:
        ``root`` as a Path.
    """
    seed = EXPORT_SEED if seed is None else int(seed)
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    rows, gt, i = [], {}, 0
    while len(rows) < n:
        if i > 20 * n + 100:
            raise DataError(f"could not draw {n} toy scenes with a nameable object (drew {i})")
        scene = render_spec(sample_spec(scene_rng(seed, i, 7)), size)
        rng = scene_rng(seed, i, 8)
        i += 1
        keys = [(o.color, o.shape) for o in scene.objects]
        cands = [o for o in scene.objects if o.visible_fraction >= min_visible and keys.count((o.color, o.shape)) == 1]
        if not cands:
            continue
        obj = cands[int(rng.integers(len(cands)))]
        stem = f"{len(rows):06d}"
        Image.fromarray(scene.image).save(root / "images" / f"{stem}.png")
        Image.fromarray(obj.visible.astype(np.uint8) * 255).save(root / "masks" / f"{stem}.png")
        prompt = f"{article(obj.color)} {obj.color} {obj.shape}"
        rows.append((f"{stem}.png", f"{stem}.png", prompt))
        gt[stem] = {**scene_record(scene), "target": {"color": obj.color, "shape": obj.shape,
                                                      "bbox": list(obj.bbox)}}
    with open(root / "prompts.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(list(SEGMENTATION_COLUMNS))
        w.writerows(rows)
    (root / "ground_truth.json").write_text(json.dumps(gt))
    return root


__all__ = ["NUMBER_WORDS", "SEGMENTATION_COLUMNS", "TOY_KINDS", "export_toy_questions", "export_toy_segmentation",
           "toy_questions"]
