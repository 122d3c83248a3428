"""Meaning probes of toy scenes: a caption, a rewording of it, and captions made false by one known edit.

Language-guided invariance probing (Lee et al. 2025, *Language-Guided Invariance Probing of
Vision-Language Models*) asks, for one image, whether a meaning-preserving rewrite of its caption moves
the text embedding (and the image-text score) little while a meaning-changing one — another colour,
shape, count or place — moves it a lot. On real captions the flips need a parser or an annotator; in the
toy world the caption grammar knows every attribute of every object, so each flip is made from ground
truth and has a known answer: the original and the rewording are true of the scene, every flip is false.

:func:`meaning_probes` builds, for one scene, the complete caption of :func:`.grammar.describe` and

* ``"preserving"``: the same objects in the grammar's own alternative wording — the frame ``a photo of``
  becomes ``a picture of`` or ``an image showing`` (both :data:`.grammar.SCENE_TEMPLATES` frames), size
  words and position phrases are drawn from :data:`.grammar.SIZE_WORDS` / :data:`.grammar.POSITION_PHRASES`
  (``large``/``big``, ``small``/``little``, ``in the center``/``in the middle``);
* ``"color"``, ``"shape"``, ``"size"``: one visible object's colour / shape / size replaced by another of
  :data:`.world.COLOR_NAMES` / :data:`.world.SHAPES` / :data:`.world.SIZE_NAMES`;
* ``"position"``: one visible object moved to a position no object of the scene occupies;
* ``"count"``: a visible object left out of the caption, or a new object (at a free position) added.

Every caption is checked with :func:`caption_holds` (the grammar's parser against the scene's ground
truth) before it is returned: the original and the rewording must hold and every flip must not. A flip
that needs a visible object is absent for a scene without one (a sign alone): then only ``"count"``
(an object added) is given.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import numpy as np

from .grammar import (
    BACKGROUND_WORDS,
    POSITION_PHRASES,
    SIZE_WORDS,
    article,
    describe,
    join_phrases,
    parse_prompt,
    visible_objects,
)
from .world import (
    COLOR_NAMES,
    POSITION_NAMES,
    SHAPES,
    SIZE_NAMES,
    Scene,
    render_spec,
    sample_spec,
    scene_rng,
)

#: Kinds of probe, in table order; all but the first two change the meaning.
PROBE_KINDS: tuple[str, ...] = ("original", "preserving", "color", "shape", "size", "position", "count")
#: Kinds that keep the caption true of the scene.
PRESERVING_KINDS: tuple[str, ...] = ("original", "preserving")
#: The frame of :func:`.grammar.describe`, and the grammar's alternative frames (from ``SCENE_TEMPLATES``).
FRAME = "a photo of"
ALTERNATIVE_FRAMES: tuple[str, ...] = ("a picture of", "an image showing")
#: Scene stream of :func:`probe_set` (``world.scene_rng(seed, i, stream)``) and of its probe choices.
SCENE_STREAM, PROBE_STREAM = 11, 12


@dataclass(frozen=True)
class _Mention:
    """One object of a caption: its attributes and the words used for size and position."""

    shape: str
    color: str
    size: str
    position: str
    size_word: str
    position_phrase: str

    def phrase(self) -> str:
        words = f"{self.size_word} {self.color} {self.shape}"
        return f"{article(words)} {words} {self.position_phrase}"


def _caption(frame: str, mentions: list[_Mention], scene: Scene) -> str:
    """A caption in :func:`.grammar.describe`'s form with the given frame and object mentions."""
    bg = BACKGROUND_WORDS[scene.background]
    if mentions:
        text = f"{frame} {join_phrases([m.phrase() for m in mentions])} on a {bg} background"
    else:
        text = f"{frame} a {bg} background"
    if scene.sign is not None:
        text += f', and a sign that says "{scene.sign.word}"' if scene.sign.word else ", and a blank sign"
    return text


def caption_holds(caption: str, scene: Scene, min_visible: float = 0.35) -> bool:
    """Whether a caption of the grammar is a true and complete description of ``scene``'s objects.

    :func:`.grammar.parse_prompt` reads the caption; it holds when its objects can be paired one to one
    with the scene's visible objects (:func:`.grammar.visible_objects`) so that every attribute the
    caption fixes (shape, colour, size, position) equals the object's, and when the background and the
    sign's word, if the caption names them, are the scene's.

    Args:
        caption: A caption of the grammar.
        scene: The scene with its ground truth.
        min_visible: Visible share above which an object must be mentioned.
    """
    parsed = parse_prompt(caption)
    truth = visible_objects(scene, min_visible)
    if len(parsed.objects) != len(truth):
        return False
    if parsed.background is not None and parsed.background != scene.background:
        return False
    word = scene.sign.word if scene.sign is not None else None
    if parsed.word is not None and parsed.word != word:
        return False

    def fits(said: dict[str, str], obj: object) -> bool:
        return all(getattr(obj, k) == v for k, v in said.items())

    return any(all(fits(p, truth[j]) for p, j in zip(parsed.objects, perm))
               for perm in itertools.permutations(range(len(truth))))


def meaning_probes(scene: Scene, rng: np.random.Generator) -> dict[str, str]:
    """The original caption of ``scene``, a meaning-preserving rewording and meaning-changing flips.

    Args:
        scene: A rendered toy scene (:func:`.world.sample_scene`).
        rng: Randomness of the rewording and of which object and value each flip takes.

    Returns:
        ``{kind: caption}`` over :data:`PROBE_KINDS`: ``"original"`` (:func:`.grammar.describe`),
        ``"preserving"`` (true of the scene, different words), and the flips ``"color"``, ``"shape"``,
        ``"size"``, ``"position"``, ``"count"`` (each false of the scene, each one edit of the original;
        those needing a visible object absent when there is none).

    Raises:
        TypeError: ``rng`` is not a numpy Generator.
        RuntimeError: A probe fails its ground-truth check (the grammar and this module disagree).
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    vis = visible_objects(scene)
    base = [_Mention(o.shape, o.color, o.size, o.position, SIZE_WORDS[o.size][0], POSITION_PHRASES[o.position][0])
            for o in vis]
    original = describe(scene)
    if _caption(FRAME, base, scene) != original:
        raise RuntimeError("meaning_probes: the caption builder no longer matches grammar.describe")

    def pick(options: tuple[str, ...] | list[str]) -> str:
        return options[int(rng.integers(len(options)))]

    out = {"original": original}
    reworded = [replace(m, size_word=pick(SIZE_WORDS[m.size]), position_phrase=pick(POSITION_PHRASES[m.position]))
                for m in base]
    out["preserving"] = _caption(pick(ALTERNATIVE_FRAMES), reworded, scene)
    taken = {o.position for o in scene.objects}  # every object's place, hidden ones included
    free = [p for p in POSITION_NAMES if p not in taken]
    if base:
        j = int(rng.integers(len(base)))
        out["color"] = _caption(FRAME, _replaced(base, j, color=pick([c for c in COLOR_NAMES if c != base[j].color])),
                                scene)
        j = int(rng.integers(len(base)))
        out["shape"] = _caption(FRAME, _replaced(base, j, shape=pick([s for s in SHAPES if s != base[j].shape])),
                                scene)
        j = int(rng.integers(len(base)))
        new_size = pick([s for s in SIZE_NAMES if s != base[j].size])
        out["size"] = _caption(FRAME, _replaced(base, j, size=new_size, size_word=SIZE_WORDS[new_size][0]), scene)
        j = int(rng.integers(len(base)))
        new_pos = pick(free)
        out["position"] = _caption(FRAME, _replaced(base, j, position=new_pos,
                                                    position_phrase=POSITION_PHRASES[new_pos][0]), scene)
    add = not base or (len(base) < 3 and rng.random() < 0.5)
    if add:
        size = pick(SIZE_NAMES)
        pos = pick(free)
        extra = _Mention(pick(SHAPES), pick(COLOR_NAMES), size, pos, SIZE_WORDS[size][0], POSITION_PHRASES[pos][0])
        out["count"] = _caption(FRAME, [*base, extra], scene)
    else:
        j = int(rng.integers(len(base)))
        out["count"] = _caption(FRAME, base[:j] + base[j + 1:], scene)
    for kind, caption in out.items():
        if caption_holds(caption, scene) != (kind in PRESERVING_KINDS):
            raise RuntimeError(f"meaning_probes: the {kind!r} probe {caption!r} fails its ground-truth check")
    return out


def _replaced(mentions: list[_Mention], j: int, **change: str) -> list[_Mention]:
    out = list(mentions)
    out[j] = replace(mentions[j], **change)
    return out


def probe_set(n: int, seed: int = 0, size: int = 64, return_scenes: bool = False
              ) -> tuple[np.ndarray | list[Scene], list[dict[str, object]]]:
    """``n`` toy scenes and their meaning probes, as images and a tidy table.

    Scene ``i`` is ``render_spec(sample_spec(scene_rng(seed, i, SCENE_STREAM)), size)`` and its probes
    draw from ``scene_rng(seed, i, PROBE_STREAM)``, so each is reproducible on its own.

    Args:
        n: Number of scenes (>= 1).
        seed: Non-negative stream seed.
        size: Image side in pixels.
        return_scenes: Return the :class:`.world.Scene` objects (ground truth included) instead of images.

    Returns:
        ``(images, table)``: ``images`` uint8 ``(n, size, size, 3)`` (or the scenes); ``table`` one record
        per probe, ``{"index", "kind", "caption", "preserves_meaning"}``, in scene order then
        :data:`PROBE_KINDS` order.

    Raises:
        ValueError: ``n < 1`` or a negative seed.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n={n!r} must be a positive int")
    scenes = [render_spec(sample_spec(scene_rng(seed, i, SCENE_STREAM)), size) for i in range(int(n))]
    table: list[dict[str, object]] = []
    for i, scene in enumerate(scenes):
        probes = meaning_probes(scene, scene_rng(seed, i, PROBE_STREAM))
        table += [{"index": i, "kind": k, "caption": probes[k], "preserves_meaning": k in PRESERVING_KINDS}
                  for k in PROBE_KINDS if k in probes]
    if return_scenes:
        return scenes, table
    return np.stack([s.image for s in scenes]), table  # (n, H, W, 3) uint8


__all__ = ["ALTERNATIVE_FRAMES", "FRAME", "PRESERVING_KINDS", "PROBE_KINDS", "caption_holds", "meaning_probes",
           "probe_set"]
