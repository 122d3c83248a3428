"""Factor-by-factor shifts on the toy world: one factor forced, every other one at its training distribution.

ImageNet-X (Idrissi et al., ICLR 2023) annotates real photos with their factors of variation; Tu et al.
(NeurIPS 2023) compare CLIP models along such visual factors. On the toy world every factor is known and
can be *set*, so the same table (accuracy and error ratio per factor value, :mod:`vlmkit.metrics.factors`)
can be measured under controlled shifts:

* :data:`FACTORS` — the five factors of a single-object classification scene (the class is the shape):
  ``background``, ``size``, ``position``, ``color`` and ``sign`` (is a word label present: a sign with a
  word / a blank sign / none), each with its training values, its training distribution and values
  never seen in training (``unseen``);
* :func:`factor_sweep` — scenes where one factor is forced to each of its values while the others are
  drawn from their training distribution (the same draws for every forced value: a paired design);
* :func:`export_factor_set` — the sweeps in the classification layout the data layer reads
  (``images/`` + ``labels.csv`` + ``classes.txt``) plus an ImageNet-X-like ``factors.csv``.

Training distribution: the one of a one-object scene of :func:`~vlmkit.toyworld.world.sample_spec`
with the default :class:`~vlmkit.toyworld.world.WorldConfig` — background, size, colour and position
uniform over their names; a sign with a word with probability ``p_sign / (1 - p_sign_only)`` (1/3),
a blank sign ``p_blank / (1 - p_sign_only)`` (1/9), none otherwise (5/9); a written word is a shape name
with probability 0.6 (possibly a misleading one: the typographic attack the world teaches), in one of the
training fonts; the sign is placed by :func:`~vlmkit.toyworld.world.sign_center` (a free anchor when
there is one). Later training stages of the shipped checkpoints showed signs somewhat more often
(``p_sign`` 0.4), which changes no value's support.

Unseen values, drawn here on top of :func:`~vlmkit.toyworld.world.render_spec` without touching the
world's vocabulary: the scene is rendered with an in-distribution stand-in (``flat`` background,
``small`` size, ``center`` position, ``red`` colour), then recomposed from its masks — background pixels
replaced by the unseen background, the object redrawn with the unseen geometry or colour, the sign's
pixels (drawn last, opaque) pasted back on top:

* background ``checker``: a checkerboard of two muted colours (2-D, unlike the training stripes);
* size ``tiny``: radius 0.07 of the image side (training: 0.13 and 0.21);
* position ``corner``: anchored at (0.2, 0.2) (training anchors: the centre and the four edge midpoints);
* colour ``cyan``: RGB (0.10, 0.80, 0.85), a hue between the training green and blue;
* sign ``synth``: the written word in :data:`~vlmkit.toyworld.world.SYNTH_FONT` on a yellow post-it
  (the synthetic typographic style, natively drawn by ``render_spec``).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from vlmkit.errors import InputError, did_you_mean

from .evaluate import EXPORT_SEED
from .export import scene_record
from .world import (
    BACKGROUNDS,
    COLOR_NAMES,
    COLORS,
    POSITION_NAMES,
    POSITIONS,
    SHAPES,
    SIZE_NAMES,
    SIZES,
    SYNTH_FONT,
    SYNTH_LABEL_COLOR,
    SYNTH_TEXT_COLOR,
    TRAIN_FONTS,
    ObjectGT,
    ObjectSpec,
    Scene,
    SceneSpec,
    WorldConfig,
    mask_extent,
    object_mask,
    render_background,
    render_spec,
    sample_sign,
    sample_word,
    scene_rng,
    sign_center,
)

#: Sub-stream of :func:`~vlmkit.toyworld.world.scene_rng` for the factors of sweep item ``j`` (the
#: exports use streams 0-4), and the one for its sign's place (drawn after the forced value is known).
FACTOR_STREAM: int = 6
SIGN_STREAM: int = 7

#: Values never seen in training, with what they draw.
UNSEEN_BACKGROUNDS: tuple[str, ...] = ("checker",)
UNSEEN_SIZES: dict[str, float] = {"tiny": 0.07}
UNSEEN_POSITIONS: dict[str, tuple[float, float]] = {"corner": (0.20, 0.20)}
UNSEEN_COLORS: dict[str, tuple[float, float, float]] = {"cyan": (0.10, 0.80, 0.85)}
SIGN_VALUES: tuple[str, ...] = ("word", "blank", "none")
UNSEEN_SIGNS: tuple[str, ...] = ("synth",)


@dataclass(frozen=True)
class Factor:
    """One factor of variation of a toy classification scene.

    Attributes:
        name: Factor name (a column of the sweep tables and of ``factors.csv``).
        values: Values seen in training.
        probs: Training probability of each of ``values`` (sums to 1).
        unseen: Values never seen in training (rendered by this module).
        description: What the factor is.
    """

    name: str
    values: tuple[str, ...]
    probs: tuple[float, ...]
    unseen: tuple[str, ...]
    description: str

    @property
    def distribution(self) -> dict[str, float]:
        """``{value: training probability}``."""
        return dict(zip(self.values, self.probs))

    def all_values(self, unseen: bool = False) -> tuple[str, ...]:
        """The training values, followed by the unseen ones when ``unseen``."""
        return self.values + (self.unseen if unseen else ())


def _uniform(values: Sequence[str]) -> tuple[float, ...]:
    return tuple(1.0 / len(values) for _ in values)


_DEFAULT_WORLD = WorldConfig()


def _sign_probs(config: WorldConfig = _DEFAULT_WORLD) -> tuple[float, float, float]:
    """P(word), P(blank), P(none) of a scene with objects under ``config`` (sign-only scenes excluded)."""
    rest = 1.0 - config.p_sign_only
    word, blank = config.p_sign / rest, config.p_blank / rest
    return (word, blank, 1.0 - word - blank)


#: The factors, in table order.
FACTORS: dict[str, Factor] = {
    "background": Factor("background", BACKGROUNDS, _uniform(BACKGROUNDS), UNSEEN_BACKGROUNDS,
                         "background texture behind the object"),
    "size": Factor("size", SIZE_NAMES, _uniform(SIZE_NAMES), tuple(UNSEEN_SIZES), "object radius"),
    "position": Factor("position", POSITION_NAMES, _uniform(POSITION_NAMES), tuple(UNSEEN_POSITIONS),
                       "where the object is anchored"),
    "color": Factor("color", COLOR_NAMES, _uniform(COLOR_NAMES), tuple(UNSEEN_COLORS), "object colour"),
    "sign": Factor("sign", SIGN_VALUES, _sign_probs(), UNSEEN_SIGNS,
                   "word label present: a sign with a word, a blank sign, or none"),
}
FACTOR_NAMES: tuple[str, ...] = tuple(FACTORS)


@dataclass(frozen=True)
class FactorSpec:
    """A single-object scene with its factor values (which may be unseen).

    Attributes:
        scene: An in-distribution stand-in :func:`render_spec` can draw: every unseen value replaced by
            a training one (its geometry, colour and background are redrawn by :func:`render_factor_spec`).
        shape: The object's shape (the class).
        background, size, position, color, sign: The factor values (see :data:`FACTORS`).
        word: The word written on the sign, or ``None`` (blank sign or no sign).
    """

    scene: SceneSpec
    shape: str
    background: str
    size: str
    position: str
    color: str
    sign: str
    word: str | None

    def factor_values(self) -> dict[str, str]:
        """``{factor: value}`` for every factor of :data:`FACTORS`."""
        return {f: getattr(self, f) for f in FACTOR_NAMES}


def _check_factor(factor: str) -> Factor:
    if factor not in FACTORS:
        raise InputError(f"factor={factor!r}: expected one of {list(FACTORS)}.{did_you_mean(str(factor), FACTORS)}")
    return FACTORS[factor]


def _check_value(factor: Factor, value: str) -> None:
    vals = factor.all_values(unseen=True)
    if value not in vals:
        raise InputError(f"{factor.name}={value!r}: expected one of {list(vals)}.{did_you_mean(str(value), vals)}")


def _draw(rng: np.random.Generator, factor: Factor) -> str:
    return str(factor.values[int(rng.choice(len(factor.values), p=factor.probs))])


def factor_spec(seed: int, index: int, **forced: str) -> FactorSpec:
    """Item ``index`` of the factor stream ``seed``: every factor drawn from its training distribution,
    except those given in ``forced`` (``factor=value``, unseen values allowed).

    The draws do not depend on ``forced``: item ``index`` has the same shape, other factor values,
    jitter, shade, angle and word whatever value is forced (a paired design). The sign's place is drawn
    from its own sub-stream after the object's position is known (it avoids the object, as in training).

    Raises:
        InputError: An unknown factor or value.
    """
    for name, value in forced.items():
        _check_value(_check_factor(name), value)
    rng = scene_rng(seed, index, FACTOR_STREAM)
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    values = {name: _draw(rng, f) for name, f in FACTORS.items()}  # fixed order: FACTOR_NAMES
    bg_seed = int(rng.integers(2**31))
    jitter = tuple(float(x) for x in rng.uniform(-0.04, 0.04, 2))
    shade, angle = float(rng.uniform(-0.06, 0.06)), float(rng.uniform(-8, 8))
    word = sample_word(rng)
    values.update(forced)
    obj = ObjectSpec(
        shape=shape,
        color=values["color"] if values["color"] in COLORS else COLOR_NAMES[0],
        size=values["size"] if values["size"] in SIZES else SIZE_NAMES[0],
        position=values["position"] if values["position"] in POSITIONS else "center",
        jitter=jitter, shade=shade, angle=angle,
    )
    sign = None
    if values["sign"] != "none":
        srng = scene_rng(seed, index, SIGN_STREAM)
        written = None if values["sign"] == "blank" else word
        sign = sample_sign(srng, written, TRAIN_FONTS, center=sign_center(srng, [values["position"]]))
        if values["sign"] == "synth":
            sign = replace(sign, font=SYNTH_FONT, label_rgb=SYNTH_LABEL_COLOR, text_rgb=SYNTH_TEXT_COLOR)
    kind = {"none": "objects", "blank": "objects+blank"}.get(values["sign"], "objects+sign")
    background = values["background"] if values["background"] in BACKGROUNDS else "flat"
    scene = SceneSpec(objects=(obj,), background=background, bg_seed=bg_seed, sign=sign, kind=kind)
    return FactorSpec(scene, shape, values["background"], values["size"], values["position"], values["color"],
                      values["sign"], None if sign is None else sign.word)


# ---------------------------------------------------------------------------------------------- drawing
def checker_background(size: int, seed: int) -> np.ndarray:
    """The unseen ``checker`` background: squares of two muted colours, ``(size, size, 3)`` float32 in [0, 1].

    Cells are 1/10 to 1/6 of the side with a random phase; the colours are low-saturation mid-tones like
    the training backgrounds', so only the 2-D pattern is new.
    """
    rng = np.random.default_rng([int(seed), 11])
    colours = []
    for _ in range(2):
        gray = rng.uniform(0.28, 0.72)
        tint = rng.uniform(0.0, 1.0, 3)
        tint = tint / tint.sum() * 3.0 - 1.0
        colours.append(np.clip(gray + rng.uniform(0.05, 0.16) * tint, 0.0, 1.0))
    if abs(colours[0].mean() - colours[1].mean()) < 0.12:  # keep the pattern visible
        colours[1] = np.clip(colours[1] + (0.2 if colours[0].mean() < 0.5 else -0.2), 0.0, 1.0)
    period = rng.uniform(1 / 10, 1 / 6)
    phase = rng.uniform(0, 1, 2)
    t = (np.arange(size, dtype=np.float32) + 0.5) / size
    cx = np.floor(t[None, :] / period + phase[0]).astype(np.int64)
    cy = np.floor(t[:, None] / period + phase[1]).astype(np.int64)
    on = ((cx + cy) % 2 == 0)  # (H, W)
    return np.where(on[..., None], colours[0], colours[1]).astype(np.float32)


def render_factor_spec(spec: FactorSpec, size: int = 64) -> Scene:
    """Draw a :class:`FactorSpec`, unseen values included.

    In-distribution specs are exactly ``render_spec(spec.scene, size)``. Otherwise the stand-in scene is
    rendered and recomposed: background (the unseen one, or the scene's own), the object with its true
    geometry and colour, then the sign's pixels copied from the stand-in render (a sign is opaque and
    drawn last, so they do not depend on what lies under it).

    Returns:
        The :class:`Scene`; its ``background`` and object ground truth (``size``, ``position``, ``color``,
        ``rgb``, ``center``, ``radius``, ``bbox``, ``mask``, ``visible``) carry the true values, its
        ``spec`` is the stand-in.
    """
    scene = render_spec(spec.scene, size)
    unseen_bg = spec.background not in BACKGROUNDS
    unseen_geom = spec.size not in SIZES or spec.position not in POSITIONS
    unseen_col = spec.color not in COLORS
    if not (unseen_bg or unseen_geom or unseen_col):
        return scene
    obj = spec.scene.objects[0]
    gt = scene.objects[0]
    bg = checker_background(size, spec.scene.bg_seed) if unseen_bg else \
        render_background(spec.scene.background, size, spec.scene.bg_seed)  # (H, W, 3)
    if unseen_geom:
        anchor = UNSEEN_POSITIONS.get(spec.position) or POSITIONS[spec.position]
        radius = UNSEEN_SIZES.get(spec.size) or SIZES[spec.size]
        mask, center, r = object_mask(obj, anchor, radius, size)
    else:
        mask, center, r = gt.mask, gt.center, gt.radius
    base = np.asarray(UNSEEN_COLORS.get(spec.color) or COLORS[spec.color], dtype=np.float32)
    rgb = tuple(float(x) for x in np.clip(base + obj.shade, 0.0, 1.0))
    img = np.round(bg * 255.0).clip(0, 255).astype(np.uint8)  # (H, W, 3)
    img[mask] = np.round(np.asarray(rgb) * 255.0).clip(0, 255).astype(np.uint8)
    sign_mask = scene.sign.mask if scene.sign is not None else np.zeros((size, size), dtype=bool)
    img[sign_mask] = scene.image[sign_mask]
    new_gt = ObjectGT(obj.shape, spec.color, spec.size, spec.position, rgb, center, r, mask_extent(mask), mask,
                      mask & ~sign_mask)
    return Scene(image=img, objects=[new_gt], sign=scene.sign, background=spec.background, spec=spec.scene)


# ---------------------------------------------------------------------------------------------- sweeps
def _check_count(n: int, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"{name} must be a positive integer, got {n!r}")
    return int(n)


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


SWEEP_COLUMNS: tuple[str, ...] = ("item", "class", "label") + FACTOR_NAMES + ("word", "forced", "unseen")


def factor_sweep(factor: str, n_per_value: int, seed: int = EXPORT_SEED, unseen: bool = False, size: int = 64,
                 values: Sequence[str] | None = None) -> tuple[list[Scene], pd.DataFrame]:
    """Single-object classification scenes with ``factor`` forced to each of its values.

    Item ``j`` (``0 <= j < n_per_value``) draws the shape and every other factor from its training
    distribution (:func:`factor_spec`), the same for every forced value; the scenes come value-major
    (all items of the first value, then the second ...).

    Args:
        factor: One of :data:`FACTOR_NAMES`.
        n_per_value: Scenes per value.
        seed: Stream seed (default: the toy world's held-out export seed; never a training seed).
        unseen: Also force the values never seen in training (:attr:`Factor.unseen`), after the training ones.
        size: Image side in pixels.
        values: Force only these values (overrides ``unseen``; unseen values allowed).

    Returns:
        ``(scenes, table)``: the rendered scenes and one row per scene with columns ``item`` (``j``),
        ``class`` (the shape), ``label`` (its index in :data:`~vlmkit.toyworld.world.SHAPES`), one column
        per factor, ``word`` (written word or ``""``), ``forced`` (``factor``) and ``unseen`` (whether the
        forced value is an unseen one).

    Raises:
        InputError: Unknown factor or value, or a non-positive count.
    """
    f = _check_factor(factor)
    n = _check_count(n_per_value, "n_per_value")
    seed = _check_seed(seed)
    chosen = tuple(values) if values is not None else f.all_values(unseen)
    if not chosen:
        raise InputError("values is empty: force at least one value")
    for v in chosen:
        _check_value(f, v)
    scenes: list[Scene] = []
    rows: list[dict[str, object]] = []
    for v in chosen:
        for j in range(n):
            spec = factor_spec(seed, j, **{factor: v})
            scenes.append(render_factor_spec(spec, size))
            rows.append({"item": j, "class": spec.shape, "label": SHAPES.index(spec.shape), **spec.factor_values(),
                         "word": spec.word or "", "forced": factor, "unseen": v in f.unseen})
    return scenes, pd.DataFrame(rows, columns=list(SWEEP_COLUMNS))


def export_factor_set(root: str | Path, factors: Sequence[str] = FACTOR_NAMES, n_per_value: int = 50,
                      seed: int = EXPORT_SEED, unseen: bool = False, size: int = 64) -> Path:
    """Write the sweeps of ``factors`` as a classification set with per-image factor annotations.

    Files (the layout :func:`vlmkit.data.load_labelled_csv` reads, plus the annotations
    :func:`vlmkit.data.factors.load_factor_annotations` reads):

    * ``images/<factor>_<value>_<item>.png``;
    * ``labels.csv``: ``file,label`` (the shape name);
    * ``classes.txt``: :data:`~vlmkit.toyworld.world.SHAPES`, one per line;
    * ``factors.csv`` (ImageNet-X-like): ``file_name,class``, one column per factor of :data:`FACTORS`
      and ``sweep`` (the factor forced in that image's sweep);
    * ``ground_truth.json``: per file, :func:`~vlmkit.toyworld.export.scene_record` plus ``forced``,
      ``unseen`` and ``word``.

    Args:
        root: Output folder (created).
        factors: Factors to sweep, one sweep each (see :func:`factor_sweep`).
        n_per_value: Scenes per forced value.
        seed: Stream seed (default: the held-out export seed).
        unseen: Also force the unseen values.
        size: Image side in pixels.

    Returns:
        ``root`` as a Path.

    Raises:
        InputError: Unknown factor, no factor, or a non-positive count.
    """
    if isinstance(factors, str):
        factors = (factors,)
    factors = tuple(factors)
    if not factors:
        raise InputError("factors is empty: name at least one factor to sweep")
    for name in factors:
        _check_factor(name)
    _check_count(n_per_value, "n_per_value")
    _check_seed(seed)
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    labels, annotations, gt = [], [], {}
    for name in factors:
        scenes, table = factor_sweep(name, n_per_value, seed, unseen=unseen, size=size)
        for scene, row in zip(scenes, table.to_dict("records")):
            file = f"{name}_{row[name]}_{row['item']:05d}.png"
            Image.fromarray(scene.image).save(root / "images" / file)
            labels.append((file, row["class"]))
            annotations.append([file, row["class"]] + [row[f] for f in FACTOR_NAMES] + [name])
            gt[file] = {**scene_record(scene), "forced": name, "unseen": bool(row["unseen"]), "word": row["word"]}
    with open(root / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "label"])
        w.writerows(labels)
    with open(root / "factors.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file_name", "class", *FACTOR_NAMES, "sweep"])
        w.writerows(annotations)
    (root / "classes.txt").write_text("\n".join(SHAPES) + "\n")
    (root / "ground_truth.json").write_text(json.dumps(gt))
    return root


__all__ = [
    "FACTORS", "FACTOR_NAMES", "FACTOR_STREAM", "SIGN_STREAM", "SIGN_VALUES", "SWEEP_COLUMNS", "UNSEEN_BACKGROUNDS",
    "UNSEEN_COLORS", "UNSEEN_POSITIONS", "UNSEEN_SIGNS", "UNSEEN_SIZES", "Factor", "FactorSpec", "checker_background",
    "export_factor_set", "factor_spec", "factor_sweep", "render_factor_spec",
]
