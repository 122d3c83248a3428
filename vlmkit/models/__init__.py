"""Models: ``load_model(spec)`` → :class:`VLM`, for every family through one registry.

Spec strings are ``<family>:<rest>``::

    open_clip:ViT-B-32/laion2b_s34b_b79k     architecture + pretrained tag
    open_clip:ViT-B-32                       random init (logged)
    open_clip:ViT-B-32/path/to/weights.pt    architecture + local checkpoint
    open_clip:hf-hub:chs20/fare2-clip        open_clip model on the hub (robust CLIP)
    open_clip:local-dir:/path                open_clip export folder
    hf:openai/clip-vit-base-patch32          transformers hub id
    hf:/path/to/folder                       transformers save_pretrained folder
    toy:vit                                  a model trained on the toy world, shipped with vlmkit
    conse:default                            ConSE: packaged EfficientNet-Lite0 + MiniLM (real photos, offline)

New families register a loader ``(rest, device, dtype, *, spec) -> VLM`` with
``@MODELS.register("name")`` at its definition, in a module listed in ``MODELS.modules``
(:mod:`vlmkit.registry`).
"""

from __future__ import annotations

import logging

import torch

from vlmkit.errors import ModelSpecError, did_you_mean
from vlmkit.models.base import VLM, VisionTokens
from vlmkit.models.conse import ConSEVLM, load_conse
from vlmkit.models.hf import HFVLM, load_hf
from vlmkit.models.openclip import OpenCLIPVLM, load_open_clip
from vlmkit.models.preprocess import PreprocessConfig, resize_and_normalise
from vlmkit.models.toy import ToyVLM, load_toy
from vlmkit.registry import MODELS
from vlmkit.runtime import resolve_device, resolve_dtype

log = logging.getLogger("vlmkit.models")

_ALIASES = {"openclip": "open_clip", "open-clip": "open_clip", "transformers": "hf", "huggingface": "hf"}


def parse_spec(spec: str) -> tuple[str, str]:
    """Split ``"family:rest"``; unknown families list the known ones.

    Raises:
        ModelSpecError: Not a string, no family prefix, or an unknown family.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ModelSpecError(f"model spec must be a non-empty string like 'open_clip:ViT-B-32', got {spec!r}")
    family, sep, rest = spec.strip().partition(":")
    if not sep:
        raise ModelSpecError(f"model spec {spec!r} has no family prefix; expected '<family>:<model>' with family one "
                             f"of {MODELS.list()}, e.g. 'open_clip:{spec}' or 'hf:{spec}'")
    family = _ALIASES.get(family, family)
    if family not in MODELS:
        raise ModelSpecError(f"unknown model family {family!r} in spec {spec!r}.{did_you_mean(family, MODELS.list())} "
                             f"Known families: {', '.join(MODELS.list())}")
    return family, rest


def list_model_families() -> list[str]:
    """Registered model families (spec prefixes)."""
    return MODELS.list()


def list_models(family: str = "open_clip") -> list[str]:
    """Model names a family can load without extra arguments.

    ``open_clip``: architectures (``open_clip.list_models()``); ``open_clip_pretrained``: every
    ``arch/tag`` pair; ``toy``: the shipped toy models.
    """
    if family == "open_clip":
        import open_clip

        return sorted(open_clip.list_models())
    if family == "open_clip_pretrained":
        import open_clip

        return sorted(f"{a}/{t}" for a, t in open_clip.list_pretrained())
    if family == "toy":
        from vlmkit import toyworld

        return toyworld.list_checkpoints()
    raise ModelSpecError(f"cannot list models of family {family!r}; try 'open_clip', 'open_clip_pretrained' or 'toy'")


def load_model(spec: str, device: str | torch.device | None = "auto", dtype: str | torch.dtype | None = None) -> VLM:
    """Load any supported model as a :class:`VLM` in eval mode with frozen parameters.

    Args:
        spec: ``"<family>:<rest>"`` (see the module docstring).
        device: "auto" (CUDA when present), "cpu", "cuda", "cuda:N".
        dtype: Parameter dtype: None/"float32" (default), "bf16", "fp16".

    Raises:
        ModelSpecError: Malformed spec, unknown family/architecture/tag (with near matches).
        WeightsNotFoundError: Weights neither on disk nor reachable; the message says where vlmkit
            looked and how to pass a local path.
    """
    family, rest = parse_spec(spec)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    vlm = MODELS.get(family)(rest, dev, dt, spec=spec)
    log.info("loaded %s (%s) on %s as %s", spec, type(vlm).__name__, dev, dt)
    return vlm


create_model = load_model

__all__ = [
    "VLM", "ConSEVLM", "HFVLM", "OpenCLIPVLM", "ToyVLM", "PreprocessConfig", "VisionTokens", "resize_and_normalise",
    "load_model", "create_model", "list_models", "list_model_families", "parse_spec", "load_open_clip", "load_hf",
    "load_toy", "load_conse",
]
