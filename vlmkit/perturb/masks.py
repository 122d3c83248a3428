"""Perception-realistic corruptions of segmentation label maps, and their rendering into the image.

Degradations of a perception module's *output* rather than of pixels (Cheng, "Semantic Misalignment in
Vision-Language Models under Perceptual Degradation"): a segmenter that under- or over-segments
boundaries, misses small objects, confuses look-alike classes or merges neighbouring regions. Each
corruption is a pure function on label maps; a renderer then turns the corrupted perception into what a
VLM sees (a coloured overlay, or the missed objects blurred or inpainted away).

**Label maps** are int64 tensors ``(B, H, W)`` of class ids ``>= 0``; ``background`` (default 0) is the
"nothing" class and ``ignore_index`` (default 255) marks unlabelled pixels, which no corruption changes
and which count as a region boundary. Every other id is a foreground (object) class.

**Objects and regions.** Where a corruption works on objects (``drop_small``, ``confuse``, ``merge``), an
object / region is one **8-connected component of one foreground class in one image** (labelled with
``scipy.ndimage.label``): two touching objects of one class are one region, one class split in two
places is two regions.

**The corruption contract** (registered in :data:`vlmkit.registry.MASK_CORRUPTIONS` with
``kind="corruption"`` by :func:`register_mask_corruption`, which validates the input)::

    fn(masks: LongTensor (B, H, W), severity: float, *, generator=None, background=0, ignore_index=255,
       **params) -> LongTensor (B, H, W)

* **continuous severity** in ``[0, 1]`` (the registry meta ``severity_range``), so that
  :func:`vlmkit.evaluate.calibrate.calibrate` can search it; severity 0 returns the input unchanged (a
  copy), and for a fixed generator the set of changed pixels only grows with severity (``merge``: the set
  of merges only grows; a pixel can return to its own class when a chain of merges ends in a region of
  that class);
* pure (the input is never modified), batched, deterministic given ``generator``: random corruptions
  draw one uniform field ``(B, H, W)`` from it whatever the severity (``None``: a generator seeded with
  0), so with a fixed seed the result is a monotone function of severity;
* ``erode``, ``dilate`` and ``drop_small`` use no randomness and are **batch independent** (a batch
  gives the concatenation of its images' results); ``confuse`` and ``merge`` depend on each image's
  slice of the random field, like the image perturbations of :mod:`vlmkit.perturb.base`.

**Renderers** (``kind="render"`` in the same registry; :func:`render` dispatches by name)::

    fn(images (B, 3, H, W) float in [0, 1], clean_masks, corrupted_masks, **params) -> images

``overlay`` alpha-blends a fixed palette of the corrupted map onto the image; ``blur_dropped`` and
``inpaint_dropped`` change only the *dropped* pixels (:func:`dropped_pixels`: an object in the clean map,
background in the corrupted one) and leave every other pixel bit-identical.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vlmkit.errors import InputError
from vlmkit.perturb import _corruption_kernels as K
from vlmkit.perturb.base import default_generator
from vlmkit.registry import MASK_CORRUPTIONS
from vlmkit.validate import check_images

Tensor = torch.Tensor
MaskFn = Callable[..., Tensor]

__all__ = [
    "check_masks", "confusable_pairs", "confuse", "corrupt_and_render", "dilate", "drop_small",
    "dropped_pixels", "erode", "list_mask_corruptions", "list_renderers", "merge", "register_mask_corruption",
    "register_renderer", "render", "render_blur_dropped", "render_inpaint_dropped", "render_overlay",
    "voc_palette",
]


# ============================================================================================ checks


def check_masks(masks: Any, name: str = "masks") -> Tensor:
    """Validate a batch of label maps: an int64 tensor ``(B, H, W)`` of ids ``>= 0``.

    Raises:
        InputError: Naming ``name`` and what was expected (type, dtype with a hint, shape, negative ids).
    """
    if not isinstance(masks, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor of label maps (B, H, W) int64, got {type(masks).__name__}")
    if masks.dtype != torch.int64:
        hint = " (convert with .long())" if not masks.is_floating_point() and masks.dtype != torch.bool else ""
        raise InputError(f"{name} must be an int64 tensor of class ids, got dtype {masks.dtype}{hint}")
    if masks.ndim != 3:
        raise InputError(f"{name} must have shape (B, H, W), got {tuple(masks.shape)}")
    if masks.numel() and int(masks.min()) < 0:
        raise InputError(f"{name} must hold class ids >= 0, got {int(masks.min())}")
    return masks


def _check_ids(background: Any, ignore_index: Any) -> None:
    for arg, v in (("background", background), ("ignore_index", ignore_index)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
            raise InputError(f"{arg} must be a class id (int >= 0), got {v!r}")
    if background == ignore_index:
        raise InputError(f"background and ignore_index must differ, both are {background}")


def _check_severity(name: str, severity: Any, lo: float, hi: float) -> float:
    if isinstance(severity, bool) or not isinstance(severity, numbers.Real) or not math.isfinite(float(severity)):
        raise InputError(f"{name}: severity must be a finite number in [{lo}, {hi}], got {severity!r}")
    s = float(severity)
    if not lo <= s <= hi:
        raise InputError(f"{name}: severity={s} is out of range; expected a number in [{lo}, {hi}]")
    return s


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


# ======================================================================================= registration


def register_mask_corruption(name: str, family: str, severity_range: tuple[float, float] = (0.0, 1.0),
                             **meta: Any) -> Callable[[MaskFn], MaskFn]:
    """Register a label-map corruption in :data:`vlmkit.registry.MASK_CORRUPTIONS` with input checks.

    The wrapper validates ``masks`` (:func:`check_masks`), the severity (a finite number in
    ``severity_range``), ``background`` and ``ignore_index`` before any work, returns a copy of the input
    at severity 0 (the identity the contract promises), and checks the output's shape and dtype. Its
    ``raw`` attribute is the unchecked function. Registered with ``kind="corruption"``, ``family`` and
    ``severity_range``.

    Args:
        name: Registry name.
        family: Group ("boundary", "dropout", "confusion", "merging").
        severity_range: Closed range of the continuous severity (the calibration searches it).
        **meta: Extra metadata; ``batched=True`` claims that a batch gives, bit for bit, the maps of one
            call per image (no randomness), ``batched=False`` that it does not.
    """
    lo, hi = float(severity_range[0]), float(severity_range[1])

    def deco(fn: MaskFn) -> MaskFn:
        @functools.wraps(fn)
        def wrapped(masks: Tensor, severity: float, *, generator: torch.Generator | None = None,
                    background: int = 0, ignore_index: int = 255, **params: Any) -> Tensor:
            check_masks(masks)
            s = _check_severity(name, severity, lo, hi)
            _check_ids(background, ignore_index)
            if generator is not None and not isinstance(generator, torch.Generator):
                raise InputError(f"{name}: generator must be a torch.Generator or None, got {type(generator).__name__}")
            if s == 0.0 or masks.numel() == 0:
                return masks.clone()
            out = fn(masks, s, generator=generator, background=background, ignore_index=ignore_index, **params)
            if out.shape != masks.shape or out.dtype != masks.dtype:
                raise InputError(f"{name} returned {tuple(out.shape)} {out.dtype} for input {tuple(masks.shape)} "
                                 f"{masks.dtype}")
            return out

        wrapped.raw = fn  # type: ignore[attr-defined]
        return MASK_CORRUPTIONS.register(name, kind="corruption", family=family, severity_range=(lo, hi),
                                         **meta)(wrapped)

    return deco


def list_mask_corruptions(pattern: str = "*", **meta: Any) -> list[str]:
    """Names of the registered label-map corruptions (``kind="corruption"``) matching a glob and metadata."""
    return MASK_CORRUPTIONS.list(pattern, kind="corruption", **meta)


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


# ========================================================================================= renderers


def voc_palette(n: int = 256) -> Tensor:
    """The PASCAL VOC colour map ``(n, 3)`` float in [0, 1] (bit-interleaved ids, VOC devkit ``labelcolormap``,
    Everingham et al. 2010): id 0 black, 1 dark red, 2 dark green, ..., 255 light grey."""
    return torch.from_numpy(_voc_palette(int(n)).copy())


@functools.lru_cache(maxsize=4)
def _voc_palette(n: int) -> np.ndarray:
    out = np.zeros((n, 3), dtype=np.float32)
    for i in range(n):
        c, rgb = i, [0, 0, 0]
        for j in range(8):
            for ch in range(3):
                rgb[ch] |= ((c >> ch) & 1) << (7 - j)
            c >>= 3
        out[i] = rgb
    out /= 255.0
    out.flags.writeable = False
    return out


def dropped_pixels(clean_masks: Tensor, corrupted_masks: Tensor, background: int = 0,
                   ignore_index: int = 255) -> Tensor:
    """Bool ``(B, H, W)``: pixels of an object in the clean map (not background, not ignore) that the
    corrupted map calls background — dropped objects and eroded boundaries."""
    return (clean_masks != background) & (clean_masks != ignore_index) & (corrupted_masks == background)


def register_renderer(name: str, **meta: Any) -> Callable[[Callable[..., Tensor]], Callable[..., Tensor]]:
    """Register a renderer in :data:`vlmkit.registry.MASK_CORRUPTIONS` (``kind="render"``) with input checks.

    The wrapper validates the images (:func:`vlmkit.validate.check_images`), both label maps
    (:func:`check_masks`, shapes ``(B, H, W)`` matching the images), ``background`` and ``ignore_index``.
    """

    def deco(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        @functools.wraps(fn)
        def wrapped(images: Tensor, clean_masks: Tensor, corrupted_masks: Tensor, *, background: int = 0,
                    ignore_index: int = 255, **params: Any) -> Tensor:
            check_images(images, "images")
            check_masks(clean_masks, "clean_masks")
            check_masks(corrupted_masks, "corrupted_masks")
            want = (images.shape[0], *images.shape[-2:])
            for arg, m in (("clean_masks", clean_masks), ("corrupted_masks", corrupted_masks)):
                if tuple(m.shape) != want:
                    raise InputError(f"{name}: {arg} must have shape (B, H, W) = {want} to match images "
                                     f"{tuple(images.shape)}, got {tuple(m.shape)}")
            _check_ids(background, ignore_index)
            return fn(images, clean_masks.to(images.device), corrupted_masks.to(images.device),
                      background=background, ignore_index=ignore_index, **params)

        wrapped.raw = fn  # type: ignore[attr-defined]
        return MASK_CORRUPTIONS.register(name, kind="render", **meta)(wrapped)

    return deco


def list_renderers() -> list[str]:
    """Names of the registered renderers (``kind="render"``)."""
    return MASK_CORRUPTIONS.list(kind="render")


@register_renderer("overlay")
def render_overlay(images: Tensor, clean_masks: Tensor, corrupted_masks: Tensor, *, background: int = 0,
                   ignore_index: int = 255, alpha: float = 0.5, paint_background: bool = False) -> Tensor:
    """Alpha-blend the corrupted map's PASCAL VOC palette colours onto the image: ``(1 − α)·x + α·colour``
    at painted pixels (every class but background — unless ``paint_background`` — and ignore_index);
    other pixels are unchanged. Ids above 255 use the palette modulo 256.

    Args:
        images: ``(B, 3, H, W)`` float in [0, 1].
        clean_masks: Clean label maps (unused; the common signature).
        corrupted_masks: The label maps drawn.
        alpha: Opacity of the overlay in [0, 1].
        paint_background: Also paint background pixels (black at alpha).
    """
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0.0 <= float(alpha) <= 1.0:
        raise InputError(f"overlay: alpha must be a number in [0, 1], got {alpha!r}")
    pal = voc_palette().to(device=images.device, dtype=images.dtype)  # (256, 3)
    colour = pal[corrupted_masks % 256].permute(0, 3, 1, 2)  # (B, 3, H, W)
    paint = corrupted_masks != ignore_index
    if not paint_background:
        paint &= corrupted_masks != background
    blended = (1.0 - float(alpha)) * images + float(alpha) * colour
    return torch.where(paint.unsqueeze(1), blended, images)


@register_renderer("blur_dropped")
def render_blur_dropped(images: Tensor, clean_masks: Tensor, corrupted_masks: Tensor, *, background: int = 0,
                        ignore_index: int = 255, sigma: float | None = None) -> Tensor:
    """Region blur of what the perception module dropped: :func:`dropped_pixels` take the image blurred by
    a strong Gaussian (``scipy.ndimage.gaussian_filter`` semantics, nearest borders); every other pixel is
    left bit-identical.

    Args:
        images: ``(B, 3, H, W)`` float in [0, 1].
        clean_masks, corrupted_masks: Label maps ``(B, H, W)``.
        sigma: Blur standard deviation in pixels (default ``max(1, min(H, W) / 16)``).
    """
    if sigma is None:
        sigma = max(1.0, min(images.shape[-2:]) / 16.0)
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not sigma > 0:
        raise InputError(f"blur_dropped: sigma must be a positive number of pixels, got {sigma!r}")
    hole = dropped_pixels(clean_masks, corrupted_masks, background, ignore_index).unsqueeze(1)  # (B, 1, H, W)
    if not bool(hole.any()):
        return images.clone()
    blurred = K.gaussian_filter(images, float(sigma), mode="nearest").clamp(0.0, 1.0)
    return torch.where(hole, blurred, images)


def _box_sum(x: Tensor) -> Tensor:
    """Sum over each pixel's 3×3 neighbourhood (zeros outside), per channel: ``(B, C, H, W)``."""
    w = torch.ones(x.shape[1], 1, 3, 3, dtype=x.dtype, device=x.device)
    return F.conv2d(x, w, padding=1, groups=x.shape[1])


@register_renderer("inpaint_dropped")
def render_inpaint_dropped(images: Tensor, clean_masks: Tensor, corrupted_masks: Tensor, *, background: int = 0,
                           ignore_index: int = 255, smooth_iters: int = 20) -> Tensor:
    """Inpaint what the perception module dropped from the surrounding background, so the missed object
    disappears from the image; every other pixel is left bit-identical.

    Diffusion inpainting (Oliveira et al., "Fast Digital Image Inpainting", VIIP 2001), batched: the
    sources are the clean map's background pixels (never another object or an ignored pixel); the hole
    (:func:`dropped_pixels`) is filled from its rim inwards with the mean of the already-known
    3×3 neighbours (onion peel, propagating across other objects without using their colours), then
    ``smooth_iters`` Jacobi iterations of the Laplace equation inside the hole smooth the fill. An image
    with no background pixel at all fills its hole with the mean colour of its non-dropped pixels.

    Args:
        images: ``(B, 3, H, W)`` float in [0, 1].
        clean_masks, corrupted_masks: Label maps ``(B, H, W)``.
        smooth_iters: Diffusion iterations after the fill (0: onion peel only).
    """
    if isinstance(smooth_iters, bool) or not isinstance(smooth_iters, numbers.Integral) or smooth_iters < 0:
        raise InputError(f"inpaint_dropped: smooth_iters must be an int >= 0, got {smooth_iters!r}")
    hole = dropped_pixels(clean_masks, corrupted_masks, background, ignore_index).unsqueeze(1)  # (B, 1, H, W)
    if not bool(hole.any()):
        return images.clone()
    x = images
    known = (clean_masks == background).unsqueeze(1).to(x.dtype)  # (B, 1, H, W): the sources
    none = known.flatten(1).sum(1) == 0  # (B,) images without a background pixel
    if bool(none.any()):
        rest = (~hole).to(x.dtype)
        mean = (x * rest).flatten(2).sum(2) / rest.flatten(2).sum(2).clamp_min(1)  # (B, 3)
        fallback = mean.view(-1, 3, 1, 1).expand_as(x)
    val = x * known  # (B, 3, H, W)
    for _ in range(x.shape[-2] + x.shape[-1]):  # onion peel: each pass fills one more ring
        cnt = _box_sum(known)
        new = (known == 0) & (cnt > 0)
        if not bool(new.any()):
            break
        val = torch.where(new, _box_sum(val) / cnt.clamp_min(1), val)
        known = torch.where(new, torch.ones_like(known), known)
    for _ in range(int(smooth_iters)):  # Jacobi: hole pixels take the mean of their 4-neighbours
        p = F.pad(val, (1, 1, 1, 1), mode="replicate")
        avg = 0.25 * (p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:])
        val = torch.where(hole, avg, val)
    if bool(none.any()):
        val = torch.where(none.view(-1, 1, 1, 1), fallback, val)
    return torch.where(hole, val.clamp(0.0, 1.0), x)


def render(images: Tensor, clean_masks: Tensor, corrupted_masks: Tensor, mode: str = "overlay",
           **params: Any) -> Tensor:
    """Render corrupted perception into the image with the renderer ``mode`` (``"overlay"``,
    ``"blur_dropped"``, ``"inpaint_dropped"``; :func:`list_renderers`).

    Raises:
        InputError: ``mode`` is not a registered renderer (the message lists them).
    """
    if not isinstance(mode, str) or mode not in MASK_CORRUPTIONS or MASK_CORRUPTIONS.meta(mode).get("kind") != "render":
        raise InputError(f"render: mode={mode!r} is not a renderer; expected one of {list_renderers()}")
    return MASK_CORRUPTIONS.get(mode)(images, clean_masks, corrupted_masks, **params)


def corrupt_and_render(images: Tensor, masks: Tensor, corruption: str, severity: float, render: str = "overlay",
                       *, generator: torch.Generator | None = None, background: int = 0, ignore_index: int = 255,
                       corruption_params: Mapping[str, Any] | None = None,
                       render_params: Mapping[str, Any] | None = None) -> tuple[Tensor, Tensor]:
    """Corrupt the label maps and render the result into the images.

    Args:
        images: ``(B, 3, H, W)`` float in [0, 1].
        masks: Clean label maps ``(B, H, W)`` int64.
        corruption: A registered corruption (:func:`list_mask_corruptions`).
        severity: Its severity.
        render: A registered renderer (:func:`list_renderers`).
        generator: Source of the corruption's randomness.
        background, ignore_index: Ids shared by corruption and renderer.
        corruption_params, render_params: Extra keyword arguments of each.

    Returns:
        ``(images_out (B, 3, H, W), corrupted_masks (B, H, W))``.

    Raises:
        InputError: Unknown corruption or renderer, or bad input.
    """
    check_images(images, "images")
    if not isinstance(corruption, str) or corruption not in list_mask_corruptions():
        raise InputError(f"corruption={corruption!r} is not a mask corruption; expected one of {list_mask_corruptions()}")
    if not isinstance(render, str) or render not in list_renderers():
        raise InputError(f"render={render!r} is not a renderer; expected one of {list_renderers()}")
    check_masks(masks)
    if tuple(masks.shape) != (images.shape[0], *images.shape[-2:]):
        raise InputError(f"masks must have shape (B, H, W) = {(images.shape[0], *images.shape[-2:])} to match "
                         f"images {tuple(images.shape)}, got {tuple(masks.shape)}")
    corrupted = MASK_CORRUPTIONS.get(corruption)(masks, severity, generator=generator, background=background,
                                                 ignore_index=ignore_index, **dict(corruption_params or {}))
    out = MASK_CORRUPTIONS.get(render)(images, masks, corrupted, background=background, ignore_index=ignore_index,
                                       **dict(render_params or {}))
    return out, corrupted
