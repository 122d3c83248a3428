"""vlmkit: measure how CLIP-family vision-language models lose image–text alignment under perturbation.

The package holds all logic; notebooks hold parameters, calls and plots. Public entry points::

    import vlmkit
    vlm = vlmkit.load_model("toy:vit")            # or "open_clip:ViT-B-32/laion2b_s34b_b79k", "hf:..."
    emb = vlm.encode_image(x)                      # x: float (B, 3, H, W) in [0, 1]

See README.md and ARCHITECTURE.md.
"""

from __future__ import annotations

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
from vlmkit.models import VLM, VisionTokens, create_model, list_model_families, list_models, load_model
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
)
from vlmkit.runtime import autocast, make_generator, resolve_device, resolve_dtype, seed_everything
from vlmkit import tasks  # noqa: E402  (registers TASKS: segmentation, answer_scoring, language_adversarial)

__all__ = [
    "__version__", "VLM", "VisionTokens", "load_model", "create_model", "list_models", "list_model_families",
    "Registry", "MODELS", "PERTURBATIONS", "ATTACKS", "METRICS", "TASKS", "list_perturbations",
    "create_perturbation", "list_attacks", "create_attack", "list_metrics", "create_metric", "resolve_device",
    "resolve_dtype", "autocast", "seed_everything", "make_generator", "VLMKitError", "DataError",
    "DataNotFoundError", "EmptyDatasetError", "InputError", "ModelSpecError", "RegistryError",
    "WeightsNotFoundError", "tasks",
]
