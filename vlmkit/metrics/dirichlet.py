"""Dirichlet energy of vision tokens on their patch grid (the smoothness of a signal on a graph).

With the 4-neighbour grid graph over patches (Laplacian ``L = D − A``) and tokens ``X`` ``(N, C)``:

    E(X) = tr(Xᵀ L X) = Σ_{(i,j) ∈ edges} ‖x_i − x_j‖²

``normalize="fro"`` divides by ``‖X‖_F²`` (the Rayleigh quotient, scale-free: 0 for constant tokens,
at most ``λ_max(L) ≤ 8``); ``"edges"`` divides by the number of edges; ``"none"`` returns the raw sum.
Used by Wani et al. 2026 as "structural smoothness" of vision tokens (clean vs perturbed, per layer).
"""

from __future__ import annotations

import torch

from vlmkit.errors import InputError
from vlmkit.registry import METRICS


@METRICS.register("dirichlet_energy", kind="tokens")
def dirichlet_energy(tokens: torch.Tensor, grid: tuple[int, int], normalize: str = "fro",
                     center: bool = False) -> torch.Tensor:
    """Per-image Dirichlet energy ``(B,)`` of patch tokens ``(B, N, C)`` arranged row-major on ``grid``.

    Args:
        tokens: Patch tokens (no CLS/prefix tokens).
        grid: ``(gh, gw)`` with ``gh * gw == N``.
        normalize: "fro", "edges" or "none" (see module docstring).
        center: Subtract each image's mean token first (removes the DC component from the "fro" norm).
    """
    if tokens.ndim != 3:
        raise InputError(f"tokens must be (B, N, C), got {tuple(tokens.shape)}")
    gh, gw = grid
    B, N, C = tokens.shape
    if gh * gw != N:
        raise InputError(f"grid {grid} holds {gh * gw} patches but tokens have N={N}")
    x = tokens.float()
    if center:
        x = x - x.mean(dim=1, keepdim=True)
    g = x.view(B, gh, gw, C)
    e = (g[:, 1:] - g[:, :-1]).pow(2).sum(dim=(1, 2, 3)) + (g[:, :, 1:] - g[:, :, :-1]).pow(2).sum(dim=(1, 2, 3))
    if normalize == "none":
        return e
    if normalize == "edges":
        return e / max(1, gh * (gw - 1) + gw * (gh - 1))
    if normalize == "fro":
        return e / x.pow(2).sum(dim=(1, 2)).clamp_min(1e-12)
    raise InputError(f"normalize={normalize!r}; expected 'fro', 'edges' or 'none'")


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
