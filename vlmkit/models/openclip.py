"""open_clip family: any architecture + pretrained tag, hub id, local file or local folder.

Spec forms (after the ``open_clip:`` prefix):

* ``ViT-B-32/laion2b_s34b_b79k`` — architecture + pretrained tag (OpenAI CLIP, LAION OpenCLIP,
  SigLIP/SigLIP2, MetaCLIP ...). Downloads through open_clip when online.
* ``ViT-B-32`` — random initialisation (logged as such).
* ``ViT-B-32/path/to/weights.(pt|bin|pth|safetensors)`` — architecture + local checkpoint.
* ``hf-hub:chs20/fare2-clip`` — an open_clip model published on the hub (robust CLIP: FARE, TeCoA).
* ``local-dir:/path`` or ``/path/to/dir`` — a folder with ``open_clip_config.json`` and weights
  (open_clip's own export layout; the toy world ships its models this way).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlmkit.errors import ModelSpecError, WeightsNotFoundError, did_you_mean
from vlmkit.models import hub
from vlmkit.models.base import VLM
from vlmkit.models.preprocess import PreprocessConfig
from vlmkit.registry import MODELS

log = logging.getLogger("vlmkit.models")


def _preprocess_from_visual(visual: nn.Module) -> PreprocessConfig:
    cfg: dict[str, Any] = dict(getattr(visual, "preprocess_cfg", {}) or {})
    size = cfg.get("size", getattr(visual, "image_size", 224))
    size = (size, size) if isinstance(size, int) else tuple(size)
    fill = cfg.get("fill_color", 0)
    return PreprocessConfig(
        size=(int(size[0]), int(size[1])),
        mean=tuple(float(m) for m in cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))),
        std=tuple(float(s) for s in cfg.get("std", (0.26862954, 0.26130258, 0.27577711))),
        interpolation=str(cfg.get("interpolation", "bicubic")),
        resize_mode=str(cfg.get("resize_mode", "shortest")),
        fill=float(fill) / 255.0 if isinstance(fill, (int, float)) and fill > 1 else float(fill or 0),
    )


class OpenCLIPVLM(VLM):
    """An open_clip ``CLIP``/``CustomTextCLIP`` behind the :class:`VLM` interface."""

    family = "open_clip"

    def __init__(self, model: nn.Module, tokenizer: Any, *, name: str, meta: dict[str, Any] | None = None) -> None:
        super().__init__(model, name=name, preprocess_cfg=_preprocess_from_visual(model.visual), meta=meta)
        self.tokenizer = tokenizer

    def _encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)

    def _encode_texts(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts).to(self.device)
        return self.model.encode_text(tokens)

    # -- internals of the image tower
    def _tower(self) -> tuple[str, nn.Module]:
        v = self.model.visual
        if hasattr(v, "transformer") and hasattr(v.transformer, "resblocks"):
            return "vit", v
        if hasattr(v, "trunk") and hasattr(v.trunk, "blocks"):
            return "timm_vit", v.trunk
        if all(hasattr(v, f"layer{i}") for i in range(1, 5)):
            return "resnet", v
        return "other", v

    @property
    def blocks(self) -> list[nn.Module]:
        """Residual blocks (ViT: ``transformer.resblocks``; timm: ``trunk.blocks``) or the four ResNet stages."""
        kind, t = self._tower()
        if kind == "vit":
            return list(t.transformer.resblocks)
        if kind == "timm_vit":
            return list(t.blocks)
        if kind == "resnet":
            return [t.layer1, t.layer2, t.layer3, t.layer4]
        raise ModelSpecError(f"model {self.name!r}: image tower {type(t).__name__} exposes no blocks vlmkit knows")

    @property
    def attention_modules(self) -> list[nn.Module] | None:
        """Each block's ``attn`` (ViT and timm towers); None for ResNet towers."""
        kind, _ = self._tower()
        if kind in ("vit", "timm_vit"):
            return [b.attn for b in self.blocks]
        return None

    @property
    def num_prefix_tokens(self) -> int:
        """1 (class token) for open_clip ViTs, the trunk's ``num_prefix_tokens`` for timm towers, else 0."""
        kind, t = self._tower()
        if kind == "vit":
            return 1
        if kind == "timm_vit":
            return int(getattr(t, "num_prefix_tokens", 1))
        return 0

    def tokens_from_block_output(self, out: Any) -> torch.Tensor:
        """Block output → ``(B, N, C)``: ResNet maps flattened row-major, sequence-first ViT outputs transposed."""
        out = out[0] if isinstance(out, tuple) else out
        kind, t = self._tower()
        if kind == "resnet":  # (B, C, h, w) -> (B, h*w, C)
            return out.flatten(2).transpose(1, 2)
        if kind == "vit" and not getattr(t.transformer, "batch_first", True):
            return out.transpose(0, 1)
        return out

    def token_grid(self, n: int) -> tuple[int, int]:
        """The ViT's own ``grid_size`` when it holds ``n`` tokens, else the base class's factorisation."""
        kind, t = self._tower()
        if kind == "vit":
            gh, gw = t.grid_size
            if gh * gw == n:
                return int(gh), int(gw)
        return super().token_grid(n)


def _known_archs() -> list[str]:
    import open_clip

    return list(open_clip.list_models())


def local_export_dir(rest: str, spec: str) -> Path | None:
    """The open_clip export folder a spec's rest names (``local-dir:PATH``, a path, or an existing folder),
    checked to hold ``open_clip_config.json``; None when the rest names no folder.

    Raises:
        DataNotFoundError: The folder does not exist.
        ModelSpecError: It has no ``open_clip_config.json``.
    """
    local_dir = rest[len("local-dir:"):] if rest.startswith("local-dir:") else None
    if local_dir is None and (rest.startswith(("/", "./", "../", "~")) or Path(rest).expanduser().is_dir()):
        local_dir = rest
    if local_dir is None:
        return None
    p = hub.require_path(local_dir, f"open_clip model folder for {spec!r}",
                         "Expected a folder with open_clip_config.json and open_clip_model.safetensors.")
    if not (p / "open_clip_config.json").is_file():
        raise ModelSpecError(f"{str(p)!r} has no open_clip_config.json; for a weights file pass "
                             f"'open_clip:<arch>/{p}' (e.g. open_clip:ViT-B-32/{p})")
    return p


@MODELS.register("open_clip", description="open_clip architectures, pretrained tags, hub ids, local files")
def load_open_clip(rest: str, device: torch.device, dtype: torch.dtype, *, spec: str | None = None,
                   vlm_class: type[OpenCLIPVLM] = OpenCLIPVLM) -> OpenCLIPVLM:
    """Load an open_clip model from the part of the spec after ``open_clip:``.

    Args:
        rest: The spec after ``open_clip:`` (see the module docstring).
        device: Where the weights go.
        dtype: Parameter dtype.
        spec: The full spec, recorded as the model's name (default ``open_clip:<rest>``).
        vlm_class: The :class:`OpenCLIPVLM` subclass to construct (families built on open_clip
            checkpoints, such as the toy world's :class:`~vlmkit.models.toy.ToyVLM`).
    """
    import open_clip

    spec = spec or f"open_clip:{rest}"
    if not rest:
        raise ModelSpecError(f"model spec {spec!r} names no architecture; e.g. 'open_clip:ViT-B-32/laion2b_s34b_b79k'")
    meta: dict[str, Any] = {"spec": spec}

    if rest.startswith("hf-hub:"):
        repo = rest[len("hf-hub:"):]
        cached = hub.cached_hub_file(repo, "open_clip_config.json") is not None
        model = hub.fetch_or_explain(
            f"open_clip hub model {repo!r}",
            lambda: open_clip.create_model(rest, device=device, precision="fp32"),
            local_hint="'open_clip:local-dir:/path/to/folder' (a folder with open_clip_config.json + weights)",
            cached=cached,
        )
        tokenizer = _tokenizer(rest)
        meta.update(weights=rest)
        return _finish(model, tokenizer, spec, device, dtype, meta, vlm_class)

    p = local_export_dir(rest, spec)
    if p is not None:
        model = open_clip.create_model(f"local-dir:{p}", device=device, precision="fp32")
        tokenizer = _tokenizer(f"local-dir:{p}")
        meta.update(weights=str(p))
        if (p / "robust.json").is_file():  # made by vlmkit.robust: its provenance travels with the model
            meta["robust"] = json.loads((p / "robust.json").read_text())
        return _finish(model, tokenizer, spec, device, dtype, meta, vlm_class)

    arch, _, tail = rest.partition("/")
    archs = _known_archs()
    if arch not in archs:
        raise ModelSpecError(f"unknown open_clip architecture {arch!r} in spec {spec!r}.{did_you_mean(arch, archs)} "
                             "See open_clip.list_models() for all names.")
    if not tail:
        log.warning("open_clip:%s: no pretrained tag or weights given — RANDOMLY INITIALISED weights", arch)
        model = open_clip.create_model(arch, pretrained=None, device=device, precision="fp32")
        meta.update(weights=None, random_init=True)
    elif hub.looks_like_path(tail):
        path = hub.require_path(tail, f"open_clip {arch} weights for {spec!r}",
                                "Pass an existing .pt/.bin/.pth/.safetensors checkpoint of that architecture.")
        model = open_clip.create_model(arch, pretrained=str(path), device=device, precision="fp32")
        meta.update(weights=str(path))
    else:
        tags = list(open_clip.list_pretrained_tags_by_model(arch))
        if tail not in tags:
            raise ModelSpecError(f"unknown pretrained tag {tail!r} for open_clip {arch}.{did_you_mean(tail, tags)} "
                                 f"Known tags for {arch}: {', '.join(tags) or '(none)'}; or give a local weights path.")
        cfg = open_clip.get_pretrained_cfg(arch, tail)
        hub_id = (cfg.get("hf_hub") or "").rstrip("/")
        cached = False
        if hub_id:
            parts = hub_id.split("/")
            repo = "/".join(parts[:2])
            fname = "/".join(parts[2:]) or "open_clip_pytorch_model.bin"
            cached = any(hub.cached_hub_file(repo, f) for f in (fname, "open_clip_model.safetensors",
                                                                  "open_clip_pytorch_model.bin"))
        model = hub.fetch_or_explain(
            f"open_clip {arch} pretrained weights {tail!r}" + (f" (hub {hub_id})" if hub_id else ""),
            lambda: open_clip.create_model(arch, pretrained=tail, device=device, precision="fp32"),
            local_hint=f"'open_clip:{arch}/path/to/weights.safetensors'",
            cached=cached,
        )
        meta.update(weights=tail, hub=hub_id or cfg.get("url"))
    tokenizer = _tokenizer(arch)
    return _finish(model, tokenizer, spec, device, dtype, meta, vlm_class)


def _tokenizer(name: str) -> Any:
    """open_clip's tokenizer for ``name``; CLIP's BPE ships with open_clip, others (SigLIP's
    SentencePiece, HF tokenizers) are hub files, whose absence offline becomes a clear error."""
    import open_clip

    try:
        return open_clip.get_tokenizer(name)
    except Exception as e:
        raise WeightsNotFoundError(
            f"tokenizer of open_clip model {name!r} could not be loaded ({type(e).__name__}: {str(e)[:200]}); "
            f"it is downloaded from the hub (looked in {hub.hf_cache_dir()}). Without network, use a model whose "
            "tokenizer ships with open_clip (CLIP BPE) or a local-dir export that includes its tokenizer files"
        ) from e


def _finish(model: nn.Module, tokenizer: Any, spec: str, device: torch.device, dtype: torch.dtype,
            meta: dict[str, Any], vlm_class: type[OpenCLIPVLM]) -> OpenCLIPVLM:
    model = model.to(device=device, dtype=dtype)
    return vlm_class(model, tokenizer, name=spec, meta=meta)
