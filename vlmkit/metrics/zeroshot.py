"""Zero-shot classification with prompt ensembles (Radford et al. 2021, §3.1.4).

The class embeddings (the renormalised mean over templates of the normalised text embeddings of each
class name) come from the model: :func:`vlmkit.models.zeroshot.zero_shot_classifier`. Logits are the
model's own: ``logit_scale · cos`` (+ ``logit_bias`` for SigLIP); probabilities use a softmax for
contrastively-trained CLIPs and a per-class sigmoid for SigLIP (Zhai et al. 2023).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vlmkit.errors import InputError
from vlmkit.registry import METRICS


def zero_shot_logits(vlm: object, image_emb: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
    """The model's logits ``(B, C)`` for normalised image embeddings and class embeddings."""
    return vlm.similarity(image_emb, classifier.to(image_emb.device))


def class_probabilities(logits: torch.Tensor, sigmoid: bool = False) -> torch.Tensor:
    """Softmax over classes (CLIP) or per-class sigmoid (SigLIP) ``(B, C)``."""
    return torch.sigmoid(logits) if sigmoid else logits.softmax(dim=-1)


@METRICS.register("topk_accuracy", kind="logits")
def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Top-k accuracy for each ``k`` (ties broken by ``torch.topk`` order).

    Returns:
        ``{"top1": ..., "top5": ...}`` in [0, 1].
    """
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise InputError(f"expected logits (B, C) and labels (B,), got {tuple(logits.shape)} and {tuple(labels.shape)}")
    labels = labels.to(logits.device)
    out = {}
    for k in ks:
        kk = min(k, logits.shape[1])
        hit = (logits.topk(kk, dim=1).indices == labels[:, None]).any(dim=1)
        out[f"top{k}"] = float(hit.float().mean())
    return out


def margin(logits: torch.Tensor) -> torch.Tensor:
    """Top-1 minus top-2 logit per sample ``(B,)`` (decision margin)."""
    top2 = logits.topk(2, dim=1).values
    return top2[:, 0] - top2[:, 1]
