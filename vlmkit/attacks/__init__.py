"""White-box adversarial attacks on vision-language models, on [0, 1] pixels.

Every attack is an :class:`Attack`: construct it with an objective and a budget, call it on a model,
clean images and a batch dict of what the objective needs::

    from vlmkit.attacks import PGD, ZeroShotCE, zero_shot_text_embeddings
    text = zero_shot_text_embeddings(vlm, classnames)                  # (C, D)
    atk = PGD(ZeroShotCE(text), eps=4 / 255, steps=10, seed=0)
    x_adv = atk(vlm, x, {"labels": y})                                  # (B, 3, H, W) in [0, 1]

Importing this package registers the attacks in :data:`vlmkit.registry.ATTACKS`:
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
    zero_shot_text_embeddings,
)
from vlmkit.attacks.pgd import PGD, FeaturePGD, RetrievalPGD
from vlmkit.registry import ATTACKS

_THREAT = "white-box; additive delta on [0, 1] pixels, ||delta||_{norm} <= eps, x + delta clamped to [0, 1]"
for _cls, _ref in (
    (PGD, "Madry et al., ICLR 2018"),
    (APGD, "Croce & Hein, ICML 2020"),
    (FreqPGD, "Madry et al. 2018 + band constraint (Yin et al., NeurIPS 2019)"),
    (FeaturePGD, "Schlarmann et al., ICML 2024 (FARE objective)"),
    (RetrievalPGD, "Madry et al. 2018 on the image->text contrastive loss"),
):
    if _cls.name not in ATTACKS:
        ATTACKS.add(_cls.name, _cls, reference=_ref, threat_model=_THREAT, norms=("linf", "l2"))

__all__ = ["APGD", "Attack", "EmbeddingDrift", "FeaturePGD", "FreqPGD", "Objective", "PGD", "RetrievalCE",
           "RetrievalPGD", "ZeroShotCE", "ZeroShotClassifier", "check_eps", "check_norm", "lp_norm",
           "normalise_grad", "project_ball", "zero_shot_text_embeddings"]
