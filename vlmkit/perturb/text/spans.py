"""Protected spans, phrase matching and editing helpers shared by the text perturbations.

Candidates of every text perturbation exclude *protected spans* (``keep`` substrings and, with
``keep_fields``, ``str.format`` fields; see :mod:`vlmkit.perturb.text`); the table substitutions match
phrases at word boundaries (:func:`phrase_regex`, :func:`phrase_spans`) and write replacements back with
the replaced text's case and an agreeing article (:func:`apply_edits`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from vlmkit.errors import InputError

#: A ``str.format`` field: ``"{}"``, ``"{0}"``, ``"{name}"``.
FORMAT_FIELD = re.compile(r"\{[^{}]*\}")
#: The characters of a word, as a regex character-class body (used for word boundaries).
ALNUM = "A-Za-z0-9"


# ----------------------------------------------------------------------------------------------------
# Protected spans and small helpers
# ----------------------------------------------------------------------------------------------------


def check_keep(name: str, keep: Any, keep_fields: Any) -> tuple[tuple[str, ...], bool]:
    """``keep`` as a tuple of non-empty strings and ``keep_fields`` as a bool, else
    :class:`InputError` naming the argument (``name`` is the perturbation, for the message)."""
    items = (keep,) if isinstance(keep, str) else keep
    if items is None:
        items = ()
    if not isinstance(items, (list, tuple)) or not all(isinstance(k, str) and k for k in items):
        raise InputError(f"{name}: keep={keep!r} must be a non-empty string or a list of non-empty strings")
    if not isinstance(keep_fields, bool):
        raise InputError(f"{name}: keep_fields={keep_fields!r} must be a bool")
    return tuple(items), keep_fields


def protected_mask(text: str, keep: tuple[str, ...], keep_fields: bool) -> np.ndarray:
    """``(len(text),)`` bool: characters inside a ``keep`` substring or a format field."""
    mask = np.zeros(len(text), dtype=bool)
    for k in keep:
        for m in re.finditer(re.escape(k), text):
            mask[m.start():m.end()] = True
    if keep_fields:
        for m in FORMAT_FIELD.finditer(text):
            mask[m.start():m.end()] = True
    return mask


def quoted_interior(text: str) -> np.ndarray:
    """``(len(text),)`` bool: characters strictly between a pair of double quotes."""
    mask = np.zeros(len(text), dtype=bool)
    for m in re.finditer(r'"[^"]*"', text):
        mask[m.start() + 1:m.end() - 1] = True
    return mask


def match_case(src: str, rep: str) -> str:
    """``rep`` in the case of ``src``: UPPER (3+ letters), Title, or as given."""
    if len(src) > 2 and src.isupper():
        return rep.upper()
    if src[:1].isupper() and src[1:] == src[1:].lower():
        return rep[:1].upper() + rep[1:]
    return rep


_ARTICLE_BEFORE = re.compile(rf"(?<![{ALNUM}])(a|an)(\s+)$", re.IGNORECASE)


def fix_article(prefix: str, following: str) -> str:
    """Make an article ending ``prefix`` agree with ``following`` (``a`` / ``an`` by the vowel rule)."""
    m = _ARTICLE_BEFORE.search(prefix)
    if not m or not following:
        return prefix
    art = match_case(m.group(1), "an" if following[0].lower() in "aeiou" else "a")
    return prefix[:m.start(1)] + art + prefix[m.end(1):]


def word_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of every whitespace-separated word."""
    return [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]


def choose(rng: np.random.Generator, n: int, k: int) -> list[int]:
    """``k`` distinct indices of ``range(n)``, ascending."""
    if k <= 0 or n <= 0:
        return []
    return sorted(int(i) for i in rng.choice(n, size=min(k, n), replace=False))


# ----------------------------------------------------------------------------------------------------
# Phrase matching and edits
# ----------------------------------------------------------------------------------------------------


def norm_phrase(phrase: str) -> str:
    """``phrase`` lower-cased with its whitespace runs collapsed to single spaces."""
    return " ".join(phrase.lower().split())


def phrase_regex(phrases: Sequence[str]) -> re.Pattern[str]:
    """One case-insensitive pattern matching any phrase at word boundaries, longest phrase first."""
    return _compiled_phrases(tuple(sorted({norm_phrase(p) for p in phrases}, key=lambda s: (-len(s), s))))


@functools.lru_cache(maxsize=64)
def _compiled_phrases(phrases: tuple[str, ...]) -> re.Pattern[str]:
    parts = []
    for p in phrases:
        body = r"\s+".join(re.escape(w) for w in p.split(" "))
        parts.append(body + (rf"(?![{ALNUM}])" if p[-1].isalnum() else ""))
    return re.compile(rf"(?<![{ALNUM}])(?:" + "|".join(parts) + ")", re.IGNORECASE)


def phrase_spans(text: str, pattern: re.Pattern[str], blocked: np.ndarray) -> list[tuple[int, int, str]]:
    """Non-overlapping matches ``(start, end, normalised phrase)`` that touch no blocked character."""
    return [(m.start(), m.end(), norm_phrase(m.group(0))) for m in pattern.finditer(text)
            if not blocked[m.start():m.end()].any()]


def apply_edits(text: str, edits: Sequence[tuple[int, int, str]]) -> str:
    """Replace the spans of ``edits`` (non-overlapping) right to left, keeping case (an all-caps text stays
    all caps) and fixing articles."""
    out, shouting = text, text.isupper()
    for a, b, rep in sorted(edits, reverse=True):
        rep = rep.upper() if shouting else match_case(text[a:b], rep)
        out = fix_article(out[:a], rep) + rep + out[b:]
    return out


__all__ = ["ALNUM", "FORMAT_FIELD", "apply_edits", "check_keep", "choose", "fix_article", "match_case", "norm_phrase",
           "phrase_regex", "phrase_spans", "protected_mask", "quoted_interior", "word_spans"]
