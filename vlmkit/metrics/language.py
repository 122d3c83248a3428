"""Metrics of language-induced adversarial search: attack success rate (ASR) and semantic consistency (SEM).

Natural-language-induced adversarial images (Zhu, Xu, Zeng, Dong & Hu, "Natural Language Induced
Adversarial Images", ACM Multimedia 2024 — the natural-adversarial study's equations 1–2) are images a
text-to-image generator ``G`` draws from a prompt ``p`` that still means the true class ``y``, yet a
classifier ``f`` misclassifies. With ``n`` images per prompt (seeds ``s_i``) and a CLIP text encoder ``E_T``::

    ASR(p) = 1/n Σ_i 1[f(G(p, s_i)) ≠ y]                                  (1)
    SEM(p) = cos(E_T(p), E_T(t_y)) ≥ τ                                     (2)

where ``t_y`` is the true-class prompt (``"a photo of a {y}"``). Both are functions of tensors (predicted
labels, text embeddings); the search that produces them is :func:`vlmkit.search.language_search`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vlmkit.registry import METRICS

_REFERENCE = "Zhu et al., ACM MM 2024 (Natural Language Induced Adversarial Images), eq. {}"


@METRICS.register("attack_success_rate", kind="predictions", reference=_REFERENCE.format(1))
def attack_success_rate(pred: torch.Tensor, true: int | torch.Tensor) -> float:
    """ASR (Zhu et al. 2024, equation 1): share of predictions that are not the true class.

    Args:
        pred: Predicted labels ``(n,)`` of the ``n`` images generated from one prompt.
        true: The true class index (or one per image, ``(n,)``).

    Returns:
        ``1/n Σ_i 1[pred_i ≠ true]`` in [0, 1].
    """
    return float((pred != torch.as_tensor(true, device=pred.device)).float().mean())


@METRICS.register("semantic_consistency", kind="embedding", reference=_REFERENCE.format(2))
def semantic_consistency(text_emb: torch.Tensor, reference_emb: torch.Tensor) -> torch.Tensor:
    """SEM (Zhu et al. 2024, equation 2): cosine similarity of prompt embeddings to the true-class prompt's.

    Args:
        text_emb: Text embeddings ``(P, D)`` of ``P`` prompts (normalised here).
        reference_emb: Embedding ``(D,)`` of the true-class prompt ``t_y`` (normalised here).

    Returns:
        ``(P,)`` float32 cosine similarities in [-1, 1].
    """
    return F.normalize(text_emb.float(), dim=-1) @ F.normalize(reference_emb.float().reshape(-1), dim=0)  # (P,)


__all__ = ["attack_success_rate", "semantic_consistency"]
