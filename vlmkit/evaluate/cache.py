"""The engine's tensor cache: ``torch.save``-d dicts of tensors under a folder, written atomically.

Keys are hashes of everything a cached value depends on (see :mod:`vlmkit.evaluate.runner`); a file
either exists whole or not at all (:func:`vlmkit.results.atomic_write`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from vlmkit.results import atomic_write
from vlmkit.runtime import stable_hash


class TensorCache:
    """``torch.save``-d dicts of tensors under ``root``, one file per key.

    Args:
        root: The folder.
        enabled: When False, nothing is read or written (every ``get`` misses).
        scope: Hashed into every key (see :meth:`scoped`).
    """

    def __init__(self, root: Path, enabled: bool = True, scope: str = "") -> None:
        self.root = Path(root)
        self.enabled = enabled
        self.scope = scope
        self.hits = 0
        self.misses = 0

    def scoped(self, *parts: object) -> TensorCache:
        """The same folder with ``parts`` hashed into every key (e.g. a model's weights fingerprint), so
        whoever reads and writes through it need not name them."""
        return TensorCache(self.root, self.enabled, stable_hash(self.scope, *parts))

    def path(self, key: str) -> Path:
        return self.root / f"{stable_hash(self.scope, key) if self.scope else key}.pt"

    def get(self, key: str) -> dict[str, torch.Tensor] | None:
        path = self.path(key)
        if self.enabled and path.is_file():
            self.hits += 1
            return torch.load(path, map_location="cpu", weights_only=True)
        self.misses += 1
        return None

    def put(self, key: str, value: dict[str, torch.Tensor]) -> None:
        if not self.enabled:
            return
        atomic_write(self.path(key), lambda p: torch.save({k: v.detach().cpu() for k, v in value.items()}, p))


__all__ = ["TensorCache"]
