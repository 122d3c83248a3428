"""Spectral sensitivity: Fourier heat maps (Yin et al. 2019, "A Fourier Perspective on Model
Robustness in Computer Vision") of embedding drift and prediction error.

Each Fourier basis ``(u, v)`` is an ordinary grid cell (``fourier_basis`` with ``u, v, eps``), so the
heat map shares the engine's caches: re-plotting or extending it recomputes nothing.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from vlmkit.evaluate.cells import Cell
from vlmkit.evaluate.engine import cell_embeddings
from vlmkit.metrics import cosine_drift
from vlmkit.models import VLM


def fourier_heatmap(model: str | VLM, dataset: Any, *, out_dir: str | os.PathLike, size: int = 8,
                    eps: float = 4.0, stride: int = 1, seed: int = 0, **kw: Any) -> torch.Tensor:
    """Mean embedding drift ``1 − cos`` per Fourier basis, ``(size, size)`` over ``u, v ∈ [0, size·stride)``.

    Args:
        model: Spec or loaded model.
        dataset: Any dataset the engine accepts.
        out_dir: Cache/results folder (shared with :func:`~vlmkit.evaluate.evaluate_grid`).
        size: Number of frequencies per axis.
        eps: L2 norm of the basis perturbation per channel (Yin et al. use 4 at 32 px).
        stride: Frequency step between heat-map cells.
        seed: Seeds the random signs.
        **kw: Passed to :func:`~vlmkit.evaluate.cell_embeddings` (batch_size, device, image_size ...).
    """
    import vlmkit.perturb  # noqa: F401  (registers fourier_basis)

    cells = [Cell("perturbation", "fourier_basis", 1, {"u": u * stride, "v": v * stride, "eps": float(eps)})
             for u in range(size) for v in range(size)]
    emb = cell_embeddings(model, dataset, cells, out_dir=out_dir, seed=seed, **kw)
    clean = emb["clean"]
    heat = torch.tensor([float(cosine_drift(clean, emb[c.label()]).mean()) for c in cells])
    return heat.view(size, size)
