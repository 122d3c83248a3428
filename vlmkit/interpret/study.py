"""One-call studies that a notebook runs per model: a sparse autoencoder over clean and perturbed inputs.

:func:`sae_study` is the analysis of Section 4 of the natural-adversarial study (seed paper, eqs. 5-6):
train one SAE on a model's image activations pooled over conditions (clean, perturbed, adversarial),
so that latents are shared, then compare each latent's statistics between conditions and score its
monosemanticity against a *separate* image encoder (Pach et al., "Sparse Autoencoders Learn
Monosemantic Features in Vision-Language Models", 2025, use DINOv2; on the toy world the ground-truth
factors, :func:`vlmkit.toyworld.factor_embeddings`, are the cleanest reference).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import torch

from vlmkit.errors import InputError
from vlmkit.interpret.latents import latent_statistics_by_condition
from vlmkit.interpret.monosemanticity import monosemanticity_score
from vlmkit.interpret.sae import SAEConfig, SparseAutoencoder, evaluate_sae, sae_latents, train_sae
from vlmkit.interpret.store import image_activations
from vlmkit.results import make_row


@dataclass
class SAEStudy:
    """What :func:`sae_study` returns.

    Attributes:
        sae: The trained autoencoder.
        quality: Reconstruction MSE, explained variance, L0 and dead fraction on the first condition.
        latents: Per-latent statistics by condition (:func:`latent_statistics_by_condition`), with the
            latent's ``ms`` column when a reference was given.
        ms: Monosemanticity Score per latent ``(K,)`` (``NaN`` for dead latents), or ``None``.
        rows: Tidy result rows (``metric`` = ``sae_<name>``; per condition where it differs).
    """

    sae: SparseAutoencoder
    quality: dict[str, float]
    latents: pd.DataFrame
    ms: torch.Tensor | None
    rows: list[dict[str, Any]] = field(default_factory=list)


def sae_study(
    vlm: Any,
    conditions: Mapping[str, torch.Tensor],
    labels: Sequence[Any] | None = None,
    *,
    reference: Any = None,
    config: SAEConfig = SAEConfig(),
    layer: int = -1,
    token: str = "mean",
    dataset: str = "",
    seed: int = 0,
) -> SAEStudy:
    """Train one SAE on a model's activations over several conditions and describe its latents.

    Args:
        vlm: A loaded VLM with vision tokens (any family :func:`image_activations` supports).
        conditions: Condition name → float images ``(N, 3, H, W)`` in [0, 1], the same N images under
            each condition (the first one is the reference condition, usually ``"clean"``).
        labels: One label per image (class names), for the per-condition label entropy; or ``None``.
        reference: The separate encoder for the MS similarities: a VLM (its image embeddings of the
            first condition), an ``(N, D)`` array of embeddings, or ``None`` to skip the MS.
        config: SAE hyper-parameters (``config.seed`` is overridden by ``seed``).
        layer: Block whose output is read (negative counts from the end).
        token: ``"mean"`` of the patch tokens, ``"cls"``, or ``"all"``.
        dataset: Dataset name for the rows.
        seed: Seeds the SAE.

    Returns:
        An :class:`SAEStudy`.

    Raises:
        InputError: No conditions, or conditions with different image counts.
    """
    if not conditions:
        raise InputError("conditions is empty: expected e.g. {'clean': x, 'typographic': x_adv}")
    names = list(conditions)
    counts = {k: len(v) for k, v in conditions.items()}
    if len(set(counts.values())) != 1 or 0 in counts.values():
        raise InputError(f"conditions must hold the same non-zero number of images, got {counts}")
    acts = {k: image_activations(vlm, x, layer=layer, token=token) for k, x in conditions.items()}  # each (N, C)
    cfg = replace(config, seed=seed)
    sae, _ = train_sae(torch.cat([acts[k] for k in names]), cfg, progress=False)
    quality = {k: evaluate_sae(sae, a) for k, a in acts.items()}  # condition -> mse, EV, L0, dead fraction
    z = {k: sae_latents(sae, a) for k, a in acts.items()}  # each (N, K)
    lab = list(labels) if labels is not None else None
    stats = latent_statistics_by_condition({k: (z[k], lab) for k in names})
    ms = None
    if reference is not None:
        emb = reference.embed_images(conditions[names[0]], progress=False) if hasattr(reference, "embed_images") \
            else torch.as_tensor(np.asarray(reference), dtype=torch.float32)  # (N, D)
        ms = torch.as_tensor(monosemanticity_score(z[names[0]], emb)).float()  # (K,)
        stats["ms"] = ms.numpy()[stats["latent"].to_numpy()]
    n = counts[names[0]]
    base = {"model": vlm.name, "dataset": dataset, "n": n, "seed": seed, "kind": "interpret", "family": "sae"}
    rows = [make_row(metric=f"sae_{m}", value=v, perturbation="none" if k == names[0] else k, **base)
            for k in names for m, v in quality[k].items()]
    if ms is not None:
        rows += [make_row(metric="sae_ms_median", value=float(ms.nanmedian()), **base),
                 make_row(metric="sae_ms_max", value=float(ms.nan_to_num(0).max()), **base)]
    return SAEStudy(sae=sae, quality=quality[names[0]], latents=stats, ms=ms, rows=rows)
