"""Prediction flips under perturbation (Wani et al. 2026): Instance Flip Rate and Image Vulnerability.

* **IFR** — share of (image, perturbation) pairs whose prediction differs from the clean prediction;
* **IV** — share of images with at least one flip across a family of perturbations.

Predictions may be zero-shot labels or the index of the top-1 retrieved caption.
"""

from __future__ import annotations

import torch

from vlmkit.errors import InputError
from vlmkit.registry import METRICS


@METRICS.register("flip_rates", kind="predictions")
def flip_rates(clean_pred: torch.Tensor, perturbed_preds: torch.Tensor) -> dict[str, float]:
    """IFR and IV.

    Args:
        clean_pred: ``(B,)`` clean predictions.
        perturbed_preds: ``(P, B)`` predictions under each of ``P`` perturbations (or ``(B,)`` for one).

    Returns:
        ``{"IFR": ..., "IV": ..., "n_pairs": P*B}``.
    """
    if perturbed_preds.ndim == 1:
        perturbed_preds = perturbed_preds[None]
    if perturbed_preds.ndim != 2 or perturbed_preds.shape[1] != clean_pred.shape[0]:
        raise InputError(f"expected perturbed_preds (P, B) with B={clean_pred.shape[0]}, got {tuple(perturbed_preds.shape)}")
    flips = perturbed_preds != clean_pred.to(perturbed_preds.device)[None]  # (P, B)
    return {"IFR": float(flips.float().mean()), "IV": float(flips.any(dim=0).float().mean()),
            "n_pairs": int(flips.numel())}
