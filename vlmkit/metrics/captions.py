"""Language-level metrics of captions: CHAIR hallucination, object recall / omission, caption drift.

CHAIR (Rohrbach, Hendricks, Burns, Darrell & Saenko, "Object Hallucination in Image Captioning",
EMNLP 2018) reads the objects a caption *mentions* through an object-synonym table and compares them
with the objects the image *has*::

    CHAIR-i = |{hallucinated object mentions}| / |{all object mentions}|      (over the corpus)
    CHAIR-s = |{captions with >= 1 hallucinated mention}| / |{captions}|

A mention is hallucinated when its class is not among the image's ground-truth objects. The reverse
failure, an object of the image that the caption never names, is measured by :func:`object_recall`
(recall of ground-truth classes, omission rate ``1 − recall``), optionally on a safety-critical
subset of classes (:data:`SAFETY_CRITICAL_COCO`, :data:`SAFETY_CRITICAL_TOY`) reported apart.

Mentions are read by :class:`~vlmkit.metrics.vocabulary.ObjectVocabulary` (:mod:`vlmkit.metrics.vocabulary`:
the reference implementation's tokenising, singularising, multi-word names and COCO special cases, and
where vlmkit differs from it), over the shipped tables ``vlmkit/metrics/assets/chair_synonyms.txt`` (the
reference's 80-class COCO table, verbatim) and ``toy_synonyms.txt`` (the toy world's shapes); a
``synonyms`` argument is read by :func:`~vlmkit.metrics.vocabulary.load_vocabulary`. Every occurrence of
a synonym counts as one mention ("a dog chases another dog" mentions dog twice; ``unique=True`` counts
each class once per caption instead, the set reading of the paper's formula).

**Ground truth.** CHAIR's ground truth for an image is the union of the COCO instance annotations'
categories (:func:`gt_objects_from_coco_instances`) and the objects mentioned by the image's human
captions (:func:`gt_objects_from_captions`): ``[a | b for a, b in zip(inst, caps)]``.

**Caption drift** (:func:`caption_drift`, :func:`caption_control_drift`) is the representation drift
of :mod:`vlmkit.metrics.drift` (Wani et al. 2026) applied to caption embeddings.

Per-caption counts are returned as arrays so a ratio statistic can be bootstrapped by image
(``(n_hallucinated, n_mentions)`` as the numerator/denominator pair of a ratio).
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlmkit.errors import InputError
from vlmkit.metrics.drift import control_drift, control_pairs, cosine_drift
from vlmkit.metrics.vocabulary import (
    COCO_COMPOUNDS,
    COCO_DROP_WHEN,
    ObjectVocabulary,
    Synonyms,
    clean_name,
    load_vocabulary,
    read_synonym_table,
)
from vlmkit.registry import METRICS

_REFERENCE = "Rohrbach et al., EMNLP 2018 (Object Hallucination in Image Captioning)"
_DRIFT_REFERENCE = "Wani et al. 2026 (Same Answer, Different Representations), applied to caption embeddings"

#: Safety-critical classes of COCO-style street scenes, reported apart by :func:`object_recall`.
SAFETY_CRITICAL_COCO: tuple[str, ...] = ("person", "bicycle", "car", "motorcycle", "bus", "truck", "traffic light",
                                         "stop sign")
#: The toy world's designated safety-critical shapes (a vlmkit convention, not a property of the world).
SAFETY_CRITICAL_TOY: tuple[str, ...] = ("star", "cross")


# ----------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------

def _check_captions(captions: Any, name: str = "captions") -> list[str]:
    if isinstance(captions, str) or not isinstance(captions, Sequence):
        raise InputError(f"{name} must be a sequence of caption strings, got {type(captions).__name__}")
    if len(captions) == 0:
        raise InputError(f"{name} is empty; expected at least one caption")
    bad = [i for i, c in enumerate(captions) if not isinstance(c, str)]
    if bad:
        raise InputError(f"{name}[{bad[0]}] must be a string, got {type(captions[bad[0]]).__name__}")
    return list(captions)


def _check_gt(gt_objects: Any, n: int, vocab: ObjectVocabulary) -> list[set[str]]:
    """Ground-truth names → sets of the vocabulary's classes (one set per caption)."""
    if isinstance(gt_objects, str) or not isinstance(gt_objects, Sequence):
        raise InputError(f"gt_objects must be a sequence (one collection of object names per caption), got "
                         f"{type(gt_objects).__name__}")
    if len(gt_objects) != n:
        raise InputError(f"gt_objects has {len(gt_objects)} entries but there are {n} captions; expected one "
                         "collection of object names per caption")
    out: list[set[str]] = []
    unknown: list[str] = []
    for i, objs in enumerate(gt_objects):
        if isinstance(objs, str) or not isinstance(objs, Collection) or not all(isinstance(o, str) for o in objs):
            raise InputError(f"gt_objects[{i}] must be a collection of object-name strings (e.g. {{'dog', 'car'}}), "
                             f"got {objs!r:.80}")
        classes = set()
        for o in objs:
            c = vocab.canonical(o)
            if c is None:
                unknown.append(o)
            else:
                classes.add(c)
        out.append(classes)
    if unknown:
        names = sorted(set(unknown))
        raise InputError(f"gt_objects names {names[:5]}{' ...' if len(names) > 5 else ''} that the {vocab.name!r} "
                         f"synonym table does not know; expected class names or synonyms of {vocab.classes[:6]} ...")
    return out


def _check_subset(subset: Any, vocab: ObjectVocabulary) -> set[str] | None:
    if subset is None:
        return None
    if isinstance(subset, str) or not isinstance(subset, Collection) or not all(isinstance(s, str) for s in subset):
        raise InputError(f"subset must be a collection of class names (e.g. SAFETY_CRITICAL_COCO), got {subset!r:.80}")
    classes = {vocab.canonical(s) for s in subset}
    if None in classes or not subset:
        bad = [s for s in subset if vocab.canonical(s) is None]
        raise InputError(f"subset {bad or list(subset)} names no class of the {vocab.name!r} table; expected a non-empty "
                         f"collection of its classes {vocab.classes[:6]} ...")
    return classes  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------------

@METRICS.register("chair", kind="captions", reference=_REFERENCE)
def chair(captions: Sequence[str], gt_objects: Sequence[Collection[str]], synonyms: Synonyms = "coco",
          unique: bool = False) -> dict[str, Any]:
    """CHAIR-i and CHAIR-s (Rohrbach et al. 2018) of captions against their images' objects.

    The per-caption counts resample by image as a ratio, e.g. for the engine's intervals
    ``Items(np.stack([out["n_hallucinated"], out["n_mentions"]], 1), statistic="ratio")`` (one caption per image)
    (:class:`vlmkit.evaluate.intervals.Items`); CHAIR-s is the mean of ``has_hallucination``.

    Args:
        captions: ``N`` captions.
        gt_objects: For each caption, its image's ground-truth objects (class names or synonyms of the
            table; e.g. from :func:`gt_objects_from_coco_instances` ∪ :func:`gt_objects_from_captions`).
        synonyms: ``"coco"``, ``"toy"``, a table file, a mapping or an :class:`ObjectVocabulary`.
        unique: Count each class once per caption (default: every occurrence, as the reference code).

    Returns:
        ``chair_i`` (hallucinated mentions / mentions over all captions; NaN when no caption mentions
        an object), ``chair_s`` (share of captions with a hallucinated mention), per caption
        ``mentioned`` and ``hallucinated`` (lists of class names, in order of mention) and the arrays
        ``n_mentions``, ``n_hallucinated`` ``(N,)`` int64 and ``has_hallucination`` ``(N,)`` bool.

    Raises:
        InputError: Bad captions, a ``gt_objects`` of another length or with names the table lacks.
    """
    caps = _check_captions(captions)
    vocab = load_vocabulary(synonyms)
    gts = _check_gt(gt_objects, len(caps), vocab)
    mentioned: list[list[str]] = []
    hallucinated: list[list[str]] = []
    for cap, gt in zip(caps, gts):
        m = vocab.mentions(cap)
        if unique:
            m = list(dict.fromkeys(m))
        mentioned.append(m)
        hallucinated.append([c for c in m if c not in gt])
    n_m = np.array([len(m) for m in mentioned], dtype=np.int64)  # (N,)
    n_h = np.array([len(h) for h in hallucinated], dtype=np.int64)  # (N,)
    total = int(n_m.sum())
    return {
        "chair_i": float(n_h.sum() / total) if total else math.nan,
        "chair_s": float((n_h > 0).mean()),
        "mentioned": mentioned,
        "hallucinated": hallucinated,
        "n_mentions": n_m,
        "n_hallucinated": n_h,
        "has_hallucination": n_h > 0,
    }


@METRICS.register("object_recall", kind="captions", reference=_REFERENCE + "; recall of ground-truth objects")
def object_recall(captions: Sequence[str], gt_objects: Sequence[Collection[str]], synonyms: Synonyms = "coco",
                  subset: Collection[str] | None = None) -> dict[str, Any]:
    """Object recall and omission rate of captions: how many of the image's objects the caption names.

    ``recall = Σ_i |G_i ∩ M_i| / Σ_i |G_i|`` with ``G_i`` the ground-truth classes of image ``i`` (each
    class once per image, restricted to ``subset`` when given) and ``M_i`` the classes its caption
    mentions (read as in CHAIR, Rohrbach et al. 2018); ``omission_rate = 1 − recall``.

    Args:
        captions: ``N`` captions.
        gt_objects: For each caption, its image's ground-truth objects (class names or synonyms).
        synonyms: ``"coco"``, ``"toy"``, a table file, a mapping or an :class:`ObjectVocabulary`.
        subset: Only these classes count as ground truth, e.g. :data:`SAFETY_CRITICAL_COCO`.

    Returns:
        ``recall`` and ``omission_rate`` (NaN when no image has a ground-truth object in scope), per
        image ``n_gt`` and ``n_covered`` ``(N,)`` int64 and lists ``covered`` / ``omitted`` (class
        names in table order), and ``subset`` (the classes in scope, or None).

    Raises:
        InputError: Bad captions, ground truth or subset (a name the table does not know).
    """
    caps = _check_captions(captions)
    vocab = load_vocabulary(synonyms)
    gts = _check_gt(gt_objects, len(caps), vocab)
    scope = _check_subset(subset, vocab)
    order = {c: k for k, c in enumerate(vocab.classes)}
    covered: list[list[str]] = []
    omitted: list[list[str]] = []
    for cap, gt in zip(caps, gts):
        g = gt if scope is None else gt & scope
        m = set(vocab.mentions(cap))
        covered.append(sorted(g & m, key=order.__getitem__))
        omitted.append(sorted(g - m, key=order.__getitem__))
    n_c = np.array([len(c) for c in covered], dtype=np.int64)  # (N,)
    n_g = n_c + np.array([len(o) for o in omitted], dtype=np.int64)  # (N,)
    total = int(n_g.sum())
    recall = float(n_c.sum() / total) if total else math.nan
    return {
        "recall": recall,
        "omission_rate": 1.0 - recall if total else math.nan,
        "n_gt": n_g,
        "n_covered": n_c,
        "covered": covered,
        "omitted": omitted,
        "subset": None if scope is None else tuple(c for c in vocab.classes if c in scope),
    }


# ----------------------------------------------------------------------------------------------------
# Ground truth
# ----------------------------------------------------------------------------------------------------

def gt_objects_from_coco_instances(instances_json: Mapping[str, Any] | str | Path,
                                   image_ids: Sequence[int]) -> list[set[str]]:
    """Each image's object classes from a COCO instances file, as CHAIR's ground truth from segmentations.

    The category names of every annotation of the image (``annotations[].category_id`` →
    ``categories[].name``), as ``get_annotations_from_segments`` of the reference CHAIR code does.
    An image without annotations has the empty set.

    Args:
        instances_json: The parsed ``instances_*.json`` or its path.
        image_ids: COCO image ids, in the order wanted.

    Returns:
        One set of (lower-case) category names per image id.

    Raises:
        InputError: Not a COCO instances file, a path that does not exist, or image ids missing from
            its ``images`` list.
    """
    if isinstance(instances_json, (str, Path)):
        p = Path(instances_json)
        if not p.is_file():
            raise InputError(f"instances_json={str(instances_json)!r}: no such file; expected a COCO instances JSON")
        instances_json = json.loads(p.read_text(encoding="utf-8"))
    if not isinstance(instances_json, Mapping) or not {"annotations", "categories"} <= set(instances_json):
        raise InputError("instances_json must be a COCO instances file (a dict with 'annotations' and 'categories'), "
                         f"got {type(instances_json).__name__} with keys {sorted(instances_json)[:6] if isinstance(instances_json, Mapping) else '-'}")
    if isinstance(image_ids, (str, bytes)) or not isinstance(image_ids, Sequence):
        raise InputError(f"image_ids must be a sequence of COCO image ids, got {type(image_ids).__name__}")
    ids = [int(i) for i in image_ids]
    if "images" in instances_json:
        known = {int(im["id"]) for im in instances_json["images"]}
        missing = [i for i in ids if i not in known]
        if missing:
            raise InputError(f"image_ids {missing[:5]}{' ...' if len(missing) > 5 else ''} are not in the instances "
                             f"file's images ({len(known)} images)")
    names = {int(c["id"]): clean_name(c["name"]) for c in instances_json["categories"]}
    wanted: dict[int, set[str]] = {i: set() for i in ids}
    for ann in instances_json["annotations"]:
        objs = wanted.get(int(ann["image_id"]))
        if objs is not None:
            cid = int(ann["category_id"])
            if cid not in names:
                raise InputError(f"instances_json: annotation {ann.get('id')} has category_id {cid}, which is not "
                                 "in 'categories'")
            objs.add(names[cid])
    return [set(wanted[i]) for i in ids]


def gt_objects_from_captions(caption_lists: Sequence[Sequence[str]], synonyms: Synonyms = "coco") -> list[set[str]]:
    """Each image's objects as mentioned by its human captions, CHAIR's second source of ground truth.

    The union of the classes mentioned by the image's reference captions (``get_annotations_from_captions``
    of the reference CHAIR code; COCO has five per image). CHAIR takes the union of this and
    :func:`gt_objects_from_coco_instances`.

    Args:
        caption_lists: For each image, its reference captions.
        synonyms: ``"coco"``, ``"toy"``, a table file, a mapping or an :class:`ObjectVocabulary`.

    Returns:
        One set of class names per image.
    """
    if isinstance(caption_lists, str) or not isinstance(caption_lists, Sequence):
        raise InputError(f"caption_lists must be a sequence (one list of captions per image), got "
                         f"{type(caption_lists).__name__}")
    vocab = load_vocabulary(synonyms)
    out = []
    for i, caps in enumerate(caption_lists):
        if isinstance(caps, str):
            raise InputError(f"caption_lists[{i}] must be a list of captions, got a single string {caps!r:.60}")
        out.append({c for cap in _check_captions(caps, f"caption_lists[{i}]") for c in vocab.mentions(cap)})
    return out


# ----------------------------------------------------------------------------------------------------
# Caption drift
# ----------------------------------------------------------------------------------------------------

def _check_emb(x: Any, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[0] == 0:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(f"{name} must be a tensor of caption embeddings (N, D) with N >= 1, got {shape}")
    return x


@METRICS.register("caption_drift", kind="captions", reference=_DRIFT_REFERENCE)
def caption_drift(clean_emb: torch.Tensor, perturbed_emb: torch.Tensor) -> torch.Tensor:
    """``1 − cos`` between each clean caption's embedding and its perturbed caption's ``(N,)``.

    :func:`vlmkit.metrics.drift.cosine_drift` on caption embeddings ``(N, D)`` (Wani et al. 2026).
    """
    return cosine_drift(_check_emb(clean_emb, "clean_emb"), _check_emb(perturbed_emb, "perturbed_emb"))


@METRICS.register("caption_control_drift", kind="captions", reference=_DRIFT_REFERENCE)
def caption_control_drift(clean_emb: torch.Tensor, generator: torch.Generator,
                          image_ids: Sequence[Any] | torch.Tensor | None = None) -> torch.Tensor:
    """Control drift ``1 − cos(e(c_i), e(c_j))`` with ``c_j`` a caption of a *different* image ``(N,)``.

    Without ``image_ids`` every row is its own image and this is
    :func:`vlmkit.metrics.drift.control_drift`. With ``image_ids`` (several captions per image, e.g.
    COCO's five), each image is paired with a different image by
    :func:`vlmkit.metrics.drift.control_pairs` and each of its captions with a caption of that image
    drawn uniformly, so a caption is never compared with a caption of its own image.

    Args:
        clean_emb: Caption embeddings ``(N, D)``.
        generator: Draws the pairs.
        image_ids: The image of each caption ``(N,)`` (any hashable ids), or None.

    Raises:
        InputError: Bad embeddings, ``image_ids`` of another length, or fewer than 2 images.
    """
    _check_emb(clean_emb, "clean_emb")
    if image_ids is None:
        return control_drift(clean_emb, generator)
    ids = image_ids.tolist() if isinstance(image_ids, torch.Tensor) else list(image_ids)
    if len(ids) != clean_emb.shape[0]:
        raise InputError(f"image_ids has {len(ids)} entries for {clean_emb.shape[0]} caption embeddings; expected one "
                         "image id per caption")
    units = {u: k for k, u in enumerate(dict.fromkeys(ids))}
    if len(units) < 2:
        raise InputError(f"caption control drift needs captions of at least 2 images, got {len(units)}")
    unit = torch.tensor([units[u] for u in ids])  # (N,)
    members = torch.argsort(unit, stable=True)  # (N,) caption indices grouped by image
    count = torch.bincount(unit, minlength=len(units))  # (U,)
    start = torch.cumsum(count, 0) - count  # (U,)
    partner = control_pairs(len(units), generator)[unit]  # (N,) a different image per caption
    u01 = torch.rand(len(ids), generator=generator, device=generator.device).cpu()  # (N,)
    pick = (u01 * count[partner]).long().clamp_max(count[partner] - 1)  # (N,)
    j = members[start[partner] + pick].to(clean_emb.device)  # (N,)
    return cosine_drift(clean_emb, clean_emb[j])


__all__ = [
    "COCO_COMPOUNDS",
    "COCO_DROP_WHEN",
    "SAFETY_CRITICAL_COCO",
    "SAFETY_CRITICAL_TOY",
    "ObjectVocabulary",
    "caption_control_drift",
    "caption_drift",
    "chair",
    "gt_objects_from_captions",
    "gt_objects_from_coco_instances",
    "load_vocabulary",
    "object_recall",
    "read_synonym_table",
]
