"""Toy-world family: ``toy:<name>`` loads a model shipped in ``vlmkit/toyworld/checkpoints/<name>/``.

The folders are open_clip's local-dir export (``open_clip_config.json`` + ``open_clip_model.safetensors``),
so a toy model loads through exactly the path of any other open_clip checkpoint; the training record
(``training.json``) travels with it into ``VLM.meta``.
"""

from __future__ import annotations

import json

import torch

from vlmkit.errors import ModelSpecError
from vlmkit.models.openclip import OpenCLIPVLM, load_open_clip
from vlmkit.registry import MODELS


class ToyVLM(OpenCLIPVLM):
    """A CLIP trained on the toy world by :mod:`vlmkit.toyworld` (an open_clip model)."""

    family = "toy"


@MODELS.register("toy", description="CLIPs trained on the toy world, shipped with vlmkit")
def load_toy(rest: str, device: torch.device, dtype: torch.dtype, *, spec: str | None = None) -> ToyVLM:
    """Load the shipped toy model ``rest`` (see ``vlmkit.toyworld.list_checkpoints()``)."""
    from vlmkit import toyworld

    spec = spec or f"toy:{rest}"
    names = toyworld.list_checkpoints()
    if rest not in names:
        raise ModelSpecError(f"unknown toy model {rest!r} in {spec!r}; shipped toy models: {', '.join(names) or '(none)'}")
    folder = toyworld.checkpoint_dir(rest)
    vlm = load_open_clip(f"local-dir:{folder}", device, dtype, spec=spec, vlm_class=ToyVLM)
    record = folder / "training.json"
    if record.is_file():
        vlm.meta["training"] = json.loads(record.read_text())
    return vlm
