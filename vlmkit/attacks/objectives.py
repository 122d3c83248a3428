"""Attack objectives: callables ``(model, x_adv, batch) -> loss (B,)`` that an attack **maximises**.

``model`` is a :class:`vlmkit.VLM` (``encode_image`` on [0, 1] pixels, ``similarity``); ``batch`` is a
dict with what the objective needs. An objective may define ``prepare(model, x, batch) -> batch``,
called once on the clean images before the attack (e.g. to compute clean embeddings), and
``success(model, x_adv, batch) -> bool (B,)``.

* :class:`ZeroShotCE` — zero-shot classification cross-entropy, logits ``model.similarity(img, class_text)``;
* :class:`RetrievalCE` — image→text contrastive cross-entropy over a caption set, matched caption(s) positive;
* :class:`EmbeddingDrift` — ``1 - cos(f(x_adv), f(x))`` (or FARE's squared L2 distance of unnormalised
  features; Schlarmann et al., 2024, "Robust CLIP: Unsupervised Adversarial Fine-Tuning of Vision
  Embeddings for Robust Large Vision-Language Models");
* ``targeted=True`` on each: the negated loss towards ``batch["target"]`` / ``batch["target_emb"]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlmkit.errors import InputError


def _need(batch: Mapping[str, Any], key: str, who: str, what: str) -> Any:
    if key not in batch or batch[key] is None:
        raise InputError(f"{who} needs batch[{key!r}]: {what}; got keys {sorted(batch)}")
    return batch[key]


def _indices(v: Any, B: int, n: int, name: str, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(v, device=device).long()
    if t.shape != (B,):
        raise InputError(f"{name} must be a LongTensor ({B},) of indices, got shape {tuple(t.shape)}")
    if bool(((t < 0) | (t >= n)).any()):
        raise InputError(f"{name} must hold indices in [0, {n}), got range [{int(t.min())}, {int(t.max())}]")
    return t


class ZeroShotClassifier(nn.Module):
    """A VLM as a zero-shot classifier ``x -> logits (B, C)`` on [0, 1] pixels (for torchattacks & co).

    ``logits = vlm.similarity(vlm.encode_image(x), text_emb)``.
    """

    def __init__(self, vlm: nn.Module, text_emb: torch.Tensor) -> None:
        super().__init__()
        self.vlm = vlm
        self.register_buffer("text_emb", text_emb.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vlm.similarity(self.vlm.encode_image(x), self.text_emb)  # (B, C)


class Objective:
    """Base of the provided objectives (any callable with the same signature works too)."""

    targeted: bool = False

    def prepare(self, model: Any, x: torch.Tensor, batch: dict[str, Any]) -> dict[str, Any]:
        return batch

    def __call__(self, model: Any, x_adv: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(targeted={self.targeted})"


class _TextLogits(Objective):
    """An objective on ``model.similarity(model.encode_image(x_adv), text_emb)``: the image-to-text logits."""

    #: What the text embeddings are, for the error message.
    texts: str = "text embeddings"

    def __init__(self, text_emb: torch.Tensor | None = None, targeted: bool = False) -> None:
        self.text_emb = text_emb
        self.targeted = targeted

    def logits(self, model: Any, x_adv: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        """Image-to-text logits ``(B, T)`` with ``batch["text_emb"]`` or the constructor's ``text_emb``."""
        text = batch.get("text_emb", self.text_emb)
        if text is None:
            raise InputError(f"{type(self).__name__} needs {self.texts}: pass text_emb= or batch['text_emb']")
        return model.similarity(model.encode_image(x_adv), text.to(x_adv.device))  # (B, T)


class ZeroShotCE(_TextLogits):
    """Zero-shot classification cross-entropy, per image.

    ``logits = model.similarity(model.encode_image(x_adv), text_emb)``; untargeted: ``CE(logits, labels)``;
    targeted: ``-CE(logits, target)``.

    Args:
        text_emb: Class embeddings ``(C, D)`` (else ``batch["text_emb"]``; see
            :func:`vlmkit.models.zeroshot.zero_shot_classifier`).
        targeted: Maximise the negated loss towards ``batch["target"]`` instead.

    Batch keys: ``labels (B,)`` (untargeted) / ``target (B,)`` (targeted), optionally ``text_emb``.
    """

    texts = "class text embeddings (C, D)"

    def _labels(self, batch: Mapping[str, Any], logits: torch.Tensor) -> torch.Tensor:
        key = "target" if self.targeted else "labels"
        v = _need(batch, key, type(self).__name__, "class indices (B,)")
        return _indices(v, logits.shape[0], logits.shape[1], f"batch[{key!r}]", logits.device)

    def __call__(self, model: Any, x_adv: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        logits = self.logits(model, x_adv, batch).float()
        ce = F.cross_entropy(logits, self._labels(batch, logits), reduction="none")  # (B,)
        return -ce if self.targeted else ce

    @torch.no_grad()
    def success(self, model: Any, x_adv: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        """Misclassified (untargeted) or classified as the target (targeted), ``(B,)`` bool."""
        logits = self.logits(model, x_adv, batch)
        pred = logits.argmax(1)
        lab = self._labels(batch, logits)
        return pred == lab if self.targeted else pred != lab


class RetrievalCE(_TextLogits):
    """Image→text contrastive cross-entropy over a caption set, with the matched caption(s) as positives.

    ``logits = model.similarity(model.encode_image(x_adv), text_emb) (B, T)``; the loss is
    ``-log Σ_{t ∈ pos(b)} softmax(logits_b)_t`` (multi-positive InfoNCE, as in CLIP's image→text loss).
    Untargeted: maximise it (push each image away from its captions). Targeted: ``-CE(logits, target)``
    (pull the image towards caption ``target``).

    Args:
        text_emb: Caption embeddings ``(T, D)`` (else ``batch["text_emb"]``).
        targeted: Pull towards ``batch["target"] (B,)`` instead.

    Batch keys: ``positives`` — ``(B,)`` caption index or ``(B, T)`` bool mask (untargeted);
    ``target (B,)`` (targeted); optionally ``text_emb``.
    """

    texts = "caption embeddings (T, D)"

    def __call__(self, model: Any, x_adv: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        logits = self.logits(model, x_adv, batch).float()  # (B, T)
        B, T = logits.shape
        if self.targeted:
            tgt = _indices(_need(batch, "target", "RetrievalCE", "caption indices (B,)"), B, T, "batch['target']",
                           logits.device)
            return -F.cross_entropy(logits, tgt, reduction="none")
        pos = torch.as_tensor(_need(batch, "positives", "RetrievalCE", "caption index (B,) or mask (B, T)"),
                              device=logits.device)
        if pos.dtype != torch.bool:
            pos = F.one_hot(_indices(pos, B, T, "batch['positives']", logits.device), T).bool()
        if pos.shape != (B, T) or not bool(pos.any(1).all()):
            raise InputError(f"batch['positives'] must be a ({B}, {T}) bool mask with >= 1 positive per image")
        lse_all = torch.logsumexp(logits, 1)  # (B,)
        lse_pos = torch.logsumexp(logits.masked_fill(~pos, float("-inf")), 1)  # (B,)
        return lse_all - lse_pos


class EmbeddingDrift(Objective):
    """Distance of the image embedding from its clean embedding (FARE's objective, used as an attack).

    ``distance="cosine"``: ``1 - cos(f(x_adv), f(x))``; ``distance="l2"``: ``‖f(x_adv) - f(x)‖²₂`` on
    unnormalised features, the loss FARE (Schlarmann et al., 2024) trains against. Clean embeddings are
    computed once in :meth:`prepare` (inference mode) unless ``batch["clean_emb"]`` is given.
    Targeted: move towards ``batch["target_emb"]`` (``(D,)`` or ``(B, D)``): ``cos - 1`` or ``-‖f - t‖²``.
    """

    def __init__(self, distance: str = "cosine", targeted: bool = False) -> None:
        if distance not in ("cosine", "l2"):
            raise InputError(f"distance={distance!r} must be 'cosine' or 'l2'")
        self.distance = distance
        self.targeted = targeted

    def _embed(self, model: Any, x: torch.Tensor) -> torch.Tensor:
        return model.encode_image(x, normalize=self.distance == "cosine").float()  # (B, D)

    def prepare(self, model: Any, x: torch.Tensor, batch: dict[str, Any]) -> dict[str, Any]:
        if not self.targeted and batch.get("clean_emb") is None:
            with torch.inference_mode():
                clean = self._embed(model, x)
            batch = {**batch, "clean_emb": clean.clone()}  # a normal tensor again (usable in autograd)
        return batch

    def __call__(self, model: Any, x_adv: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        emb = self._embed(model, x_adv)  # (B, D)
        key = "target_emb" if self.targeted else "clean_emb"
        ref = torch.as_tensor(_need(batch, key, "EmbeddingDrift", "embeddings (B, D)"), device=emb.device).float()
        ref = ref.expand_as(emb) if ref.ndim == 1 else ref
        if ref.shape != emb.shape:
            raise InputError(f"batch[{key!r}] has shape {tuple(ref.shape)}; expected {tuple(emb.shape)}")
        if self.distance == "cosine":
            d = 1 - F.cosine_similarity(emb, ref, dim=-1)  # (B,)
        else:
            d = (emb - ref).pow(2).sum(-1)  # (B,)
        return -d if self.targeted else d

    def __repr__(self) -> str:
        return f"EmbeddingDrift(distance={self.distance!r}, targeted={self.targeted})"


class Ensemble(nn.Module):
    """Several models attacked together (a transfer attack's ensemble source): holds them, so the attack
    template puts every member in eval mode with frozen weights; :class:`EnsembleObjective` calls them."""

    def __init__(self, models: list[nn.Module]) -> None:
        super().__init__()
        if not models:
            raise InputError("Ensemble needs at least one model")
        self.members = nn.ModuleList(models)


class EnsembleObjective(Objective):
    """The mean of the members' objectives, each on its own model and batch (Liu et al. 2017, "Delving into
    Transferable Adversarial Examples and Black-box Attacks": an ensemble of white-box sources crafts
    examples that transfer better than any single source's).

    Args:
        parts: ``(model, objective, batch)`` per member; the ``model`` and ``batch`` an attack passes are
            ignored (use an :class:`Ensemble` of the same models as the attacked module).
    """

    def __init__(self, parts: list[tuple[Any, Any, dict[str, Any]]]) -> None:
        if not parts or any(obj is None or not callable(obj) for _, obj, _ in parts):
            raise InputError("EnsembleObjective needs (model, objective, batch) members with callable objectives")
        self.parts = [(m, o, dict(b)) for m, o, b in parts]
        self.targeted = any(getattr(o, "targeted", False) for _, o, _ in parts)

    def prepare(self, model: Any, x: torch.Tensor, batch: dict[str, Any]) -> dict[str, Any]:
        self.parts = [(m, o, o.prepare(m, x, b) if hasattr(o, "prepare") else b) for m, o, b in self.parts]
        return batch

    def __call__(self, model: Any, x_adv: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        return torch.stack([o(m, x_adv, b) for m, o, b in self.parts]).mean(0)  # (B,)

    def __repr__(self) -> str:
        return f"EnsembleObjective({[o for _, o, _ in self.parts]})"


__all__ = ["EmbeddingDrift", "Ensemble", "EnsembleObjective", "Objective", "RetrievalCE", "ZeroShotCE",
           "ZeroShotClassifier"]
