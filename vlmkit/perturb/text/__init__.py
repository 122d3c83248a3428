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

Modules: :mod:`.base` (the contract, :func:`register_text_perturbation`, seeds, :func:`perturb_texts`,
:func:`perturb_templates`), :mod:`.spans` (protected spans, phrase matching and edits), :mod:`.tables`
(the shipped tables), :mod:`.character` (character noise), :mod:`.words` (word noise, synonyms,
paraphrases) and :mod:`.swaps` (meaning-changing swaps). Importing this package imports them all, so
every perturbation is registered (:data:`vlmkit.registry.TEXT_PERTURBATIONS` lists this package).
"""

from __future__ import annotations

from vlmkit.perturb.text.base import (
    CHAR_RATES,
    FAMILIES,
    SEVERITIES,
    WORD_RATES,
    change_count,
    check_severity,
    check_text,
    default_rng,
    list_text_perturbations,
    perturb_templates,
    perturb_texts,
    register_text_perturbation,
    text_key,
    text_seed,
)
from vlmkit.perturb.text.base import TextFn as TextFn
from vlmkit.perturb.text.character import KEYBOARD_NEIGHBOURS, char_delete, char_insert, char_swap, keyboard_typo
from vlmkit.perturb.text.swaps import swap_color, swap_count, swap_object
from vlmkit.perturb.text.tables import load_tables, paraphrase_groups, plural, synonym_groups
from vlmkit.perturb.text.words import paraphrase, synonym, word_dropout, word_shuffle

__all__ = ["CHAR_RATES", "FAMILIES", "KEYBOARD_NEIGHBOURS", "SEVERITIES", "WORD_RATES", "change_count",
           "char_delete", "char_insert", "char_swap", "check_severity", "check_text", "default_rng",
           "keyboard_typo", "list_text_perturbations", "load_tables", "paraphrase", "paraphrase_groups",
           "perturb_templates", "perturb_texts", "plural", "register_text_perturbation", "swap_color",
           "swap_count", "swap_object", "synonym", "synonym_groups", "text_key", "text_seed", "word_dropout",
           "word_shuffle"]
