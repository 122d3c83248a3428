"""Object vocabularies of captions: synonym tables, plural rules and CHAIR's reader of object mentions.

The reading of :mod:`vlmkit.metrics.captions` (CHAIR, object recall; Rohrbach, Hendricks, Burns, Darrell
& Saenko, "Object Hallucination in Image Captioning", EMNLP 2018): which objects a caption *mentions*.

**Reading mentions** (:class:`ObjectVocabulary`) follows the reference implementation
(``utils/chair.py`` of github.com/LisaAnne/Hallucination, commit 6e4d33c): lower-case, tokenise,
singularise, merge multi-word names ("traffic light", "hot dog", "teddy bear") before single words,
apply COCO's special cases ("baby bird"/"adult bird" → bird, "passenger train" → train, "toilet seat"
→ toilet and no chair for a "seat" in a caption that also names a toilet, "bow tie" → tie, "train
track" and "home plate" are not objects), and count **every occurrence** of a synonym as one mention
("a dog chases another dog" mentions dog twice; ``unique=True`` counts each class once per caption
instead, the set reading of the paper's formula). Where vlmkit differs from the reference code:

* no NLTK / pattern.en: tokens are ``[a-z0-9]+`` runs (hyphenated words kept whole, as NLTK's
  tokenizer does; an apostrophe splits ``dog's`` into ``dog`` + ``s``), and plurals are undone by
  rule only for the words of the table (each table word's regular and irregular plurals —
  ``dogs``, ``buses``, ``knives``, ``ponies``, ``women``, ``policemen``, ``mice``, ``geese`` — map
  back to it; a word that is itself in the table is never changed, so ``skis``, ``scissors``,
  ``people``, ``oxen`` stay as written);
* table entries are stripped and lower-cased (the reference's ``" motor bike"``, ``" cheesecake"``
  carry a stray space there and so never match, and ``iPhone`` never matches a lower-cased caption);
* multi-word names of any length match longest first (the reference only merges pairs, so its
  ``"stove top oven"`` never matches as one name).

The shipped tables are ``vlmkit/metrics/assets/chair_synonyms.txt`` (the reference's 80-class COCO
table, verbatim) and ``toy_synonyms.txt`` (the toy world's shapes; quoted text such as ``a sign that
says "star"`` is a written word, not an object, and is skipped for that table).

:func:`load_vocabulary` turns a ``synonyms`` argument (``"coco"``, ``"toy"``, a table file, a mapping or an
:class:`ObjectVocabulary`) into a vocabulary; :func:`read_synonym_table` reads the table format.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from pathlib import Path

from vlmkit.errors import InputError

#: COCO multi-word special cases of the reference implementation: phrase → the word it is read as
#: (a table word, or a word that is no object). Qualifiers "baby"/"adult"/"passenger" would
#: otherwise fire "person".
COCO_COMPOUNDS: dict[str, str] = {
    **{f"{q} {a}": a for a in ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe",
                               "animal", "cub") for q in ("baby", "adult")},
    "passenger jet": "jet", "passenger train": "train",
    "bow tie": "tie", "toilet seat": "toilet",
    "home plate": "home plate", "train track": "train track",
}
#: COCO: drop the word (key) from a caption that also contains the word (value) — "the seat of the
#: toilet" is no chair.
COCO_DROP_WHEN: dict[str, str] = {"seat": "toilet"}

_TOKEN = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_QUOTED = re.compile(r"\"[^\"]*\"|“[^”]*”")
_VOWELS = set("aeiou")
_IRREGULAR: dict[str, tuple[str, ...]] = {
    "man": ("men",), "woman": ("women",), "child": ("children",), "person": ("people", "persons"),
    "mouse": ("mice",), "goose": ("geese",), "ox": ("oxen",), "foot": ("feet",), "tooth": ("teeth",),
    "louse": ("lice",), "sheep": (), "bison": (), "fish": (), "deer": (), "moose": (), "cattle": (),
}
_NAMED = ("coco", "toy")


def _plurals(word: str) -> tuple[str, ...]:
    """Plural forms of one lower-case word by the regular English rules plus a few irregulars."""
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if word.endswith("man") and len(word) > 3:  # policeman → policemen, gentleman → gentlemen
        return (word[:-3] + "men",)
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return (word + "es",) + ((word + "ses",) if word.endswith("us") else ())  # buses, busses
    if word.endswith("y") and len(word) > 1 and word[-2] not in _VOWELS:
        return (word[:-1] + "ies",)
    if word.endswith("fe") and not word.endswith("ffe"):
        return (word[:-2] + "ves", word + "s")
    if word.endswith("f") and not word.endswith("ff"):
        return (word[:-1] + "ves", word + "s")
    if word.endswith("o"):
        return (word + "s", word + "es")
    return (word + "s",)


def clean_name(name: str) -> str:
    """``name`` stripped, lower-cased, its whitespace runs collapsed to single spaces."""
    return " ".join(name.strip().lower().split())


class ObjectVocabulary:
    """Object classes and their synonyms, and the reader of object mentions in captions (CHAIR's).

    Args:
        table: Class name → synonyms (the class name itself always counts as one). Names and
            synonyms are stripped and lower-cased; a synonym may belong to one class only.
        compounds: Multi-word phrase → the word it is read as (a synonym of a class, or a word that
            is no object, to stop its parts from matching); see :data:`COCO_COMPOUNDS`.
        drop_when: Word → trigger word: occurrences of the word are dropped from a caption that also
            contains the trigger (see :data:`COCO_DROP_WHEN`).
        ignore_quoted: Skip text in double quotes (written words, not depicted objects).
        name: A label for messages.

    Raises:
        InputError: An empty table, a non-string entry, or a synonym claimed by two classes.
    """

    def __init__(self, table: Mapping[str, Sequence[str]], *, compounds: Mapping[str, str] | None = None,
                 drop_when: Mapping[str, str] | None = None, ignore_quoted: bool = False,
                 name: str = "custom") -> None:
        if not isinstance(table, Mapping) or not table:
            raise InputError(f"synonyms table {name!r} must be a non-empty mapping class → synonyms, got "
                             f"{type(table).__name__} {table!r:.80}")
        self.name = name
        self.ignore_quoted = bool(ignore_quoted)
        self._inverse: dict[str, str] = {}
        classes: list[str] = []
        for cls, syns in table.items():
            if not isinstance(cls, str) or not clean_name(cls):
                raise InputError(f"synonyms table {name!r}: class names must be non-empty strings, got {cls!r}")
            if isinstance(syns, str) or not isinstance(syns, Sequence) or not all(isinstance(s, str) for s in syns):
                raise InputError(f"synonyms table {name!r}: the synonyms of {cls!r} must be a sequence of strings, "
                                 f"got {syns!r:.80}")
            c = clean_name(cls)
            if c in classes:
                raise InputError(f"synonyms table {name!r}: class {c!r} is listed twice")
            classes.append(c)
            for s in (c, *(clean_name(s) for s in syns)):
                if not s:
                    continue
                if self._inverse.get(s, c) != c:
                    raise InputError(f"synonyms table {name!r}: synonym {s!r} belongs to both {self._inverse[s]!r} "
                                     f"and {c!r}")
                self._inverse[s] = c
        self.classes: tuple[str, ...] = tuple(classes)
        self._compounds = {clean_name(k): clean_name(v) for k, v in (compounds or {}).items()}
        self._drop_when = {clean_name(k): clean_name(v) for k, v in (drop_when or {}).items()}
        # phrases (token tuples) read as one word: multi-word synonyms (as themselves) and compounds
        self._phrases: dict[tuple[str, ...], str] = {tuple(s.split()): s for s in self._inverse if " " in s}
        self._phrases.update({tuple(k.split()): v for k, v in self._compounds.items()})
        self._max_n = max((len(p) for p in self._phrases), default=1)
        words = {w for s in (*self._inverse, *self._compounds, *self._compounds.values(), *self._drop_when,
                             *self._drop_when.values()) for w in s.split()}
        self._singular: dict[str, str] = {}
        for w in sorted(words):
            for p in _plurals(w):
                if p not in words:  # a word of the table is never rewritten
                    self._singular.setdefault(p, w)

    def __repr__(self) -> str:
        return f"ObjectVocabulary({self.name!r}, {len(self.classes)} classes)"

    # ------------------------------------------------------------------------------------------------
    def tokens(self, caption: str) -> list[str]:
        """Lower-cased, singularised tokens of a caption, multi-word names merged (before matching)."""
        text = caption.lower()
        if self.ignore_quoted:
            text = _QUOTED.sub(" ", text)
        toks = [self._singular.get(t, t) for t in _TOKEN.findall(text)]
        out: list[str] = []
        i = 0
        while i < len(toks):
            for n in range(min(self._max_n, len(toks) - i), 1, -1):
                word = self._phrases.get(tuple(toks[i:i + n]))
                if word is not None:
                    out.append(word)
                    i += n
                    break
            else:
                out.append(toks[i])
                i += 1
        present = set(out)
        drop = {w for w, trigger in self._drop_when.items() if trigger in present}
        return [w for w in out if w not in drop]

    def matches(self, caption: str) -> list[tuple[str, str]]:
        """``(word, class)`` for every object word of the caption, in order (repeats kept)."""
        if not isinstance(caption, str):
            raise InputError(f"caption must be a string, got {type(caption).__name__}")
        return [(w, self._inverse[w]) for w in self.tokens(caption) if w in self._inverse]

    def mentions(self, caption: str) -> list[str]:
        """The classes a caption mentions, in order of mention, one entry per occurrence (as the reference
        CHAIR code counts them: "two dogs and a puppy" → ``["dog", "dog"]``)."""
        return [c for _, c in self.matches(caption)]

    def canonical(self, name: str) -> str | None:
        """The class a ground-truth name denotes (a class name or synonym, any case, a plural allowed),
        or None when the table does not know it."""
        c = clean_name(name)
        if c in self._inverse:
            return self._inverse[c]
        c = " ".join(self._singular.get(t, t) for t in c.split())
        return self._inverse.get(c)


#: What a ``synonyms`` argument may be (see :func:`load_vocabulary`).
Synonyms = str | Path | Mapping[str, Sequence[str]] | ObjectVocabulary


# ----------------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------------

def read_synonym_table(path: str | Path) -> dict[str, list[str]]:
    """Read a table file: one line per class, comma-separated synonyms, first entry the class name;
    blank lines and lines starting with ``#`` are skipped (the format of the reference ``synonyms.txt``).

    Raises:
        InputError: The file does not exist or holds no class.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"synonyms={str(path)!r}: no such table file; expected 'coco', 'toy', a path to a "
                         "table file (one line per class: 'name, synonym, ...'), a mapping or an ObjectVocabulary")
    return _parse_table(p.read_text(encoding="utf-8"), str(p))


def _parse_table(text: str, where: str) -> dict[str, list[str]]:
    table: dict[str, list[str]] = {}
    for k, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        entries = list(dict.fromkeys(e for e in (clean_name(x) for x in line.split(",")) if e))
        if not entries:
            raise InputError(f"synonyms table {where}: line {k} names no class ({line!r})")
        if entries[0] in table:
            raise InputError(f"synonyms table {where}: line {k} lists class {entries[0]!r} a second time")
        table[entries[0]] = entries[1:]
    if not table:
        raise InputError(f"synonyms table {where} holds no class line")
    return table


@cache
def _named(name: str) -> ObjectVocabulary:
    asset = {"coco": "chair_synonyms.txt", "toy": "toy_synonyms.txt"}[name]
    text = resources.files("vlmkit.metrics").joinpath("assets", asset).read_text(encoding="utf-8")
    table = _parse_table(text, asset)
    if name == "coco":
        return ObjectVocabulary(table, compounds=COCO_COMPOUNDS, drop_when=COCO_DROP_WHEN, name="coco")
    return ObjectVocabulary(table, ignore_quoted=True, name="toy")


def load_vocabulary(synonyms: Synonyms = "coco") -> ObjectVocabulary:
    """The vocabulary named by a ``synonyms`` argument.

    Args:
        synonyms: ``"coco"`` (the 80 COCO classes with the reference's special cases), ``"toy"`` (the
            toy world's shapes, quoted text skipped), a path to a table file (:func:`read_synonym_table`),
            a mapping class → synonyms, or an :class:`ObjectVocabulary` (returned as is).

    Raises:
        InputError: Anything else, or a missing/empty/inconsistent table.
    """
    if isinstance(synonyms, ObjectVocabulary):
        return synonyms
    if isinstance(synonyms, str) and synonyms in _NAMED:
        return _named(synonyms)
    if isinstance(synonyms, (str, Path)):
        return ObjectVocabulary(read_synonym_table(synonyms), name=str(synonyms))
    if isinstance(synonyms, Mapping):
        return ObjectVocabulary(synonyms)
    raise InputError(f"synonyms must be 'coco', 'toy', a path to a table file, a mapping class → synonyms or an "
                     f"ObjectVocabulary, got {type(synonyms).__name__}")


__all__ = ["COCO_COMPOUNDS", "COCO_DROP_WHEN", "ObjectVocabulary", "Synonyms", "clean_name", "load_vocabulary",
           "read_synonym_table"]
