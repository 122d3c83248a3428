"""Captions of toy scenes, and the parser that turns a caption back into a scene.

Training captions (:func:`sample_caption`) imitate web alt-text: varied templates, shuffled object
order, dropped attributes, captions that name a single object, captions that transcribe the written
word (``... and a sign that says "star"``) and captions where the writing is the subject (a label
reading "star" captioned ``a photo of a star``). :func:`describe` is the one deterministic, complete
caption used for retrieval evaluation. :func:`parse_prompt` reads any caption of the grammar back into
a partial :class:`~vlmkit.toyworld.world.SceneSpec`, which is what makes :func:`vlmkit.toyworld.render`
a text-to-image generator.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .world import (
    BACKGROUNDS,
    COLOR_NAMES,
    POSITION_NAMES,
    SHAPES,
    WORDS,
    ObjectGT,
    Scene,
)

POSITION_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("on the left",),
    "right": ("on the right",),
    "top": ("at the top",),
    "bottom": ("at the bottom",),
    "center": ("in the center", "in the middle"),
}
SIZE_WORDS: dict[str, tuple[str, ...]] = {"small": ("small", "little"), "large": ("large", "big")}
BACKGROUND_WORDS: dict[str, str] = {
    "flat": "plain",
    "gradient": "gradient",
    "stripes": "striped",
    "noise": "noisy",
    "blotches": "blotchy",
}
SCENE_TEMPLATES: tuple[str, ...] = (
    "a photo of {objs}",
    "{objs}",
    "a picture of {objs}",
    "an image showing {objs}",
    "there is {objs}",
    "{objs} on a {bg} background",
    "a {bg} background with {objs}",
)
SHORT_TEMPLATES: tuple[str, ...] = ("a photo of {obj}", "{obj}", "a picture of {obj}", "an image of {obj}")
TRANSCRIBE_TEMPLATES: tuple[str, ...] = (
    ', and a sign that says "{w}"',
    ', and a label reading "{w}"',
    ' with the word "{w}" written on a sign',
    ', and a note that says "{w}"',
)
SIGN_TEMPLATES: tuple[str, ...] = (
    'a sign that says "{w}"',
    'a label reading "{w}"',
    'the word "{w}"',
    'a note that says "{w}"',
)
#: The word is the subject: the caption names what the writing names.
SUBJECT_TEMPLATES: tuple[str, ...] = ("a photo of a {w}", "a {w}", "a picture of a {w}", "{w}")
#: Templates used by evaluation.
ZERO_SHOT_TEMPLATE = "a photo of a {}"
READING_TEMPLATE = 'a sign that says "{}"'


def article(word: str) -> str:
    """``"an"`` before a vowel sound, else ``"a"``."""
    return "an" if word[0] in "aeiou" else "a"


def object_phrase(
    obj: ObjectGT,
    rng: np.random.Generator | None = None,
    drop: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> str:
    """``"a large red circle on the left"`` with attributes dropped at random.

    Args:
        obj: The object.
        rng: Randomness for synonyms and drops (``None``: first synonym, nothing dropped).
        drop: Probabilities of dropping (size, colour, position).
    """

    def pick(options: tuple[str, ...]) -> str:
        return options[0] if rng is None else options[rng.integers(len(options))]

    def keep(p: float) -> bool:
        return rng is None or rng.random() >= p

    words = []
    if keep(drop[0]):
        words.append(pick(SIZE_WORDS[obj.size]))
    if keep(drop[1]):
        words.append(obj.color)
    words.append(obj.shape)
    phrase = " ".join(words)
    phrase = f"{article(phrase)} {phrase}"
    if keep(drop[2]):
        phrase += " " + pick(POSITION_PHRASES[obj.position])
    return phrase


def join_phrases(phrases: list[str]) -> str:
    """``"a, b and c"``."""
    if len(phrases) <= 1:
        return "".join(phrases)
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def visible_objects(scene: Scene, min_visible: float = 0.35) -> list[ObjectGT]:
    """Objects a caption should mention: those with at least ``min_visible`` of their pixels shown."""
    return [o for o in scene.objects if o.visible_fraction >= min_visible]


def describe(scene: Scene) -> str:
    """The complete, deterministic caption of a scene (used for retrieval evaluation).

    Every visible object with size, colour, shape and position in drawing order, the background, and
    the sign (transcribed, or ``a blank sign``).
    """
    objs = [object_phrase(o) for o in visible_objects(scene)]
    bg = BACKGROUND_WORDS[scene.background]
    if objs:
        text = f"a photo of {join_phrases(objs)} on a {bg} background"
    else:
        text = f"a photo of a {bg} background"
    if scene.sign is not None:
        text += f', and a sign that says "{scene.sign.word}"' if scene.sign.word else ", and a blank sign"
    return text


@dataclass(frozen=True)
class CaptionConfig:
    """Probabilities of the caption modes.

    Attributes:
        p_short: A caption naming one object only (``a photo of a star``, ``a red star``).
        p_complete: The complete caption of :func:`describe` (else a varied one with drops).
        drop: Probabilities of dropping (size, colour, position) in varied captions.
        p_transcribe: For a scene with objects and a written sign: describe and transcribe the word.
        p_subject: ... the word is the subject (``a photo of a star``) and objects are not named.
        p_sign_subject: For a sign with no object: caption it as the thing it names.
        p_mention_blank: For a blank label: mention ``a blank sign``.
    """

    p_short: float = 0.4
    p_complete: float = 0.2
    drop: tuple[float, float, float] = (0.35, 0.25, 0.45)
    p_transcribe: float = 0.45
    p_subject: float = 0.30
    p_sign_subject: float = 0.5
    p_mention_blank: float = 0.3


def _objects_caption(scene: Scene, objs: list[ObjectGT], rng: np.random.Generator, cfg: CaptionConfig) -> str:
    u = rng.random()
    if u < cfg.p_short:
        o = objs[rng.integers(len(objs))]
        v = rng.random()
        if v < 0.5:
            phrase = f"{article(o.shape)} {o.shape}"
        elif v < 0.8:
            phrase = f"{article(o.color)} {o.color} {o.shape}"
        else:
            phrase = object_phrase(o, rng, cfg.drop)
        return SHORT_TEMPLATES[rng.integers(len(SHORT_TEMPLATES))].format(obj=phrase)
    if u < cfg.p_short + cfg.p_complete:
        return describe(scene).split(", and a sign")[0].split(", and a blank")[0]
    order = rng.permutation(len(objs))
    phrases = [object_phrase(objs[i], rng, cfg.drop) for i in order]
    template = SCENE_TEMPLATES[rng.integers(len(SCENE_TEMPLATES))]
    return template.format(objs=join_phrases(phrases), bg=BACKGROUND_WORDS[scene.background])


def sample_caption(scene: Scene, rng: np.random.Generator, cfg: CaptionConfig = CaptionConfig()) -> str:
    """A random training caption of ``scene`` from the grammar."""
    objs = visible_objects(scene)
    sign = scene.sign
    word = sign.word if sign is not None else None
    if not objs:
        if word is None:
            return f"a photo of a {BACKGROUND_WORDS[scene.background]} background" + (
                ", and a blank sign" if sign is not None else ""
            )
        if rng.random() < cfg.p_sign_subject:
            return SUBJECT_TEMPLATES[rng.integers(len(SUBJECT_TEMPLATES))].format(w=word)
        return SIGN_TEMPLATES[rng.integers(len(SIGN_TEMPLATES))].format(w=word)
    if word is not None:
        u = rng.random()
        if u < cfg.p_subject:
            return SUBJECT_TEMPLATES[rng.integers(len(SUBJECT_TEMPLATES))].format(w=word)
        text = _objects_caption(scene, objs, rng, cfg)
        if u < cfg.p_subject + cfg.p_transcribe:
            if text.startswith("a photo of") and rng.random() < 0.5:
                return describe(scene)
            return text + TRANSCRIBE_TEMPLATES[rng.integers(len(TRANSCRIBE_TEMPLATES))].format(w=word)
        return text
    text = _objects_caption(scene, objs, rng, cfg)
    if sign is not None and rng.random() < cfg.p_mention_blank:
        text += ", and a blank sign"
    return text


# ----------------------------------------------------------------------------------------------------
# Parsing prompts back into scene attributes
# ----------------------------------------------------------------------------------------------------


@dataclass
class ParsedPrompt:
    """What a prompt of the grammar asks for.

    Attributes:
        objects: One dict per object mentioned, with the keys it fixes among
            ``shape``, ``color``, ``size``, ``position``.
        word: A word to write on a sign, if any.
        blank_sign: Whether a blank sign is asked for.
        background: A background kind, if named.
    """

    objects: list[dict[str, str]]
    word: str | None = None
    blank_sign: bool = False
    background: str | None = None


_SIZE_LOOKUP = {w: s for s, ws in SIZE_WORDS.items() for w in ws}
_POS_LOOKUP = {p: k for k, ps in POSITION_PHRASES.items() for p in ps}
_BG_LOOKUP = {w: k for k, w in BACKGROUND_WORDS.items()}


def parse_prompt(prompt: str) -> ParsedPrompt:
    """Parse a caption of the grammar.

    Quoted text is the sign's word; every mention of a shape makes an object whose colour, size and
    position are taken from the words in its clause. A prompt whose subject is a word (``a photo of a
    cat``, where ``cat`` is a sign word and no shape is named) asks for a sign with that word.

    Args:
        prompt: E.g. ``'a small red star on the left and a blue circle, and a sign that says "cat"'``.

    Returns:
        The :class:`ParsedPrompt`.
    """
    text = prompt.lower().strip().rstrip(".")
    word = None
    m = re.search(r'"([^"]*)"', text)
    if m:
        word = m.group(1).strip() or None
        text = text[: m.start()] + text[m.end() :]
    blank = "blank sign" in text or "blank label" in text
    background = None
    for w, k in _BG_LOOKUP.items():
        if re.search(rf"\b{w} background\b", text):
            background = k
            text = re.sub(rf"\b{w} background\b", " ", text)
    objects: list[dict[str, str]] = []
    for clause in re.split(r",| and | with ", text):
        tokens = re.findall(r"[a-z]+", clause)
        shapes = [t for t in tokens if t in SHAPES]
        if not shapes:
            continue
        obj: dict[str, str] = {"shape": shapes[0]}
        for t in tokens:
            if t in COLOR_NAMES:
                obj["color"] = t
            elif t in _SIZE_LOOKUP:
                obj["size"] = _SIZE_LOOKUP[t]
        for phrase, pos in _POS_LOOKUP.items():
            if phrase in clause:
                obj["position"] = pos
        objects.append(obj)
    if not objects and word is None:  # "a photo of a cat": the word is the subject
        for t in re.findall(r"[a-z]+", text):
            if t in WORDS:
                word = t
                break
    return ParsedPrompt(objects=objects[:3], word=word, blank_sign=blank and word is None, background=background)


def mentioned_attributes(caption: str) -> dict[str, set[str]]:
    """Shapes, colours and quoted words mentioned in a caption (for checks and analysis)."""
    low = caption.lower()
    tokens = set(re.findall(r"[a-z]+", re.sub(r'"[^"]*"', " ", low)))
    return {
        "shapes": tokens & set(SHAPES),
        "colors": tokens & set(COLOR_NAMES),
        "words": set(re.findall(r'"([^"]*)"', low)),
        "backgrounds": {k for k, w in BACKGROUND_WORDS.items() if w in tokens} & set(BACKGROUNDS),
        "positions": {p for p in POSITION_NAMES for ph in POSITION_PHRASES[p] if ph in low},
    }
