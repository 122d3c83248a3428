"""Perturbations: pure, batched, seeded functions on float images ``(B, 3, H, W)`` in [0, 1].

Every perturbation is registered in :data:`vlmkit.registry.PERTURBATIONS` by its defining module
(:mod:`.corruptions`, :mod:`.frequency`, :mod:`.geometric`, :mod:`.typographic`), which the registry
imports on its first read::

    import vlmkit.perturb as P
    P.list_perturbations(family="blur")
    y = P.create_perturbation("gaussian_noise", x, 3, generator=vlmkit.make_generator(0))
"""

from __future__ import annotations

from vlmkit.perturb.base import check_images, compose, default_generator, register_perturbation
from vlmkit.registry import create_perturbation, list_perturbations

__all__ = ["check_images", "compose", "create_perturbation", "default_generator", "list_perturbations",
           "register_perturbation"]
