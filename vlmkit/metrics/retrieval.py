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
from vlmkit.stats import first_positive_ranks


def _check(image_emb: torch.Tensor, text_emb: torch.Tensor) -> None:
    if image_emb.ndim != 2 or text_emb.ndim != 2 or image_emb.shape[1] != text_emb.shape[1]:
        raise InputError(f"expected image_emb (N, D) and text_emb (T, D), got {tuple(image_emb.shape)} and "
                         f"{tuple(text_emb.shape)}")


def _check_pairs(n_images: int, n_texts: int, text_to_image: torch.Tensor, ks: Sequence[int]) -> None:
    if text_to_image.shape != (n_texts,):
        raise InputError(f"text_to_image must have one image index per caption ({n_texts}), "
                         f"got shape {tuple(text_to_image.shape)}")
    if len(text_to_image) and (int(text_to_image.min()) < 0 or int(text_to_image.max()) >= n_images):
        raise InputError(f"text_to_image holds indices outside 0..{n_images - 1}")
    for k in ks:
        if k < 1:
            raise InputError(f"k must be >= 1, got {k}")


def first_positive_rank(scores: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """1-based rank of the best-scored positive per row of ``scores`` ``# (Q, C)``.

    The rank is ``1 + #{candidates scored strictly above the row's best positive}``: a candidate tying with
    the best positive counts in the query's favour (as :func:`vlmkit.stats.retrieval_items`), so the rank
    does not depend on the order of the candidates (the toy world's repeated captions tie exactly). Counting
    instead of sorting: ``O(Q·C)``, no ``(Q, C)`` index matrix. A row without a positive ranks ``C + 1``.

    Args:
        scores: ``(Q, C)`` query × candidate scores.
        positives: ``(Q, C)`` bool mask of correct candidates.

    Returns:
        ``(Q,)`` int64 ranks in ``1..C + 1``.
    """
    best = scores.masked_fill(~positives, -torch.inf).amax(dim=1, keepdim=True)  # (Q, 1)
    return (scores > best).sum(dim=1) + 1


def recall_at_k(scores: torch.Tensor, positives: torch.Tensor, k: int) -> torch.Tensor:
    """Per-query hit (bool) for Recall@k: a positive among the k highest scores (CLIP_benchmark's
    ``recall_at_k > 0``), i.e. :func:`first_positive_rank` ``<= k`` (ties with the best positive count
    in the query's favour).

    Args:
        scores: ``(Q, C)`` query × candidate scores.
        positives: ``(Q, C)`` bool mask of correct candidates.
        k: Cut-off (>= 1).
    """
    if k < 1:
        raise InputError(f"k must be >= 1, got {k}")
    return first_positive_rank(scores, positives) <= k


def retrieval_outcomes(image_emb: torch.Tensor, text_emb: torch.Tensor, text_to_image: torch.Tensor,
                       ks: Sequence[int] = (1, 5, 10)) -> dict[str, torch.Tensor]:
    """Per-query outcomes behind :func:`retrieval_metrics`: ``i2t_R@k`` hits per image ``(N,)``,
    ``t2i_R@k`` hits per caption ``(T,)`` (bool), and 1-based first-positive ranks ``i2t_rank`` ``(N,)``
    and ``t2i_rank`` ``(T,)`` (:func:`first_positive_rank`'s rule; a hit is ``rank <= k``). The recalls
    are their means, the median ranks their medians."""
    _check(image_emb, text_emb)
    _check_pairs(image_emb.shape[0], text_emb.shape[0], text_to_image, ks)  # before the (N, T) product
    return _outcomes(image_emb.float() @ text_emb.float().T, text_to_image, ks)


def retrieval_outcomes_from_scores(scores: torch.Tensor, text_to_image: torch.Tensor,
                                   ks: Sequence[int] = (1, 5, 10)) -> dict[str, torch.Tensor]:
    """:func:`retrieval_outcomes` from image × caption ``scores`` ``(N, T)`` already computed (the engine's
    cell scores), so the matrix is not formed twice."""
    if scores.ndim != 2:
        raise InputError(f"expected scores (N, T) of images × captions, got shape {tuple(scores.shape)}")
    _check_pairs(scores.shape[0], scores.shape[1], text_to_image, ks)
    return _outcomes(scores, text_to_image, ks)


def _outcomes(scores: torch.Tensor, text_to_image: torch.Tensor, ks: Sequence[int]) -> dict[str, torch.Tensor]:
    """The outcomes of checked inputs (both public entry points check theirs once, then call this)."""
    t2i_to = text_to_image.to(scores.device)
    i2t_rank, t2i_rank = first_positive_ranks(scores.float(), t2i_to)  # (N,), (T,): the first_positive_rank rule
    out: dict[str, torch.Tensor] = {}
    for k in ks:
        out[f"i2t_R@{k}"] = i2t_rank <= k  # (N,)
        out[f"t2i_R@{k}"] = t2i_rank <= k  # (T,)
    out["i2t_rank"] = i2t_rank
    out["t2i_rank"] = t2i_rank
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
