"""Word noise and meaning-preserving table substitutions: dropout, shuffle, synonyms and paraphrases.

Word dropout and shuffle are EDA's random deletion and swap (Wei & Zou 2019, *EDA: Easy Data
Augmentation Techniques*; family ``"word"``); :func:`synonym` and :func:`paraphrase` replace terms or
frames from the shipped tables (family ``"meaning-preserving"``). See :mod:`vlmkit.perturb.text`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vlmkit.errors import InputError
from vlmkit.perturb.text.base import REFERENCE, WORD_RATES, change_count, register_text_perturbation
from vlmkit.perturb.text.spans import (
    apply_edits,
    check_keep,
    choose,
    norm_phrase,
    phrase_regex,
    phrase_spans,
    protected_mask,
    quoted_interior,
    word_spans,
)
from vlmkit.perturb.text.tables import paraphrase_groups, synonym_groups

# ----------------------------------------------------------------------------------------------------
# Word noise
# ----------------------------------------------------------------------------------------------------


@register_text_perturbation("word_dropout", family="word", preserves_meaning=False, reference=REFERENCE)
def word_dropout(text: str, severity: int, rng: np.random.Generator, *, keep: str | Sequence[str] = (),
                 keep_fields: bool = False) -> str:
    """Delete ``k`` random words (EDA's random deletion), never all of them.

    Expected change: with ``N`` whitespace-separated words of which ``n`` are unprotected, ``k =
    min(N - 1, change_count(WORD_RATES[severity], n))`` — a 10-word caption loses 1, 2, 3, 4, 5 words at
    severities 1–5; the kept words keep their order and the whitespace before them; a one-word text is
    unchanged.

    Args:
        text: The string.
        severity: 0–5.
        rng: Generator (supplied by the registered wrapper).
        keep: Substrings never altered (words holding them are never dropped).
        keep_fields: Protect ``str.format`` fields (``{}``).
    """
    keep_t, kf = check_keep("word_dropout", keep, keep_fields)
    words = word_spans(text)
    prot = protected_mask(text, keep_t, kf)
    cand = [w for w, (a, b) in enumerate(words) if not prot[a:b].any()]
    k = min(len(words) - 1, change_count(WORD_RATES[severity], len(cand)))
    if k <= 0:
        return text
    gone = {cand[j] for j in choose(rng, len(cand), k)}
    out, prev_end, first = [text[:words[0][0]]], words[0][0], True
    for w, (a, b) in enumerate(words):
        sep = text[prev_end:a]
        prev_end = b
        if w in gone:
            continue
        out.append(text[a:b] if first else sep + text[a:b])
        first = False
    out.append(text[words[-1][1]:])
    return "".join(out)


@register_text_perturbation("word_shuffle", family="word", preserves_meaning=False, reference=REFERENCE)
def word_shuffle(text: str, severity: int, rng: np.random.Generator, *, keep: str | Sequence[str] = (),
                 keep_fields: bool = False) -> str:
    """Permute ``m`` words among their own positions (EDA's random swap, generalised to a cycle).

    Expected change: with ``N`` words, ``m = min(D, max(2, change_count(WORD_RATES[severity], N)))``
    positions, where ``D`` is the number of distinct words; ``m`` positions holding pairwise different
    words are drawn and rotated along a random cycle, so exactly ``m`` positions hold a different word
    and the multiset of words and the whitespace are unchanged (``D < 2``: unchanged). Protected words
    may move, whole.

    Args:
        text: The string.
        severity: 0–5.
        rng: Generator (supplied by the registered wrapper).
        keep: Substrings never altered (they may move with their word).
        keep_fields: Protect ``str.format`` fields (``{}``).
    """
    check_keep("word_shuffle", keep, keep_fields)
    words = word_spans(text)
    if severity == 0 or not words:
        return text
    tokens = [text[a:b] for a, b in words]
    m = max(2, change_count(WORD_RATES[severity], len(words)))
    chosen, seen = [], set()
    for j in rng.permutation(len(words)):
        if tokens[int(j)] not in seen:
            seen.add(tokens[int(j)])
            chosen.append(int(j))
            if len(chosen) == m:
                break
    if len(chosen) < 2:
        return text
    new = list(tokens)
    for a, b in zip(chosen, chosen[1:] + chosen[:1]):  # a random cycle: each chosen word moves on
        new[b] = tokens[a]
    out, prev = [], 0
    for (a, b), tok in zip(words, new):
        out += [text[prev:a], tok]
        prev = b
    out.append(text[prev:])
    return "".join(out)


# ----------------------------------------------------------------------------------------------------
# Meaning-preserving table substitutions (synonyms, paraphrases)
# ----------------------------------------------------------------------------------------------------


def _check_groups(name: str, arg: str, groups: Any) -> list[list[str]]:
    ok = isinstance(groups, (list, tuple)) and all(
        isinstance(g, (list, tuple)) and len(g) >= 2 and all(isinstance(w, str) and w.strip() for w in g)
        for g in groups)
    if not ok:
        raise InputError(f"{name}: {arg} must be a list of groups, each a list of two or more non-empty strings")
    return [[norm_phrase(w) for w in g] for g in groups]


def _substitute_groups(name: str, text: str, severity: int, rng: np.random.Generator,
                       groups: list[list[str]], keep: tuple[str, ...], keep_fields: bool,
                       blocked: np.ndarray | None = None) -> str:
    """Replace ``min(severity, n)`` group members by another member of their group."""
    where: dict[str, int] = {}
    for gi, g in enumerate(groups):
        for w in g:
            if where.setdefault(w, gi) != gi:
                raise InputError(f"{name}: {w!r} is in two groups; a term may belong to one group only")
    base = protected_mask(text, keep, keep_fields)
    blocked = base if blocked is None else (base | blocked)
    spans = phrase_spans(text, phrase_regex(list(where)), blocked)
    edits = []
    for j in choose(rng, len(spans), severity):
        a, b, found = spans[j]
        others = [w for w in groups[where[found]] if w != found]
        edits.append((a, b, others[int(rng.integers(len(others)))]))
    return apply_edits(text, edits)


@register_text_perturbation("synonym", family="meaning-preserving", preserves_meaning=True,
                            reference=REFERENCE + "; EDA synonym replacement (Wei & Zou 2019)")
def synonym(text: str, severity: int, rng: np.random.Generator, *, groups: Sequence[Sequence[str]] | None = None,
            keep: str | Sequence[str] = (), keep_fields: bool = False) -> str:
    """Replace ``min(severity, n)`` terms by a synonym from the table.

    Expected change: ``n`` is the number of (non-overlapping, longest-first) matches of table terms
    outside quotes and protected spans; ``min(severity, n)`` of them, drawn at random, are each replaced
    by a different member of their group (case kept, an adjacent ``a``/``an`` fixed). Everything else is
    unchanged.

    Args:
        text: The string.
        severity: 0–5.
        rng: Generator (supplied by the registered wrapper).
        groups: Synonym groups (a term in one group only); ``None``: :func:`synonym_groups` (the toy
            world's and COCO's, ``assets/synonyms.json``).
        keep: Substrings never altered.
        keep_fields: Protect ``str.format`` fields (``{}``).
    """
    keep_t, kf = check_keep("synonym", keep, keep_fields)
    table = _check_groups("synonym", "groups", synonym_groups() if groups is None else groups)
    return _substitute_groups("synonym", text, severity, rng, table, keep_t, kf, quoted_interior(text))


@register_text_perturbation("paraphrase", family="meaning-preserving", preserves_meaning=True,
                            reference=REFERENCE)
def paraphrase(text: str, severity: int, rng: np.random.Generator, *,
               groups: Sequence[Sequence[str]] | None = None, keep: str | Sequence[str] = (),
               keep_fields: bool = False) -> str:
    """Rewrite ``min(severity, n)`` frames or constructions with an equivalent one from the table.

    The shipped groups (:func:`paraphrase_groups`) rewrite prompt and caption frames (``a photo of`` ↔
    ``a picture of`` ↔ ``an image of`` ↔ ``an image showing`` ..., ``there is`` ↔ ``there's``),
    prepositions (``next to`` ↔ ``beside``), the toy grammar's alternatives (``in the center`` ↔ ``in
    the middle``) and sign transcriptions (``that says "`` ↔ ``that reads "``).

    Expected change: as :func:`synonym`, over the paraphrase table: ``min(severity, n)`` of the ``n``
    matches outside quotes and protected spans are rewritten.

    Args:
        text: The string.
        severity: 0–5.
        rng: Generator (supplied by the registered wrapper).
        groups: Paraphrase groups; ``None``: the shipped ones.
        keep: Substrings never altered.
        keep_fields: Protect ``str.format`` fields (``{}``).
    """
    keep_t, kf = check_keep("paraphrase", keep, keep_fields)
    table = _check_groups("paraphrase", "groups", paraphrase_groups() if groups is None else groups)
    return _substitute_groups("paraphrase", text, severity, rng, table, keep_t, kf, quoted_interior(text))


__all__ = ["paraphrase", "synonym", "word_dropout", "word_shuffle"]
