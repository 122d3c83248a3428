"""The toy world's renderer and ground truth.

A scene is sampled as a :class:`SceneSpec` (plain attributes: which objects, where, which background,
which sign) and drawn by :func:`render_spec` into a :class:`Scene` (the RGB image plus per-object
masks, visible masks and boxes, and the sign's word and boxes). Drawing is numpy-vectorised: each
shape is an implicit function or polygon evaluated on the pixel grid inside the object's window, and
words are PIL glyphs rasterised once per (word, font, pixel size) and cached as alpha masks by
:mod:`vlmkit.glyphs` (the same renderer as the typographic perturbation).

Everything is deterministic given ``(seed, index)``: :func:`scene_rng` turns them into an independent
:class:`numpy.random.Generator`, so scene ``i`` of a stream can be re-drawn on its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image

from vlmkit.glyphs import fit_glyph

# ----------------------------------------------------------------------------------------------------
# Vocabulary of the world
# ----------------------------------------------------------------------------------------------------

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "heart", "cross", "moon", "ring")
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.10, 0.10),
    "orange": (1.00, 0.55, 0.00),
    "yellow": (0.95, 0.90, 0.10),
    "green": (0.10, 0.70, 0.20),
    "blue": (0.15, 0.30, 0.95),
    "purple": (0.60, 0.15, 0.80),
    "white": (0.97, 0.97, 0.97),
    "black": (0.05, 0.05, 0.05),
}
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)
SIZES: dict[str, float] = {"small": 0.13, "large": 0.21}  # radius as a fraction of the image side
SIZE_NAMES: tuple[str, ...] = tuple(SIZES)
POSITIONS: dict[str, tuple[float, float]] = {  # (x, y) anchor as fractions of the image side
    "left": (0.25, 0.5),
    "right": (0.75, 0.5),
    "top": (0.5, 0.25),
    "bottom": (0.5, 0.75),
    "center": (0.5, 0.5),
}
POSITION_NAMES: tuple[str, ...] = tuple(POSITIONS)
BACKGROUNDS: tuple[str, ...] = ("flat", "gradient", "stripes", "noise", "blotches")
#: Words that can be written on a sign: the shape names plus words unrelated to any object.
OTHER_WORDS: tuple[str, ...] = ("cat", "dog", "fish", "apple", "tree", "car", "book", "stop", "sale", "open", "milk", "home")
WORDS: tuple[str, ...] = SHAPES + OTHER_WORDS

#: Font styles used in training scenes (file names of DejaVu fonts).
TRAIN_FONTS: tuple[str, ...] = ("DejaVuSans-Bold.ttf", "DejaVuSans.ttf", "DejaVuSansMono-Bold.ttf")
#: A font never used in training scenes: the "synthetic" typographic style.
SYNTH_FONT: str = "DejaVuSerif-Bold.ttf"

LABEL_COLORS: tuple[tuple[float, float, float], ...] = ((0.98, 0.98, 0.95), (0.95, 0.93, 0.80), (0.90, 0.92, 0.95))
TEXT_COLORS: tuple[tuple[float, float, float], ...] = ((0.02, 0.02, 0.02), (0.05, 0.08, 0.35), (0.30, 0.02, 0.02))
SYNTH_LABEL_COLOR: tuple[float, float, float] = (1.0, 0.92, 0.25)  # a yellow post-it
SYNTH_TEXT_COLOR: tuple[float, float, float] = (0.10, 0.10, 0.10)


# ----------------------------------------------------------------------------------------------------
# Specs and ground truth
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectSpec:
    """One object to draw.

    Attributes:
        shape: One of :data:`SHAPES`.
        color: One of :data:`COLOR_NAMES`.
        size: One of :data:`SIZE_NAMES`.
        position: One of :data:`POSITION_NAMES`.
        jitter: Offset of the centre from the position's anchor, as fractions of the image side.
        shade: Brightness jitter added to the colour (keeps the colour name valid).
        angle: Rotation in degrees (small; shapes stay upright enough to name).
    """

    shape: str
    color: str
    size: str
    position: str
    jitter: tuple[float, float] = (0.0, 0.0)
    shade: float = 0.0
    angle: float = 0.0


@dataclass(frozen=True)
class SignSpec:
    """A label (sign, note, post-it) drawn on top of the scene.

    Attributes:
        word: The written word, or ``None`` for a blank label.
        center: Label centre as fractions of the image side ``(x, y)``.
        font: Font file name (DejaVu) used for the word.
        font_frac: Nominal glyph height as a fraction of the image side (shrunk to fit if needed).
        label_rgb: Fill colour of the label.
        text_rgb: Colour of the word.
        blank_chars: For a blank label, how many characters wide it is (sets its size).
    """

    word: str | None
    center: tuple[float, float] = (0.5, 0.5)
    font: str = TRAIN_FONTS[0]
    font_frac: float = 0.19
    label_rgb: tuple[float, float, float] = LABEL_COLORS[0]
    text_rgb: tuple[float, float, float] = TEXT_COLORS[0]
    blank_chars: int = 5


@dataclass(frozen=True)
class SceneSpec:
    """Everything needed to draw a scene (no pixels).

    Attributes:
        objects: Objects in drawing order (later ones occlude earlier ones).
        background: One of :data:`BACKGROUNDS`.
        bg_seed: Seed of the background's own randomness (colours, noise, stripe phase).
        sign: The label drawn last, or ``None``.
        kind: How the scene was sampled: ``"objects"``, ``"objects+sign"``, ``"objects+blank"``,
            ``"sign"`` (a sign and no object) or ``"prompt"`` / ``"typographic"``.
    """

    objects: tuple[ObjectSpec, ...]
    background: str = "flat"
    bg_seed: int = 0
    sign: SignSpec | None = None
    kind: str = "objects"


@dataclass
class ObjectGT:
    """Ground truth of one drawn object.

    Attributes:
        shape, color, size, position: The object's attributes (names).
        rgb: The exact colour drawn, float in [0, 1].
        center: Centre in pixels ``(x, y)``.
        radius: Radius in pixels.
        bbox: ``(x0, y0, x1, y1)`` in pixels, exclusive ends: the extent of ``mask``.
        mask: ``(H, W)`` bool, every pixel of the shape (occluded or not).
        visible: ``(H, W)`` bool, the pixels where the shape is on top (not covered).
    """

    shape: str
    color: str
    size: str
    position: str
    rgb: tuple[float, float, float]
    center: tuple[float, float]
    radius: float
    bbox: tuple[int, int, int, int]
    mask: np.ndarray
    visible: np.ndarray

    @property
    def visible_fraction(self) -> float:
        """Share of the shape's pixels that are not covered by later objects or the sign."""
        n = int(self.mask.sum())
        return float(self.visible.sum()) / n if n else 0.0


@dataclass
class SignGT:
    """Ground truth of the sign.

    Attributes:
        word: The written word (``None`` for a blank label).
        box: Label rectangle ``(x0, y0, x1, y1)``, exclusive ends.
        word_box: Tight box of the text pixels, or ``None`` for a blank label.
        mask: ``(H, W)`` bool, the label's pixels.
        text_mask: ``(H, W)`` bool, pixels where the glyphs are drawn (alpha > 0.5).
        font: Font file name.
        area_pct: Label area as a percentage of the image.
    """

    word: str | None
    box: tuple[int, int, int, int]
    word_box: tuple[int, int, int, int] | None
    mask: np.ndarray
    text_mask: np.ndarray
    font: str
    area_pct: float


@dataclass
class Scene:
    """A rendered scene and its ground truth.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB.
        objects: Ground truth per object, in drawing order.
        sign: Ground truth of the sign, or ``None``.
        background: Background kind.
        spec: The spec it was drawn from.
    """

    image: np.ndarray
    objects: list[ObjectGT]
    sign: SignGT | None
    background: str
    spec: SceneSpec = field(repr=False)

    def to_tensor(self):  # -> torch.Tensor (3, H, W) float in [0, 1]
        """The image as a float ``(3, H, W)`` tensor in [0, 1]."""
        import torch

        return torch.from_numpy(self.image).permute(2, 0, 1).float().div_(255.0)

    def to_pil(self) -> Image.Image:
        """The image as a PIL RGB image."""
        return Image.fromarray(self.image)


# ----------------------------------------------------------------------------------------------------
# Randomness
# ----------------------------------------------------------------------------------------------------


def scene_rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    """An independent generator for scene ``index`` of the stream ``seed``.

    Args:
        seed: Stream seed (training seed, evaluation seed, export seed).
        index: Scene index within the stream.
        stream: Sub-stream, to draw independent things for the same scene (e.g. captions).
    """
    if seed < 0 or index < 0:
        raise ValueError(f"seed={seed} and index={index} must be non-negative")
    return np.random.default_rng([int(seed), int(index), int(stream)])


# ----------------------------------------------------------------------------------------------------
# Shapes
# ----------------------------------------------------------------------------------------------------


def _polygon(u: np.ndarray, v: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test on coordinate arrays (vectorised over pixels)."""
    inside = np.zeros(u.shape, dtype=bool)
    n = len(pts)
    for i in range(n):
        x1, y1 = pts[i]
        x2, y2 = pts[(i + 1) % n]
        if y1 == y2:
            continue
        cross = ((y1 > v) != (y2 > v)) & (u < (x2 - x1) * (v - y1) / (y2 - y1) + x1)
        inside ^= cross
    return inside


def _star_points(n: int = 5, inner: float = 0.45) -> np.ndarray:
    ang = -np.pi / 2 + np.arange(2 * n) * np.pi / n
    r = np.where(np.arange(2 * n) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(ang), r * np.sin(ang)], 1)


_TRIANGLE = np.array([[0.0, -1.0], [-0.93, 0.68], [0.93, 0.68]])
_STAR = _star_points()


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Membership of normalised coordinates in a unit-radius shape.

    Args:
        shape: One of :data:`SHAPES`.
        u: x offsets from the centre divided by the radius (right is positive).
        v: y offsets from the centre divided by the radius (down is positive).

    Returns:
        Bool array of the same shape as ``u``.
    """
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.82
    if shape == "triangle":
        return _polygon(u, v, _TRIANGLE)
    if shape == "star":
        return _polygon(u, v, _STAR)
    if shape == "heart":
        x, y = u * 1.12, -v * 1.12 + 0.12
        return (x * x + y * y - 1.0) ** 3 - x * x * y**3 <= 0.0
    if shape == "cross":
        a, b = np.abs(u), np.abs(v)
        return ((a <= 0.32) & (b <= 0.95)) | ((b <= 0.32) & (a <= 0.95))
    if shape == "moon":
        return (u * u + v * v <= 1.0) & ((u - 0.45) ** 2 + (v + 0.15) ** 2 > 0.72)
    if shape == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= 0.30)
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


# ----------------------------------------------------------------------------------------------------
# Backgrounds
# ----------------------------------------------------------------------------------------------------


def _muted(rng: np.random.Generator) -> np.ndarray:
    """A low-saturation mid-tone colour (kept away from the saturated object colours)."""
    gray = rng.uniform(0.28, 0.72)
    hue = rng.uniform(0.0, 1.0, 3)
    hue = hue / hue.sum() * 3.0 - 1.0  # zero-mean tint
    return np.clip(gray + rng.uniform(0.05, 0.16) * hue, 0.0, 1.0).astype(np.float32)


def render_background(kind: str, size: int, seed: int) -> np.ndarray:
    """Draw a background.

    Args:
        kind: One of :data:`BACKGROUNDS`.
        size: Image side in pixels.
        seed: Seed of the background's randomness.

    Returns:
        ``(size, size, 3)`` float32 in [0, 1].
    """
    rng = np.random.default_rng([int(seed), 7])
    c1, c2 = _muted(rng), _muted(rng)
    t = (np.arange(size, dtype=np.float32) + 0.5) / size
    if kind == "flat":
        return np.broadcast_to(c1, (size, size, 3)).copy()
    if kind == "gradient":
        a = rng.uniform(0, 2 * np.pi)
        ramp = np.cos(a) * t[None, :] + np.sin(a) * t[:, None]  # (H, W)
        ramp = (ramp - ramp.min()) / max(1e-6, float(ramp.max() - ramp.min()))
        return (c1 * (1 - ramp[..., None]) + c2 * ramp[..., None]).astype(np.float32)
    if kind == "stripes":
        period = rng.uniform(0.09, 0.22)
        a = rng.choice([0.0, np.pi / 2, np.pi / 4, -np.pi / 4])
        phase = rng.uniform(0, 1)
        proj = np.cos(a) * t[None, :] + np.sin(a) * t[:, None]
        on = ((proj / period + phase) % 1.0) < 0.5  # (H, W)
        return np.where(on[..., None], c1, c2).astype(np.float32)
    if kind == "noise":
        noise = rng.normal(0.0, rng.uniform(0.04, 0.09), (size, size, 1)).astype(np.float32)
        return np.clip(c1 + noise, 0.0, 1.0)
    if kind == "blotches":
        k = int(rng.integers(3, 6))
        coarse = np.stack([_muted(rng) for _ in range(k * k)]).reshape(k, k, 3)
        im = Image.fromarray((coarse * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
        return np.asarray(im, dtype=np.float32) / 255.0
    raise ValueError(f"unknown background {kind!r}; expected one of {BACKGROUNDS}")


# ----------------------------------------------------------------------------------------------------
# Drawing
# ----------------------------------------------------------------------------------------------------


def object_rgb(obj: ObjectSpec) -> tuple[float, float, float]:
    """The exact colour an object is drawn in (its named colour plus its shade jitter)."""
    base = np.asarray(COLORS[obj.color], dtype=np.float32)
    return tuple(float(x) for x in np.clip(base + obj.shade, 0.0, 1.0))


def _quantize(rgb: tuple[float, float, float]) -> np.ndarray:
    return np.round(np.asarray(rgb, dtype=np.float32) * 255.0) / 255.0


def render_spec(spec: SceneSpec, size: int = 64) -> Scene:
    """Draw a scene from its spec.

    Args:
        spec: What to draw.
        size: Image side in pixels.

    Returns:
        The :class:`Scene` with its image and ground truth.
    """
    if size < 16:
        raise ValueError(f"size={size} is too small; use at least 16 pixels")
    img = render_background(spec.background, size, spec.bg_seed)  # (H, W, 3)
    owner = np.full((size, size), -1, dtype=np.int16)  # index of the object on top, -1 background
    masks: list[np.ndarray] = []
    gts: list[ObjectGT] = []
    for i, obj in enumerate(spec.objects):
        m, (cx, cy), r = object_mask(obj, POSITIONS[obj.position], SIZES[obj.size], size)
        rgb = object_rgb(obj)
        img[m] = _quantize(rgb)
        owner[m] = i
        masks.append(m)
        gts.append(
            ObjectGT(obj.shape, obj.color, obj.size, obj.position, rgb, (cx, cy), r, mask_extent(m), m, m)
        )
    sign_gt = None
    if spec.sign is not None:
        sign_gt = _draw_sign(img, spec.sign, size)
        owner[sign_gt.mask] = -2
    for i, gt in enumerate(gts):
        gt.visible = owner == i
    image = np.round(img * 255.0).clip(0, 255).astype(np.uint8)
    return Scene(image=image, objects=gts, sign=sign_gt, background=spec.background, spec=spec)


def object_mask(obj: ObjectSpec, anchor: tuple[float, float], radius: float, size: int
                ) -> tuple[np.ndarray, tuple[float, float], float]:
    """The pixels of ``obj`` as :func:`render_spec` draws them, at any anchor and radius.

    Args:
        obj: The object (its shape, jitter and angle are used).
        anchor: Centre ``(x, y)`` as fractions of the side, before the object's jitter.
        radius: Radius as a fraction of the side.
        size: Image side in pixels.

    Returns:
        ``(mask, (cx, cy), r)``: the ``(H, W)`` bool mask, the centre and the radius in pixels.
    """
    cx, cy = (anchor[0] + obj.jitter[0]) * size, (anchor[1] + obj.jitter[1]) * size
    r = radius * size
    x0, x1 = max(0, math.floor(cx - r - 1)), min(size, math.ceil(cx + r + 1))
    y0, y1 = max(0, math.floor(cy - r - 1)), min(size, math.ceil(cy + r + 1))
    xs = (np.arange(x0, x1, dtype=np.float32) + 0.5 - cx) / r
    ys = (np.arange(y0, y1, dtype=np.float32) + 0.5 - cy) / r
    u, v = np.meshgrid(xs, ys)  # (h, w)
    if obj.angle:
        a = math.radians(obj.angle)
        u, v = math.cos(a) * u + math.sin(a) * v, -math.sin(a) * u + math.cos(a) * v
    m = np.zeros((size, size), dtype=bool)
    m[y0:y1, x0:x1] = shape_mask(obj.shape, u, v)
    return m, (cx, cy), r


def mask_extent(m: np.ndarray) -> tuple[int, int, int, int]:
    """Bounding box ``(x0, y0, x1, y1)`` (exclusive ends) of a bool mask; zeros when it is empty."""
    ys, xs = np.nonzero(m)
    if not len(ys):
        return (0, 0, 0, 0)
    return (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


def sign_geometry(sign: SignSpec, size: int) -> tuple[tuple[int, int, int, int], np.ndarray | None]:
    """Where a sign goes and the glyphs it holds.

    Returns:
        ``(box, glyph)``: the label rectangle ``(x0, y0, x1, y1)`` (exclusive ends, clipped to the
        image) and the alpha mask of the word (``None`` for a blank label).
    """
    px = max(7, int(round(sign.font_frac * size)))
    pad = max(2, size // 24)
    if sign.word is not None:
        glyph = fit_glyph(sign.word, sign.font, px, size - 2 * pad - 2)
        gh, gw = glyph.shape
    else:
        glyph = None
        ref = fit_glyph("o" * max(1, sign.blank_chars), sign.font, px, size - 2 * pad - 2)
        gh, gw = ref.shape
    w, h = gw + 2 * pad, gh + 2 * pad
    cx, cy = sign.center[0] * size, sign.center[1] * size
    x0 = int(round(min(max(cx - w / 2, 0), size - w)))
    y0 = int(round(min(max(cy - h / 2, 0), size - h)))
    return (x0, y0, x0 + w, y0 + h), glyph


def _draw_sign(img: np.ndarray, sign: SignSpec, size: int) -> SignGT:
    (x0, y0, x1, y1), glyph = sign_geometry(sign, size)
    mask = np.zeros((size, size), dtype=bool)
    mask[y0:y1, x0:x1] = True
    img[y0:y1, x0:x1] = _quantize(sign.label_rgb)
    text_mask = np.zeros((size, size), dtype=bool)
    word_box = None
    if glyph is not None:
        gh, gw = glyph.shape
        tx = x0 + (x1 - x0 - gw) // 2
        ty = y0 + (y1 - y0 - gh) // 2
        a = glyph[..., None]  # (gh, gw, 1)
        region = img[ty : ty + gh, tx : tx + gw]
        img[ty : ty + gh, tx : tx + gw] = region * (1 - a) + _quantize(sign.text_rgb) * a
        text_mask[ty : ty + gh, tx : tx + gw] = glyph > 0.5
        word_box = (tx, ty, tx + gw, ty + gh)
    return SignGT(
        word=sign.word,
        box=(x0, y0, x1, y1),
        word_box=word_box,
        mask=mask,
        text_mask=text_mask,
        font=sign.font,
        area_pct=100.0 * (x1 - x0) * (y1 - y0) / (size * size),
    )


# ----------------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorldConfig:
    """The mixture of scenes the world samples from.

    Attributes:
        n_objects_p: Probabilities of 1, 2, 3 objects.
        p_sign: Share of scenes with objects and a written sign.
        p_blank: Share of scenes with objects and a blank label.
        p_sign_only: Share of scenes with a written sign and no object ("the writing is the subject").
        p_shape_word: Probability that a sign's word is a shape name (else another word).
        fonts: Font files the signs use.
    """

    n_objects_p: tuple[float, float, float] = (0.5, 0.3, 0.2)
    p_sign: float = 0.30
    p_blank: float = 0.10
    p_sign_only: float = 0.10
    p_shape_word: float = 0.6
    fonts: tuple[str, ...] = TRAIN_FONTS

    def __post_init__(self) -> None:
        if self.p_sign + self.p_blank + self.p_sign_only > 1.0 + 1e-9:
            raise ValueError("p_sign + p_blank + p_sign_only must be <= 1")
        if len(self.n_objects_p) != 3 or abs(sum(self.n_objects_p) - 1.0) > 1e-6:
            raise ValueError(f"n_objects_p={self.n_objects_p} must be 3 probabilities summing to 1")


def sample_object(rng: np.random.Generator, position: str, **fixed: str) -> ObjectSpec:
    """A random object at ``position``; attributes passed in ``fixed`` are kept."""
    return ObjectSpec(
        shape=fixed.get("shape") or SHAPES[rng.integers(len(SHAPES))],
        color=fixed.get("color") or COLOR_NAMES[rng.integers(len(COLOR_NAMES))],
        size=fixed.get("size") or SIZE_NAMES[rng.integers(len(SIZE_NAMES))],
        position=position,
        jitter=tuple(float(x) for x in rng.uniform(-0.04, 0.04, 2)),
        shade=float(rng.uniform(-0.06, 0.06)),
        angle=float(rng.uniform(-8, 8)),
    )


def sample_sign(
    rng: np.random.Generator,
    word: str | None,
    fonts: tuple[str, ...] = TRAIN_FONTS,
    center: tuple[float, float] | None = None,
) -> SignSpec:
    """A random label carrying ``word`` (``None``: blank) in one of ``fonts``."""
    if center is None:
        center = (float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.15, 0.85)))
    return SignSpec(
        word=word,
        center=center,
        font=fonts[rng.integers(len(fonts))],
        font_frac=float(rng.uniform(0.16, 0.22)),
        label_rgb=LABEL_COLORS[rng.integers(len(LABEL_COLORS))],
        text_rgb=TEXT_COLORS[rng.integers(len(TEXT_COLORS))],
        blank_chars=int(rng.integers(3, 7)),
    )


def sample_word(rng: np.random.Generator, p_shape_word: float = 0.6) -> str:
    """A word to write: a shape name with probability ``p_shape_word``, else an unrelated word."""
    if rng.random() < p_shape_word:
        return SHAPES[rng.integers(len(SHAPES))]
    return OTHER_WORDS[rng.integers(len(OTHER_WORDS))]


def sample_spec(rng: np.random.Generator, config: WorldConfig = WorldConfig()) -> SceneSpec:
    """Sample a scene spec from the world's mixture."""
    background = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    bg_seed = int(rng.integers(2**31))
    u = rng.random()
    if u < config.p_sign_only:
        sign = sample_sign(rng, sample_word(rng, config.p_shape_word), config.fonts, center=sign_center(rng, ()))
        return SceneSpec(objects=(), background=background, bg_seed=bg_seed, sign=sign, kind="sign")
    n = int(rng.choice(3, p=config.n_objects_p)) + 1
    positions = rng.permutation(len(POSITION_NAMES))[:n]
    objects = tuple(sample_object(rng, POSITION_NAMES[p]) for p in positions)
    kind, sign = "objects", None
    u -= config.p_sign_only
    if u < config.p_sign + config.p_blank:
        word = sample_word(rng, config.p_shape_word) if u < config.p_sign else None
        kind = "objects+sign" if word is not None else "objects+blank"
        sign = sample_sign(rng, word, config.fonts, center=sign_center(rng, [o.position for o in objects]))
    return SceneSpec(objects=objects, background=background, bg_seed=bg_seed, sign=sign, kind=kind)


def sign_center(rng: np.random.Generator, used: list[str] | tuple[str, ...]) -> tuple[float, float]:
    """A label centre: a free position anchor if any (jittered), else a random place."""
    free = [p for p in ("top", "bottom", "center") if p not in used]
    if free and rng.random() < 0.8:
        ax, ay = POSITIONS[free[rng.integers(len(free))]]
        return (float(ax + rng.uniform(-0.08, 0.08)), float(ay + rng.uniform(-0.06, 0.06)))
    return (float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.15, 0.85)))


def sample_scene(seed: int, index: int, size: int = 64, config: WorldConfig = WorldConfig()) -> Scene:
    """Scene ``index`` of the stream ``seed`` (deterministic)."""
    return render_spec(sample_spec(scene_rng(seed, index), config), size)


# ----------------------------------------------------------------------------------------------------
# Single-object scenes for classification and typographic tests
# ----------------------------------------------------------------------------------------------------


def single_object_spec(rng: np.random.Generator, shape: str | None = None) -> SceneSpec:
    """One large-or-small object near the centre on a random background, no sign."""
    obj = sample_object(rng, "center", **({"shape": shape} if shape else {}))
    background = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    return SceneSpec(objects=(obj,), background=background, bg_seed=int(rng.integers(2**31)), kind="objects")


def typographic_specs(rng: np.random.Generator) -> tuple[SceneSpec, SceneSpec, SceneSpec, str]:
    """A clean object and three attacked copies of it.

    The object is large and central; the label covers its lower or upper part (a post-it on the
    object), keeping most of the shape visible.

    Returns:
        ``(scam, noscam, synthscam, attack_word)``: the misleading word in a training font, a blank
        label of the same size and place, and the misleading word in :data:`SYNTH_FONT` on a yellow
        post-it; ``attack_word`` is a shape name different from the object's shape.
    """
    obj = replace(sample_object(rng, "center"), size="large")
    background = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    bg_seed = int(rng.integers(2**31))
    others = [s for s in SHAPES if s != obj.shape]
    word = others[rng.integers(len(others))]
    cy = 0.5 + (0.22 if rng.random() < 0.5 else -0.22) + rng.uniform(-0.02, 0.02)
    center = (float(0.5 + rng.uniform(-0.05, 0.05)), float(cy))
    sign = sample_sign(rng, word, TRAIN_FONTS, center=center)
    # the blank label gets exactly the written label's box: size it by the word's glyph width
    scam = SceneSpec((obj,), background, bg_seed, sign, kind="typographic")
    blank = SceneSpec((obj,), background, bg_seed, replace(sign, word=None, blank_chars=0), kind="typographic")
    synth = SceneSpec(
        (obj,),
        background,
        bg_seed,
        replace(sign, font=SYNTH_FONT, label_rgb=SYNTH_LABEL_COLOR, text_rgb=SYNTH_TEXT_COLOR),
        kind="typographic",
    )
    return scam, blank, synth, word


def render_typographic(rng: np.random.Generator, size: int = 64) -> tuple[Scene, Scene, Scene, str]:
    """Render :func:`typographic_specs`; the blank label has the same box as the written one."""
    scam_spec, blank_spec, synth_spec, word = typographic_specs(rng)
    scam = render_spec(scam_spec, size)
    synth = render_spec(synth_spec, size)
    blank = _render_with_blank_box(blank_spec, scam.sign.box, size)
    return scam, blank, synth, word


def _render_with_blank_box(spec: SceneSpec, box: tuple[int, int, int, int], size: int) -> Scene:
    """Render ``spec`` without its sign, then paste a blank label exactly at ``box``."""
    scene = render_spec(replace(spec, sign=None), size)
    x0, y0, x1, y1 = box
    img = scene.image.astype(np.float32) / 255.0
    sign = spec.sign
    img[y0:y1, x0:x1] = _quantize(sign.label_rgb)
    mask = np.zeros((size, size), dtype=bool)
    mask[y0:y1, x0:x1] = True
    for gt in scene.objects:
        gt.visible = gt.visible & ~mask
    scene.image = np.round(img * 255.0).clip(0, 255).astype(np.uint8)
    scene.sign = SignGT(None, box, None, mask, np.zeros_like(mask), sign.font, 100.0 * (x1 - x0) * (y1 - y0) / size**2)
    scene.spec = spec
    return scene


# ----------------------------------------------------------------------------------------------------
# Ground-truth embeddings
# ----------------------------------------------------------------------------------------------------
#: The factors :func:`factor_embeddings` encodes, with their vocabularies.
FACTORS: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "color": COLOR_NAMES,
    "size": SIZE_NAMES,
    "position": POSITION_NAMES,
    "background": BACKGROUNDS,
}


def factor_embeddings(scenes: Sequence[Scene], factors: Sequence[str] = ("shape", "color")) -> np.ndarray:
    """Ground-truth image embeddings ``(N, F)``: the concatenated one-hot factors of each scene's first object.

    Two scenes' cosine similarity is the share of the chosen factors they have in common, so this is a
    reference "encoder" that knows the world's semantics exactly and owes nothing to any trained model:
    use it where a metric needs a separate image encoder (e.g. the Monosemanticity Score's similarities,
    which Pach et al. 2025 take from DINOv2 on real images).

    Args:
        scenes: Scenes with at least one object each (``background`` is the scene's own).
        factors: Keys of :data:`FACTORS`.

    Returns:
        float32 ``(N, sum of vocabulary sizes)``, rows of L2 norm 1.

    Raises:
        ValueError: Unknown factor, or a scene without objects.
    """
    unknown = [f for f in factors if f not in FACTORS]
    if unknown or not factors:
        raise ValueError(f"factors={list(factors)!r}: expected a non-empty subset of {list(FACTORS)}")
    cols = []
    for f in factors:
        vocab = FACTORS[f]
        block = np.zeros((len(scenes), len(vocab)), dtype=np.float32)  # (N, |vocab|)
        for i, s in enumerate(scenes):
            if f == "background":
                value = s.background
            elif not s.objects:
                raise ValueError(f"scene {i} has no object: factor {f!r} is undefined")
            else:
                value = getattr(s.objects[0], f)
            block[i, vocab.index(value)] = 1.0
        cols.append(block)
    return np.concatenate(cols, axis=1) / np.sqrt(len(factors))
