"""The text-perturbation contract: constants, input checks, registration, seeding and application to lists.

See :mod:`vlmkit.perturb.text` for the contract, the severities and the families; the perturbations
themselves live in :mod:`.character`, :mod:`.words` and :mod:`.swaps`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from vlmkit.errors import InputError
from vlmkit.perturb.text.spans import FORMAT_FIELD
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

#: The reference cited in every text perturbation's registry metadata.
REFERENCE = ("Qiu et al. 2022, arXiv:2212.08044 (text perturbations of multimodal models); "
             "Lee et al. 2025 (Language-Guided Invariance Probing of VLMs)")


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
        if sorted(FORMAT_FIELD.findall(t)) != sorted(FORMAT_FIELD.findall(o)):
            raise RuntimeError(f"{name} changed the fields of template {t!r}: {o!r}")
    return out


def list_text_perturbations(pattern: str = "*", **meta: Any) -> list[str]:
    """Names of registered text perturbations matching a glob and metadata (``family="character"``)."""
    return TEXT_PERTURBATIONS.list(pattern, **meta)


__all__ = ["CHAR_RATES", "FAMILIES", "REFERENCE", "SEVERITIES", "WORD_RATES", "TextFn", "change_count",
           "check_severity", "check_text", "default_rng", "list_text_perturbations", "perturb_templates",
           "perturb_texts", "register_text_perturbation", "text_key", "text_seed"]
