"""vlmkit: measure how CLIP-family vision-language models lose image–text alignment under perturbation.

The package holds all logic; notebooks hold parameters, calls and plots. Public entry points::

    import vlmkit
    vlm = vlmkit.load_model("toy:vit")            # or "open_clip:ViT-B-32/laion2b_s34b_b79k", "hf:..."
    emb = vlm.encode_image(x)                      # x: float (B, 3, H, W) in [0, 1]

``import vlmkit`` is light: it imports the error types and the (lazy) registries only, and sets the
process's allocator policy (:mod:`vlmkit.allocator`; ``VLMKIT_MALLOC=system`` opts out). The model and
runtime names below (``load_model``, ``VLM``, ``seed_everything`` ...) and the sub-packages
(``vlmkit.tasks``, ``vlmkit.perturb`` ...) are imported on first attribute access.

See README.md and ARCHITECTURE.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from vlmkit.errors import (
    DataError,
    DataNotFoundError,
    EmptyDatasetError,
    InputError,
    ModelSpecError,
    RegistryError,
    VLMKitError,
    WeightsNotFoundError,
)
from vlmkit.allocator import tune_allocator
from vlmkit.registry import (
    ATTACKS,
    METRICS,
    MODELS,
    PERTURBATIONS,
    TASKS,
    Registry,
    create_attack,
    create_metric,
    create_perturbation,
    list_attacks,
    list_metrics,
    list_perturbations,
    resolve_perturbations,
)

if TYPE_CHECKING:  # the lazy names, for type checkers and IDEs
    from vlmkit.models import VLM, VisionTokens, create_model, list_model_families, list_models, load_model
    from vlmkit.runtime import autocast, make_generator, resolve_device, resolve_dtype, seed_everything

tune_allocator()  # batch-sized CPU buffers reused from the heap, not page-faulted afresh: see vlmkit.allocator

#: Public names imported from a sub-module on first access (each pulls in torch).
_LAZY: dict[str, str] = {
    "VLM": "vlmkit.models",
    "VisionTokens": "vlmkit.models",
    "load_model": "vlmkit.models",
    "create_model": "vlmkit.models",
    "list_models": "vlmkit.models",
    "list_model_families": "vlmkit.models",
    "autocast": "vlmkit.runtime",
    "make_generator": "vlmkit.runtime",
    "resolve_device": "vlmkit.runtime",
    "resolve_dtype": "vlmkit.runtime",
    "seed_everything": "vlmkit.runtime",
}

#: Sub-packages reachable as attributes (``vlmkit.tasks.X``) without importing them first.
_SUBMODULES = ("attacks", "data", "evaluate", "grid", "interpret", "metrics", "models", "perturb", "registry",
               "report", "results", "robust", "runtime", "search", "tasks", "toyworld", "validate")


def __getattr__(name: str) -> Any:
    """Import a lazy public name or sub-package on first access and cache it in the module."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))


__all__ = [
    "__version__", "tune_allocator", "VLM", "VisionTokens", "load_model", "create_model", "list_models", "list_model_families",
    "Registry", "MODELS", "PERTURBATIONS", "ATTACKS", "METRICS", "TASKS", "list_perturbations",
    "resolve_perturbations",    "create_perturbation", "list_attacks", "create_attack", "list_metrics", "create_metric", "resolve_device",
    "resolve_dtype", "autocast", "seed_everything", "make_generator", "VLMKitError", "DataError",
    "DataNotFoundError", "EmptyDatasetError", "InputError", "ModelSpecError", "RegistryError",
    "WeightsNotFoundError", "tasks",
]
