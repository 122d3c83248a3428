"""Text perturbations: registered, seeded, pure functions on strings (captions, prompts, class names).

The contract, the text counterpart of :mod:`vlmkit.perturb.base`::

    fn(text: str, severity: int = 1, *, rng: numpy.random.Generator | None = None, **params) -> str

* pure: the input is a string and so is the output; nothing else is read or written;
* deterministic given ``rng`` (random choices draw only from it; ``None`` means a generator seeded with
  0, so calls without one are still reproducible);
* severity 0 returns ``text`` unchanged; valid severities are 0–5, each with a documented number of
  changes (below); a bad severity, a non-string text or a bad parameter raises
  :class:`~vlmkit.errors.InputError` before any work.

Every function is registered in :data:`vlmkit.registry.TEXT_PERTURBATIONS` by
:func:`register_text_perturbation` with the metadata ``family`` (``"character"``, ``"word"``,
``"meaning-preserving"``, ``"meaning-changing"``) and ``preserves_meaning`` (``True`` only where the
meaning is kept by construction: synonyms and paraphrases; a typo can turn ``cat`` into ``car`` and a
dropped or moved word can change who does what, so noise is not counted as preserving).

Families, after the text perturbations of Qiu et al. 2022 (*Benchmarking Robustness of Multimodal
Image-Text Models under Distribution Shift*, arXiv:2212.08044: character-, word- and sentence-level
perturbations of retrieval captions) and the invariance/sensitivity split of Lee et al. 2025
(*Language-Guided Invariance Probing of Vision-Language Models*: a meaning-preserving rewrite should
move the text embedding little, a meaning-changing one a lot):

======================  ===================  ========================================================
name                    family               change at severity ``s`` (``n``: candidates in the text)
======================  ===================  ========================================================
``char_swap``           character            ``k`` disjoint transpositions of adjacent, different
                                             characters: exactly ``2k`` positions differ
``char_insert``         character            ``k`` random lowercase letters inserted: length ``+k``
``char_delete``         character            ``k`` characters deleted: length ``-k``
``keyboard_typo``       character            ``k`` letters/digits replaced by a QWERTY neighbour:
                                             exactly ``k`` positions differ
``word_dropout``        word                 ``k_w`` words deleted: word count ``-k_w``
``word_shuffle``        word                 ``m`` words permuted so that exactly ``m`` positions hold a
                                             different word
``synonym``             meaning-preserving   ``min(s, n)`` terms replaced by a synonym (table)
``paraphrase``          meaning-preserving   ``min(s, n)`` frames/constructions rewritten (table)
``swap_color``          meaning-changing     ``min(s, n)`` colour words replaced by another colour
``swap_count``          meaning-changing     ``min(s, n)`` counts changed (``a dog`` → ``two dogs``,
                                             ``three cats`` → ``five cats``)
``swap_object``         meaning-changing     ``min(s, n)`` object nouns replaced by another object of
                                             the same vocabulary
======================  ===================  ========================================================

with ``k = count(CHAR_RATES[s], n)``, ``k_w = count(WORD_RATES[s], n)`` and ``count(r, n) = min(n,
max(1, floor(r·n + 0.5)))`` for ``s ≥ 1`` and ``n ≥ 1`` (0 otherwise): character ops change a fraction
:data:`CHAR_RATES` of the candidate characters (non-whitespace characters outside protected spans),
word ops a fraction :data:`WORD_RATES` of the words (at least one), table ops ``s`` substitutions.
Character ops follow nlpaug's character augmenters and the keyboard/swap noise of Belinkov & Bisk 2018
(*Synthetic and Natural Noise Both Break Neural Machine Translation*); word dropout and shuffle are
EDA's random deletion and swap (Wei & Zou 2019, *EDA: Easy Data Augmentation Techniques*).

Tables (``assets/synonyms.json``, offline): synonym groups for the 80 MS-COCO classes, frequent COCO
caption words and the toy world's vocabulary (only true synonyms: ``large``/``big``,
``small``/``little``, ``photo``/``picture``/``image``; never a colour, shape, size-class or object
swap), paraphrase groups (``a photo of`` / ``a picture of`` / ``an image of`` ..., ``next to`` /
``beside``, ``in the center`` / ``in the middle`` ...), and the colour, number and object vocabularies
of the meaning-changing swaps. Substitutions keep the case of the replaced text, fix an adjacent
article (``a photo`` → ``an image``) and never touch quoted text (a sign's written word) — except
paraphrase phrases that end at the opening quote (``that says "`` → ``that reads "``).

Protected spans: every function takes ``keep`` (literal substrings never altered: their characters are
no candidates and words containing them are never dropped or replaced, though ``word_shuffle`` may move
them whole) and ``keep_fields`` (protect every ``str.format`` field such as ``{}``);
:func:`perturb_templates` sets ``keep_fields=True`` so zero-shot templates keep their placeholder.

Applying to lists: :func:`perturb_texts` gives text ``i`` its own generator derived from ``(seed,
name, severity, params, i)`` with the engine's counter-based rule (the same formula as
:func:`vlmkit.runtime.derive_seed`), so text ``i`` is perturbed the same way whatever the list length
or batching.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import string
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from typing import Any

import numpy as np

from vlmkit.errors import InputError
from vlmkit.registry import TEXT_PERTURBATIONS

TextFn = Callable[..., str]

#: Valid severities of every text perturbation (0 = unchanged).
SEVERITIES: tuple[int, ...] = (0, 1, 2, 3, 4, 5)
#: severity -> fraction of candidate characters changed by the character ops.
CHAR_RATES: tuple[float, ...] = (0.0, 0.02, 0.05, 0.10, 0.15, 0.25)
#: severity -> fraction of words changed by the word ops.
WORD_RATES: tuple[float, ...] = (0.0, 0.10, 0.20, 0.30, 0.40, 0.50)
#: Families a text perturbation may declare.
FAMILIES: tuple[str, ...] = ("character", "word", "meaning-preserving", "meaning-changing")

_REFERENCE = ("Qiu et al. 2022, arXiv:2212.08044 (text perturbations of multimodal models); "
              "Lee et al. 2025 (Language-Guided Invariance Probing of VLMs)")
_FIELD = re.compile(r"\{[^{}]*\}")  # a str.format field: "{}", "{0}", "{name}"
_ALNUM = "A-Za-z0-9"


# ----------------------------------------------------------------------------------------------------
# Contract and registration
# ----------------------------------------------------------------------------------------------------


def default_rng(rng: np.random.Generator | None) -> np.random.Generator:
    """``rng`` or a fresh generator seeded with 0 (calls without one stay reproducible)."""
    return np.random.default_rng(0) if rng is None else rng


def check_severity(name: str, severity: Any) -> int:
    """``severity`` as an int when it is one of :data:`SEVERITIES`, else :class:`InputError`."""
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or int(severity) not in SEVERITIES:
        raise InputError(f"{name}: severity={severity!r} is out of range; expected an int in {list(SEVERITIES)}")
    return int(severity)


def check_text(name: str, text: Any, arg: str = "text") -> str:
    """``text`` when it is a ``str``, else :class:`InputError` naming the argument."""
    if not isinstance(text, str):
        raise InputError(f"{name}: {arg} must be a str, got {type(text).__name__}")
    return text


def register_text_perturbation(name: str, family: str, preserves_meaning: bool,
                               **meta: Any) -> Callable[[TextFn], TextFn]:
    """Register a text perturbation in :data:`vlmkit.registry.TEXT_PERTURBATIONS`, with the contract's checks.

    The text form of :func:`vlmkit.perturb.base.register_perturbation`: the registered wrapper checks
    ``text`` (a ``str``), ``severity`` (an int in 0–5) and ``rng`` (a :class:`numpy.random.Generator` or
    ``None``), draws ``None`` as a generator seeded 0, calls ``fn(text, severity, rng, **params)`` and
    checks that the result is a string equal to ``text`` at severity 0. ``wrapped.raw`` is ``fn``.

    Args:
        name: Registry name.
        family: One of :data:`FAMILIES`.
        preserves_meaning: Whether the meaning is kept by construction (synonyms, paraphrases).
        **meta: Extra metadata (e.g. ``reference=...``).

    Raises:
        InputError: (when decorating) ``family`` is not one of :data:`FAMILIES`.
    """
    if family not in FAMILIES:
        raise InputError(f"register_text_perturbation({name!r}): family={family!r}; expected one of {FAMILIES}")

    def deco(fn: TextFn) -> TextFn:
        @functools.wraps(fn)
        def wrapped(text: str, severity: int = 1, *, rng: np.random.Generator | None = None, **params: Any) -> str:
            check_text(name, text)
            s = check_severity(name, severity)
            if rng is not None and not isinstance(rng, np.random.Generator):
                raise InputError(f"{name}: rng must be a numpy.random.Generator or None, got {type(rng).__name__}")
            out = fn(text, s, default_rng(rng), **params)
            if not isinstance(out, str) or (s == 0 and out != text):
                raise RuntimeError(f"{name} broke the text contract (severity {s}: {text!r} -> {out!r})")
            return out

        wrapped.raw = fn  # type: ignore[attr-defined]
        return TEXT_PERTURBATIONS.register(name, family=family, preserves_meaning=bool(preserves_meaning),
                                           severities=SEVERITIES, **meta)(wrapped)

    return deco


def change_count(rate: float, n: int) -> int:
    """``min(n, max(1, floor(rate·n + 0.5)))`` for ``rate > 0`` and ``n ≥ 1``, else 0 (round half up)."""
    if rate <= 0 or n <= 0:
        return 0
    return min(n, max(1, math.floor(rate * n + 0.5)))


# ----------------------------------------------------------------------------------------------------
# Shipped tables
# ----------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def load_tables() -> dict[str, Any]:
    """The parsed ``assets/synonyms.json`` (synonyms, paraphrases, colours, numbers, objects, nouns, plurals).

    Cached: do not modify the returned dict (take copies).
    """
    text = resources.files("vlmkit.perturb").joinpath("assets", "synonyms.json").read_text(encoding="utf-8")
    return json.loads(text)


def synonym_groups() -> list[list[str]]:
    """All synonym groups of the shipped table (toy world and COCO), as fresh lists."""
    return [list(g) for groups in load_tables()["synonyms"].values() for g in groups]


def paraphrase_groups() -> list[list[str]]:
    """All paraphrase groups of the shipped table, as fresh lists."""
    return [list(g) for g in load_tables()["paraphrases"]]


def plural(noun: str) -> str:
    """English plural of a (possibly multi-word) noun: the shipped irregulars, else the regular rules."""
    *head, last = noun.split(" ")
    irregular = load_tables()["plurals"]
    low = last.lower()
    if low in irregular:
        p = irregular[low]
    elif re.search(r"(s|x|z|ch|sh)$", low):
        p = low + "es"
    elif re.search(r"[^aeiou]y$", low):
        p = low[:-1] + "ies"
    else:
        p = low + "s"
    return " ".join([*head, p])


# ----------------------------------------------------------------------------------------------------
# Protected spans and small helpers
# ----------------------------------------------------------------------------------------------------


def _check_keep(name: str, keep: Any, keep_fields: Any) -> tuple[tuple[str, ...], bool]:
    items = (keep,) if isinstance(keep, str) else keep
    if items is None:
        items = ()
    if not isinstance(items, (list, tuple)) or not all(isinstance(k, str) and k for k in items):
        raise InputError(f"{name}: keep={keep!r} must be a non-empty string or a list of non-empty strings")
    if not isinstance(keep_fields, bool):
        raise InputError(f"{name}: keep_fields={keep_fields!r} must be a bool")
    return tuple(items), keep_fields


def _protected(text: str, keep: tuple[str, ...], keep_fields: bool) -> np.ndarray:
    """``(len(text),)`` bool: characters inside a ``keep`` substring or a format field."""
    mask = np.zeros(len(text), dtype=bool)
    for k in keep:
        for m in re.finditer(re.escape(k), text):
            mask[m.start():m.end()] = True
    if keep_fields:
        for m in _FIELD.finditer(text):
            mask[m.start():m.end()] = True
    return mask


def _quoted_interior(text: str) -> np.ndarray:
    """``(len(text),)`` bool: characters strictly between a pair of double quotes."""
    mask = np.zeros(len(text), dtype=bool)
    for m in re.finditer(r'"[^"]*"', text):
        mask[m.start() + 1:m.end() - 1] = True
    return mask


def _match_case(src: str, rep: str) -> str:
    """``rep`` in the case of ``src``: UPPER (3+ letters), Title, or as given."""
    if len(src) > 2 and src.isupper():
        return rep.upper()
    if src[:1].isupper() and src[1:] == src[1:].lower():
        return rep[:1].upper() + rep[1:]
    return rep


_ARTICLE_BEFORE = re.compile(rf"(?<![{_ALNUM}])(a|an)(\s+)$", re.IGNORECASE)


def _fix_article(prefix: str, following: str) -> str:
    """Make an article ending ``prefix`` agree with ``following`` (``a`` / ``an`` by the vowel rule)."""
    m = _ARTICLE_BEFORE.search(prefix)
    if not m or not following:
        return prefix
    art = _match_case(m.group(1), "an" if following[0].lower() in "aeiou" else "a")
    return prefix[:m.start(1)] + art + prefix[m.end(1):]


def _words(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of every whitespace-separated word."""
    return [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]


def _choose(rng: np.random.Generator, n: int, k: int) -> list[int]:
    """``k`` distinct indices of ``range(n)``, ascending."""
    if k <= 0 or n <= 0:
        return []
    return sorted(int(i) for i in rng.choice(n, size=min(k, n), replace=False))


# ----------------------------------------------------------------------------------------------------
# Character noise
# ----------------------------------------------------------------------------------------------------

_KEY_ROWS = ("1234567890", "qwertyuiop", "asdfghjkl", "zxcvbnm")


def _keyboard_neighbours() -> dict[str, str]:
    """QWERTY neighbours of each lowercase letter and digit: same row ±1 and the touching keys of the rows
    above and below (each row sits half a key right of the one above)."""
    out: dict[str, str] = {}
    for r, row in enumerate(_KEY_ROWS):
        for j, ch in enumerate(row):
            near = [row[j + d] for d in (-1, 1) if 0 <= j + d < len(row)]
            if r > 0:
                near += [_KEY_ROWS[r - 1][i] for i in (j, j + 1) if 0 <= i < len(_KEY_ROWS[r - 1])]
            if r + 1 < len(_KEY_ROWS):
                near += [_KEY_ROWS[r + 1][i] for i in (j - 1, j) if 0 <= i < len(_KEY_ROWS[r + 1])]
            out[ch] = "".join(near)
    return out


#: QWERTY neighbours of each lowercase letter and digit (``"q": "w12a"``).
KEYBOARD_NEIGHBOURS: dict[str, str] = _keyboard_neighbours()


def _char_candidates(text: str, keep: tuple[str, ...], keep_fields: bool) -> np.ndarray:
    """Indices of characters that character ops may touch: non-whitespace, not protected."""
    prot = _protected(text, keep, keep_fields)
    return np.array([i for i, ch in enumerate(text) if not ch.isspace() and not prot[i]], dtype=np.int64)


@register_text_perturbation("char_swap", family="character", preserves_meaning=False, reference=_REFERENCE)
def char_swap(text: str, severity: int, rng: np.random.Generator, *, keep: str | Sequence[str] = (),
              keep_fields: bool = False) -> str:
    """Swap ``k`` disjoint pairs of adjacent, different characters.

    Expected change: with ``n`` candidate characters (non-whitespace, unprotected), ``k =
    change_count(CHAR_RATES[severity], n)`` transpositions; pairs are taken greedily in a random order
    among adjacent candidate pairs whose characters differ, so exactly ``2k`` positions change (fewer only
    when the string runs out of disjoint pairs: a greedy matching has at least half the maximum). Length
    and the multiset of characters are unchanged.

    Args:
        text: The string.
        severity: 0–5.
        rng: Generator (supplied by the registered wrapper).
        keep: Substrings never altered.
        keep_fields: Protect ``str.format`` fields (``{}``).
    """
    keep_t, kf = _check_keep("char_swap", keep, keep_fields)
    cand = _char_candidates(text, keep_t, kf)
    k = change_count(CHAR_RATES[severity], len(cand))
    if k == 0:
        return text
    ok = set(cand.tolist())
    pairs = [i for i in range(len(text) - 1) if i in ok and i + 1 in ok and text[i] != text[i + 1]]
    chars, used, done = list(text), set(), 0
    for j in rng.permutation(len(pairs)):
        i = pairs[int(j)]
        if i in used or i + 1 in used:
            continue
        chars[i], chars[i + 1] = chars[i + 1], chars[i]
        used.update((i, i + 1))
        done += 1
        if done == k:
            break
    return "".join(chars)


@register_text_perturbation("char_insert", family="character", preserves_meaning=False, reference=_REFERENCE)
def char_insert(text: str, severity: int, rng: np.random.Generator, *, keep: str | Sequence[str] = (),
                keep_fields: bool = False) -> str:
    """Insert ``k`` random lowercase letters, each before a different candidate character.

    Expected change: ``k = change_count(CHAR_RATES[severity], n)`` with ``n`` candidate characters
    (non-whitespace, unprotected); the length grows by exactly ``k`` and deleting the inserted letters
    gives ``text`` back. Nothing is inserted inside a protected span or in front of it.

    Args:
        text: The string.
        severity: 0–5.
        rng: Generator (supplied by the registered wrapper).
        keep: Substrings never altered.
        keep_fields: Protect ``str.format`` fields (``{}``).
    """
    keep_t, kf = _check_keep("char_insert", keep, keep_fields)
    cand = _char_candidates(text, keep_t, kf)
    k = change_count(CHAR_RATES[severity], len(cand))
    if k == 0:
        return text
    where = set(cand[_choose(rng, len(cand), k)].tolist())
    letters = rng.integers(0, 26, size=k)
    out, j = [], 0
    for i, ch in enumerate(text):
        if i in where:
            out.append(string.ascii_lowercase[int(letters[j])])
            j += 1
        out.append(ch)
    return "".join(out)


@register_text_perturbation("char_delete", family="character", preserves_meaning=False, reference=_REFERENCE)
def char_delete(text: str, severity: int, rng: np.random.Generator, *, keep: str | Sequence[str] = (),
                keep_fields: bool = False) -> str:
    """Delete ``k`` random candidate characters.

    Expected change: ``k = change_count(CHAR_RATES[severity], n)`` with ``n`` candidate characters
    (non-whitespace, unprotected): the length drops by exactly ``k`` (a 100-letter string loses 2, 5, 10,
    15, 25 characters at severities 1–5) and the result is a subsequence of ``text``.

    Args:
        text: The string.
        severity: 0–5.
        rng: Generator (supplied by the registered wrapper).
        keep: Substrings never altered.
        keep_fields: Protect ``str.format`` fields (``{}``).
    """
    keep_t, kf = _check_keep("char_delete", keep, keep_fields)
    cand = _char_candidates(text, keep_t, kf)
    k = change_count(CHAR_RATES[severity], len(cand))
    if k == 0:
        return text
    gone = set(cand[_choose(rng, len(cand), k)].tolist())
    return "".join(ch for i, ch in enumerate(text) if i not in gone)


@register_text_perturbation("keyboard_typo", family="character", preserves_meaning=False, reference=_REFERENCE)
def keyboard_typo(text: str, severity: int, rng: np.random.Generator, *, keep: str | Sequence[str] = (),
                  keep_fields: bool = False) -> str:
    """Replace ``k`` letters or digits by a neighbouring key of a QWERTY keyboard (case kept).

    Expected change: ``k = change_count(CHAR_RATES[severity], n)`` with ``n`` unprotected ASCII letters
    and digits; exactly ``k`` positions change (a neighbour is never the key itself), each to one of
    :data:`KEYBOARD_NEIGHBOURS`; the length is unchanged.

    Args:
        text: The string.
        severity: 0–5.
        rng: Generator (supplied by the registered wrapper).
        keep: Substrings never altered.
        keep_fields: Protect ``str.format`` fields (``{}``).
    """
    keep_t, kf = _check_keep("keyboard_typo", keep, keep_fields)
    prot = _protected(text, keep_t, kf)
    cand = [i for i, ch in enumerate(text) if ch.lower() in KEYBOARD_NEIGHBOURS and ch.isascii() and not prot[i]]
    k = change_count(CHAR_RATES[severity], len(cand))
    if k == 0:
        return text
    chars = list(text)
    for j in _choose(rng, len(cand), k):
        i = cand[j]
        near = KEYBOARD_NEIGHBOURS[chars[i].lower()]
        new = near[int(rng.integers(len(near)))]
        chars[i] = new.upper() if chars[i].isupper() else new
    return "".join(chars)


# ----------------------------------------------------------------------------------------------------
# Word noise
# ----------------------------------------------------------------------------------------------------


@register_text_perturbation("word_dropout", family="word", preserves_meaning=False, reference=_REFERENCE)
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
    keep_t, kf = _check_keep("word_dropout", keep, keep_fields)
    words = _words(text)
    prot = _protected(text, keep_t, kf)
    cand = [w for w, (a, b) in enumerate(words) if not prot[a:b].any()]
    k = min(len(words) - 1, change_count(WORD_RATES[severity], len(cand)))
    if k <= 0:
        return text
    gone = {cand[j] for j in _choose(rng, len(cand), k)}
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


@register_text_perturbation("word_shuffle", family="word", preserves_meaning=False, reference=_REFERENCE)
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
    _check_keep("word_shuffle", keep, keep_fields)
    words = _words(text)
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
# Table substitutions (synonyms, paraphrases, swaps)
# ----------------------------------------------------------------------------------------------------


def _norm(phrase: str) -> str:
    return " ".join(phrase.lower().split())


def _phrase_regex(phrases: Sequence[str]) -> re.Pattern[str]:
    """One case-insensitive pattern matching any phrase at word boundaries, longest phrase first."""
    return _compiled_phrases(tuple(sorted({_norm(p) for p in phrases}, key=lambda s: (-len(s), s))))


@functools.lru_cache(maxsize=64)
def _compiled_phrases(phrases: tuple[str, ...]) -> re.Pattern[str]:
    parts = []
    for p in phrases:
        body = r"\s+".join(re.escape(w) for w in p.split(" "))
        parts.append(body + (rf"(?![{_ALNUM}])" if p[-1].isalnum() else ""))
    return re.compile(rf"(?<![{_ALNUM}])(?:" + "|".join(parts) + ")", re.IGNORECASE)


def _spans(text: str, pattern: re.Pattern[str], blocked: np.ndarray) -> list[tuple[int, int, str]]:
    """Non-overlapping matches ``(start, end, normalised phrase)`` that touch no blocked character."""
    return [(m.start(), m.end(), _norm(m.group(0))) for m in pattern.finditer(text)
            if not blocked[m.start():m.end()].any()]


def _apply(text: str, edits: Sequence[tuple[int, int, str]]) -> str:
    """Replace the spans of ``edits`` (non-overlapping) right to left, keeping case (an all-caps text stays
    all caps) and fixing articles."""
    out, shouting = text, text.isupper()
    for a, b, rep in sorted(edits, reverse=True):
        rep = rep.upper() if shouting else _match_case(text[a:b], rep)
        out = _fix_article(out[:a], rep) + rep + out[b:]
    return out


def _check_groups(name: str, arg: str, groups: Any) -> list[list[str]]:
    ok = isinstance(groups, (list, tuple)) and all(
        isinstance(g, (list, tuple)) and len(g) >= 2 and all(isinstance(w, str) and w.strip() for w in g)
        for g in groups)
    if not ok:
        raise InputError(f"{name}: {arg} must be a list of groups, each a list of two or more non-empty strings")
    return [[_norm(w) for w in g] for g in groups]


def _check_vocab(name: str, arg: str, vocab: Any, shipped: Mapping[str, Sequence[str]]) -> list[str]:
    if isinstance(vocab, str):
        if vocab not in shipped:
            raise InputError(f"{name}: {arg}={vocab!r} is not a shipped vocabulary; expected one of "
                             f"{sorted(shipped)} or a list of words")
        return [_norm(w) for w in shipped[vocab]]
    if not isinstance(vocab, (list, tuple)) or not all(isinstance(w, str) and w.strip() for w in vocab) \
            or len({_norm(w) for w in vocab}) < 2:
        raise InputError(f"{name}: {arg} must be a shipped vocabulary name or a list of two or more distinct words")
    return list(dict.fromkeys(_norm(w) for w in vocab))


def _substitute_groups(name: str, text: str, severity: int, rng: np.random.Generator,
                       groups: list[list[str]], keep: tuple[str, ...], keep_fields: bool,
                       blocked: np.ndarray | None = None) -> str:
    """Replace ``min(severity, n)`` group members by another member of their group."""
    where: dict[str, int] = {}
    for gi, g in enumerate(groups):
        for w in g:
            if where.setdefault(w, gi) != gi:
                raise InputError(f"{name}: {w!r} is in two groups; a term may belong to one group only")
    base = _protected(text, keep, keep_fields)
    blocked = base if blocked is None else (base | blocked)
    spans = _spans(text, _phrase_regex(list(where)), blocked)
    edits = []
    for j in _choose(rng, len(spans), severity):
        a, b, found = spans[j]
        others = [w for w in groups[where[found]] if w != found]
        edits.append((a, b, others[int(rng.integers(len(others)))]))
    return _apply(text, edits)


@register_text_perturbation("synonym", family="meaning-preserving", preserves_meaning=True,
                            reference=_REFERENCE + "; EDA synonym replacement (Wei & Zou 2019)")
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
    keep_t, kf = _check_keep("synonym", keep, keep_fields)
    table = _check_groups("synonym", "groups", synonym_groups() if groups is None else groups)
    return _substitute_groups("synonym", text, severity, rng, table, keep_t, kf, _quoted_interior(text))


@register_text_perturbation("paraphrase", family="meaning-preserving", preserves_meaning=True,
                            reference=_REFERENCE)
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
    keep_t, kf = _check_keep("paraphrase", keep, keep_fields)
    table = _check_groups("paraphrase", "groups", paraphrase_groups() if groups is None else groups)
    return _substitute_groups("paraphrase", text, severity, rng, table, keep_t, kf, _quoted_interior(text))


def _swap_vocab(name: str, text: str, severity: int, rng: np.random.Generator, vocabs: list[list[str]],
                keep: tuple[str, ...], keep_fields: bool) -> str:
    """Replace ``min(severity, n)`` vocabulary words by another word of the same vocabulary and number."""
    where: dict[str, tuple[int, bool]] = {}  # form -> (vocabulary, is plural)
    for vi, vocab in enumerate(vocabs):
        for w in vocab:
            where.setdefault(w, (vi, False))
            if plural(w) != w:
                where.setdefault(plural(w), (vi, True))
    blocked = _protected(text, keep, keep_fields) | _quoted_interior(text)
    spans = _spans(text, _phrase_regex(list(where)), blocked)
    edits = []
    for j in _choose(rng, len(spans), severity):
        a, b, found = spans[j]
        vi, is_plural = where[found]
        singular = next(w for w in vocabs[vi] if w == found or plural(w) == found)
        others = [w for w in vocabs[vi] if w != singular and (plural(w) if is_plural else w) != found]
        new = others[int(rng.integers(len(others)))]
        edits.append((a, b, plural(new) if is_plural else new))
    return _apply(text, edits)


@register_text_perturbation("swap_color", family="meaning-changing", preserves_meaning=False, reference=_REFERENCE)
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
    keep_t, kf = _check_keep("swap_color", keep, keep_fields)
    vocab = _check_vocab("swap_color", "colors", colors, load_tables()["colors"])
    blocked = _protected(text, keep_t, kf) | _quoted_interior(text)
    spans = _spans(text, _phrase_regex(vocab), blocked)
    edits = []
    for j in _choose(rng, len(spans), severity):
        a, b, found = spans[j]
        others = [c for c in vocab if c != found]
        edits.append((a, b, others[int(rng.integers(len(others)))]))
    return _apply(text, edits)


@register_text_perturbation("swap_object", family="meaning-changing", preserves_meaning=False, reference=_REFERENCE)
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
    keep_t, kf = _check_keep("swap_object", keep, keep_fields)
    shipped = load_tables()["objects"]
    if vocabulary is None:
        vocabs = [[_norm(w) for w in shipped[k]] for k in sorted(shipped)]
    else:
        vocabs = [_check_vocab("swap_object", "vocabulary", vocabulary, shipped)]
    return _swap_vocab("swap_object", text, severity, rng, vocabs, keep_t, kf)


@functools.lru_cache(maxsize=1)
def _count_nouns() -> dict[str, tuple[str, bool]]:
    """Form -> (singular, is plural) of every head noun :func:`swap_count` knows: the last word of each
    shipped object and the shipped nouns (singular forms win when a form is both)."""
    tables = load_tables()
    singulars = sorted({_norm(w).split(" ")[-1] for v in tables["objects"].values() for w in v}
                       | {_norm(w) for w in tables["nouns"]})
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


@register_text_perturbation("swap_count", family="meaning-changing", preserves_meaning=False, reference=_REFERENCE)
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
    keep_t, kf = _check_keep("swap_count", keep, keep_fields)
    numbers = [n.lower() for n in load_tables()["numbers"]]
    if not isinstance(plural_word, str) or plural_word.lower() not in numbers[1:]:
        raise InputError(f"swap_count: plural_word={plural_word!r}; expected one of {numbers[1:]}")
    nouns = _count_nouns()
    blocked = _protected(text, keep_t, kf) | _quoted_interior(text)
    cands: list[tuple[int, int, tuple[int, int, str, bool] | None, list[str]]] = []
    for m in re.finditer(rf"(?<![{_ALNUM}])[A-Za-z]+(?![{_ALNUM}])", text):
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
    return _apply(text, edits)


# ----------------------------------------------------------------------------------------------------
# Lists, seeds and templates
# ----------------------------------------------------------------------------------------------------


def text_key(name: str, severity: int, params: Mapping[str, Any] | None = None) -> str:
    """16 hex digits identifying a text perturbation cell: SHA-256 over ``["text", name, severity, params]``."""
    payload = json.dumps(["text", name, int(severity), dict(params or {})], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def text_seed(seed: int, key: str, index: int) -> int:
    """The seed of text ``index``: the engine's counter-based rule (:func:`vlmkit.runtime.derive_seed`,
    ``int(sha256(json([seed, key, index]))[:16], 16) % 2**62``), written out here because ``perturb``
    does not import ``runtime``."""
    payload = json.dumps([int(seed), str(key), int(index)], sort_keys=True, default=str)
    return int(hashlib.sha256(payload.encode()).hexdigest()[:16], 16) % (2**62)


def _check_list(where: str, texts: Any, arg: str) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
        raise InputError(f"{where}: {arg} must be a list of strings, got {type(texts).__name__}")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InputError(f"{where}: {arg}[{i}] must be a str, got {type(t).__name__}")
    return list(texts)


def _check_seed(where: str, seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
        raise InputError(f"{where}: seed={seed!r} must be a non-negative int")
    return int(seed)


def perturb_texts(name: str, texts: Sequence[str], severity: int, seed: int = 0, *,
                  indices: Sequence[int] | None = None, **params: Any) -> list[str]:
    """Apply the text perturbation ``name`` to every text, each with its own generator.

    Text ``i`` draws from ``numpy.random.default_rng(text_seed(seed, text_key(name, severity, params),
    indices[i]))`` (``indices`` defaults to ``0, 1, ...``), never from a shared stream, so a text is
    perturbed identically in a list of 1 or of 10 000; a batch of a larger list passes its items'
    indices and gets exactly the texts the whole list would.

    Args:
        name: A registered text perturbation (:data:`vlmkit.registry.TEXT_PERTURBATIONS`).
        texts: Captions, prompts or class names.
        severity: 0–5.
        seed: Non-negative run seed.
        indices: Index of each text in its dataset (default ``range(len(texts))``).
        **params: The perturbation's parameters.

    Returns:
        The perturbed texts, in order.

    Raises:
        RegistryError: Unknown ``name`` (with near matches).
        InputError: ``texts`` is not a list of strings, bad indices, a bad seed, severity or parameter.
    """
    fn = TEXT_PERTURBATIONS.get(name)
    items = _check_list("perturb_texts", texts, "texts")
    s = check_severity(name, severity)
    sd = _check_seed("perturb_texts", seed)
    idx = list(range(len(items))) if indices is None else list(indices)
    if len(idx) != len(items) or not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) and i >= 0
                                         for i in idx):
        raise InputError(f"perturb_texts: indices must be {len(items)} non-negative ints (one per text), "
                         f"got {indices!r}")
    key = text_key(name, s, params)
    return [fn(t, s, rng=np.random.default_rng(text_seed(sd, key, int(i))), **params) for i, t in zip(idx, items)]


def perturb_templates(name: str, templates: Sequence[str], severity: int, seed: int = 0, *,
                      indices: Sequence[int] | None = None, **params: Any) -> list[str]:
    """:func:`perturb_texts` for zero-shot prompt templates: every ``str.format`` field (``{}``) is kept.

    ``keep_fields=True`` is passed to the perturbation, so no field is corrupted, dropped or replaced
    (``word_shuffle`` may move one, whole); each result is checked to hold the same fields.

    Args:
        name: A registered text perturbation.
        templates: Format strings such as ``"a photo of a {}."``.
        severity: 0–5.
        seed: Non-negative run seed.
        indices: Index of each template in its list (default ``range(len(templates))``).
        **params: The perturbation's parameters (besides ``keep_fields``).

    Raises:
        InputError: As :func:`perturb_texts`, or ``keep_fields`` given.
    """
    if "keep_fields" in params:
        raise InputError("perturb_templates: keep_fields is always True here; do not pass it")
    items = _check_list("perturb_templates", templates, "templates")
    out = perturb_texts(name, items, severity, seed, indices=indices, keep_fields=True, **params)
    for t, o in zip(items, out):
        if sorted(_FIELD.findall(t)) != sorted(_FIELD.findall(o)):
            raise RuntimeError(f"{name} changed the fields of template {t!r}: {o!r}")
    return out


def list_text_perturbations(pattern: str = "*", **meta: Any) -> list[str]:
    """Names of registered text perturbations matching a glob and metadata (``family="character"``)."""
    return TEXT_PERTURBATIONS.list(pattern, **meta)


__all__ = ["CHAR_RATES", "FAMILIES", "KEYBOARD_NEIGHBOURS", "SEVERITIES", "WORD_RATES", "change_count",
           "char_delete", "char_insert", "char_swap", "check_severity", "check_text", "default_rng",
           "keyboard_typo", "list_text_perturbations", "load_tables", "paraphrase", "paraphrase_groups",
           "perturb_templates", "perturb_texts", "plural", "register_text_perturbation", "swap_color",
           "swap_count", "swap_object", "synonym", "synonym_groups", "text_key", "text_seed", "word_dropout",
           "word_shuffle"]
