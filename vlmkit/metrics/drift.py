"""Representation drift against control drift (Wani et al. 2026, "Same Answer, Different
Representations: Hidden instability in VLMs").

* **drift** of an image under a perturbation: ``1 − cos(e(x), e(x'))``;
* **control drift**: ``1 − cos(e(x_i), e(x_j))`` for a randomly drawn *other* image ``j`` of the same
  set — the scale of inter-image variability. A drift ratio near 1 means the perturbation moved the
  representation as far as swapping the image for an unrelated one;
* **prior shift** (vlmkit's definition): ``cos(e(x'), μ) − cos(e(x), μ)`` with ``μ`` the normalised mean
  clean embedding of the set — positive when a perturbation pulls representations towards the
  data prior (a collapse towards the "average image"), negative when it pushes them off-manifold.

All functions take embeddings (or token tensors) and return per-image tensors so callers can plot
distributions; summary helpers return floats.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vlmkit.errors import InputError
from vlmkit.registry import METRICS


def _pair_check(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    if a.shape != b.shape:
        raise InputError(f"{what}: clean and perturbed shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")


@METRICS.register("drift", kind="embedding")
def cosine_drift(clean: torch.Tensor, perturbed: torch.Tensor) -> torch.Tensor:
    """``1 − cos`` per image ``(B,)`` between clean ``(B, D)`` and perturbed ``(B, D)`` embeddings."""
    _pair_check(clean, perturbed, "cosine_drift")
    return 1 - F.cosine_similarity(clean.float(), perturbed.float(), dim=-1)


def control_pairs(n: int, generator: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
    """For each of ``n`` images, the index of a uniformly drawn *different* image ``(n,)``."""
    if n < 2:
        raise InputError(f"control drift needs at least 2 images, got {n}")
    offset = torch.randint(1, n, (n,), generator=generator, device=generator.device)
    return ((torch.arange(n, device=generator.device) + offset) % n).to(device)


@METRICS.register("control_drift", kind="embedding")
def control_drift(clean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``1 − cos(e(x_i), e(x_j))`` with ``j ≠ i`` drawn from ``generator`` ``(B,)``."""
    j = control_pairs(clean.shape[0], generator, clean.device)
    return 1 - F.cosine_similarity(clean.float(), clean[j].float(), dim=-1)


def prior_shift(clean: torch.Tensor, perturbed: torch.Tensor) -> torch.Tensor:
    """``cos(e(x'), μ) − cos(e(x), μ)`` per image ``(B,)``, ``μ`` the normalised clean centroid."""
    _pair_check(clean, perturbed, "prior_shift")
    mu = F.normalize(F.normalize(clean.float(), dim=-1).mean(0), dim=0)  # (D,)
    return F.normalize(perturbed.float(), dim=-1) @ mu - F.normalize(clean.float(), dim=-1) @ mu


def token_drift(clean: torch.Tensor, perturbed: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of ``1 − cos`` between matching tokens ``(B, N, C)`` → ``(B,)``."""
    _pair_check(clean, perturbed, "token_drift")
    return (1 - F.cosine_similarity(clean.float(), perturbed.float(), dim=-1)).mean(dim=1)


def drift_summary(clean: torch.Tensor, perturbed: torch.Tensor, generator: torch.Generator) -> dict[str, float]:
    """Mean/median drift, mean control drift, their ratio and the mean prior shift."""
    d = cosine_drift(clean, perturbed)
    c = control_drift(clean, generator)
    return {
        "drift_mean": float(d.mean()),
        "drift_median": float(d.median()),
        "control_drift_mean": float(c.mean()),
        "drift_ratio": float(d.mean() / c.mean().clamp_min(1e-12)),
        "prior_shift_mean": float(prior_shift(clean, perturbed).mean()),
    }
