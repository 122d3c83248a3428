"""White-box adversarial attacks on vision-language models, on [0, 1] pixels.

Every attack is an :class:`Attack`: construct it with an objective and a budget, call it on a model,
clean images and a batch dict of what the objective needs::

    from vlmkit.attacks import PGD, ZeroShotCE
    from vlmkit.models.zeroshot import zero_shot_classifier
    text = zero_shot_classifier(vlm, classnames)                       # (C, D)
    atk = PGD(ZeroShotCE(text), eps=4 / 255, steps=10, seed=0)
    x_adv = atk(vlm, x, {"labels": y})                                  # (B, 3, H, W) in [0, 1]

Each attack class is registered in :data:`vlmkit.registry.ATTACKS` where it is defined:
``pgd``, ``apgd_ce``, ``freq_pgd``, ``feature_pgd``, ``retrieval_pgd``.
"""

from vlmkit.attacks.apgd import APGD
from vlmkit.attacks.base import Attack, check_eps, check_norm, lp_norm, normalise_grad, project_ball
from vlmkit.attacks.freq import FreqPGD
from vlmkit.attacks.objectives import (
    EmbeddingDrift,
    Objective,
    RetrievalCE,
    ZeroShotCE,
    ZeroShotClassifier,
)
from vlmkit.attacks.pgd import PGD, FeaturePGD, RetrievalPGD

__all__ = ["APGD", "Attack", "EmbeddingDrift", "FeaturePGD", "FreqPGD", "Objective", "PGD", "RetrievalCE",
           "RetrievalPGD", "ZeroShotCE", "ZeroShotClassifier", "check_eps", "check_norm", "lp_norm",
           "normalise_grad", "project_ball"]
