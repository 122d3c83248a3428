"""Image–text retrieval: Recall@K both ways and median rank, COCO convention (several captions per image).

Definitions follow CLIP_benchmark's ``zeroshot_retrieval`` (Cherti et al.; the protocol of Radford et
al. 2021, "Learning Transferable Visual Models From Natural Language Supervision"):

* scores ``S = text_emb @ image_emb.T`` ``# (T, N)``; a text is a positive of exactly one image;
* text→image Recall@k = share of captions whose image is among the k highest-scored images;
* image→text Recall@k = share of images with *at least one* of their captions among the k
  highest-scored captions;
* median rank = median over queries of the 1-based rank of the first positive.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vlmkit.errors import InputError
from vlmkit.registry import METRICS


def _check(image_emb: torch.Tensor, text_emb: torch.Tensor, text_to_image: torch.Tensor) -> None:
    if image_emb.ndim != 2 or text_emb.ndim != 2 or image_emb.shape[1] != text_emb.shape[1]:
        raise InputError(f"expected image_emb (N, D) and text_emb (T, D), got {tuple(image_emb.shape)} and "
                         f"{tuple(text_emb.shape)}")
    if text_to_image.shape != (text_emb.shape[0],):
        raise InputError(f"text_to_image must have one image index per caption ({text_emb.shape[0]}), "
                         f"got shape {tuple(text_to_image.shape)}")
    if len(text_to_image) and (int(text_to_image.min()) < 0 or int(text_to_image.max()) >= image_emb.shape[0]):
        raise InputError(f"text_to_image holds indices outside 0..{image_emb.shape[0] - 1}")


def _first_positive_rank(scores: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """1-based rank of the best-ranked positive per row of ``scores`` ``# (Q, C)``."""
    order = scores.argsort(dim=1, descending=True)  # (Q, C)
    pos_sorted = positives.gather(1, order)  # (Q, C) bool, in ranked order
    return pos_sorted.float().argmax(dim=1) + 1  # first True


def recall_at_k(scores: torch.Tensor, positives: torch.Tensor, k: int) -> torch.Tensor:
    """Per-query hit (bool) for Recall@k: any positive among the k highest scores.

    Args:
        scores: ``(Q, C)`` query × candidate scores.
        positives: ``(Q, C)`` bool mask of correct candidates.
        k: Cut-off (>= 1).
    """
    if k < 1:
        raise InputError(f"k must be >= 1, got {k}")
    topk = scores.topk(min(k, scores.shape[1]), dim=1).indices  # (Q, k)
    return positives.gather(1, topk).any(dim=1)


def retrieval_outcomes(image_emb: torch.Tensor, text_emb: torch.Tensor, text_to_image: torch.Tensor,
                       ks: Sequence[int] = (1, 5, 10)) -> dict[str, torch.Tensor]:
    """Per-query outcomes behind :func:`retrieval_metrics`: ``i2t_R@k`` hits per image ``(N,)``,
    ``t2i_R@k`` hits per caption ``(T,)`` (bool), and 1-based first-positive ranks ``i2t_rank`` ``(N,)``
    and ``t2i_rank`` ``(T,)``. The recalls are their means, the median ranks their medians."""
    _check(image_emb, text_emb, text_to_image)
    t2i_to = text_to_image.to(image_emb.device)
    scores = text_emb.float() @ image_emb.float().T  # (T, N)
    pos = torch.zeros_like(scores, dtype=torch.bool)
    pos[torch.arange(len(t2i_to), device=pos.device), t2i_to] = True
    out: dict[str, torch.Tensor] = {}
    for k in ks:
        out[f"i2t_R@{k}"] = recall_at_k(scores.T, pos.T, k)  # (N,)
        out[f"t2i_R@{k}"] = recall_at_k(scores, pos, k)  # (T,)
    out["i2t_rank"] = _first_positive_rank(scores.T, pos.T)  # (N,)
    out["t2i_rank"] = _first_positive_rank(scores, pos)  # (T,)
    return out


@METRICS.register("retrieval", kind="embedding")
def retrieval_metrics(image_emb: torch.Tensor, text_emb: torch.Tensor, text_to_image: torch.Tensor,
                      ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@k both ways and median ranks.

    Args:
        image_emb: L2-normalised image embeddings ``(N, D)``.
        text_emb: L2-normalised caption embeddings ``(T, D)``.
        text_to_image: Image index of each caption ``(T,)``.
        ks: Cut-offs.

    Returns:
        ``{"i2t_R@1": ..., "t2i_R@1": ..., "i2t_medr": ..., "t2i_medr": ...}`` (recalls in [0, 1]).
    """
    o = retrieval_outcomes(image_emb, text_emb, text_to_image, ks)
    out: dict[str, float] = {}
    for k in ks:
        out[f"i2t_R@{k}"] = float(o[f"i2t_R@{k}"].float().mean())
        out[f"t2i_R@{k}"] = float(o[f"t2i_R@{k}"].float().mean())
    out["i2t_medr"] = float(o["i2t_rank"].float().median())
    out["t2i_medr"] = float(o["t2i_rank"].float().median())
    return out
