"""FARE and TeCoA: what the training attack maximises and what the optimiser minimises.

Threat model of both: white-box L∞ (or L2) perturbations of [0, 1] pixels within ``eps``, found by
PGD on the *current* image tower at every step (Madry-style adversarial training); only the image
tower is trained.

* **FARE** — Schlarmann, Singh, Croce & Hein, "Robust CLIP: Unsupervised Adversarial Fine-Tuning of
  Vision Embeddings for Robust Large Vision-Language Models", ICML 2024. Unsupervised:
  ``min_θ E_x max_{‖δ‖≤ε} ‖φ_θ(x+δ) − φ_org(x)‖²₂`` with ``φ_org`` the frozen original image tower and
  ``φ`` the *unnormalised* image embedding. No labels, no text: the embedding stays where the
  original model put the clean image, so the text tower (and anything built on the embedding) keeps
  working.
* **TeCoA** — Mao, Geng, Yang, Wang & Vondrick, "Understanding Zero-Shot Adversarial Robustness for
  Large-Scale Models", ICLR 2023. Supervised: ``min_θ E_{(x,y)} max_{‖δ‖≤ε} CE(s·cos(φ_θ(x+δ), T), y)``
  with fixed text class embeddings ``T`` of the frozen text tower and the model's logit scale ``s``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F

from vlmkit.attacks import PGD
from vlmkit.attacks.objectives import EmbeddingDrift, ZeroShotCE
from vlmkit.errors import InputError
from vlmkit.models.zeroshot import zero_shot_classifier


class Method:
    """A fine-tuning method: the training attack's objective and the training loss."""

    name = "method"
    needs_labels = False

    def __init__(self, vlm: Any, classnames: list[str] | None, templates: list[str]) -> None:
        self.text_emb = None
        if classnames is not None:
            self.text_emb = zero_shot_classifier(vlm, classnames, templates).detach()  # (C, D)

    def objective(self) -> Any:
        """The attack objective ``(model, x_adv, batch) -> (B,)``."""
        raise NotImplementedError

    def prepare(self, vlm: Any, x: torch.Tensor, labels: torch.Tensor | None) -> dict[str, Any]:
        """What the objective and the loss need about the clean batch ``x (B, 3, H, W)``."""
        raise NotImplementedError

    def loss(self, vlm: Any, x_adv: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """The scalar training loss at the adversarial images."""
        raise NotImplementedError

    def attack(self, vlm: Any, x: torch.Tensor, batch: dict[str, Any], *, eps: float, alpha: float, steps: int,
               norm: str, generator: torch.Generator, amp_dtype: str | None) -> torch.Tensor:
        """PGD on the current model (random start from ``generator``)."""
        pgd = PGD(self.objective(), eps=eps, alpha=alpha, steps=steps, norm=norm, generator=generator,
                  amp_dtype=amp_dtype)
        return pgd(vlm, x, batch)


class FARE(Method):
    """FARE (Schlarmann et al., 2024): keep ``φ_θ(x+δ)`` at the frozen original ``φ_org(x)``; see module docstring."""

    name = "fare"

    def __init__(self, vlm: Any, classnames: list[str] | None, templates: list[str]) -> None:
        super().__init__(vlm, classnames, templates)
        self.original = copy.deepcopy(vlm).eval()  # φ_org: the frozen original model
        for p in self.original.parameters():
            p.requires_grad_(False)
        self.original.check_inputs = False

    def objective(self) -> Any:
        return EmbeddingDrift(distance="l2")

    @torch.no_grad()
    def prepare(self, vlm: Any, x: torch.Tensor, labels: torch.Tensor | None) -> dict[str, Any]:
        return {"clean_emb": self.original.encode_image(x, normalize=False).float()}  # (B, D)

    def loss(self, vlm: Any, x_adv: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        emb = vlm.encode_image(x_adv, normalize=False).float()  # (B, D)
        return (emb - batch["clean_emb"]).pow(2).sum(-1).mean()


class TeCoA(Method):
    """TeCoA (Mao et al., 2023): zero-shot cross-entropy at adversarial images; see module docstring."""

    name = "tecoa"
    needs_labels = True

    def __init__(self, vlm: Any, classnames: list[str] | None, templates: list[str]) -> None:
        if classnames is None:
            raise InputError("TeCoA is supervised: its data needs labels and class names (kind toy-shapes, "
                             "labelled or imagefolder)")
        super().__init__(vlm, classnames, templates)

    def objective(self) -> Any:
        return ZeroShotCE(self.text_emb)

    def prepare(self, vlm: Any, x: torch.Tensor, labels: torch.Tensor | None) -> dict[str, Any]:
        if labels is None:
            raise InputError("TeCoA needs labels for every training batch")
        return {"labels": labels.to(x.device)}

    def loss(self, vlm: Any, x_adv: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        logits = vlm.similarity(vlm.encode_image(x_adv), self.text_emb.to(x_adv.device)).float()  # (B, C)
        return F.cross_entropy(logits, batch["labels"])


METHOD_CLASSES: dict[str, type[Method]] = {"fare": FARE, "tecoa": TeCoA}


def make_method(name: str, vlm: Any, classnames: list[str] | None, templates: list[str]) -> Method:
    """The :class:`Method` called ``name`` for ``vlm``."""
    if name not in METHOD_CLASSES:
        raise InputError(f"method={name!r} is unknown; expected one of {sorted(METHOD_CLASSES)}")
    return METHOD_CLASSES[name](vlm, classnames, templates)
