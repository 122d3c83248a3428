"""Dirichlet energy of vision tokens on their patch grid (the smoothness of a signal on a graph).

Graph-signal definition (Shuman et al. 2013, "The emerging field of signal processing on graphs",
IEEE Signal Processing Magazine; as an over-smoothing measure of deep networks, Cai & Wang 2020,
"A Note on Over-Smoothing for Graph Neural Networks"): with the 4-neighbour grid graph over the
``N = gh·gw`` patches (edge set ``ℰ``, ``|ℰ| = gh·(gw − 1) + gw·(gh − 1)``, Laplacian ``L = D − A``)
and tokens ``X`` ``(N, C)`` with rows ``t_i``::

    E(X) = tr(Xᵀ L X) = Σ_{(i,j) ∈ ℰ} ‖t_i − t_j‖²

Wani et al. 2026 ("Same Answer, Different Representations: Hidden instability in VLMs") use it as
the "structural smoothness" of vision tokens (clean vs perturbed, per layer), and it is compared
across layers and models, i.e. across grid sizes (7×7 for ViT-B/32 at 224 px, 14×14 for ViT-B/16,
16×16 for ViT-L/14 ...). The raw sum grows with ``|ℰ|``, and dividing it by ``‖X‖_F²`` alone still
carries the factor ``|ℰ| / N`` (12/7 ≈ 1.71 on 7×7, 1.75 on 8×8, 1.98 on 112×112). The default
normalisation therefore averages per edge *and* per token:

    ``normalize="mean"`` (default)::

        Ē(X) = ( (1/|ℰ|) Σ_{(i,j) ∈ ℰ} ‖t_i − t_j‖² ) / ( (1/N) Σ_i ‖t_i‖² )

    scale-free and independent of the grid size: 0 for a constant map; for i.i.d. zero-mean tokens
    ``E‖t_i − t_j‖² = 2·E‖t‖²``, so ``Ē`` concentrates at 2 on any grid (a common non-zero mean
    lowers it; pass ``center=True`` to remove each image's mean token first); smooth maps give
    ``Ē ≪ 2``.

Other options (kept for comparison with earlier results):

* ``"fro"``: ``E / ‖X‖_F²``, the Rayleigh quotient of ``L`` (at most ``λ_max(L) < 8``); equals
  ``Ē · |ℰ| / N``, so it depends on the grid size;
* ``"edges"``: ``E / |ℰ|``, the mean squared edge difference (depends on the token scale);
* ``"none"``: the raw sum ``E``.
"""

from __future__ import annotations

import torch

from vlmkit.errors import InputError
from vlmkit.registry import METRICS

NORMALIZATIONS = ("mean", "fro", "edges", "none")


def grid_edge_count(gh: int, gw: int) -> int:
    """Number of edges ``gh·(gw − 1) + gw·(gh − 1)`` of the 4-neighbour ``gh × gw`` grid graph."""
    return gh * (gw - 1) + gw * (gh - 1)


@METRICS.register("dirichlet_energy", kind="tokens")
def dirichlet_energy(tokens: torch.Tensor, grid: tuple[int, int], normalize: str = "mean",
                     center: bool = False) -> torch.Tensor:
    """Per-image Dirichlet energy ``(B,)`` of patch tokens ``(B, N, C)`` arranged row-major on ``grid``.

    The default (``normalize="mean"``) is the mean over grid edges of ``‖t_i − t_j‖²`` divided by the
    mean over tokens of ``‖t_i‖²`` (Wani et al. 2026's structural smoothness with a grid-size-free
    normalisation; graph-signal Dirichlet energy ``tr(Xᵀ L X)``, Shuman et al. 2013). See the module
    docstring for the definition and the other normalisations.

    Args:
        tokens: Patch tokens ``(B, N, C)`` (no CLS/prefix tokens).
        grid: ``(gh, gw)`` with ``gh * gw == N``.
        normalize: "mean" (per edge / per token, default), "fro" (``E / ‖X‖_F²``), "edges" (``E / |ℰ|``)
            or "none" (raw ``E``).
        center: Subtract each image's mean token first (removes the DC component from the denominator
            of "mean" and "fro"; the edge differences are unchanged).

    Returns:
        ``(B,)`` float32 energies; 0 for an image whose tokens are all equal (also when they are all 0).

    Raises:
        InputError: ``tokens`` is not 3-D, ``grid`` does not hold ``N`` patches, or ``normalize`` is unknown.
    """
    if tokens.ndim != 3:
        raise InputError(f"tokens must be (B, N, C), got {tuple(tokens.shape)}")
    if normalize not in NORMALIZATIONS:
        raise InputError(f"normalize={normalize!r}; expected one of {list(NORMALIZATIONS)}")
    gh, gw = grid
    B, N, C = tokens.shape
    if gh * gw != N:
        raise InputError(f"grid {grid} holds {gh * gw} patches but tokens have N={N}")
    x = tokens.float()  # (B, N, C)
    if center:
        x = x - x.mean(dim=1, keepdim=True)
    g = x.reshape(B, gh, gw, C)  # (B, gh, gw, C)
    e = ((g[:, 1:] - g[:, :-1]).pow(2).sum(dim=(1, 2, 3))  # vertical edges
         + (g[:, :, 1:] - g[:, :, :-1]).pow(2).sum(dim=(1, 2, 3)))  # horizontal edges -> (B,)
    if normalize == "none":
        return e
    n_edges = max(1, grid_edge_count(gh, gw))
    if normalize == "edges":
        return e / n_edges
    sq = x.pow(2).sum(dim=(1, 2)).clamp_min(1e-12)  # (B,) = ‖X‖_F²
    if normalize == "fro":
        return e / sq
    return (e / n_edges) / (sq / N)  # "mean"


def grid_laplacian(gh: int, gw: int) -> torch.Tensor:
    """Dense Laplacian ``(N, N)`` of the 4-neighbour grid graph (reference for tests and small grids)."""
    n = gh * gw
    A = torch.zeros(n, n)
    for r in range(gh):
        for c in range(gw):
            i = r * gw + c
            if c + 1 < gw:
                A[i, i + 1] = A[i + 1, i] = 1
            if r + 1 < gh:
                A[i, i + gw] = A[i + gw, i] = 1
    return torch.diag(A.sum(1)) - A
