"""Glyph rendering: a word rasterised with PIL into an alpha mask, shared by every room that writes text.

Typographic attacks on CLIP (Goh et al., 2021, "Multimodal Neurons in Artificial Neural Networks"; SCAM,
Westerhoff et al., 2025) write a word onto an image and the model reads it. Two rooms draw such words:
the typographic perturbation (:mod:`vlmkit.perturb.typographic`) and the toy world's signs
(:mod:`vlmkit.toyworld.world`). Both go through this one implementation:

* :func:`find_font` — a TrueType/OpenType file from a path, a file name (``"DejaVuSans-Bold.ttf"``) or a
  file stem (``"DejaVuSans-Bold"``);
* :func:`load_font` — that font at a pixel size, or PIL's built-in (scalable) font when none is installed;
* :func:`render_glyph` — the alpha mask ``(h, w)`` of a text, optionally cropped to its ink (cached);
* :func:`fit_glyph` — the largest size ``<= size`` whose mask fits a width.

A leaf module: it imports nothing from vlmkit but :mod:`vlmkit.errors`.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vlmkit.errors import InputError

#: Folders searched (directly) first: where Linux distributions install the DejaVu fonts.
DEJAVU_DIRS: tuple[str, ...] = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu", "/usr/share/fonts/TTF")
#: System font folders searched recursively next.
FONT_DIRS: tuple[str, ...] = ("/usr/share/fonts", "/usr/local/share/fonts", "/Library/Fonts", "C:/Windows/Fonts",
                              str(Path.home() / ".fonts"), str(Path.home() / ".local/share/fonts"))
#: Extensions tried for a font given by its stem, in order.
FONT_SUFFIXES: tuple[str, ...] = (".ttf", ".otf", ".TTF")

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


def _candidate_names(font: str) -> list[str]:
    """File names ``font`` may denote: itself when it has a font extension, then its stem with each extension."""
    p = Path(font)
    names = [p.name] if p.suffix.lower() in (".ttf", ".otf") else []
    return list(dict.fromkeys(names + [p.stem + ext for ext in FONT_SUFFIXES]))


def _fc_list() -> list[str]:
    """Font files fontconfig knows (``fc-list``), or none when it is not available."""
    try:
        out = subprocess.run(["fc-list", ":", "file"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.split(":")[0].strip() for line in out.splitlines()]


@functools.lru_cache(maxsize=256)
def find_font(font: str = "DejaVuSans-Bold") -> str | None:
    """Path of a font file, or None when none is installed.

    Looks, in order: ``font`` as an existing path; each candidate file name (``font`` itself when it ends
    in ``.ttf``/``.otf``, then its stem + :data:`FONT_SUFFIXES`) directly in :data:`DEJAVU_DIRS`; the same
    names recursively under :data:`FONT_DIRS`; the files ``fc-list`` reports.

    Args:
        font: A path, a file name (``"DejaVuSans-Bold.ttf"``) or a file stem (``"DejaVuSans-Bold"``).
    """
    p = Path(font).expanduser()
    if p.is_file():
        return str(p)
    names = _candidate_names(font)
    for d in DEJAVU_DIRS:
        for name in names:
            hit = Path(d) / name
            if hit.is_file():
                return str(hit)
    for d in FONT_DIRS:
        root = Path(d)
        if root.is_dir():
            for name in names:
                found = next(iter(root.rglob(name)), None)
                if found is not None:
                    return str(found)
    files = _fc_list()
    for name in names:
        for f in files:
            if f.endswith("/" + name):
                return f
    return None


@functools.lru_cache(maxsize=256)
def load_font(font: str, size: int) -> Font:
    """``font`` (see :func:`find_font`) at ``size`` px; PIL's built-in font when it is not installed."""
    path = find_font(font)
    if path is not None:
        return ImageFont.truetype(path, size)
    try:  # Pillow >= 10.1 scales its built-in font
        return ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - very old Pillow
        return ImageFont.load_default()


@functools.lru_cache(maxsize=8192)
def render_glyph(text: str, font: str, size: int, *, crop: bool = False) -> np.ndarray:
    """``text`` rasterised as an alpha mask (Goh et al. 2021: the written word a typographic attack pastes).

    The text is drawn white on black into its own bounding box (at least 1×1 px), so a text without ink
    (``""``, spaces) gives an all-zero mask.

    Args:
        text: Text to draw.
        font: Font path, file name or stem (:func:`find_font`; PIL's default font when not installed).
        size: Font size in pixels.
        crop: Crop the mask to its ink (pixels with alpha > 0); otherwise keep the font's bounding box.

    Returns:
        ``(h, w)`` float32 alpha in [0, 1]; read-only and shared by every caller (cached).

    Raises:
        InputError: ``size < 1``.
    """
    if size < 1:
        raise InputError(f"font size={size} must be a positive number of pixels")
    f = load_font(font, size)
    left, top, right, bottom = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=f)
    w, h = max(1, right - left), max(1, bottom - top)
    img = Image.new("L", (w, h), 0)
    ImageDraw.Draw(img).text((-left, -top), text, fill=255, font=f)
    a = np.asarray(img, dtype=np.float32) / 255.0  # (h, w)
    if crop:
        ys, xs = np.nonzero(a > 0)
        if len(ys):
            a = a[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


def fit_glyph(text: str, font: str, size: int, max_width: int, min_size: int = 7) -> np.ndarray:
    """The ink-cropped :func:`render_glyph` at the largest size ``<= size`` whose width fits ``max_width`` px.

    Below ``min_size`` the text is not shrunk further: its ``min_size`` mask is squeezed (bilinear) to
    ``max_width`` instead (tiny images).

    Returns:
        ``(h, w)`` float32 alpha in [0, 1] with ``w <= max(1, max_width)`` (read-only unless squeezed).
    """
    max_width = max(1, max_width)
    while True:
        g = render_glyph(text, font, size, crop=True)  # (h, w)
        if g.shape[1] <= max_width:
            return g
        if size <= min_size:  # still too wide at the smallest size: squeeze it
            h = max(1, round(g.shape[0] * max_width / g.shape[1]))
            im = Image.fromarray((g * 255).astype(np.uint8)).resize((max_width, h), Image.BILINEAR)
            return np.asarray(im, dtype=np.float32) / 255.0
        size -= 1


__all__ = ["DEJAVU_DIRS", "FONT_DIRS", "FONT_SUFFIXES", "find_font", "fit_glyph", "load_font", "render_glyph"]
