"""Training and held-out images for adversarial fine-tuning, drawn deterministically by step.

A :class:`FinetuneData` holds ``uint8`` images ``(N, 3, S, S)`` (decoded once), optional labels and
class names, and a held-out split. Batch ``s`` is a pure function of ``(seed, s)``: positions
``s·B … s·B+B−1`` of an endless stream of per-epoch permutations, so a resumed run sees exactly the
batches the uninterrupted run would have seen.

Sources (``data`` in :class:`~vlmkit.robust.config.RobustConfig`):

* ``{"kind": "toy-shapes", "n": 2048, "n_eval": 128, "seed": 11, "size": 64}`` — single-object
  toy-world scenes rendered in memory, labelled by shape (classes :data:`vlmkit.toyworld.SHAPES`);
* ``{"kind": "labelled", "csv": ..., "root": ..., "classnames": ..., "size": 224}`` — the labelled-images
  layout (:func:`vlmkit.data.load_labelled_csv`), e.g. ImageNet;
* ``{"kind": "imagefolder", "root": ..., "size": 224}`` — ``root/<class>/<image>``
  (:func:`vlmkit.data.load_image_folder`). FARE ignores labels; they only feed the held-out accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from vlmkit.errors import InputError
from vlmkit.runtime import make_generator


@dataclass
class FinetuneData:
    """Images for fine-tuning.

    Attributes:
        name: Short description for provenance (``toy-shapes(n=2048, seed=11)``).
        images: ``uint8 (N, 3, S, S)`` training images.
        labels: ``LongTensor (N,)`` or ``None`` (unlabelled).
        eval_images: ``uint8 (M, 3, S, S)`` held-out images (never trained on).
        eval_labels: ``LongTensor (M,)`` or ``None``.
        classnames: Class names (index = label) or ``None``.
        seed: Seed of the batch order.
    """

    name: str
    images: torch.Tensor
    labels: torch.Tensor | None
    eval_images: torch.Tensor
    eval_labels: torch.Tensor | None
    classnames: list[str] | None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.dtype != torch.uint8 or len(self.images) == 0:
            raise InputError(f"training images of {self.name!r} must be a non-empty uint8 (N, 3, S, S) tensor, "
                             f"got {self.images.dtype} {tuple(self.images.shape)}")
        if len(self.eval_images) == 0:
            raise InputError(f"{self.name!r} has no held-out images (n_eval must be >= 1)")
        self._perms: dict[int, torch.Tensor] = {}

    @property
    def labelled(self) -> bool:
        return self.labels is not None and self.classnames is not None

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            g = make_generator(self.seed * 1_000_003 + epoch)
            self._perms = {epoch: torch.randperm(len(self.images), generator=g)}  # keep one epoch's order
        return self._perms[epoch]

    def batch_indices(self, step: int, batch_size: int) -> torch.Tensor:
        """Indices of batch ``step``: ``(B,)``."""
        n = len(self.images)
        pos = torch.arange(step * batch_size, (step + 1) * batch_size)
        out = torch.empty(batch_size, dtype=torch.long)
        for e in sorted(set((pos // n).tolist())):
            sel = pos // n == e
            out[sel] = self._perm(e)[pos[sel] % n]
        return out

    def batch(self, step: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Batch ``step``: ``uint8 (B, 3, S, S)`` images and ``(B,)`` labels (or ``None``)."""
        idx = self.batch_indices(step, batch_size)
        return self.images[idx], None if self.labels is None else self.labels[idx]


def _toy_shapes(n: int, n_eval: int, seed: int, size: int) -> FinetuneData:
    import numpy as np

    from vlmkit.toyworld import SHAPES
    from vlmkit.toyworld.world import render_spec, scene_rng, single_object_spec

    def render(count: int, stream_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        imgs, labels = [], []
        for i in range(count):
            scene = render_spec(single_object_spec(scene_rng(stream_seed, i, 2)), size)
            imgs.append(scene.image)
            labels.append(SHAPES.index(scene.objects[0].shape))
        x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()  # (N, 3, S, S) uint8
        return x, torch.tensor(labels, dtype=torch.long)

    x, y = render(n, seed)
    ex, ey = render(n_eval, seed + 7_777_777)  # another stream: held-out scenes
    return FinetuneData(f"toy-shapes(n={n}, seed={seed})", x, y, ex, ey, list(SHAPES), seed)


def _split(x: torch.Tensor, y: torch.Tensor | None, n_eval: int, seed: int
           ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
    if n_eval >= len(x):
        raise InputError(f"n_eval={n_eval} leaves no training images out of {len(x)}")
    perm = torch.randperm(len(x), generator=make_generator(seed))
    ev, tr = perm[:n_eval], perm[n_eval:]
    return x[tr], None if y is None else y[tr], x[ev], None if y is None else y[ev]


def load_finetune_data(spec: dict[str, Any], seed: int = 0) -> FinetuneData:
    """Build the :class:`FinetuneData` a config's ``data`` block names (see the module docstring).

    Raises:
        InputError: Unknown ``kind`` or missing keys.
    """
    if not isinstance(spec, dict) or "kind" not in spec:
        raise InputError(f"data must be a mapping with a 'kind' (toy-shapes, labelled, imagefolder), got {spec!r}")
    kind = spec["kind"]
    known = {"toy-shapes": {"n", "n_eval", "seed", "size"},
             "labelled": {"csv", "root", "classnames", "size", "n", "n_eval", "file_column", "label_column"},
             "imagefolder": {"root", "size", "n", "n_eval"}}
    if kind not in known:
        raise InputError(f"data kind {kind!r} is unknown; expected one of {sorted(known)}")
    extra = set(spec) - known[kind] - {"kind"}
    if extra:
        raise InputError(f"data kind {kind!r} does not take {sorted(extra)}; it takes {sorted(known[kind])}")
    n_eval = int(spec.get("n_eval", 128))
    if kind == "toy-shapes":
        return _toy_shapes(int(spec.get("n", 2048)), n_eval, int(spec.get("seed", 11)), int(spec.get("size", 64)))
    size = int(spec.get("size", 224))
    for key in ("root",) + (("csv",) if kind == "labelled" else ()):
        if key not in spec:
            raise InputError(f"data kind {kind!r} needs {key!r}")
    if kind == "labelled":
        from vlmkit.data import load_labelled_csv

        kw = {k: spec[k] for k in ("file_column", "label_column") if k in spec}
        ds = load_labelled_csv(spec["csv"], spec["root"], spec.get("classnames"), **kw)
    else:
        from vlmkit.data import load_image_folder

        ds = load_image_folder(spec["root"])
    if "n" in spec:
        ds = ds.subset(min(len(ds), int(spec["n"]) + n_eval), seed=seed)
    x = ds.load_images(size=size, progress=True)
    tr, ytr, ev, yev = _split(x, ds.labels, n_eval, seed)
    return FinetuneData(f"{ds.name}(n={len(tr)})", tr, ytr, ev, yev, list(ds.classnames), seed)
