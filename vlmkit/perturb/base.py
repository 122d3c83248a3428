"""The perturbation contract and the helpers every perturbation module uses.

A perturbation is a **pure function** on a batch of float images in ``[0, 1]``::

    fn(x: Tensor (B, 3, H, W), severity: int | float = 1, *, generator: torch.Generator | None = None,
       **params) -> Tensor (B, 3, H, W) in [0, 1]

* same shape, dtype and device out as in; the input is never modified in place;
* deterministic given ``generator`` (random perturbations draw only from it; ``None`` means a
  generator seeded with 0 on ``x.device``, so calls without one are still reproducible);
* runs on CPU and GPU, batched (no per-image Python loops where a batched kernel exists).

A perturbation registered with ``item_generators=True`` also takes ``generator`` as a sequence of ``B``
generators, one per image: image ``i`` draws only from ``generator[i]``, exactly what a call on ``x[i:i+1]``
with ``generator[i]`` draws (its draws go through :func:`draw`), and the deterministic rest of the work runs
on the whole batch. ``Cell.apply`` then makes one call per batch with the per-image generators instead of
one call per image.

Register with :func:`register_perturbation`, which records the family and the valid severities and
wraps the function with input validation. In a grid, a perturbation (name × severity × params) is a
:class:`vlmkit.evaluate.Cell`, applied to dataset images with per-image seeds by ``Cell.apply`` — the one
seeded way to apply it.
"""

from __future__ import annotations

import dis
import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from vlmkit.errors import InputError
from vlmkit.perturb.kernels.threads import over_threads
from vlmkit.registry import PERTURBATIONS
from vlmkit.validate import check_images  # re-exported: the perturbation contract's input check

PerturbFn = Callable[..., torch.Tensor]


#: Values an image draws from which :func:`draw` splits a batch's draws over torch's threads.
SPLIT_DRAWS = 4096


def default_generator(x: torch.Tensor, generator: torch.Generator | None) -> torch.Generator:
    """``generator`` or a fresh one seeded with 0 on ``x.device`` (calls without one stay reproducible)."""
    if generator is not None:
        return generator
    g = torch.Generator(device=x.device)
    g.manual_seed(0)
    return g


#: ``generator`` of a perturbation: one generator, one per image (``item_generators`` perturbations) or None.
Generators = torch.Generator | Sequence[torch.Generator] | None


def draw(x: torch.Tensor, generator: Generators, sample: Callable[[torch.Generator, int], torch.Tensor]
         ) -> torch.Tensor:
    """A batch's draws: ``sample(g, n)`` draws what ``n`` images need from ``g`` (stacked on dim 0).

    With one generator per image (a sequence), image ``i`` gets ``sample(generator[i], 1)``, what a call on
    ``x[i:i+1]`` with ``generator[i]`` draws, concatenated; otherwise ``sample(g, B)`` from the one generator
    (:func:`default_generator`). On CPU, draws of at least :data:`SPLIT_DRAWS` values an image (a noise
    image, not one angle) are split over torch's threads (:func:`~vlmkit.perturb.kernels.threads.over_threads`):
    each image still draws from its own generator, so the values do not depend on the split, and ``sample``
    must only read what it closes over.
    """
    if not isinstance(generator, Sequence):
        return sample(default_generator(x, generator), x.shape[0])
    if not generator:
        return sample(default_generator(x, None), 0)
    parts: list[torch.Tensor | None] = [sample(generator[0], 1), *[None] * (len(generator) - 1)]

    def group(b0: int, b1: int) -> None:
        for i in range(b0, b1):
            parts[i] = sample(generator[i], 1)

    # a GPU queues its draws: nothing to split there
    if x.device.type == "cpu" and parts[0].numel() >= SPLIT_DRAWS:  # type: ignore[union-attr]
        over_threads(len(generator) - 1, lambda b0, b1: group(b0 + 1, b1 + 1))
    else:
        group(1, len(generator))
    return torch.cat(parts)  # type: ignore[arg-type]


def check_generator(name: str, x: torch.Tensor, generator: Any, per_item: bool) -> None:
    """Raise :class:`InputError` for a sequence of generators where ``name`` takes one, or of the wrong length."""
    if isinstance(generator, Sequence):
        if not per_item:
            raise InputError(f"{name}: generator must be one torch.Generator (or None), got a "
                             f"{type(generator).__name__} of {len(generator)}; only perturbations registered "
                             "with item_generators=True take one per image")
        if len(generator) != x.shape[0] or not all(isinstance(g, torch.Generator) for g in generator):
            raise InputError(f"{name}: generator holds {len(generator)} item(s) for {x.shape[0]} image(s); expected "
                             "one torch.Generator per image")


def check_severity(name: str, severity: int | float, valid: Sequence[int | float] | None) -> None:
    """Raise :class:`InputError` when ``severity`` is not one of ``valid`` (``None``: any severity)."""
    if valid is not None and severity not in valid:
        raise InputError(f"{name}: severity={severity!r} is out of range; expected one of {list(valid)}")


def draws_randomness(fn: Callable[..., Any]) -> bool:
    """Whether ``fn``'s body reads its ``generator`` argument (the contract's only source of randomness).

    A perturbation that never reads it is a deterministic function of its input, so applying it to a
    batch is the same as applying it image by image; ``Cell.apply`` then makes one batched call.
    """
    return any(i.opname.startswith("LOAD") and i.argval == "generator" for i in dis.get_instructions(fn))


def register_perturbation(name: str, family: str, severities: Sequence[int | float] | None = (1, 2, 3, 4, 5),
                          **meta: Any) -> Callable[[PerturbFn], PerturbFn]:
    """Register a perturbation in :data:`vlmkit.registry.PERTURBATIONS`, with input/severity checks.

    The perturbation-specific form of ``@PERTURBATIONS.register(name, family=..., severities=...)``: it
    wraps the function with the contract's checks (images, severity, output shape) and registers the
    wrapper, whose ``raw`` attribute is the unchecked function and ``check(x, severity)`` the input checks
    (``Cell.apply`` checks a batch once, then calls ``raw`` image by image with each image's generator). The module defining it must be listed
    in ``PERTURBATIONS.modules`` (:mod:`vlmkit.registry`).

    Args:
        name: Registry name.
        family: Group used in reports and flip rates ("noise", "blur", "weather", "digital", "frequency",
            "geometric", "typographic", ...).
        severities: Valid discrete severities (None: continuous/free parameters).
        **meta: Extra metadata (e.g. ``reference="imagecorruptions"``). ``batched`` (default: the
            function does not read ``generator``, see :func:`draws_randomness`) says that a batch gives,
            bit for bit, the images of one call per image; ``Cell.apply`` then calls it once per batch
            (``tests/test_engine_speed.py`` checks the claim for every registered perturbation). Pass
            ``batched=False`` for a deterministic kernel whose numbers depend on the batch.
            ``item_generators=True`` says that ``generator`` may be one generator per image (module
            docstring; the same test checks that claim).
    """
    per_item = bool(meta.get("item_generators", False))

    def deco(fn: PerturbFn) -> PerturbFn:
        @functools.wraps(fn)
        def wrapped(x: torch.Tensor, severity: int | float = 1, *args: Any, **kwargs: Any) -> torch.Tensor:
            check_images(x)
            check_severity(name, severity, severities)
            check_generator(name, x, kwargs.get("generator"), per_item)
            out = fn(x, severity, *args, **kwargs)
            if out.shape != x.shape:
                raise InputError(f"{name} returned shape {tuple(out.shape)} for input {tuple(x.shape)}")
            return out

        def check(x: torch.Tensor, severity: int | float = 1, generator: Any = None) -> None:
            check_images(x)
            check_severity(name, severity, severities)
            check_generator(name, x, generator, per_item)

        wrapped.raw = fn  # type: ignore[attr-defined]
        wrapped.check = check  # type: ignore[attr-defined]
        batched = meta.pop("batched", not draws_randomness(fn))
        # keyword parameters without a default (a saved delta's path ...): galleries and sweeps skip these
        needs = tuple(meta.pop("needs", None) or (p.name for p in inspect.signature(fn).parameters.values()
                      if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty))
        return PERTURBATIONS.register(name, family=family, severities=tuple(severities) if severities else None,
                                      batched=bool(batched), needs=needs, **meta)(wrapped)

    return deco


def compose(*steps: tuple[str, int | float] | tuple[str, int | float, Mapping[str, Any]]
            ) -> Callable[..., torch.Tensor]:
    """Chain perturbations left to right: ``compose(("jpeg_compression", 3), ("gaussian_noise", 2))(x, generator=g)``.

    Each step is ``(name, severity)`` or ``(name, severity, params)``; unknown names fail here. Every step
    draws from the same generator in order, so the chain is deterministic given it. (In a grid, a
    perturbation is a :class:`vlmkit.evaluate.Cell`, applied with per-image seeds by ``Cell.apply``.)
    """
    specs: list[tuple[str, int | float, dict[str, Any]]] = []
    for s in steps:
        if not isinstance(s, tuple) or len(s) not in (2, 3):
            raise InputError(f"compose() step {s!r}: expected (name, severity) or (name, severity, params)")
        PERTURBATIONS.get(s[0])  # unknown names fail early, with near matches
        specs.append((s[0], s[1], dict(s[2]) if len(s) == 3 else {}))
    if not specs:
        raise InputError("compose() needs at least one perturbation")

    def chained(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        g = default_generator(x, generator)
        for name, severity, params in specs:
            x = PERTURBATIONS.get(name)(x, severity, generator=g, **params)
        return x

    chained.specs = specs  # type: ignore[attr-defined]
    return chained
