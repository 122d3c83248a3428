"""The shipped tables of the text perturbations (``vlmkit/perturb/assets/synonyms.json``, offline).

Synonym and paraphrase groups, the colour, number and object vocabularies of the meaning-changing swaps,
head nouns and irregular plurals; see :mod:`vlmkit.perturb.text` for what the tables hold.
"""

from __future__ import annotations

import functools
import json
import re
from importlib import resources
from typing import Any


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


__all__ = ["load_tables", "paraphrase_groups", "plural", "synonym_groups"]
