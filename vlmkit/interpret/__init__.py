"""Interpretability for CLIP-family image towers: relevance maps, attention heads, sparse autoencoders.

* :mod:`.relevance` — Chefer et al. (2021) gradient-weighted attention relevance and Grad-CAM, for a
  prompt's or a prompt-ensemble class's logit; ``(B, H, W)`` maps in [0, 1] on the image frame.
* :mod:`.heads` — per-head attention maps, attention to a region (e.g. a written word), head-masking
  sweeps with ready-made metrics and critical-head lists.
* :mod:`.store`, :mod:`.sae` — memory-mapped activation stores; ReLU+L1 and TopK sparse autoencoders
  with dead-latent resampling.
* :mod:`.monosemanticity` — Monosemanticity Score (Pach et al. 2025), blockwise (registered as the
  metric ``"monosemanticity"``).
* :mod:`.latents` — per-latent statistics by condition, best-latent AUROC per ground-truth factor.
* :mod:`.study` — :func:`sae_study`: one SAE over clean and perturbed inputs, per-latent statistics
  by condition and MS against a separate encoder, as tidy rows (what notebook 05 calls).
* :mod:`.plotting` — overlays and heat maps (matplotlib).
"""

from vlmkit.interpret.geometry import boxes_to_masks, grid_to_image, image_to_grid, minmax_normalise
from vlmkit.interpret.heads import (
    critical_heads,
    drift_metric,
    embedding_metric,
    flip_rate_metric,
    head_attention_maps,
    head_mask_from_table,
    head_mask_sweep,
    mask_effect,
    per_head_scores,
    recall_at_1_metric,
    region_attention,
    worst_failures,
    zero_shot_accuracy_metric,
)
from vlmkit.interpret.latents import auroc_per_latent, factor_auroc, latent_statistics, latent_statistics_by_condition
from vlmkit.interpret.monosemanticity import monosemanticity_score, monosemanticity_score_loop
from vlmkit.interpret.plotting import overlay, plot_head_maps, plot_head_sweep, plot_latent_stats, plot_relevance
from vlmkit.interpret.relevance import chefer_relevance, grad_cam, mass_in_mask, readout, relevance_map
from vlmkit.interpret.sae import (
    SAEConfig,
    SAETrainLog,
    SparseAutoencoder,
    evaluate_sae,
    fit_normaliser,
    sae_latents,
    train_sae,
)
from vlmkit.interpret.store import ActivationStore, collect_activations, image_activations
from vlmkit.interpret.study import SAEStudy, sae_study
from vlmkit.interpret.targets import resolve_text_targets, target_scores

__all__ = [
    "ActivationStore", "SAEConfig", "SAEStudy", "SAETrainLog", "SparseAutoencoder", "auroc_per_latent",
    "boxes_to_masks", "chefer_relevance", "collect_activations", "critical_heads", "drift_metric", "embedding_metric",
    "evaluate_sae", "factor_auroc", "fit_normaliser", "flip_rate_metric", "grad_cam", "grid_to_image",
    "head_attention_maps",
    "head_mask_from_table", "head_mask_sweep", "image_activations", "image_to_grid", "latent_statistics",
    "latent_statistics_by_condition", "mask_effect", "mass_in_mask", "minmax_normalise", "monosemanticity_score",
    "monosemanticity_score_loop", "overlay", "per_head_scores", "plot_head_maps", "plot_head_sweep",
    "plot_latent_stats", "plot_relevance", "readout", "recall_at_1_metric", "region_attention", "relevance_map",
    "resolve_text_targets", "sae_latents", "sae_study", "target_scores", "train_sae", "worst_failures", "zero_shot_accuracy_metric",
]
