"""The ConSE :class:`~vlmkit.models.base.VLM`: the combination, the model class and the ``conse`` loader.

ConSE (Norouzi et al. 2014, "Zero-Shot Learning by Convex Combination of Semantic Embeddings", ICLR 2014)
maps an image into the text space as the probability-weighted mixture of the top-``T`` class-name
embeddings, ``f(x) = normalise(Σ_{c ∈ top-T(p)} p̃_c e_c)``. :func:`load_conse` is registered in
:data:`vlmkit.registry.MODELS` as the ``conse`` family.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlmkit.data import imagenet_classnames
from vlmkit.errors import InputError, ModelSpecError
from vlmkit.models.base import VLM
from vlmkit.models.conse.classifier import LITE0_PREPROCESS, load_classifier, timm_preprocess
from vlmkit.models.conse.spec import (
    DEFAULT_SCALE,
    DEFAULT_TOP,
    PACKAGED_CLASSIFIER,
    parse_conse_spec,
    template_set,
)
from vlmkit.models.conse.text import class_name_embeddings, load_text_encoder, sentence_embeddings
from vlmkit.models.preprocess import PreprocessConfig
from vlmkit.registry import MODELS


def conse_combine(probs: torch.Tensor, class_embeddings: torch.Tensor, top: int | None) -> torch.Tensor:
    """The ConSE image embedding (Norouzi et al. 2014), unnormalised.

    Args:
        probs: Class probabilities ``(B, C)``.
        class_embeddings: Class-name embeddings ``(C, D)``.
        top: Combine the ``top`` most probable classes with their probabilities renormalised to sum to 1,
            or all classes when None.

    Returns:
        ``Σ_c p̃_c e_c`` ``(B, D)`` (differentiable in ``probs``).
    """
    if probs.ndim != 2 or class_embeddings.ndim != 2 or probs.shape[1] != class_embeddings.shape[0]:
        raise InputError(f"expected probs (B, C) and class_embeddings (C, D), got {tuple(probs.shape)} and "
                         f"{tuple(class_embeddings.shape)}")
    emb = class_embeddings.to(probs.dtype)
    if top is None or top >= probs.shape[1]:
        return probs @ emb  # (B, D)
    vals, idx = probs.topk(top, dim=1)  # (B, T)
    w = vals / vals.sum(dim=1, keepdim=True).clamp_min(torch.finfo(vals.dtype).tiny)  # (B, T)
    return torch.einsum("bt,btd->bd", w, emb[idx])  # (B, D)


class ConSEVLM(VLM):
    """ConSE (Norouzi et al. 2014): a timm ImageNet classifier + a sentence encoder behind the :class:`VLM`
    interface.

    ``encode_image`` = normalise(Σ_{top-T} p̃_c e_c) over the classifier's softmax ``p`` (384-d for MiniLM);
    ``encode_text`` = the sentence encoder's embedding. No attention heads; ``vision_tokens`` are the
    classifier's feature maps flattened ``(B, h*w, C)``.

    Attributes:
        classifier: The timm classifier (``self.model["classifier"]``).
        text_model: The ``SentenceTransformer`` (``self.model["text"]``).
        class_embeddings: ``(1000, D)`` buffer of class-name embeddings ``e_c``.
        classnames: The 1000 class names (``vlmkit.data.imagenet_classnames()``).
        templates: The prompt templates behind ``class_embeddings``.
        top: Number of classes combined (None = all).
    """

    family = "conse"

    def __init__(self, classifier: nn.Module, text_model: nn.Module, class_embeddings: torch.Tensor, *, name: str,
                 classnames: Sequence[str], templates: Sequence[str], top: int | None = DEFAULT_TOP,
                 scale: float = DEFAULT_SCALE, preprocess_cfg: PreprocessConfig | None = None,
                 meta: dict[str, Any] | None = None) -> None:
        if class_embeddings.shape[0] != len(classnames):
            raise InputError(f"class_embeddings has {class_embeddings.shape[0]} rows for {len(classnames)} classes")
        if top is not None and top < 1:
            raise InputError(f"top must be >= 1 or None, got {top}")
        super().__init__(nn.ModuleDict({"classifier": classifier, "text": text_model}), name=name,
                         preprocess_cfg=preprocess_cfg or timm_preprocess(classifier), meta=meta)
        self.register_buffer("class_embeddings", F.normalize(class_embeddings.float(), dim=-1), persistent=False)
        self.classnames = list(classnames)
        self.templates = list(templates)
        self.top = top
        self._scale = float(scale)

    @property
    def classifier(self) -> nn.Module:
        return self.model["classifier"]

    @property
    def text_model(self) -> nn.Module:
        return self.model["text"]

    @property
    def embed_dim(self) -> int:
        """Joint embedding size (the sentence encoder's)."""
        return int(self.class_embeddings.shape[1])

    # -- image side
    def _probs_to_embedding(self, logits: torch.Tensor) -> torch.Tensor:
        probs = logits.float().softmax(dim=-1)  # (B, C)
        return conse_combine(probs, self.class_embeddings.to(probs.device), self.top)  # (B, D)

    def _encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._probs_to_embedding(self.classifier(pixels))  # (B, D)

    def classifier_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The classifier's own ImageNet-1k logits ``(B, 1000)`` for ``[0, 1]`` images ``(B, 3, H, W)``."""
        return self.classifier(self.preprocess(x)).float()

    def encode_image_and_logits(self, x: torch.Tensor, normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """ConSE embeddings ``(B, D)`` and the classifier's logits ``(B, 1000)`` from one forward pass."""
        logits = self.classifier(self.preprocess(x)).float()  # (B, C)
        emb = self._probs_to_embedding(logits)  # (B, D)
        return (F.normalize(emb, dim=-1) if normalize else emb), logits

    # -- text side
    def _encode_texts(self, texts: list[str]) -> torch.Tensor:
        return sentence_embeddings(self.text_model, texts)  # (T, D)

    @property
    def logit_scale(self) -> float:
        """Fixed temperature (ConSE learns none): 100, CLIP's value, unless set with ``?scale=``."""
        return self._scale

    # -- internals
    @property
    def blocks(self) -> list[nn.Module]:
        """The classifier's stages (EfficientNet/MobileNet blocks + head, ConvNeXt/RegNet stages, ResNet layers)."""
        m = self.classifier
        if hasattr(m, "blocks") and isinstance(m.blocks, nn.Sequential):  # EfficientNet / MobileNet
            blocks = list(m.blocks)
            if hasattr(m, "conv_head") and isinstance(getattr(m, "bn2", None), nn.Module):
                blocks.append(m.bn2)  # conv_head + bn2/act: the final map that is pooled into the logits
            return blocks
        if hasattr(m, "stages"):  # ConvNeXt, RegNet, ...
            return list(m.stages)
        if all(hasattr(m, f"layer{i}") for i in range(1, 5)):  # ResNet family
            return [m.layer1, m.layer2, m.layer3, m.layer4]
        info = getattr(m, "feature_info", None)
        if info is not None:
            mods = dict(m.named_modules())
            names = [f["module"] for f in info] if isinstance(info, list) else info.module_name()
            return [mods[n] for n in names if n in mods]
        raise ModelSpecError(f"model {self.name!r}: classifier {type(m).__name__} exposes no stages vlmkit knows")

    def _tower_kind(self) -> str:
        return f"convolutional ({type(self.classifier).__name__})"


@MODELS.register("conse", description="ConSE (Norouzi et al. 2014): timm ImageNet classifier + sentence encoder, "
                                       "no pair training; offline defaults")
def load_conse(rest: str, device: torch.device, dtype: torch.dtype, *, spec: str | None = None) -> ConSEVLM:
    """Load a ConSE model (Norouzi et al. 2014) from the part of the spec after ``conse:`` (the spec forms are
    in :mod:`vlmkit.models.conse`).

    Raises:
        ModelSpecError: Malformed spec, unknown timm architecture, or a classifier that is not ImageNet-1k.
        WeightsNotFoundError: Hub weights neither cached nor reachable.
        ImportError: The ``offline`` extra (sentence-transformers and the packaged weights) is missing.
    """
    spec = spec or f"conse:{rest}"
    p = parse_conse_spec(rest)
    classifier, meta = load_classifier(p.classifier, spec)
    st, encoder_id, tmeta = load_text_encoder(p.text_encoder, device, spec)
    names = imagenet_classnames()
    templates = template_set(p.templates)
    emb = class_name_embeddings(st, names, templates, encoder_id=encoder_id)  # (1000, D)
    meta.update(tmeta, spec=spec, top=p.top, templates=p.templates, logit_scale=p.scale,
                method="ConSE (Norouzi et al. 2014)")
    pre = LITE0_PREPROCESS if meta["classifier"] == PACKAGED_CLASSIFIER else timm_preprocess(classifier)
    vlm = ConSEVLM(classifier, st, emb, name=spec, classnames=names, templates=templates, top=p.top, scale=p.scale,
                   preprocess_cfg=pre, meta=meta)
    return vlm.to(device=device, dtype=dtype)


__all__ = ["ConSEVLM", "conse_combine", "load_conse"]
