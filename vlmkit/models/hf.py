"""Hugging Face ``transformers`` family: CLIP and SigLIP (SigLIP2 fixed-resolution checkpoints too).

Spec forms (after ``hf:``): a hub id (``openai/clip-vit-base-patch32``,
``google/siglip2-base-patch16-224``) or a local folder saved with ``save_pretrained`` (``hf:/path``).
The image processor's resize/crop/normalise settings are read from ``preprocessor_config.json`` and
re-implemented differentiably (see :func:`vlmkit.models.preprocess.resize_and_normalise`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlmkit.errors import ModelSpecError
from vlmkit.models import hub
from vlmkit.models.base import VLM
from vlmkit.models.preprocess import PreprocessConfig
from vlmkit.registry import MODELS

_SUPPORTED = ("clip", "siglip")
_PIL_RESAMPLE = {0: "nearest", 1: "bilinear", 2: "bilinear", 3: "bicubic", 4: "area", 5: "bicubic"}
_DEFAULTS = {
    "clip": dict(mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711),
                 interpolation="bicubic", resize_mode="shortest"),
    "siglip": dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bilinear", resize_mode="squash"),
}


def _features(out: Any) -> torch.Tensor:
    """transformers 5.x returns an output object whose ``pooler_output`` is the projection; 4.x a tensor."""
    if isinstance(out, torch.Tensor):
        return out
    if getattr(out, "pooler_output", None) is not None:
        return out.pooler_output
    return out[0]


def preprocess_config(model_type: str, image_size: int, processor_cfg: dict[str, Any] | None) -> PreprocessConfig:
    """Build a :class:`PreprocessConfig` from a ``preprocessor_config.json`` dict (or defaults)."""
    d = dict(_DEFAULTS[model_type])
    size: tuple[int, int] = (image_size, image_size)
    if processor_cfg:
        d["mean"] = tuple(processor_cfg.get("image_mean", d["mean"]))
        d["std"] = tuple(processor_cfg.get("image_std", d["std"]))
        if "resample" in processor_cfg:
            d["interpolation"] = _PIL_RESAMPLE.get(int(processor_cfg["resample"]), d["interpolation"])
        sz = processor_cfg.get("size", {})
        crop = processor_cfg.get("crop_size", {})
        if processor_cfg.get("do_center_crop") and isinstance(crop, dict) and "height" in crop:
            d["resize_mode"] = "shortest"
            size = (int(crop["height"]), int(crop["width"]))
        elif isinstance(sz, dict) and "height" in sz:
            d["resize_mode"] = "squash"
            size = (int(sz["height"]), int(sz["width"]))
    return PreprocessConfig(size=size, **d)


class HFVLM(VLM):
    """A transformers ``CLIPModel`` / ``SiglipModel`` behind the :class:`VLM` interface."""

    family = "hf"

    def __init__(self, model: nn.Module, tokenizer: Any, *, name: str, model_type: str,
                 processor_cfg: dict[str, Any] | None = None, meta: dict[str, Any] | None = None) -> None:
        image_size = int(model.config.vision_config.image_size)
        super().__init__(model, name=name, preprocess_cfg=preprocess_config(model_type, image_size, processor_cfg),
                         meta=meta)
        self.tokenizer = tokenizer
        self.model_type = model_type
        self.context_length = int(model.config.text_config.max_position_embeddings)

    def _encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return _features(self.model.get_image_features(pixel_values=pixels))

    def _encode_texts(self, texts: list[str]) -> torch.Tensor:
        if self.model_type == "siglip":  # SigLIP is trained on max-length padded text without a mask
            enc = self.tokenizer(texts, padding="max_length", truncation=True, max_length=self.context_length,
                                 return_tensors="pt")
            return _features(self.model.get_text_features(input_ids=enc["input_ids"].to(self.device)))
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.context_length, return_tensors="pt")
        return _features(self.model.get_text_features(input_ids=enc["input_ids"].to(self.device),
                                                      attention_mask=enc["attention_mask"].to(self.device)))

    @property
    def blocks(self) -> list[nn.Module]:
        """The vision encoder's layers."""
        return list(self.model.vision_model.encoder.layers)

    @property
    def attention_modules(self) -> list[nn.Module] | None:
        """Each layer's ``self_attn``."""
        return [layer.self_attn for layer in self.blocks]

    @property
    def num_prefix_tokens(self) -> int:
        """1 (class token) for CLIP, 0 for SigLIP (no class token)."""
        return 1 if self.model_type == "clip" else 0


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when the file does not exist (a config a folder may lack)."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ModelSpecError(f"{str(path)!r} is not valid JSON: {e}") from e


@MODELS.register("hf", description="transformers CLIP / SigLIP hub ids and save_pretrained folders")
def load_hf(rest: str, device: torch.device, dtype: torch.dtype, *, spec: str | None = None) -> HFVLM:
    """Load a transformers CLIP/SigLIP model from a hub id or a local folder."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    spec = spec or f"hf:{rest}"
    if not rest:
        raise ModelSpecError(f"model spec {spec!r} names no model; e.g. 'hf:openai/clip-vit-base-patch32' or 'hf:/path'")
    is_local = hub.looks_like_path(rest)
    if is_local:
        src = str(hub.require_path(rest, f"transformers model folder for {spec!r}",
                                   "Expected a folder written by model.save_pretrained(...) with config.json."))
        if not os.path.isfile(os.path.join(src, "config.json")):
            raise ModelSpecError(f"{src!r} has no config.json: expected a folder written by save_pretrained()")
        load = lambda fn: fn()  # noqa: E731
    else:
        src = rest
        cached = hub.cached_hub_file(rest, "config.json") is not None
        kw = {"local_files_only": True} if hub.offline() else {}

        def load(fn: Any, _cached: bool = cached, _kw: dict = kw) -> Any:
            return hub.fetch_or_explain(f"transformers model {rest!r}", lambda: fn(**_kw),
                                        local_hint="'hf:/path/to/folder' (saved with save_pretrained)",
                                        cached=_cached)

    config = load(lambda **kw: AutoConfig.from_pretrained(src, **kw))
    model_type = getattr(config, "model_type", None)
    if model_type == "siglip2":
        raise ModelSpecError(f"{spec!r} is a SigLIP2 NaFlex model (model_type 'siglip2'), whose variable-resolution "
                             "patching vlmkit does not support yet; fixed-resolution SigLIP2 checkpoints "
                             "(e.g. google/siglip2-base-patch16-224, model_type 'siglip') load fine")
    if model_type not in _SUPPORTED:
        raise ModelSpecError(f"{spec!r} is a {model_type!r} model; the hf family supports {list(_SUPPORTED)}")
    model = load(lambda **kw: AutoModel.from_pretrained(src, **kw))
    tokenizer = hub.load_companion(spec, "tokenizer",
                                   lambda: load(lambda **kw: AutoTokenizer.from_pretrained(src, **kw)),
                                   hint=" (vlmkit.models.hf.save_offline_clip_tokenizer writes a CLIP BPE "
                                        "tokenizer without network)")
    processor_cfg = read_json(Path(src) / "preprocessor_config.json") if is_local else hub_processor_config(rest)
    model = model.to(device=device, dtype=dtype)
    meta = {"spec": spec, "weights": src, "model_type": model_type}
    robust = read_json(Path(src) / "robust.json") if is_local else None
    if robust is not None:  # made by vlmkit.robust: its provenance travels with the model
        meta["robust"] = robust
    return HFVLM(model, tokenizer, name=spec, model_type=model_type, processor_cfg=processor_cfg, meta=meta)


def hub_processor_config(repo: str) -> dict[str, Any] | None:
    """The ``preprocessor_config.json`` of a hub repository, from the cache or (when online) a download.

    Args:
        repo: Hub id, e.g. ``"openai/clip-vit-base-patch32"``.

    Returns:
        The parsed JSON, or ``None`` when the file is not cached and cannot be downloaded.
    """
    path = hub.cached_hub_file(repo, "preprocessor_config.json")
    if path is None and not hub.offline():
        try:
            from huggingface_hub import hf_hub_download

            path = hf_hub_download(repo, "preprocessor_config.json")
        except Exception:
            path = None
    return read_json(Path(path)) if path else None


def save_offline_clip_tokenizer(folder: str | os.PathLike, context_length: int = 77) -> Path:
    """Write a transformers CLIP BPE tokenizer to ``folder`` without network.

    open_clip ships OpenAI's BPE vocabulary; its ``SimpleTokenizer`` encoder and merge ranks are exactly
    the ``vocab.json`` and ``merges.txt`` of ``openai/clip-vit-*`` tokenizers.

    Args:
        folder: Output folder (created).
        context_length: ``model_max_length`` of the tokenizer.
    """
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    st = SimpleTokenizer()
    (folder / "vocab.json").write_text(json.dumps(st.encoder, ensure_ascii=False))
    merges = sorted(st.bpe_ranks.items(), key=lambda kv: kv[1])
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for (a, b), _ in merges) + "\n")
    tok = CLIPTokenizer(vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"),
                        model_max_length=context_length)
    tok.save_pretrained(folder)
    return folder
