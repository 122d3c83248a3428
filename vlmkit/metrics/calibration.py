"""Calibration and out-of-distribution detection under perturbation.

* **ECE** (Guo et al. 2017, "On Calibration of Modern Neural Networks"): confidence = max class
  probability, ``M`` equal-width bins on [0, 1] (15 by default), ``ECE = Σ_m |B_m|/n · |acc(B_m) − conf(B_m)|``.
* **OOD AUROC** of a score separating in-distribution (positive) from OOD samples, with
  **max-softmax probability** (Hendrycks & Gimpel 2017) and the **energy score**
  ``−T · logsumexp(f/T)`` (Liu et al. 2020, "Energy-based Out-of-distribution Detection"; we use its
  negative so that higher = more in-distribution).
"""

from __future__ import annotations

import torch

from vlmkit.errors import InputError
from vlmkit.registry import METRICS


@METRICS.register("ece", kind="probabilities")
def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> float:
    """ECE of class probabilities ``(B, C)`` against integer labels ``(B,)``."""
    if probs.ndim != 2 or labels.shape != (probs.shape[0],):
        raise InputError(f"expected probs (B, C) and labels (B,), got {tuple(probs.shape)} and {tuple(labels.shape)}")
    conf, pred = probs.float().max(dim=1)
    correct = (pred == labels.to(pred.device)).float()
    edges = torch.linspace(0, 1, n_bins + 1, device=probs.device)
    # bin m holds conf in (edge_m, edge_{m+1}]; conf == 0 goes to the first bin
    idx = torch.bucketize(conf, edges[1:-1], right=False)  # (B,) in 0..n_bins-1
    ece = torch.zeros((), device=probs.device)
    for m in range(n_bins):
        sel = idx == m
        if sel.any():
            ece += sel.float().mean() * (correct[sel].mean() - conf[sel].mean()).abs()
    return float(ece)


def max_softmax_score(logits: torch.Tensor) -> torch.Tensor:
    """Maximum softmax probability ``(B,)`` (higher = more in-distribution)."""
    return logits.float().softmax(dim=-1).max(dim=-1).values


def energy_score(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Negative energy ``T · logsumexp(f / T)`` ``(B,)`` (higher = more in-distribution)."""
    return temperature * torch.logsumexp(logits.float() / temperature, dim=-1)


@METRICS.register("auroc", kind="scores")
def auroc(scores_in: torch.Tensor, scores_out: torch.Tensor) -> float:
    """Area under the ROC curve for in-distribution (positive) vs OOD scores, ties counted half
    (the Mann–Whitney U statistic)."""
    if scores_in.numel() == 0 or scores_out.numel() == 0:
        raise InputError("auroc needs at least one in-distribution and one OOD score")
    s = torch.cat([scores_in.flatten(), scores_out.flatten()]).double()
    ranks = _average_ranks(s)
    n_in, n_out = scores_in.numel(), scores_out.numel()
    u = ranks[:n_in].sum() - n_in * (n_in + 1) / 2
    return float(u / (n_in * n_out))


def _average_ranks(x: torch.Tensor) -> torch.Tensor:
    """1-based ranks with ties given their average rank."""
    order = x.argsort()
    xs = x[order]
    ranks = torch.empty_like(x)
    # average rank over runs of equal values
    _, inverse, counts = torch.unique_consecutive(xs, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).to(x.dtype)
    avg = ends - (counts.to(x.dtype) - 1) / 2
    ranks[order] = avg[inverse]
    return ranks
