"""Memory-mapped activation stores: one ``float32`` matrix on disk plus a small JSON header.

Layout of a store folder::

    header.json        {"rows", "dim", "dtype", "model", "layer", "token", "n_images", "tokens_per_image", ...}
    activations.f32    rows × dim float32, C order (numpy memmap)

Rows are images (``token="cls"``, ``"mean"``, ``"embedding"``) or image patches
(``token="patches"``: ``tokens_per_image`` consecutive rows per image, row-major over the grid).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from vlmkit.errors import DataNotFoundError, InputError

TOKENS = ("cls", "mean", "patches", "embedding")


@dataclass
class ActivationStore:
    """An opened store: ``data`` is a read-only ``np.memmap`` ``(rows, dim)``.

    Attributes:
        path: The store folder.
        data: Activations ``(rows, dim)``.
        header: The JSON header (provenance and layout).
    """

    path: Path
    data: np.ndarray
    header: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, path: str | Path, mode: str = "r") -> ActivationStore:
        """Open an existing store folder."""
        p = Path(path)
        hp = p / "header.json"
        if not hp.is_file():
            raise DataNotFoundError(f"{str(p)!r} is not an activation store (no header.json)")
        header = json.loads(hp.read_text())
        data = np.memmap(p / "activations.f32", dtype=np.float32, mode=mode, shape=(header["rows"], header["dim"]))
        return cls(p, data, header)

    def __len__(self) -> int:
        return int(self.data.shape[0])

    @property
    def dim(self) -> int:
        return int(self.data.shape[1])

    def image_index(self) -> np.ndarray:
        """Image index of every row ``(rows,)``."""
        return np.arange(len(self)) // int(self.header.get("tokens_per_image", 1))

    def tensor(self, rows: slice | np.ndarray | None = None) -> torch.Tensor:
        """Rows as a float32 tensor (copied into memory)."""
        return torch.from_numpy(np.array(self.data if rows is None else self.data[rows], dtype=np.float32))


def _rows_of(vlm: Any, x: torch.Tensor, layer: int, token: str) -> torch.Tensor:
    if token == "embedding":
        return vlm.encode_image(x)  # (b, D)
    vt = vlm.vision_tokens(x, layer)
    if token == "cls":
        if vt.cls is None:
            raise InputError(f"token='cls': model {vlm.name!r} has no class token; use token='mean' or 'patches'")
        return vt.cls  # (b, C)
    if token == "mean":
        return vt.patches.mean(1)  # (b, C)
    return vt.patches.reshape(-1, vt.patches.shape[-1])  # (b * n, C)


@torch.no_grad()
def image_activations(vlm: Any, images: torch.Tensor, layer: int = -1, token: str = "cls", batch_size: int = 64,
                      progress: bool = False) -> torch.Tensor:
    """The rows :func:`collect_activations` would store, in memory ``(rows, C)`` (small sets, e.g. to
    compare SAE latents on clean and perturbed copies of the same images)."""
    if token not in TOKENS:
        raise InputError(f"token={token!r}; expected one of {TOKENS}")
    li = vlm.layer_index(layer)
    out = []
    for i in tqdm(range(0, len(images), batch_size), desc="activations", leave=False, disable=not progress):
        xb = images[i : i + batch_size].to(vlm.device)
        xb = xb.float().div_(255) if xb.dtype == torch.uint8 else xb
        out.append(_rows_of(vlm, xb, li, token).float().cpu())
    if not out:
        raise InputError("images is empty: nothing to collect")
    return torch.cat(out)


@torch.no_grad()
def collect_activations(vlm: Any, images: torch.Tensor, path: str | Path, layer: int = -1, token: str = "cls",
                        batch_size: int = 64, progress: bool = True, meta: dict[str, Any] | None = None
                        ) -> ActivationStore:
    """Run ``images`` through the image tower and write one layer's activations to a memmap store.

    Args:
        vlm: A :class:`vlmkit.VLM`.
        images: uint8 ``(N, 3, H, W)`` or float in [0, 1] (converted per batch).
        path: Store folder (created; an existing store there is overwritten).
        layer: Block whose output tokens are stored (ignored for ``token="embedding"``).
        token: ``"cls"`` (class token), ``"mean"`` (mean patch token), ``"patches"`` (every patch
            token, one row each) or ``"embedding"`` (the final image embedding).
        batch_size: Images per forward pass.
        progress: tqdm bar.
        meta: Extra fields for the header (e.g. the dataset and perturbation).

    Returns:
        The opened store.
    """
    if token not in TOKENS:
        raise InputError(f"token={token!r}; expected one of {TOKENS}")
    if len(images) == 0:
        raise InputError("images is empty: nothing to collect")
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    li = vlm.layer_index(layer)

    def batch(i: int) -> torch.Tensor:
        xb = images[i : i + batch_size].to(vlm.device)
        return xb.float().div_(255) if xb.dtype == torch.uint8 else xb

    first = _rows_of(vlm, batch(0), li, token).float()
    per_image = first.shape[0] // min(batch_size, len(images))
    rows, dim = per_image * len(images), first.shape[1]
    data = np.memmap(p / "activations.f32", dtype=np.float32, mode="w+", shape=(rows, dim))
    data[: first.shape[0]] = first.cpu().numpy()
    for i in tqdm(range(batch_size, len(images), batch_size), desc="collect activations", leave=False,
                  disable=not progress):
        r = _rows_of(vlm, batch(i), li, token).float().cpu().numpy()
        data[i * per_image : i * per_image + r.shape[0]] = r
    data.flush()
    del data
    header = {"rows": rows, "dim": dim, "dtype": "float32", "model": getattr(vlm, "name", "?"),
              "layer": None if token == "embedding" else li, "token": token, "n_images": len(images),
              "tokens_per_image": per_image, **(meta or {})}
    (p / "header.json").write_text(json.dumps(header, indent=1))
    return ActivationStore.open(p)
