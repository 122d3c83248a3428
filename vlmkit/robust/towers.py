"""Which parameters form a model's image tower, and how a fine-tuned model is saved in its family's format.

Adversarial fine-tuning (FARE, TeCoA) trains the image tower only; the text tower, the logit scale and
(for SigLIP) the logit bias stay frozen. The split is by parameter name in each family's network:

* open_clip / toy: ``visual.*`` (ViT, ModifiedResNet, timm trunks);
* transformers CLIP / SigLIP: ``vision_model.*`` and ``visual_projection.*``.

:func:`save_finetuned` writes the whole model in the family's own layout, so it loads with
:func:`vlmkit.load_model` like any other checkpoint, with ``robust.json`` (provenance) beside it:

* open_clip: ``open_clip_config.json`` + ``open_clip_model.safetensors`` (load with the folder path,
  or ``open_clip:local-dir:DIR``);
* transformers: ``save_pretrained`` of model and tokenizer + ``preprocessor_config.json`` (load with
  ``hf:DIR``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlmkit.errors import InputError, ModelSpecError

#: Name prefixes of image-tower parameters, per family.
IMAGE_TOWER_PREFIXES: dict[str, tuple[str, ...]] = {
    "open_clip": ("visual.",),
    "toy": ("visual.",),
    "hf": ("vision_model.", "visual_projection."),
}

ROBUST_RECORD = "robust.json"

#: PIL resampling codes (``PIL.Image.Resampling``) written as ``resample`` in a transformers
#: ``preprocessor_config.json`` for each :class:`~vlmkit.models.preprocess.PreprocessConfig` interpolation;
#: the hf loader reads them back as the same interpolation.
PIL_RESAMPLE_CODES: dict[str, int] = {"nearest": 0, "bilinear": 2, "bicubic": 3, "area": 4}


def _prefixes(vlm: Any) -> tuple[str, ...]:
    family = getattr(vlm, "family", None)
    if family not in IMAGE_TOWER_PREFIXES:
        raise InputError(f"robust fine-tuning supports the families {sorted(IMAGE_TOWER_PREFIXES)}; "
                         f"model {getattr(vlm, 'name', vlm)!r} is of family {family!r}")
    return IMAGE_TOWER_PREFIXES[family]


def image_tower_parameters(vlm: Any) -> dict[str, nn.Parameter]:
    """The image tower's parameters of ``vlm.model`` by name (what FARE/TeCoA train).

    Raises:
        InputError: Unsupported family, or no parameter matched (an unexpected network layout).
    """
    prefixes = _prefixes(vlm)
    params = {n: p for n, p in vlm.model.named_parameters() if n.startswith(prefixes)}
    if not params:
        raise InputError(f"no image-tower parameters (names starting with {prefixes}) in {vlm.name!r}")
    return params


def frozen_parameters(vlm: Any) -> dict[str, nn.Parameter]:
    """Every parameter outside the image tower (text tower, logit scale/bias): left untouched."""
    tower = image_tower_parameters(vlm)
    return {n: p for n, p in vlm.model.named_parameters() if n not in tower}


def _open_clip_model_cfg(vlm: Any) -> dict[str, Any]:
    """The ``model_cfg`` that rebuilds ``vlm``'s network: from its local-dir config, else its arch name."""
    import open_clip

    weights = vlm.meta.get("weights")
    if isinstance(weights, str) and (Path(weights) / "open_clip_config.json").is_file():
        return json.loads((Path(weights) / "open_clip_config.json").read_text())["model_cfg"]
    spec = str(vlm.meta.get("spec", vlm.name))
    arch = spec.split(":", 1)[-1].split("/", 1)[0]
    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        raise ModelSpecError(f"cannot find the open_clip model config of {spec!r} (arch {arch!r}) to save it")
    return cfg


def _preprocess_json(vlm: Any) -> dict[str, Any]:
    c = vlm.preprocess_cfg
    return {"size": list(c.size), "mean": list(c.mean), "std": list(c.std), "interpolation": c.interpolation,
            "resize_mode": c.resize_mode}


def save_finetuned(vlm: Any, out_dir: str | Path, provenance: dict[str, Any], fp16: bool = False) -> Path:
    """Save a fine-tuned ``vlm`` in its family's layout, with ``robust.json`` (provenance) beside it.

    Args:
        vlm: The model (open_clip, toy or transformers family).
        out_dir: Folder to write (created).
        provenance: What made it (base model, method, ε, steps, data, seed, ...): written as ``robust.json``.
        fp16: Store open_clip weights in float16 (halves the size; transformers models keep their dtype).

    Returns:
        The folder; load it with ``vlmkit.load_model(str(folder))`` (open_clip) or ``hf:<folder>``.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    family = vlm.family
    if family in ("open_clip", "toy"):
        sd = {k: (v.half() if fp16 and v.is_floating_point() else v.float() if v.is_floating_point() else v)
              .detach().cpu().contiguous() for k, v in vlm.model.state_dict().items()}
        save_file(sd, str(out / "open_clip_model.safetensors"))
        cfg = {"model_cfg": _open_clip_model_cfg(vlm), "preprocess_cfg": _preprocess_json(vlm)}
        (out / "open_clip_config.json").write_text(json.dumps(cfg, indent=2))
        spec = f"open_clip:local-dir:{out}"
    elif family == "hf":
        vlm.model.save_pretrained(str(out))
        vlm.tokenizer.save_pretrained(str(out))
        c = vlm.preprocess_cfg
        resample = PIL_RESAMPLE_CODES.get(c.interpolation, PIL_RESAMPLE_CODES["bicubic"])
        pp: dict[str, Any] = {"image_mean": list(c.mean), "image_std": list(c.std), "resample": resample}
        if c.resize_mode == "shortest":
            pp.update(do_center_crop=True, crop_size={"height": c.size[0], "width": c.size[1]},
                      size={"shortest_edge": c.size[0]})
        else:
            pp.update(do_center_crop=False, size={"height": c.size[0], "width": c.size[1]})
        (out / "preprocessor_config.json").write_text(json.dumps(pp, indent=2))
        spec = f"hf:{out}"
    else:  # pragma: no cover - _prefixes() rejects other families before training starts
        raise InputError(f"cannot save a model of family {family!r}")
    (out / ROBUST_RECORD).write_text(json.dumps({**provenance, "load_spec": spec}, indent=2, default=str))
    return out


def read_provenance(folder: str | Path) -> dict[str, Any] | None:
    """``robust.json`` of a fine-tuned checkpoint folder, or ``None``."""
    f = Path(folder) / ROBUST_RECORD
    return json.loads(f.read_text()) if f.is_file() else None


def state_of(params: dict[str, nn.Parameter]) -> dict[str, torch.Tensor]:
    """Detached CPU copies of ``params`` (for checkpoints and bit-identity checks)."""
    return {n: p.detach().cpu().clone() for n, p in params.items()}
