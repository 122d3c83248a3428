"""The engine's tensor cache: ``torch.save``-d dicts of tensors under a folder, written atomically.

Keys are hashes of everything a cached value depends on (see :mod:`vlmkit.evaluate.runner`); a file
either exists whole or not at all (:func:`vlmkit.results.atomic_write`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from vlmkit.results import atomic_write


class TensorCache:
    """``torch.save``-d dicts of tensors under ``root``, one file per key.

    Args:
        root: The folder.
        enabled: When False, nothing is read or written (every ``get`` misses).
    """

    def __init__(self, root: Path, enabled: bool = True) -> None:
        self.root = Path(root)
        self.enabled = enabled
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> dict[str, torch.Tensor] | None:
        path = self.root / f"{key}.pt"
        if self.enabled and path.is_file():
            self.hits += 1
            return torch.load(path, map_location="cpu", weights_only=True)
        self.misses += 1
        return None

    def put(self, key: str, value: dict[str, torch.Tensor]) -> None:
        if not self.enabled:
            return
        atomic_write(self.root / f"{key}.pt", lambda p: torch.save({k: v.detach().cpu() for k, v in value.items()}, p))


__all__ = ["TensorCache"]
