"""Character noise: adjacent swaps, insertions, deletions and keyboard typos (family ``"character"``).

Each op changes ``k = change_count(CHAR_RATES[severity], n)`` of the ``n`` candidate characters
(non-whitespace, outside protected spans), after nlpaug's character augmenters and the keyboard/swap noise
of Belinkov & Bisk 2018 (*Synthetic and Natural Noise Both Break Neural Machine Translation*); see
:mod:`vlmkit.perturb.text`.
"""

from __future__ import annotations

import string
from collections.abc import Sequence

import numpy as np

from vlmkit.perturb.text.base import CHAR_RATES, REFERENCE, change_count, register_text_perturbation
from vlmkit.perturb.text.spans import check_keep, choose, protected_mask

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


def _char_plan(name: str, text: str, severity: int, keep: str | Sequence[str], keep_fields: bool
               ) -> tuple[np.ndarray, int]:
    """What a character op may touch and how much: ``(candidates, k)`` -- the indices of non-whitespace,
    unprotected characters and ``k = change_count(CHAR_RATES[severity], n)`` of them to change."""
    keep_t, kf = check_keep(name, keep, keep_fields)
    prot = protected_mask(text, keep_t, kf)
    cand = np.array([i for i, ch in enumerate(text) if not ch.isspace() and not prot[i]], dtype=np.int64)
    return cand, change_count(CHAR_RATES[severity], len(cand))


@register_text_perturbation("char_swap", family="character", preserves_meaning=False, reference=REFERENCE)
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
    cand, k = _char_plan("char_swap", text, severity, keep, keep_fields)
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


@register_text_perturbation("char_insert", family="character", preserves_meaning=False, reference=REFERENCE)
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
    cand, k = _char_plan("char_insert", text, severity, keep, keep_fields)
    if k == 0:
        return text
    where = set(cand[choose(rng, len(cand), k)].tolist())
    letters = rng.integers(0, 26, size=k)
    out, j = [], 0
    for i, ch in enumerate(text):
        if i in where:
            out.append(string.ascii_lowercase[int(letters[j])])
            j += 1
        out.append(ch)
    return "".join(out)


@register_text_perturbation("char_delete", family="character", preserves_meaning=False, reference=REFERENCE)
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
    cand, k = _char_plan("char_delete", text, severity, keep, keep_fields)
    if k == 0:
        return text
    gone = set(cand[choose(rng, len(cand), k)].tolist())
    return "".join(ch for i, ch in enumerate(text) if i not in gone)


@register_text_perturbation("keyboard_typo", family="character", preserves_meaning=False, reference=REFERENCE)
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
    keep_t, kf = check_keep("keyboard_typo", keep, keep_fields)
    prot = protected_mask(text, keep_t, kf)
    cand = [i for i, ch in enumerate(text) if ch.lower() in KEYBOARD_NEIGHBOURS and ch.isascii() and not prot[i]]
    k = change_count(CHAR_RATES[severity], len(cand))
    if k == 0:
        return text
    chars = list(text)
    for j in choose(rng, len(cand), k):
        i = cand[j]
        near = KEYBOARD_NEIGHBOURS[chars[i].lower()]
        new = near[int(rng.integers(len(near)))]
        chars[i] = new.upper() if chars[i].isupper() else new
    return "".join(chars)


__all__ = ["KEYBOARD_NEIGHBOURS", "char_delete", "char_insert", "char_swap", "keyboard_typo"]
