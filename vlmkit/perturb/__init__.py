"""Perturbations: pure, batched, seeded functions on float images ``(B, 3, H, W)`` in [0, 1].

Every perturbation is registered in :data:`vlmkit.registry.PERTURBATIONS` by its defining module
(:mod:`.corruptions`, :mod:`.frequency`, :mod:`.geometric`, :mod:`.typographic`), which the registry
imports on its first read::

    import vlmkit.perturb as P
    P.list_perturbations(family="blur")
    y = P.create_perturbation("gaussian_noise", x, 3, generator=vlmkit.make_generator(0))
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from vlmkit.perturb.base import (
    PerturbationSpec,
    check_images,
    compose,
    default_generator,
    register_perturbation,
)
from vlmkit.registry import PERTURBATIONS, create_perturbation, list_perturbations
from vlmkit.runtime import make_generator

__all__ = ["PerturbationSpec", "apply_perturbation", "check_images", "compose", "create_perturbation",
           "default_generator", "list_perturbations", "register_perturbation"]


def apply_perturbation(
    name: str, x: torch.Tensor, severity: float = 3, *, seed: int = 0, **context: Any
) -> torch.Tensor:
    """Apply a registered perturbation, passing only the context keywords it accepts.

    ``context`` carries what some perturbations need and others ignore (``classnames=``, ``labels=``
    for ``typographic``), so one call serves any perturbation name from a parameters cell.

    Args:
        name: A registered perturbation (:func:`list_perturbations`).
        x: Float images ``(B, 3, H, W)`` in [0, 1].
        severity: Its severity.
        seed: Seeds the ``torch.Generator`` it draws from.
        **context: Keywords offered to the perturbation.

    Returns:
        The perturbed images ``(B, 3, H, W)``.
    """
    fn = PERTURBATIONS.get(name)
    params = inspect.signature(fn).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in context.items() if takes_any or k in params}
    return fn(x, severity, generator=make_generator(seed), **kwargs)

