"""Text side of the toy captioner (``toycap:``): prompts, the word-level vocabulary and the targets.

Holds the prompt and question formats (:data:`DESCRIBE_PROMPT`, :data:`QUESTION_FORMAT`,
:data:`QUESTION_TEMPLATES`), the reading order of captions (:data:`POSITION_ORDER`), the special
tokens (:data:`SPECIALS` and their ids ``PAD``, ``BOS``, ``EOS``, ``UNK``), the tokenizer and
:class:`Vocabulary` over the caption grammar, and the training targets built from the renderer's
ground truth: :func:`target_caption` (the caption) and :func:`sample_question` (a yes/no question
and its answer), with :func:`question_prompt` to wrap a question. The model itself is in
:mod:`vlmkit.toyworld.captioning`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from .grammar import (
    BACKGROUND_WORDS,
    POSITION_PHRASES,
    SIZE_WORDS,
    article,
    join_phrases,
    object_phrase,
    visible_objects,
)
from .world import COLOR_NAMES, OTHER_WORDS, SHAPES, Scene

#: The captioning prompt.
DESCRIBE_PROMPT: str = "describe:"
#: How a question becomes a prompt.
QUESTION_FORMAT: str = "question: {question} answer:"
#: Yes/no question templates the captioner was trained on (``{a}`` is the article of what follows).
QUESTION_TEMPLATES: dict[str, str] = {
    "shape": "is there {a} {shape} ?",
    "color": "is there {a} {color} object ?",
    "color_shape": "is there {a} {color} {shape} ?",
    "sign": "is there a sign ?",
}
#: Order in which :func:`target_caption` lists objects (positions are unique within a scene).
POSITION_ORDER: tuple[str, ...] = ("top", "left", "center", "right", "bottom")
#: Special tokens, in id order.
SPECIALS: tuple[str, ...] = ("<pad>", "<bos>", "<eos>", "<unk>")
PAD, BOS, EOS, UNK = 0, 1, 2, 3

_TOKEN_RE = re.compile(r'[",?.]|[^\s",?.]+')
_QUESTION_KINDS: tuple[str, ...] = ("shape", "color", "color_shape", "sign")
_QUESTION_P: tuple[float, ...] = (0.4, 0.2, 0.3, 0.1)


# ----------------------------------------------------------------------------------------------------
# Vocabulary
# ----------------------------------------------------------------------------------------------------


def tokenize(text: str) -> list[str]:
    """Split ``text`` into lower-case word tokens; ``" , ? .`` are tokens of their own."""
    return _TOKEN_RE.findall(text.lower())


def default_words() -> list[str]:
    """The word list of a new :class:`Vocabulary`: the grammar's words, prompt words and answers.

    Built from the world's and the grammar's vocabularies (shapes, colours, sign words, size words,
    position phrases, background words, caption templates), so any caption of the grammar encodes
    without ``<unk>``; the list is stored in each captioner's ``config.json`` and read back from there.
    """
    from .grammar import (
        SCENE_TEMPLATES,
        SHORT_TEMPLATES,
        SIGN_TEMPLATES,
        SUBJECT_TEMPLATES,
        TRANSCRIBE_TEMPLATES,
    )

    words: list[str] = []
    sources: list[str] = [*SHAPES, *COLOR_NAMES, *OTHER_WORDS]
    sources += [w for ws in SIZE_WORDS.values() for w in ws]
    sources += [p for ps in POSITION_PHRASES.values() for p in ps]
    sources += list(BACKGROUND_WORDS.values())
    for t in (*SCENE_TEMPLATES, *SHORT_TEMPLATES, *SIGN_TEMPLATES, *SUBJECT_TEMPLATES, *TRANSCRIBE_TEMPLATES):
        sources.append(re.sub(r"\{[^}]*\}", " ", t))
    sources += ["a an background blank sign label , . \" ?", DESCRIBE_PROMPT, QUESTION_FORMAT.format(question="")]
    sources += [t.replace("{a}", "a an").replace("{shape}", "").replace("{color}", "") for t in QUESTION_TEMPLATES.values()]
    sources += ["yes no any does the say"]
    for s in sources:
        for w in tokenize(s):
            if w not in words:
                words.append(w)
    return words


class Vocabulary:
    """Word-level vocabulary: ``encode`` / ``decode`` between grammar text and token ids.

    Attributes:
        tokens: Id → token; the first four are :data:`SPECIALS`.
    """

    def __init__(self, words: Sequence[str]) -> None:
        words = [w for w in words if w not in SPECIALS]
        self.tokens: list[str] = [*SPECIALS, *dict.fromkeys(words)]
        self.index: dict[str, int] = {t: i for i, t in enumerate(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (unknown words → ``<unk>``; no ``<bos>`` / ``<eos>``)."""
        return [self.index.get(t, UNK) for t in tokenize(text)]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of token ids (stops at ``<eos>``, skips other specials); inverse of :meth:`encode` on grammar text.

        Commas, question marks and full stops attach to the word before; a pair of ``"`` wraps the
        words between them (``says "star"``).
        """
        out: list[str] = []
        glue_next, quote_open = True, False
        for i in ids:
            i = int(i)
            if i == EOS:
                break
            if i < len(SPECIALS):
                continue
            tok = self.tokens[i]
            if tok in (",", "?", "."):
                out.append(tok)
                glue_next = False
            elif tok == '"':
                if quote_open:
                    out.append('"')
                    glue_next = False
                else:
                    out.append('"' if glue_next else ' "')
                    glue_next = True
                quote_open = not quote_open
            else:
                out.append(tok if glue_next else " " + tok)
                glue_next = False
        return "".join(out)


# ----------------------------------------------------------------------------------------------------
# Targets from ground truth
# ----------------------------------------------------------------------------------------------------


def target_caption(scene: Scene) -> str:
    """The caption the captioner is trained to produce: the objects and the sign, as the grammar says them.

    Every visible object (:func:`~vlmkit.toyworld.grammar.visible_objects`, at least 35% of its pixels
    shown) with size, colour, shape and position (:func:`~vlmkit.toyworld.grammar.object_phrase`),
    listed in :data:`POSITION_ORDER` (top, left, centre, right, bottom) — drawing order, which
    :func:`~vlmkit.toyworld.grammar.describe` uses, is not visible in the image — then the sign
    (transcribed, or ``a blank sign``), e.g. ``'a photo of a large red star on the left and a small
    blue ring at the bottom, and a sign that says "cat"'``. The background is left out: the shipped
    tower's features do not tell backgrounds apart (a linear probe of its pooled features is near
    chance), and no metric here scores it.
    """
    objs = sorted(visible_objects(scene), key=lambda o: POSITION_ORDER.index(o.position))
    sign = scene.sign
    if not objs:
        if sign is None:
            return "a photo"
        return f'a photo of a sign that says "{sign.word}"' if sign.word else "a photo of a blank sign"
    text = f"a photo of {join_phrases([object_phrase(o) for o in objs])}"
    if sign is not None:
        text += f', and a sign that says "{sign.word}"' if sign.word else ", and a blank sign"
    return text


def sample_question(scene: Scene, rng: np.random.Generator) -> tuple[str, str]:
    """A yes/no question about ``scene`` and its ground-truth answer (about half ``yes``).

    ``yes`` questions name an attribute of a visible object; ``no`` questions name a shape, colour
    or colour-shape pair that no object in the scene has (occluded ones included), so every answer is
    unambiguous. The kinds (:data:`QUESTION_TEMPLATES`) are drawn with probabilities 0.4 (shape), 0.2
    (colour), 0.3 (colour and shape), 0.1 (sign present).

    Returns:
        ``(question, "yes" | "no")``, the question without the prompt around it.
    """
    return _question_from_facts(_scene_facts(scene), rng)


_Facts = tuple[list[tuple[str, str]], set[tuple[str, str]], bool]


def _scene_facts(scene: Scene) -> _Facts:
    """``(visible (colour, shape) pairs, all drawn pairs, has a sign)``: what questions are about."""
    return [(o.color, o.shape) for o in visible_objects(scene)], {(o.color, o.shape) for o in scene.objects}, \
        scene.sign is not None


def _question_from_facts(facts: _Facts, rng: np.random.Generator) -> tuple[str, str]:
    vis, present, has_sign = facts
    kind = _QUESTION_KINDS[int(rng.choice(len(_QUESTION_KINDS), p=_QUESTION_P))]
    if kind == "sign":
        return QUESTION_TEMPLATES["sign"], "yes" if has_sign else "no"
    want_yes = bool(vis) and rng.random() < 0.5
    if want_yes:
        color, shape = vis[int(rng.integers(len(vis)))]
    elif kind == "shape":
        options = [s for s in SHAPES if s not in {p[1] for p in present}]
        color, shape = "", options[int(rng.integers(len(options)))]
    elif kind == "color":
        options = [c for c in COLOR_NAMES if c not in {p[0] for p in present}]
        color, shape = options[int(rng.integers(len(options)))], ""
    else:
        while True:
            color = COLOR_NAMES[int(rng.integers(len(COLOR_NAMES)))]
            shape = SHAPES[int(rng.integers(len(SHAPES)))]
            if (color, shape) not in present:
                break
    first = shape if kind == "shape" else color
    return QUESTION_TEMPLATES[kind].format(a=article(first), shape=shape, color=color), "yes" if want_yes else "no"


def question_prompt(question: str) -> str:
    """The prompt of a question: :data:`QUESTION_FORMAT` unless ``question`` already is a prompt."""
    q = question.strip()
    if q.lower().startswith(("question:", DESCRIBE_PROMPT)):
        return q
    return QUESTION_FORMAT.format(question=q)



__all__ = [
    "BOS",
    "DESCRIBE_PROMPT",
    "EOS",
    "PAD",
    "POSITION_ORDER",
    "QUESTION_FORMAT",
    "QUESTION_TEMPLATES",
    "SPECIALS",
    "UNK",
    "Vocabulary",
    "default_words",
    "question_prompt",
    "sample_question",
    "target_caption",
    "tokenize",
]
