"""Projected gradient descent (Madry et al., 2018) and its objective-specific variants.

Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning Models Resistant to Adversarial
Attacks", ICLR 2018. Threat model: white-box, additive ``δ`` with ``‖δ‖_∞ <= ε`` or ``‖δ‖₂ <= ε`` on
[0, 1] pixels, ``x + δ ∈ [0, 1]``. Update: ``x ← Π(x + α·sign(∇L))`` (L∞) or
``x ← Π(x + α·∇L/‖∇L‖₂)`` (L2), where Π projects onto the ball, then clamps to [0, 1] — the same
order as ``torchattacks.PGD``/``PGDL2``, so with ``random_start=False`` the iterates agree.
"""

from __future__ import annotations

from typing import Any

import torch

from vlmkit.attacks.base import NORMS, THREAT_MODEL, Attack, ObjectiveFn, normalise_grad
from vlmkit.attacks.objectives import EmbeddingDrift, RetrievalCE
from vlmkit.registry import ATTACKS


@ATTACKS.register("pgd", reference="Madry et al., ICLR 2018",
                  threat_model=THREAT_MODEL, norms=NORMS)
class PGD(Attack):
    """PGD-L∞ / PGD-L2 on any objective (default: zero-shot cross-entropy, batch ``labels`` + ``text_emb``).

    Madry et al., ICLR 2018. White-box, budget ``eps`` in the ``norm`` ball on [0, 1] pixels; returns
    the last iterate (``keep_best=True``: the highest-loss iterate). See :class:`~vlmkit.attacks.base.Attack`
    for the arguments.
    """

    name = "pgd"

    def step(self, i: int, x_adv: torch.Tensor, grad: torch.Tensor, loss: torch.Tensor, x: torch.Tensor,
             state: dict[str, Any]) -> torch.Tensor:
        return x_adv + self.alpha * normalise_grad(grad, self.norm)  # (B, 3, H, W)


@ATTACKS.register("feature_pgd", reference="Schlarmann et al., ICML 2024 (FARE objective)",
                  threat_model=THREAT_MODEL, norms=NORMS)
class FeaturePGD(PGD):
    """Feature-level PGD: push the image embedding away from its clean embedding.

    Maximises :class:`~vlmkit.attacks.objectives.EmbeddingDrift` (``1 - cos`` by default; ``distance="l2"``
    for FARE's squared L2 on unnormalised features) — the unsupervised attack FARE (Schlarmann et al.,
    2024, "Robust CLIP", ICML) trains against; needs no labels or text. White-box, L∞/L2 budget ``eps``
    on [0, 1] pixels.

    Args:
        distance: "cosine" or "l2" (ignored when ``objective`` is given).
        **kwargs: As :class:`~vlmkit.attacks.base.Attack`.
    """

    name = "feature_pgd"

    def __init__(self, objective: ObjectiveFn | None = None, *, distance: str = "cosine", **kwargs: Any) -> None:
        self._distance = distance
        super().__init__(objective, **kwargs)

    def default_objective(self) -> ObjectiveFn:
        return EmbeddingDrift(self._distance)


@ATTACKS.register("retrieval_pgd", reference="Madry et al. 2018 on the image->text contrastive loss",
                  threat_model=THREAT_MODEL, norms=NORMS)
class RetrievalPGD(PGD):
    """Retrieval PGD: push each image away from its matched captions, or towards a target caption.

    Maximises :class:`~vlmkit.attacks.objectives.RetrievalCE` over a caption set (batch ``text_emb (T, D)``
    and ``positives``; ``targeted=True`` uses ``target``). White-box, L∞/L2 budget ``eps`` on [0, 1]
    pixels; image→text retrieval (Recall@K of the matched captions) is the metric it degrades.

    Args:
        targeted: Pull towards ``batch["target"]`` (ignored when ``objective`` is given).
        **kwargs: As :class:`~vlmkit.attacks.base.Attack`.
    """

    name = "retrieval_pgd"

    def __init__(self, objective: ObjectiveFn | None = None, *, targeted: bool = False, **kwargs: Any) -> None:
        self._targeted = targeted
        super().__init__(objective, **kwargs)

    def default_objective(self) -> ObjectiveFn:
        return RetrievalCE(targeted=self._targeted)


__all__ = ["FeaturePGD", "PGD", "RetrievalPGD"]
