"""A saved universal adversarial perturbation, applied as a perturbation cell.

A universal perturbation ``δ`` (Moosavi-Dezfooli et al. 2017, "Universal adversarial perturbations"; fitted
by :func:`vlmkit.attacks.universal.fit_universal` on a training split of one model or an ensemble and
saved as safetensors) is one image-agnostic additive pattern. Measuring it on held-out images of the
same and other models is a plain perturbation: ``clamp(x + δ, 0, 1)``, deterministic, batched. Threat
model: the budget ``‖δ‖ ≤ ε`` stored with it (L∞ or L2 over the image), no access to the measured images.

In a grid, :func:`vlmkit.evaluate.cells.universal_cells` makes the cells with the file's SHA-256 as a
parameter, so a re-fitted δ at the same path is a new cell (never a stale cache hit).
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

import torch

from vlmkit.errors import DataError, DataNotFoundError, InputError
from vlmkit.perturb.base import register_perturbation


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (the identity of a saved δ in cell keys)."""
    p = Path(path)
    if not p.is_file():
        raise DataNotFoundError(f"no universal perturbation at {str(p)!r} (expected a .safetensors file written by "
                                "UniversalPerturbation.save)")
    return hashlib.sha256(p.read_bytes()).hexdigest()


@lru_cache(maxsize=8)
def _load(path: str, sha256: str) -> tuple[torch.Tensor, dict]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("vlmkit", "{}"))
            delta = f.get_tensor("delta") if "delta" in f.keys() else None
    except SafetensorError as e:
        raise DataError(f"{path!r} is not a safetensors file: {e}") from None
    if delta is None or not meta:
        raise DataError(f"{path!r} holds no vlmkit universal perturbation (a 'delta' tensor and its metadata)")
    return delta.float().reshape(1, *delta.shape[-3:]), meta  # (1, 3, H, W)


@register_perturbation("universal", family="universal", severities=None)
def universal(x: torch.Tensor, severity: int | float = 1, *, path: str, sha256: str | None = None,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """``clamp(x + δ, 0, 1)`` with the δ saved at ``path`` (severity is ignored: δ carries its budget).

    Args:
        x: Images ``(B, 3, H, W)`` in [0, 1] of δ's size.
        path: A ``.safetensors`` file written by :meth:`vlmkit.attacks.universal.UniversalPerturbation.save`.
        sha256: The file's expected SHA-256 (cells carry it; a different file raises).

    Raises:
        DataNotFoundError, DataError: No such file, or not a saved universal perturbation.
        InputError: The file changed since the cell was made, or the images have another size.
    """
    digest = file_sha256(path)
    if sha256 is not None and digest != sha256:
        raise InputError(f"universal: {path!r} changed since the cell was made (sha256 {digest[:12]} != "
                         f"{sha256[:12]}); make the cells again")
    delta, meta = _load(str(Path(path).resolve()), digest)
    if tuple(x.shape[-2:]) != tuple(delta.shape[-2:]):
        raise InputError(f"universal: images are {tuple(x.shape[-2:])} but the perturbation at {path!r} is "
                         f"{tuple(delta.shape[-2:])} (fitted at {meta.get('image_size')}); evaluate at that image "
                         "size (evaluate_grid(image_size=...)) or fit it at this one")
    return torch.clamp(x + delta.to(device=x.device, dtype=x.dtype), 0.0, 1.0)  # (B, 3, H, W)


__all__ = ["file_sha256", "universal"]
