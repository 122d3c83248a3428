"""Typographic perturbations (family ``"typographic"``): a word written onto the image.

Typographic attacks on CLIP (Goh et al., 2021, "Multimodal Neurons in Artificial Neural Networks";
SCAM, Westerhoff et al., 2025) paste a misleading class name on the image and the model reads it. This
module renders the text with PIL into an alpha mask (:mod:`vlmkit.glyphs`, the renderer the toy world's
signs use too; cached per ``(text, font, size)``), places it on a label box and composites it onto the
batch in torch:

* ``mode="semantic"``: a misleading word, ``text=`` (one string or one per image) or drawn per image
  from ``classnames=`` with the generator (avoiding each image's true class when ``labels=`` is given);
* ``mode="random"``: ``length`` random lowercase letters per image from the generator;
* ``mode="empty"``: the label box alone (a blank note, the control condition).

Fonts: ``font`` is a path to a TrueType file, a font file name or a file stem (``"DejaVuSans-Bold"``) looked
up under the system font folders (:func:`vlmkit.glyphs.find_font`); when none is found PIL's built-in
default font is used.
"""

from __future__ import annotations

import functools
import math
import string
from collections.abc import Sequence

import torch

from vlmkit.errors import InputError
from vlmkit.glyphs import find_font, render_glyph
from vlmkit.perturb.base import default_generator, register_perturbation
from vlmkit.perturb.geometric import Fill, fill_tensor

#: severity -> font size as a fraction of the image height.
FONT_FRAC = (0.12, 0.16, 0.2, 0.25, 0.3)
_POSITIONS = {"center": (0.5, 0.5), "top": (0.5, 0.0), "bottom": (0.5, 1.0), "left": (0.0, 0.5),
              "right": (1.0, 0.5), "top-left": (0.0, 0.0), "top-right": (1.0, 0.0), "bottom-left": (0.0, 1.0),
              "bottom-right": (1.0, 1.0)}


@functools.lru_cache(maxsize=1024)
def glyph_mask(text: str, font: str = "DejaVuSans-Bold", size: int = 16) -> torch.Tensor:
    """Alpha mask ``(h, w)`` in [0, 1] of ``text`` rendered at ``size`` px (CPU, cached; do not modify).

    The glyphs come from :func:`vlmkit.glyphs.render_glyph` (the font's bounding box, not cropped to ink);
    an empty text gives a ``(0, 0)`` mask.

    Raises:
        InputError: ``size < 1``.
    """
    alpha = render_glyph(text, font, size)  # (h, w) read-only numpy; validates size
    return torch.from_numpy(alpha.copy()) if text else torch.zeros(0, 0)


def _colour(name: str, value: Fill, like: torch.Tensor) -> torch.Tensor:
    try:
        return fill_tensor(value, like)  # (1, 3, 1, 1)
    except InputError:
        raise InputError(f"{name}={value!r} must be a float in [0, 1] or three values in [0, 1]") from None


def _texts(mode: str, B: int, text: str | Sequence[str] | None, classnames: Sequence[str] | None,
           labels: Sequence[int] | torch.Tensor | None, length: int, g: torch.Generator,
           device: torch.device) -> list[str]:
    if mode == "empty":
        return [""] * B
    if mode == "random":
        if length < 1:
            raise InputError(f"length={length} must be >= 1 random letters")
        idx = torch.randint(0, 26, (B, length), generator=g, device=device).cpu().tolist()
        return ["".join(string.ascii_lowercase[i] for i in row) for row in idx]
    if text is not None:
        texts = [text] * B if isinstance(text, str) else [str(t) for t in text]
        if len(texts) != B:
            raise InputError(f"text has {len(texts)} entries for a batch of {B} images")
        return texts
    if not classnames:
        raise InputError("typographic mode 'semantic' needs text= (a word or one per image) or classnames=")
    n = len(classnames)
    if labels is None:
        pick = torch.randint(0, n, (B,), generator=g, device=device).cpu().tolist()
    else:  # a class other than the true one: draw from n - 1 and skip the label
        lab = torch.as_tensor(labels).long().cpu()
        if lab.shape != (B,) or n < 2 or bool(((lab < 0) | (lab >= n)).any()):
            raise InputError(f"labels must be {B} class indices in [0, {n}) and classnames need >= 2 entries")
        r = torch.randint(0, n - 1, (B,), generator=g, device=device).cpu()
        pick = (r + (r >= lab).long()).tolist()
    return [classnames[i] for i in pick]


@register_perturbation("typographic", "typographic")
def typographic(x: torch.Tensor, severity: int = 1, *, generator: torch.Generator | None = None,
                mode: str = "auto", text: str | Sequence[str] | None = None,
                classnames: Sequence[str] | None = None, labels: Sequence[int] | torch.Tensor | None = None,
                length: int = 5, font: str = "DejaVuSans-Bold", size: int | None = None,
                color: Fill = 0.0, box: Fill | None = 1.0, box_padding: float = 0.25, opacity: float = 1.0,
                position: str | tuple[float, float] = "random") -> torch.Tensor:
    """Write a word (or a blank label) onto each image.

    The glyphs are rasterised with PIL into an alpha mask ``a`` (cached per text, font and size); the
    label box ``b`` is the text's bounding box grown by ``box_padding · size`` on each side. With
    opacity ``α``: ``y = x·(1 - α·b) + α·b·box``, then ``y = y·(1 - α·a) + α·a·color``. Text that does not
    fit is clipped at the image border.

    Args:
        x: Images ``(B, 3, H, W)`` in [0, 1].
        severity: 1..5 → font size ``round(f·H)`` with ``f`` in :data:`FONT_FRAC`.
        generator: Source of random words / class choices / positions (default: seeded with 0).
        mode: "semantic", "random", "empty", or "auto" (semantic when ``text``/``classnames`` is given,
            else random).
        text: The word, or one per image (semantic mode).
        classnames: Words to draw from per image (semantic mode, when ``text`` is None).
        labels: True class per image; the drawn word then never names it.
        length: Letters per random word.
        font: TrueType path or font file stem (falls back to PIL's default font).
        size: Explicit font size in pixels (overrides severity).
        color: Text colour (float or per channel) in [0, 1].
        box: Label box colour, or None for no box ("empty" mode needs a box).
        box_padding: Box margin around the text, as a fraction of the font size.
        opacity: Opacity ``α`` in [0, 1] of text and box.
        position: "random" (uniform per image, box kept inside when it fits), a name in
            ("center", "top", "bottom", "left", "right", "top-left", ...), or ``(fx, fy)`` in [0, 1]² —
            the fraction of the free space left of / above the box.
    """
    B, _, H, W = x.shape
    if mode == "auto":
        mode = "semantic" if (text is not None or classnames) else "random"
    if mode not in ("semantic", "random", "empty"):
        raise InputError(f"typographic: mode={mode!r} must be 'semantic', 'random', 'empty' or 'auto'")
    if not 0.0 <= float(opacity) <= 1.0:
        raise InputError(f"typographic: opacity={opacity!r} must be in [0, 1]")
    if mode == "empty" and box is None:
        raise InputError("typographic: mode 'empty' draws only the label box; give box= a colour")
    px = max(1, round(FONT_FRAC[int(severity) - 1] * H)) if size is None else int(size)
    g = default_generator(x, generator)
    texts = _texts(mode, B, text, classnames, labels, length, g, x.device)
    col, box_col = _colour("color", color, x), None if box is None else _colour("box", box, x)
    pad = max(0, round(box_padding * px))
    masks = [glyph_mask(t, font, px) if t else torch.zeros(max(1, round(px * 0.8)), px * 2) for t in texts]
    if mode == "empty":  # a blank note the size of a typical word at this font size
        masks = [torch.zeros(max(1, round(px * 0.8)), 3 * px) for _ in texts]
    if isinstance(position, str) and position == "random":
        frac = torch.rand(B, 2, generator=g, device=x.device).cpu().tolist()  # (B, 2): (fx, fy)
    elif isinstance(position, str):
        if position not in _POSITIONS:
            raise InputError(f"typographic: position={position!r}; expected 'random', one of "
                             f"{sorted(_POSITIONS)} or (fx, fy)")
        frac = [list(_POSITIONS[position])] * B
    else:
        fx, fy = (float(p) for p in position)
        if not (0 <= fx <= 1 and 0 <= fy <= 1):
            raise InputError(f"typographic: position={position!r} fractions must be in [0, 1]")
        frac = [[fx, fy]] * B
    text_a = torch.zeros(B, 1, H, W)  # (B, 1, H, W) glyph alpha
    box_a = torch.zeros(B, 1, H, W)  # (B, 1, H, W) box coverage
    for i, (m, (fx, fy)) in enumerate(zip(masks, frac)):
        mh, mw = m.shape
        bh, bw = mh + 2 * pad, mw + 2 * pad
        top = math.floor(fy * max(0, H - bh)) if bh <= H else (H - bh) // 2
        left = math.floor(fx * max(0, W - bw)) if bw <= W else (W - bw) // 2
        y0, x0 = max(0, top), max(0, left)
        y1, x1 = min(H, top + bh), min(W, left + bw)
        box_a[i, 0, y0:y1, x0:x1] = 1.0
        ty, tx = top + pad, left + pad  # glyph origin, may be negative when clipped
        gy0, gx0 = max(0, ty), max(0, tx)
        gy1, gx1 = min(H, ty + mh), min(W, tx + mw)
        if gy1 > gy0 and gx1 > gx0:
            text_a[i, 0, gy0:gy1, gx0:gx1] = m[gy0 - ty:gy1 - ty, gx0 - tx:gx1 - tx]
    a = float(opacity)
    text_a, box_a = text_a.to(x.device, x.dtype) * a, box_a.to(x.device, x.dtype) * a
    out = x
    if box_col is not None:
        out = out * (1 - box_a) + box_a * box_col  # (B, 3, H, W)
    out = out * (1 - text_a) + text_a * col
    return out.clamp(0, 1)


__all__ = ["FONT_FRAC", "find_font", "glyph_mask", "typographic"]
