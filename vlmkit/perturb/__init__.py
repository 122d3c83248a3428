"""Perturbations: pure, batched, seeded functions on float images ``(B, 3, H, W)`` in [0, 1].

Importing this package registers every perturbation in :data:`vlmkit.registry.PERTURBATIONS`::

    import vlmkit.perturb as P
    P.list_perturbations(family="blur")
    y = P.create_perturbation("gaussian_noise", x, 3, generator=vlmkit.make_generator(0))
"""

from vlmkit.perturb.base import (
    PerturbationSpec,
    check_images,
    compose,
    default_generator,
    register_perturbation,
)
from vlmkit.perturb import corruptions, frequency, geometric, typographic  # noqa: F401  (registration)
from vlmkit.registry import create_perturbation, list_perturbations

__all__ = ["PerturbationSpec", "check_images", "compose", "create_perturbation", "default_generator",
           "list_perturbations", "register_perturbation"]
