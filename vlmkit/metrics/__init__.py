"""Metrics on embeddings, logits, predictions and tokens (registered in :data:`vlmkit.registry.METRICS`).

Every function takes tensors and returns tensors or floats: the metrics know nothing of models.
"""

from vlmkit.metrics.answers import answer_accuracy, option_margin, pope_scores
from vlmkit.metrics.calibration import auroc, energy_score, expected_calibration_error, max_softmax_score
from vlmkit.metrics.dirichlet import dirichlet_energy, grid_laplacian
from vlmkit.metrics.drift import control_drift, control_pairs, cosine_drift, drift_summary, prior_shift, token_drift
from vlmkit.metrics.flips import flip_rates
from vlmkit.metrics.language import attack_success_rate, semantic_consistency
from vlmkit.metrics.retrieval import (
    first_positive_rank,
    recall_at_k,
    retrieval_metrics,
    retrieval_outcomes,
    retrieval_outcomes_from_scores,
)
from vlmkit.metrics.segmentation import foreground_iou, pixel_accuracy
from vlmkit.metrics.zeroshot import (
    class_probabilities,
    margin,
    topk_accuracy,
    zero_shot_logits,
)

__all__ = [
    "answer_accuracy", "foreground_iou", "option_margin", "pixel_accuracy", "pope_scores",
    "auroc", "class_probabilities", "control_drift", "control_pairs", "cosine_drift",
    "dirichlet_energy", "drift_summary", "energy_score", "expected_calibration_error", "flip_rates", "grid_laplacian",
    "margin", "max_softmax_score", "prior_shift", "first_positive_rank", "recall_at_k", "retrieval_metrics", "retrieval_outcomes", "retrieval_outcomes_from_scores", "token_drift", "topk_accuracy",
    "zero_shot_logits",
    "attack_success_rate", "semantic_consistency",
]
