"""CLIPSeg (Lüddecke & Ecker 2022) behind a pixel-space interface, and its offline-aware loader.

CLIPSeg ("Image Segmentation Using Text and Image Prompts", CVPR 2022) puts a light transformer
decoder on a frozen CLIP: activations of a few vision layers are FiLM-conditioned on the prompt's
CLIP text embedding and decoded into a per-pixel logit map.

* :func:`load_clipseg` — ``"hf:CIDAS/clipseg-rd64-refined"``, ``"CIDAS/clipseg-rd64-refined"``,
  ``"clipseg:<id>"`` or a local ``save_pretrained`` folder, offline-aware like
  :func:`vlmkit.models.hf.load_hf` → :class:`CLIPSegTaskModel` with
  :meth:`~CLIPSegTaskModel.predict_masks` ``(images (B,3,H,W) in [0,1], prompts) -> (B,H,W)``
  probabilities at the input resolution;
* :func:`clipseg_preprocess_config` / :data:`CLIPSEG_DEFAULT_PREPROCESS` — its resize and normalisation.

The grid task that uses it is :class:`vlmkit.tasks.segmentation.SegmentationTask`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from vlmkit.errors import InputError, ModelSpecError
from vlmkit.models import hub
from vlmkit.models.base import WrapsModule
from vlmkit.models.preprocess import PreprocessConfig, resize_and_normalise
from vlmkit.runtime import resolve_device, resolve_dtype
from vlmkit.tasks.loading import resolve_source, strip_prefix
from vlmkit.validate import check_images

#: CLIPSeg's processor (``ViTImageProcessor`` of ``CIDAS/clipseg-rd64-refined``): squash to 352, ImageNet stats.
CLIPSEG_DEFAULT_PREPROCESS = PreprocessConfig(size=(352, 352), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                                              interpolation="bilinear", resize_mode="squash")
_PIL_RESAMPLE = {0: "nearest", 1: "bilinear", 2: "bilinear", 3: "bicubic", 4: "area", 5: "bicubic"}


# ----------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------


def clipseg_preprocess_config(processor_cfg: dict[str, Any] | None) -> PreprocessConfig:
    """CLIPSeg preprocessing from a ``preprocessor_config.json`` dict (always a squash resize, as ViT's processor)."""
    d = CLIPSEG_DEFAULT_PREPROCESS
    if not processor_cfg:
        return d
    size = processor_cfg.get("size", d.size[0])
    if isinstance(size, dict):
        hw = (int(size.get("height", size.get("shortest_edge", d.size[0]))),
              int(size.get("width", size.get("shortest_edge", d.size[1]))))
    else:
        hw = (int(size), int(size))
    interp = _PIL_RESAMPLE.get(int(processor_cfg.get("resample", 2)), "bilinear")
    return PreprocessConfig(size=hw, mean=tuple(processor_cfg.get("image_mean", d.mean)),
                            std=tuple(processor_cfg.get("image_std", d.std)), interpolation=interp,
                            resize_mode="squash")


class CLIPSegTaskModel(WrapsModule):
    """A transformers ``CLIPSegForImageSegmentation`` behind a pixel-space interface.

    Images are float ``(B, 3, H, W)`` in [0, 1] of any size; the model's resize and normalisation are
    applied inside (:func:`vlmkit.models.preprocess.resize_and_normalise`) and the logit map is resized back
    to ``(H, W)``. Parameters are frozen and the model is in eval mode. :meth:`segment` runs the
    forward pass step by step so that masks are differentiable in the pixels (attack cells).

    Attributes:
        name: The spec it was loaded from.
        preprocess_cfg: Resize/normalise settings (from ``preprocessor_config.json``).
        meta: Provenance (spec, weights folder or hub id).
    """

    family = "clipseg"

    def __init__(self, model: torch.nn.Module, tokenizer: Any, *, name: str,
                 preprocess_cfg: PreprocessConfig = CLIPSEG_DEFAULT_PREPROCESS,
                 meta: dict[str, Any] | None = None) -> None:
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.preprocess_cfg = preprocess_cfg
        self.meta = dict(meta or {})
        self.context_length = int(model.config.text_config.max_position_embeddings)

    @property
    def image_size(self) -> tuple[int, int]:
        return self.preprocess_cfg.size

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """``[0, 1]`` images → normalised model input ``(B, 3, *image_size)``."""
        check_images(x, "images")
        return resize_and_normalise(x.to(self.device).float(), self.preprocess_cfg).to(self.dtype)

    def encode_prompts(self, prompts: Sequence[str] | str) -> torch.Tensor:
        """CLIPSeg conditional embeddings ``(P, D)`` of text prompts (CLIP text projections)."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise InputError(f"prompts must be non-empty strings, got {prompts!r}")
        enc = self.tokenizer(prompts, padding=True, truncation=True, max_length=self.context_length,
                             return_tensors="pt")
        return self.model.get_conditional_embeddings(batch_size=len(prompts),
                                                     input_ids=enc["input_ids"].to(self.device),
                                                     attention_mask=enc["attention_mask"].to(self.device))

    def segment(self, images: torch.Tensor, prompts: Sequence[str] | str | None = None,
                prompt_emb: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Logit maps ``(B, H, W)`` at the input resolution and the CLIP image embeddings ``(B, D)``.

        Args:
            images: Float ``(B, 3, H, W)`` in [0, 1].
            prompts: One prompt for every image, or one per image.
            prompt_emb: Precomputed conditional embeddings ``(B, D)`` (or ``(1, D)``) instead of ``prompts``.
        """
        pixels = self.preprocess(images)
        B, (H, W) = images.shape[0], images.shape[-2:]
        if prompt_emb is None:
            if prompts is None:
                raise InputError("segment() needs prompts or prompt_emb")
            plist = [prompts] if isinstance(prompts, str) else list(prompts)
            if len(plist) not in (1, B):
                raise InputError(f"got {len(plist)} prompts for {B} images; pass one prompt or one per image")
            prompt_emb = self.encode_prompts(plist)
        if prompt_emb.shape[0] == 1 and B > 1:
            prompt_emb = prompt_emb.expand(B, -1)
        if prompt_emb.shape[0] != B:
            raise InputError(f"prompt_emb has {prompt_emb.shape[0]} rows for {B} images")
        # CLIPSegForImageSegmentation.forward, step by step: transformers runs the CLIP tower under
        # no_grad, which would cut the gradient that white-box attacks need
        m = self.model
        vision = m.clip.get_image_features(pixel_values=pixels, interpolate_pos_encoding=True,
                                           output_hidden_states=True)
        activations = [vision.hidden_states[i + 1] for i in m.extract_layers]  # hidden_states[0]: embeddings
        dec = m.decoder(activations, prompt_emb.to(self.device, self.dtype))
        logits = dec.logits.reshape(B, *dec.logits.shape[-2:]).float()  # (B, h, w)
        if logits.shape[-2:] != (H, W):
            logits = F.interpolate(logits[:, None], size=(H, W), mode="bilinear", align_corners=False)[:, 0]
        return logits, vision.pooler_output.float()

    def predict_masks(self, images: torch.Tensor, prompts: Sequence[str] | str) -> torch.Tensor:
        """Foreground probabilities ``(B, H, W)`` in [0, 1] for each image and its prompt."""
        with torch.inference_mode():
            logits, _ = self.segment(images, prompts)
        return torch.sigmoid(logits)

    def __repr__(self) -> str:
        return f"CLIPSegTaskModel(name={self.name!r}, image_size={self.image_size}, device={self.device})"


def load_clipseg(spec: str = "hf:CIDAS/clipseg-rd64-refined", device: str | torch.device | None = "auto",
                 dtype: str | torch.dtype | None = None) -> CLIPSegTaskModel:
    """Load CLIPSeg from a hub id or a local folder.

    Args:
        spec: ``"hf:CIDAS/clipseg-rd64-refined"``, ``"clipseg:CIDAS/clipseg-rd64-refined"``, the bare
            hub id, or a folder written by ``save_pretrained`` (with the tokenizer and, optionally,
            ``preprocessor_config.json``).
        device: "auto", "cpu", "cuda".
        dtype: Parameter dtype (default float32).

    Raises:
        ModelSpecError: The folder or checkpoint is not a CLIPSeg model.
        WeightsNotFoundError: Offline and not cached, or the download failed (the message says how to
            pass a local folder).
    """
    from transformers import AutoConfig, AutoTokenizer, CLIPSegForImageSegmentation

    from vlmkit.models.hf import hub_processor_config, read_json

    rest = strip_prefix(str(spec), ("clipseg:", "hf:", "transformers:"))
    src, is_local, load = resolve_source(rest, "CLIPSeg model", "hf:CIDAS/clipseg-rd64-refined")
    config = load(lambda **kw: AutoConfig.from_pretrained(src, **kw))
    if getattr(config, "model_type", None) != "clipseg":
        raise ModelSpecError(f"{spec!r} is a {getattr(config, 'model_type', None)!r} model, not CLIPSeg "
                             "(model_type 'clipseg'), e.g. 'hf:CIDAS/clipseg-rd64-refined'")
    model = load(lambda **kw: CLIPSegForImageSegmentation.from_pretrained(src, **kw))
    tokenizer = hub.load_companion(spec, "tokenizer",
                                   lambda: load(lambda **kw: AutoTokenizer.from_pretrained(src, **kw)))
    cfg = read_json(Path(src) / "preprocessor_config.json") if is_local else hub_processor_config(src)
    dev = resolve_device(device)
    model = model.to(device=dev, dtype=resolve_dtype(dtype, dev))
    return CLIPSegTaskModel(model, tokenizer, name=str(spec), preprocess_cfg=clipseg_preprocess_config(cfg),
                            meta={"spec": str(spec), "weights": src})


__all__ = ["CLIPSEG_DEFAULT_PREPROCESS", "CLIPSegTaskModel", "clipseg_preprocess_config", "load_clipseg"]
