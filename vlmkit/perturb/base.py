"""The perturbation contract and the helpers every perturbation module uses.

A perturbation is a **pure function** on a batch of float images in ``[0, 1]``::

    fn(x: Tensor (B, 3, H, W), severity: int | float = 1, *, generator: torch.Generator | None = None,
       **params) -> Tensor (B, 3, H, W) in [0, 1]

* same shape, dtype and device out as in; the input is never modified in place;
* deterministic given ``generator`` (random perturbations draw only from it; ``None`` means a
  generator seeded with 0 on ``x.device``, so calls without one are still reproducible);
* runs on CPU and GPU, batched (no per-image Python loops where a batched kernel exists).

Register with :func:`register_perturbation`, which records the family and the valid severities and
wraps the function with input validation. :class:`PerturbationSpec` names one cell of a grid
(name × severity × params) with a stable key.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from vlmkit.errors import InputError
from vlmkit.registry import PERTURBATIONS
from vlmkit.validate import check_images  # re-exported: the perturbation contract's input check

PerturbFn = Callable[..., torch.Tensor]


def default_generator(x: torch.Tensor, generator: torch.Generator | None) -> torch.Generator:
    """``generator`` or a fresh one seeded with 0 on ``x.device`` (calls without one stay reproducible)."""
    if generator is not None:
        return generator
    g = torch.Generator(device=x.device)
    g.manual_seed(0)
    return g


def check_severity(name: str, severity: int | float, valid: Sequence[int | float] | None) -> None:
    """Raise :class:`InputError` when ``severity`` is not one of ``valid`` (``None``: any severity)."""
    if valid is not None and severity not in valid:
        raise InputError(f"{name}: severity={severity!r} is out of range; expected one of {list(valid)}")


def register_perturbation(name: str, family: str, severities: Sequence[int | float] | None = (1, 2, 3, 4, 5),
                          **meta: Any) -> Callable[[PerturbFn], PerturbFn]:
    """Register a perturbation in :data:`vlmkit.registry.PERTURBATIONS`, with input/severity checks.

    The perturbation-specific form of ``@PERTURBATIONS.register(name, family=..., severities=...)``: it
    wraps the function with the contract's checks (images, severity, output shape) and registers the
    wrapper, whose ``raw`` attribute is the unchecked function. The module defining it must be listed
    in ``PERTURBATIONS.modules`` (:mod:`vlmkit.registry`).

    Args:
        name: Registry name.
        family: Group used in reports and flip rates ("noise", "blur", "weather", "digital", "frequency",
            "geometric", "typographic", ...).
        severities: Valid discrete severities (None: continuous/free parameters).
        **meta: Extra metadata (e.g. ``reference="imagecorruptions"``).
    """

    def deco(fn: PerturbFn) -> PerturbFn:
        @functools.wraps(fn)
        def wrapped(x: torch.Tensor, severity: int | float = 1, *args: Any, **kwargs: Any) -> torch.Tensor:
            check_images(x)
            check_severity(name, severity, severities)
            out = fn(x, severity, *args, **kwargs)
            if out.shape != x.shape:
                raise InputError(f"{name} returned shape {tuple(out.shape)} for input {tuple(x.shape)}")
            return out

        wrapped.raw = fn  # type: ignore[attr-defined]
        return PERTURBATIONS.register(name, family=family, severities=tuple(severities) if severities else None,
                                      **meta)(wrapped)

    return deco


@dataclass(frozen=True)
class PerturbationSpec:
    """One perturbation cell of a grid: ``name`` at ``severity`` with extra ``params``.

    ``key`` is a stable hash of (name, severity, params), used to cache and resume.
    """

    name: str
    severity: int | float = 1
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        PERTURBATIONS.get(self.name)  # unknown names fail early, with near matches

    @property
    def key(self) -> str:
        blob = json.dumps({"name": self.name, "severity": self.severity, "params": dict(self.params)}, sort_keys=True,
                          default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def family(self) -> str:
        return str(PERTURBATIONS.meta(self.name).get("family", ""))

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return PERTURBATIONS.get(self.name)(x, self.severity, generator=generator, **dict(self.params))


def compose(*steps: PerturbationSpec | tuple[str, int | float] | tuple[str, int | float, Mapping[str, Any]]
            ) -> Callable[..., torch.Tensor]:
    """Chain perturbations left to right: ``compose(("jpeg_compression", 3), ("gaussian_noise", 2))(x, generator=g)``.

    Every step draws from the same generator in order, so the chain is deterministic given it.
    """
    specs = [s if isinstance(s, PerturbationSpec) else PerturbationSpec(*s) for s in steps]
    if not specs:
        raise InputError("compose() needs at least one perturbation")

    def chained(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        g = default_generator(x, generator)
        for spec in specs:
            x = spec(x, generator=g)
        return x

    chained.specs = specs  # type: ignore[attr-defined]
    return chained
