"""The label-map corruptions: boundary erosion and dilation, small-object dropout, class confusion and
region merging (``kind="corruption"`` in :data:`vlmkit.registry.MASK_CORRUPTIONS`).

Objects and regions are 8-connected components of one class in one image, and severity is continuous in
``[0, 1]``; see :mod:`vlmkit.perturb.masks` for the contract.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vlmkit.errors import InputError
from vlmkit.perturb.base import default_generator
from vlmkit.perturb.masks.base import register_mask_corruption

Tensor = torch.Tensor


# ============================================================================================ checks


def _foreground(masks: Tensor, background: int, ignore_index: int, classes: Sequence[int] | None) -> Tensor:
    """Bool ``(B, H, W)``: pixels of the foreground classes (``classes`` or every id but background/ignore)."""
    fg = (masks != background) & (masks != ignore_index)
    if classes is not None:
        fg &= torch.isin(masks, torch.as_tensor(list(classes), dtype=masks.dtype, device=masks.device))
    return fg


def _check_classes(classes: Any, background: int, ignore_index: int) -> list[int] | None:
    if classes is None:
        return None
    if isinstance(classes, (str, bytes)) or not isinstance(classes, (Sequence, set, frozenset)):
        raise InputError(f"classes must be a sequence of class ids or None, got {classes!r}")
    out = []
    for c in classes:
        if isinstance(c, bool) or not isinstance(c, numbers.Integral) or c < 0 or c in (background, ignore_index):
            raise InputError(f"classes must hold foreground class ids (ints >= 0, not background={background} "
                             f"or ignore_index={ignore_index}), got {c!r}")
        out.append(int(c))
    return out


# ====================================================================================== morphology


def _bayer(n: int = 8) -> np.ndarray:
    """Bayer's ordered-dither index matrix ``(n, n)`` with entries ``0 .. n² - 1`` (n a power of two)."""
    m = np.zeros((1, 1), dtype=np.int64)
    while m.shape[0] < n:
        m = np.block([[4 * m, 4 * m + 2], [4 * m + 3, 4 * m + 1]])
    return m


def _dither(H: int, W: int, device: torch.device) -> Tensor:
    """Ordered-dither thresholds ``(H, W)`` in (0, 1): Bayer's 8×8 matrix (Bayer, ICC 1973) tiled."""
    m = torch.as_tensor((_bayer(8) + 0.5) / 64.0, dtype=torch.float32, device=device)  # (8, 8)
    return m.repeat((H + 7) // 8, (W + 7) // 8)[:H, :W]


def _max_radius(masks: Tensor, max_radius: float | None) -> float:
    if max_radius is None:
        return max(1.0, min(masks.shape[-2:]) / 8.0)
    if isinstance(max_radius, bool) or not isinstance(max_radius, numbers.Real) or not max_radius > 0:
        raise InputError(f"max_radius must be a positive number of pixels or None, got {max_radius!r}")
    return float(max_radius)


def _inside_distance(masks: Tensor, k_max: int) -> Tensor:
    """Chessboard distance ``(B, H, W)`` from each pixel to the nearest pixel of another label, capped at
    ``k_max + 1``: 1 for a pixel with a differently labelled 8-neighbour. Outside the image counts as the
    same label (image borders are no boundary)."""
    lab = masks.unsqueeze(1).float()  # (B, 1, H, W); class ids are exact in float32 below 2^24
    hi = F.max_pool2d(lab, 3, 1, 1)  # max_pool pads with -inf: the border is left out
    lo = -F.max_pool2d(-lab, 3, 1, 1)
    inner = (hi == lo).float()  # (B, 1, H, W): E_1, every pixel within radius 1 has one label
    dist = torch.full_like(masks, k_max + 1)
    dist[inner[:, 0] == 0] = 1
    for k in range(2, k_max + 1):
        inner = inner * -F.max_pool2d(-inner, 3, 1, 1)  # E_k = E_{k-1} & erode(E_{k-1})
        dist[(inner[:, 0] == 0) & (dist > k)] = k
    return dist


@register_mask_corruption("erode", family="boundary", batched=True)
def erode(masks: Tensor, severity: float, *, generator: torch.Generator | None = None, background: int = 0,
          ignore_index: int = 255, max_radius: float | None = None, classes: Sequence[int] | None = None) -> Tensor:
    """Boundary erosion: every foreground region loses a band of width ``r = severity * max_radius`` pixels
    along its boundary, which becomes background (an under-segmenting perception module).

    Morphological erosion (Serra, "Image Analysis and Mathematical Morphology", 1982) of each class's
    region by a square of radius ``r``, batched over classes through max-pooling of the label map: a pixel
    is eroded when its chessboard distance ``d >= 1`` to a pixel of another label (another class,
    background or ``ignore_index``; the image border is no boundary) satisfies ``d - 1 + t < r``, with
    ``t`` in (0, 1) Bayer's 8×8 ordered-dither threshold (Bayer 1973). At integer ``r = k`` this is exactly
    erosion by a (2k+1)×(2k+1) square; between integers the next one-pixel ring is eroded progressively
    in a fixed dither order, so the effect is continuous in severity. No randomness: batch independent.

    Args:
        masks: Label maps ``(B, H, W)`` int64.
        severity: In [0, 1]; the radius is ``severity * max_radius`` pixels.
        generator: Unused (accepted for the common signature).
        background: Background id (what eroded pixels become).
        ignore_index: Unlabelled id (never changed; a boundary).
        max_radius: Radius at severity 1, in pixels (default ``min(H, W) / 8``).
        classes: Foreground classes to erode (default: every id but background and ignore_index).
    """
    cls = _check_classes(classes, background, ignore_index)
    r = severity * _max_radius(masks, max_radius)
    dist = _inside_distance(masks, math.ceil(r))  # (B, H, W)
    t = _dither(*masks.shape[-2:], masks.device)  # (H, W)
    hit = _foreground(masks, background, ignore_index, cls) & ((dist - 1).float() + t < r)
    return torch.where(hit, torch.full_like(masks, background), masks)


@register_mask_corruption("dilate", family="boundary", batched=True)
def dilate(masks: Tensor, severity: float, *, generator: torch.Generator | None = None, background: int = 0,
           ignore_index: int = 255, max_radius: float | None = None, classes: Sequence[int] | None = None) -> Tensor:
    """Boundary dilation: foreground regions grow into the background by ``r = severity * max_radius``
    pixels (an over-segmenting perception module; morphological dilation, Serra 1982).

    A background pixel at chessboard distance ``d >= 1`` from the nearest foreground region (reached
    through background only: another class or ``ignore_index`` stops the growth, and a class never
    overruns another) takes that region's class when ``d - 1 + t < r``, ``t`` Bayer's ordered-dither
    threshold as in :func:`erode` (exact dilation by a square at integer radii, continuous in between).
    Classes reaching a pixel at the same distance: the highest id wins. No randomness: batch independent.

    Args:
        masks: Label maps ``(B, H, W)`` int64.
        severity: In [0, 1]; the radius is ``severity * max_radius`` pixels.
        generator: Unused (accepted for the common signature).
        background: Background id (the only label that is overgrown).
        ignore_index: Unlabelled id (never changed).
        max_radius: Radius at severity 1, in pixels (default ``min(H, W) / 8``).
        classes: Foreground classes that grow (default: every id but background and ignore_index).
    """
    cls = _check_classes(classes, background, ignore_index)
    r = severity * _max_radius(masks, max_radius)
    k_max = math.ceil(r)
    free = masks == background  # (B, H, W)
    lab = torch.where(_foreground(masks, background, ignore_index, cls), masks.float(),
                      torch.full_like(masks, -1, dtype=torch.float32)).unsqueeze(1)  # (B, 1, H, W), -1 unclaimed
    dist = torch.full_like(masks, k_max + 1)
    for k in range(1, k_max + 1):
        nb = F.max_pool2d(lab, 3, 1, 1)  # highest class among the 8-neighbours (and itself)
        new = free.unsqueeze(1) & (lab < 0) & (nb >= 0)
        if not bool(new.any()):
            break
        lab = torch.where(new, nb, lab)
        dist[new[:, 0]] = k
    t = _dither(*masks.shape[-2:], masks.device)  # (H, W)
    hit = free & (lab[:, 0] >= 0) & ((dist - 1).float() + t < r)
    return torch.where(hit, lab[:, 0].long(), masks)


# ========================================================================================= regions


def _components(masks: Tensor, skip: Sequence[int]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """8-connected components of every class but ``skip``, per image, numbered across the batch.

    Returns:
        ``comp`` ``(B, H, W)`` int64 (component id, -1 for skipped labels) and per-component arrays
        ``image``, ``cls``, ``area`` and ``first`` (flat index of its first pixel in raster order).
    """
    from scipy import ndimage  # local: only the region corruptions need it

    m = masks.detach().cpu().numpy()  # (B, H, W)
    comp = np.full(m.shape, -1, dtype=np.int64)
    img, cls, area, first = [], [], [], []
    structure = np.ones((3, 3), dtype=bool)
    n_total = 0
    for b in range(m.shape[0]):
        for c in np.unique(m[b]):
            if int(c) in skip:
                continue
            lab, n = ndimage.label(m[b] == c, structure=structure)  # (H, W), 1..n
            flat = lab.ravel()
            idx = np.flatnonzero(flat)
            ids = flat[idx] - 1
            comp[b].ravel()[idx] = ids + n_total
            _, start = np.unique(ids, return_index=True)
            img.append(np.full(n, b))
            cls.append(np.full(n, int(c)))
            area.append(np.bincount(ids, minlength=n))
            first.append(idx[start])
            n_total += n
    cat = (lambda xs: np.concatenate(xs).astype(np.int64) if xs else np.zeros(0, dtype=np.int64))
    return comp, {"image": cat(img), "cls": cat(cls), "area": cat(area), "first": cat(first)}


def _relabel(masks: Tensor, comp: np.ndarray, new_cls: np.ndarray) -> Tensor:
    """``masks`` with every component pixel set to ``new_cls[component]`` (other pixels unchanged)."""
    out = masks.detach().cpu().numpy().copy()
    sel = comp >= 0
    out[sel] = new_cls[comp[sel]]
    return torch.from_numpy(out).to(masks.device)


def _component_uniforms(masks: Tensor, info: dict[str, np.ndarray], generator: torch.Generator | None) -> np.ndarray:
    """One uniform per component: the generator's ``(B, H, W)`` field read at the component's first pixel."""
    g = default_generator(masks, generator)
    u = torch.rand(masks.shape, generator=g, device=masks.device).cpu().numpy()  # (B, H, W), whatever the severity
    H, W = masks.shape[-2:]
    return u.reshape(-1, H * W)[info["image"], info["first"]] if len(info["cls"]) else np.zeros(0)


@register_mask_corruption("drop_small", family="dropout", batched=True)
def drop_small(masks: Tensor, severity: float, *, generator: torch.Generator | None = None, background: int = 0,
               ignore_index: int = 255, max_area: float | None = None) -> Tensor:
    """Small-object dropout: objects smaller than ``severity * max_area`` pixels become background (the
    missed detections of small objects that dominate segmentation errors, cf. the COCO small-object
    analysis of Lin et al., ECCV 2014).

    An object is an 8-connected component of one foreground class in one image (module docstring); it is
    dropped when its area (pixels) is strictly below the threshold, so severity 0 drops nothing and the
    dropped set only grows with severity. No randomness: batch independent.

    Args:
        masks: Label maps ``(B, H, W)`` int64.
        severity: In [0, 1]; the area threshold is ``severity * max_area``.
        generator: Unused (accepted for the common signature).
        background: Background id (what dropped objects become).
        ignore_index: Unlabelled id (never changed).
        max_area: Area threshold at severity 1, in pixels (default ``H * W / 8``).
    """
    if max_area is None:
        max_area = masks.shape[-2] * masks.shape[-1] / 8.0
    elif isinstance(max_area, bool) or not isinstance(max_area, numbers.Real) or not max_area > 0:
        raise InputError(f"drop_small: max_area must be a positive number of pixels or None, got {max_area!r}")
    comp, info = _components(masks, skip=(background, ignore_index))
    new_cls = np.where(info["area"] < severity * float(max_area), background, info["cls"])
    return _relabel(masks, comp, new_cls)


def confusable_pairs(n_classes: int | None = None, background: int = 0, ignore_index: int = 255,
                     classes: Sequence[int] | None = None) -> dict[int, int]:
    """The default confusion pairing: consecutive foreground ids swap (1↔2, 3↔4, ... with background 0).

    Foreground ids (every id but ``background`` and ``ignore_index``) are ranked ``0, 1, 2, ...`` and
    ranks ``2j`` and ``2j + 1`` are confusable both ways. With ``n_classes`` given, an unpaired last class
    is confused one way with the class before it, so no id ``>= n_classes`` appears.

    Args:
        n_classes: Number of classes (ids ``< n_classes``), or None to pair the ``classes`` given.
        background: Background id.
        ignore_index: Unlabelled id.
        classes: Ids to pair when ``n_classes`` is None (their partners may be ids absent from the data).

    Returns:
        ``{class: confusable class}``.
    """
    if n_classes is not None:
        fg = [c for c in range(int(n_classes)) if c not in (background, ignore_index)]
        out = {}
        for j, c in enumerate(fg):
            partner = j ^ 1
            out[c] = fg[partner] if partner < len(fg) else (fg[j - 1] if j > 0 else c)
        return {a: b for a, b in out.items() if a != b}

    def rank(c: int) -> int:
        return c - (c > background) - (c > ignore_index)

    def unrank(r: int) -> int:
        c = r
        for skip in sorted((background, ignore_index)):
            c += c >= skip
        return c

    return {int(c): unrank(rank(int(c)) ^ 1) for c in (classes or ()) if c not in (background, ignore_index)}


@register_mask_corruption("confuse", family="confusion", batched=False)
def confuse(masks: Tensor, severity: float, *, generator: torch.Generator | None = None, background: int = 0,
            ignore_index: int = 255, pairs: Mapping[int, int] | None = None, n_classes: int | None = None) -> Tensor:
    """Class confusion: each region of a class ``a`` with a confusable class ``b`` is relabelled ``b``
    with probability ``severity`` (a perception module mistaking a truck for a car, a bicycle for a
    person: the off-diagonal mass of a confusion matrix concentrated on look-alike classes).

    A region is an 8-connected component of one class in one image; its coin is the generator's uniform
    field at its first pixel (drawn whatever the severity), and it flips when that is below ``severity``
    — so with a fixed generator the flipped set grows with severity. Pairs are read on the clean map
    (``a→b`` and ``b→a`` both apply to their own regions; no chains).

    Args:
        masks: Label maps ``(B, H, W)`` int64.
        severity: Probability in [0, 1] that a region is confused.
        generator: Source of the coins (None: seeded with 0).
        background: Background id (never confused unless ``pairs`` names it).
        ignore_index: Unlabelled id (never changed; not allowed in ``pairs``).
        pairs: ``{a: b}`` class ids, e.g. ``{car: truck, truck: car, person: bicycle}``; default
            :func:`confusable_pairs` (consecutive foreground ids swap).
        n_classes: Passed to :func:`confusable_pairs` for the default pairing.
    """
    if pairs is None:
        present = [int(c) for c in torch.unique(masks).tolist()]
        pairs = confusable_pairs(n_classes, background, ignore_index, classes=None if n_classes else present)
    if not isinstance(pairs, Mapping):
        raise InputError(f"confuse: pairs must be a mapping {{class: confusable class}}, got {type(pairs).__name__}")
    for a, b in pairs.items():
        for v in (a, b):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0 or v == ignore_index:
                raise InputError(f"confuse: pairs must map class ids (ints >= 0, not ignore_index={ignore_index}), "
                                 f"got {a!r}: {b!r}")
    comp, info = _components(masks, skip=(ignore_index,))
    u = _component_uniforms(masks, info, generator)
    target = np.array([pairs.get(int(c), int(c)) for c in info["cls"]], dtype=np.int64)
    new_cls = np.where(u < severity, target, info["cls"])
    return _relabel(masks, comp, new_cls)


def _adjacent_pairs(comp: np.ndarray) -> np.ndarray:
    """Distinct ordered pairs ``(i, j)`` of components that touch (8-neighbourhood), both directions."""
    pairs = []
    for a, b in ((comp[:, :, :-1], comp[:, :, 1:]), (comp[:, :-1, :], comp[:, 1:, :]),
                 (comp[:, :-1, :-1], comp[:, 1:, 1:]), (comp[:, :-1, 1:], comp[:, 1:, :-1])):
        sel = (a >= 0) & (b >= 0) & (a != b)
        pairs.append(np.stack([a[sel], b[sel]], 1))
    p = np.concatenate(pairs + [q[:, ::-1] for q in pairs], 0)
    return np.unique(p, axis=0) if len(p) else np.zeros((0, 2), dtype=np.int64)


@register_mask_corruption("merge", family="merging", batched=False)
def merge(masks: Tensor, severity: float, *, generator: torch.Generator | None = None, background: int = 0,
          ignore_index: int = 255, include_background: bool = False) -> Tensor:
    """Region merging: a region touching a larger region of another class is absorbed by it (takes its
    class) with probability ``severity`` — the under-segmentation of region-merging segmenters, whose
    errors join adjacent segments (Felzenszwalb & Huttenlocher, IJCV 2004; Martin et al., ICCV 2001).

    Regions are 8-connected components of one class (foreground only; with ``include_background`` the
    background's components too, so a small object can vanish into the background and a background hole
    be filled by its object). Each region's candidate partner is its largest touching region of another
    class, when that one is larger (ties: the lower component number is "larger"); the region merges when
    its coin (the generator's field at its first pixel) is below ``severity``. Merges chain: a region merged
    into a region that itself merges ends with the final region's class. With a fixed generator the set
    of merges grows with severity (the changed pixels need not: a chain ending in a region of the first
    region's own class gives it back its class).

    Args:
        masks: Label maps ``(B, H, W)`` int64.
        severity: Probability in [0, 1] that a candidate region is merged.
        generator: Source of the coins (None: seeded with 0).
        background: Background id.
        ignore_index: Unlabelled id (never changed; separates regions).
        include_background: Whether background components take part.
    """
    skip = (ignore_index,) if include_background else (background, ignore_index)
    comp, info = _components(masks, skip=skip)
    n = len(info["cls"])
    if n == 0:
        return masks.clone()
    u = _component_uniforms(masks, info, generator)
    area, ids = info["area"], np.arange(n)
    pairs = _adjacent_pairs(comp)  # (P, 2): region, neighbour
    pairs = pairs[info["cls"][pairs[:, 0]] != info["cls"][pairs[:, 1]]] if len(pairs) else pairs
    target = np.full(n, -1, dtype=np.int64)
    if len(pairs):
        order = np.lexsort((pairs[:, 1], -area[pairs[:, 1]], pairs[:, 0]))  # per region: largest neighbour first
        p = pairs[order]
        head = np.r_[True, p[1:, 0] != p[:-1, 0]]
        reg, nb = p[head, 0], p[head, 1]
        larger = (area[nb] > area[reg]) | ((area[nb] == area[reg]) & (nb < reg))
        target[reg[larger]] = nb[larger]
    merged = (target >= 0) & (u < severity)
    final = ids.copy()
    for _ in range(n):  # follow chains of merges (areas strictly increase along one: no cycles)
        nxt = np.where(merged[final], target[final], final)
        if np.array_equal(nxt, final):
            break
        final = nxt
    return _relabel(masks, comp, info["cls"][final])


__all__ = ["confusable_pairs", "confuse", "dilate", "drop_small", "erode", "merge"]
