"""Meaning-changing swaps: colours, objects and counts replaced from the shipped vocabularies.

Family ``"meaning-changing"`` (the sensitivity side of Lee et al. 2025, *Language-Guided Invariance
Probing of Vision-Language Models*): each op changes ``min(severity, n)`` of the ``n`` candidates outside
quotes and protected spans. See :mod:`vlmkit.perturb.text`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vlmkit.errors import InputError
from vlmkit.perturb.text.base import REFERENCE, register_text_perturbation
from vlmkit.perturb.text.spans import (
    ALNUM,
    apply_edits,
    check_keep,
    choose,
    norm_phrase,
    phrase_regex,
    phrase_spans,
    protected_mask,
    quoted_interior,
)
from vlmkit.perturb.text.tables import load_tables, plural


def _check_vocab(name: str, arg: str, vocab: Any, shipped: Mapping[str, Sequence[str]]) -> list[str]:
    if isinstance(vocab, str):
        if vocab not in shipped:
            raise InputError(f"{name}: {arg}={vocab!r} is not a shipped vocabulary; expected one of "
                             f"{sorted(shipped)} or a list of words")
        return [norm_phrase(w) for w in shipped[vocab]]
    if not isinstance(vocab, (list, tuple)) or not all(isinstance(w, str) and w.strip() for w in vocab) \
            or len({norm_phrase(w) for w in vocab}) < 2:
        raise InputError(f"{name}: {arg} must be a shipped vocabulary name or a list of two or more distinct words")
    return list(dict.fromkeys(norm_phrase(w) for w in vocab))


def _swap_vocab(name: str, text: str, severity: int, rng: np.random.Generator, vocabs: list[list[str]],
                keep: tuple[str, ...], keep_fields: bool) -> str:
    """Replace ``min(severity, n)`` vocabulary words by another word of the same vocabulary and number."""
    where: dict[str, tuple[int, bool]] = {}  # form -> (vocabulary, is plural)
    for vi, vocab in enumerate(vocabs):
        for w in vocab:
            where.setdefault(w, (vi, False))
            if plural(w) != w:
                where.setdefault(plural(w), (vi, True))
    blocked = protected_mask(text, keep, keep_fields) | quoted_interior(text)
    spans = phrase_spans(text, phrase_regex(list(where)), blocked)
    edits = []
    for j in choose(rng, len(spans), severity):
        a, b, found = spans[j]
        vi, is_plural = where[found]
        singular = next(w for w in vocabs[vi] if w == found or plural(w) == found)
        others = [w for w in vocabs[vi] if w != singular and (plural(w) if is_plural else w) != found]
        new = others[int(rng.integers(len(others)))]
        edits.append((a, b, plural(new) if is_plural else new))
    return apply_edits(text, edits)


@register_text_perturbation("swap_color", family="meaning-changing", preserves_meaning=False, reference=REFERENCE)
def swap_color(text: str, severity: int, rng: np.random.Generator, *, colors: str | Sequence[str] = "basic",
               keep: str | Sequence[str] = (), keep_fields: bool = False) -> str:
    """Replace ``min(severity, n)`` colour words by a different colour of the vocabulary.

    Expected change: ``n`` colour words of ``colors`` outside quotes and protected spans; ``min(severity,
    n)`` of them are each replaced by another colour of ``colors`` (an adjacent article fixed: ``a red
    apple`` → ``an orange apple``). With the default vocabulary ``orange`` the fruit counts as a colour;
    pass a list without it for captions about fruit.

    Args:
        text: The string.
        severity: 0–5.
        rng: Generator (supplied by the registered wrapper).
        colors: A shipped vocabulary (``"basic"``: 11 basic colour terms; ``"toyworld"``: the toy world's
            8) or a list of colour words.
        keep: Substrings never altered.
        keep_fields: Protect ``str.format`` fields (``{}``).
    """
    keep_t, kf = check_keep("swap_color", keep, keep_fields)
    vocab = _check_vocab("swap_color", "colors", colors, load_tables()["colors"])
    blocked = protected_mask(text, keep_t, kf) | quoted_interior(text)
    spans = phrase_spans(text, phrase_regex(vocab), blocked)
    edits = []
    for j in choose(rng, len(spans), severity):
        a, b, found = spans[j]
        others = [c for c in vocab if c != found]
        edits.append((a, b, others[int(rng.integers(len(others)))]))
    return apply_edits(text, edits)


@register_text_perturbation("swap_object", family="meaning-changing", preserves_meaning=False, reference=REFERENCE)
def swap_object(text: str, severity: int, rng: np.random.Generator, *,
                vocabulary: str | Sequence[str] | None = None, keep: str | Sequence[str] = (),
                keep_fields: bool = False) -> str:
    """Replace ``min(severity, n)`` object nouns by a different object of the same vocabulary.

    Expected change: ``n`` matches (singular or plural, longest first: ``hot dog`` before ``dog``) of the
    vocabulary's nouns outside quotes and protected spans; ``min(severity, n)`` of them are each replaced
    by another noun of the same vocabulary in the same grammatical number (``two dogs`` → ``two
    cats``), with an adjacent article fixed (``a dog`` → ``an elephant``).

    Args:
        text: The string.
        severity: 0–5.
        rng: Generator (supplied by the registered wrapper).
        vocabulary: ``None``: every shipped vocabulary (``"coco"``: 77 of the 80 COCO classes, without the
            ambiguous ``orange``, ``tie``, ``remote``; ``"toyworld"``: the 8 shapes), each match replaced
            within its own; a shipped name; or a list of singular nouns.
        keep: Substrings never altered.
        keep_fields: Protect ``str.format`` fields (``{}``).
    """
    keep_t, kf = check_keep("swap_object", keep, keep_fields)
    shipped = load_tables()["objects"]
    if vocabulary is None:
        vocabs = [[norm_phrase(w) for w in shipped[k]] for k in sorted(shipped)]
    else:
        vocabs = [_check_vocab("swap_object", "vocabulary", vocabulary, shipped)]
    return _swap_vocab("swap_object", text, severity, rng, vocabs, keep_t, kf)


@functools.lru_cache(maxsize=1)
def _count_nouns() -> dict[str, tuple[str, bool]]:
    """Form -> (singular, is plural) of every head noun :func:`swap_count` knows: the last word of each
    shipped object and the shipped nouns (singular forms win when a form is both)."""
    tables = load_tables()
    singulars = sorted({norm_phrase(w).split(" ")[-1] for v in tables["objects"].values() for w in v}
                       | {norm_phrase(w) for w in tables["nouns"]})
    nouns = {w: (w, False) for w in singulars}
    for w in singulars:
        nouns.setdefault(plural(w), (w, True))
    return nouns


_NP_BOUNDARY = frozenset({"of", "on", "in", "at", "with", "and", "or", "near", "next", "by", "to", "is", "are",
                          "that", "which", "who", "from", "for", "under", "over", "behind", "beside", "while",
                          "a", "an", "the", "its", "his", "her", "their"})


def _head_noun(text: str, start: int, nouns: Mapping[str, tuple[str, bool]], blocked: np.ndarray,
               max_words: int = 4) -> tuple[int, int, str, bool] | None:
    """The head noun of the noun phrase beginning at ``start``: the last of the first run of known nouns
    within ``max_words`` words, before any boundary word or punctuation. ``(start, end, singular, plural?)``."""
    head = None
    for n, m in enumerate(re.finditer(r"\S+", text[start:])):
        a, b = start + m.start(), start + m.end()
        word = m.group(0)
        core = word.rstrip(".,;:!?")
        if n >= max_words or blocked[a:b].any() or not re.fullmatch(r"[A-Za-z]+", core):
            break
        low = core.lower()
        if low in nouns:
            head = (a, a + len(core), *nouns[low])
        elif head is not None or low in _NP_BOUNDARY:
            break
        if core != word:  # punctuation ends the phrase
            break
    return head


@register_text_perturbation("swap_count", family="meaning-changing", preserves_meaning=False, reference=REFERENCE)
def swap_count(text: str, severity: int, rng: np.random.Generator, *, plural_word: str = "two",
               keep: str | Sequence[str] = (), keep_fields: bool = False) -> str:
    """Change ``min(severity, n)`` counts: ``a dog`` → ``two dogs``, ``three cats`` → ``five cats``.

    Candidates (outside quotes and protected spans): an article ``a``/``an`` whose noun phrase has a
    known singular head noun (the shipped objects and nouns; ``a photo of`` has none) becomes
    ``plural_word`` with the head pluralised; a number word ``one``–``ten`` becomes another number word,
    the head inflected when it crosses one/many (a number whose head is unknown only moves among the
    numbers of the same grammatical number; ``one`` with an unknown head is no candidate).

    Expected change: ``min(severity, n)`` of the ``n`` candidates, each changing exactly one count word
    (and at most its head noun's inflection). Verb agreement is not adjusted (``a dog is`` → ``two dogs
    is``): the point is the changed count, which the text encoder sees either way.

    Args:
        text: The string.
        severity: 0–5.
        rng: Generator (supplied by the registered wrapper).
        plural_word: What a singular article becomes (a number word of two or more).
        keep: Substrings never altered.
        keep_fields: Protect ``str.format`` fields (``{}``).
    """
    keep_t, kf = check_keep("swap_count", keep, keep_fields)
    numbers = [n.lower() for n in load_tables()["numbers"]]
    if not isinstance(plural_word, str) or plural_word.lower() not in numbers[1:]:
        raise InputError(f"swap_count: plural_word={plural_word!r}; expected one of {numbers[1:]}")
    nouns = _count_nouns()
    blocked = protected_mask(text, keep_t, kf) | quoted_interior(text)
    cands: list[tuple[int, int, tuple[int, int, str, bool] | None, list[str]]] = []
    for m in re.finditer(rf"(?<![{ALNUM}])[A-Za-z]+(?![{ALNUM}])", text):
        low = m.group(0).lower()
        if (low not in numbers and low not in ("a", "an")) or blocked[m.start():m.end()].any():
            continue
        head = _head_noun(text, m.end(), nouns, blocked)
        if low in ("a", "an"):
            options = [plural_word.lower()] if head is not None and not head[3] else []
        elif low == "one":
            options = list(numbers[1:]) if head is not None and not head[3] else []
        else:
            options = [n for n in numbers[1:] if n != low] + (["one"] if head is not None and head[3] else [])
        if options:
            cands.append((m.start(), m.end(), head, options))
    edits: list[tuple[int, int, str]] = []
    taken: list[tuple[int, int]] = []
    for j in rng.permutation(len(cands)):
        if len(taken) == severity:
            break
        a, b, head, options = cands[int(j)]
        end = head[1] if head is not None else b
        if any(a < tb and ta < end for ta, tb in taken):
            continue
        new = options[int(rng.integers(len(options)))]
        taken.append((a, end))
        edits.append((a, b, new))
        if head is not None and (new != "one") != head[3]:  # crossing one/many: inflect the head
            edits.append((head[0], head[1], plural(head[2]) if new != "one" else head[2]))
    return apply_edits(text, edits)


__all__ = ["swap_color", "swap_count", "swap_object"]
