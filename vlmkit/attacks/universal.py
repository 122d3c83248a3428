"""Universal adversarial perturbations (UAPs): one ``δ`` for every image, fitted on a training split.

A universal perturbation (Moosavi-Dezfooli, Fawzi, Fawzi & Frossard, "Universal adversarial
perturbations", CVPR 2017) is a single image-sized ``δ`` with ``‖δ‖_p <= ε`` that degrades a model on
*most* images of a distribution, not one. It is fitted once on a training split and then applied,
unchanged, to held-out images of the same model or of other models (the transfer setting of the UAP
benchmarks for CLIP-family models, e.g. Zhou et al., "AdvCLIP", ACM MM 2023; Fang et al., "One
Perturbation is Enough", 2024 — both learn their UAP with a generator network; this module uses
the simpler direct optimisation below).

Method: the stochastic-gradient formulation of Shafahi, Najibi, Xu, Dickerson, Davis & Goldstein,
"Universal Adversarial Training", AAAI 2020 (SGD-UAP) — projected sign-gradient ascent on the mean
objective of a minibatch::

    for epoch in 1..E:                         # minibatch order: torch.randperm(N, generator=seed)
        for batch B of the training split:
            g = ∇_δ  1/M Σ_m  1/|B| Σ_{x ∈ B}  L_m(clamp(x + δ, 0, 1))
            δ ← Π_ε(δ + α·s(g))                  # s = sign (L∞) or g/‖g‖₂ (L2)

starting from ``δ = 0``. ``Π_ε`` is the Euclidean projection onto the ε-ball (L∞: clamping to
``[-ε, ε]``; L2: rescaling), :func:`vlmkit.attacks.base.project_ball`, and ``s`` is
:func:`vlmkit.attacks.base.normalise_grad` — the same helpers as PGD. With several source models
(``M > 1``) the objective is the mean of their objectives (an ensemble source). Threat model:
white-box on the source model(s), ``‖δ‖_p <= ε`` on [0, 1] pixels (the budget rule of
:func:`vlmkit.perturb.frequency.check_budget`), ``x + δ`` clamped to [0, 1]; at evaluation the
target model and images may be unseen (black-box transfer).

Objectives are the attack objectives of :mod:`vlmkit.attacks.objectives` (``(model, x_adv, batch) ->
loss (B,)`` to maximise; one shared, or one per source model):

* untargeted zero-shot cross-entropy against the true labels —
  ``ZeroShotCE(class_emb)`` with ``labels=`` (class embeddings from
  :func:`vlmkit.models.zeroshot.zero_shot_classifier`); targeted towards class ``t`` —
  ``ZeroShotCE(class_emb, targeted=True)`` with ``targeted=True, target=t``;
* untargeted, label-free "embedding away from clean" — ``EmbeddingDrift("cosine")``: maximise
  ``1 - cos(f(x + δ), f(x))``, i.e. minimise the cosine similarity to the clean image embedding (the
  feature-level objective of CLIP UAPs, needing no labels or text);
* targeted towards a text embedding — :class:`TowardText` (``cos(f(x + δ), t) - 1``), e.g. the
  embedding of one prompt, with ``targeted=True, target="<the prompt>"`` for the record.

The result is a :class:`UniversalPerturbation`: ``delta (1, 3, H, W)`` with its budget, the target and
the training record; ``apply(x)`` adds it to other images, ``save``/``load`` keep it on disk
(safetensors with the record in its header, plus a JSON sidecar for people).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from vlmkit.attacks.base import (
    ObjectiveFn,
    check_eps,
    frozen_eval,
    lp_norm,
    normalise_grad,
    project_ball,
)
from vlmkit.attacks.objectives import EmbeddingDrift
from vlmkit.errors import DataError, DataNotFoundError, InputError
from vlmkit.models.base import torch_module
from vlmkit.perturb.frequency import check_norm
from vlmkit.runtime import autocast, resolve_dtype
from vlmkit.validate import check_images

#: Format tag written into saved files (bumped when the layout changes).
FORMAT = "vlmkit.universal_perturbation/1"
#: Slack of the budget check on a stored ``delta`` (float rounding of the L2 rescaling).
_NORM_SLACK = 1e-5


class TowardText(EmbeddingDrift):
    """Targeted objective: pull the image embedding towards a fixed text embedding.

    ``loss = cos(f(x_adv), t) - 1`` (to maximise; 0 when aligned), i.e.
    :class:`~vlmkit.attacks.objectives.EmbeddingDrift` with ``targeted=True`` whose target embedding
    ``t`` is stored here instead of passed per batch — so each source model of an ensemble can carry
    the embedding of the prompt in its own text tower.

    Args:
        text_emb: The target text embedding ``(D,)`` (or ``(1, D)``), e.g.
            ``vlm.encode_text(["a photo of a star"])[0]``.
    """

    def __init__(self, text_emb: torch.Tensor) -> None:
        super().__init__("cosine", targeted=True)
        if not isinstance(text_emb, torch.Tensor) or not text_emb.is_floating_point():
            raise InputError(f"text_emb must be a float tensor (D,), got {type(text_emb).__name__}")
        if text_emb.ndim == 2 and text_emb.shape[0] == 1:
            text_emb = text_emb[0]
        if text_emb.ndim != 1 or text_emb.numel() == 0:
            raise InputError(f"text_emb must have shape (D,) (one text embedding), got {tuple(text_emb.shape)}")
        self.text_emb = text_emb.detach().float()

    def prepare(self, model: Any, x: torch.Tensor, batch: dict[str, Any]) -> dict[str, Any]:
        return {**batch, "target_emb": self.text_emb.to(x.device)}

    def __repr__(self) -> str:
        return f"TowardText(dim={self.text_emb.numel()})"


@dataclass
class UniversalRecord:
    """How a universal perturbation was fitted (stored with it).

    Attributes:
        models: Names of the source model(s) (an ensemble when several).
        objective: ``repr`` of the objective(s), one per source model.
        n_train: Number of training images.
        image_size: ``(H, W)`` of the training images (= of ``delta``).
        epochs: Passes over the training split.
        steps: Gradient steps taken (``epochs · ceil(n_train / batch_size)``).
        batch_size: Images per minibatch.
        alpha: Step size.
        seed: Seed of the minibatch order.
        loss: Mean objective of each step's minibatch, measured before the step (averaged over the
            source models): the loss curve, ``(steps,)``.
        epoch_loss: Mean of ``loss`` over each epoch, ``(epochs,)``.
    """

    models: list[str]
    objective: list[str]
    n_train: int
    image_size: tuple[int, int]
    epochs: int
    steps: int
    batch_size: int
    alpha: float
    seed: int
    loss: list[float] = field(default_factory=list)
    epoch_loss: list[float] = field(default_factory=list)


@dataclass
class UniversalPerturbation:
    """One additive perturbation for every image, with its budget and training record.

    Attributes:
        delta: ``(1, 3, H, W)`` float32 (a ``(3, H, W)`` tensor is accepted and viewed as ``(1, 3, H, W)``),
            with ``‖delta‖_norm <= eps``.
        norm: "linf" or "l2".
        eps: The budget on [0, 1] pixels.
        targeted: Fitted towards a target (else away from the truth / the clean embedding).
        target: The target class index, or a description of the target (e.g. the prompt), or None.
        record: How it was fitted (:class:`UniversalRecord`); None for a hand-made perturbation.

    Raises:
        InputError: (on construction) Bad shape, norm or budget, or ``delta`` outside the ε-ball.
    """

    delta: torch.Tensor
    norm: str
    eps: float
    targeted: bool = False
    target: int | str | None = None
    record: UniversalRecord | None = None

    def __post_init__(self) -> None:
        self.norm = check_norm(self.norm)
        self.eps = check_eps(self.eps, self.norm)
        d = self.delta
        if not isinstance(d, torch.Tensor) or not d.is_floating_point():
            raise InputError(f"delta must be a float tensor (1, 3, H, W), got {type(d).__name__}"
                             + (f" of dtype {d.dtype}" if isinstance(d, torch.Tensor) else ""))
        if d.ndim == 3:
            d = d.unsqueeze(0)
        if d.ndim != 4 or d.shape[:2] != (1, 3):
            raise InputError(f"delta must have shape (1, 3, H, W) or (3, H, W), got {tuple(self.delta.shape)}")
        if not bool(torch.isfinite(d).all()):
            raise InputError("delta holds non-finite values")
        size = float(lp_norm(d.detach().float(), self.norm)[0])
        if size > self.eps * (1 + _NORM_SLACK) + 1e-7:
            raise InputError(f"delta has {self.norm} norm {size:.6g} > eps={self.eps:.6g}: outside its budget")
        self.delta = d.detach().float()
        if isinstance(self.target, bool) or (self.target is not None and not isinstance(self.target, (int, str))):
            raise InputError(f"target={self.target!r} must be a class index (int), a description (str) or None")

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of ``delta``."""
        return int(self.delta.shape[-2]), int(self.delta.shape[-1])

    def apply(self, x: torch.Tensor, resize: bool = False) -> torch.Tensor:
        """``clamp(x + delta, 0, 1)`` for images ``x (B, 3, H, W)`` in [0, 1] (not modified).

        Args:
            x: Images of ``delta``'s size (any device; ``delta`` follows it).
            resize: Allow images of another size: ``delta`` is resized bilinearly to theirs and projected
                back onto the ε-ball (L∞: unchanged, bilinear interpolation does not raise the max; L2:
                rescaled where resizing grew its norm — an L2 budget means something else at another
                resolution). Off by default: a silent resize changes the threat model.

        Returns:
            ``(B, 3, H, W)`` in [0, 1], dtype and device of ``x``.

        Raises:
            InputError: ``x`` is not a batch of [0, 1] images, or has another size and ``resize`` is False.
        """
        check_images(x, "x")
        d = self.delta.to(device=x.device, dtype=torch.float32)  # (1, 3, h, w)
        if tuple(x.shape[-2:]) != self.image_size:
            if not resize:
                raise InputError(f"x has image size {tuple(x.shape[-2:])} but the universal perturbation is "
                                 f"{self.image_size}: resize the images, or pass resize=True to resize delta")
            d = F.interpolate(d, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
            d = project_ball(d, self.eps, self.norm)
        return torch.clamp(x.float() + d, 0.0, 1.0).to(x.dtype)  # (B, 3, H, W)

    # ------------------------------------------------------------------ files
    def metadata(self) -> dict[str, Any]:
        """Everything but ``delta`` as JSON-ready values (stored beside the tensor)."""
        return {"format": FORMAT, "norm": self.norm, "eps": self.eps, "targeted": self.targeted,
                "target": self.target, "image_size": list(self.image_size),
                "record": None if self.record is None else asdict(self.record)}

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``delta`` to ``path`` (safetensors; the metadata in its header) and a JSON sidecar.

        The sidecar ``<path without suffix>.json`` is a human-readable copy of the metadata;
        :meth:`load` reads the header. Both files are written to temporary names and renamed, so a
        crash leaves the old files or the new ones.

        Args:
            path: A file name ending in ``.safetensors``.

        Returns:
            ``path``.

        Raises:
            InputError: ``path`` does not end in ``.safetensors``.
        """
        from safetensors.torch import save_file

        path = Path(path)
        if path.suffix != ".safetensors":
            raise InputError(f"path={str(path)!r} must end in '.safetensors' (the JSON sidecar is written beside it)")
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = self.metadata()
        text = json.dumps(meta, indent=2)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        save_file({"delta": self.delta.cpu().contiguous()}, str(tmp), metadata={"vlmkit": json.dumps(meta)})
        os.replace(tmp, path)
        side = path.with_suffix(".json")
        tmp = side.with_name(f".{side.name}.{os.getpid()}.tmp")
        tmp.write_text(text + "\n")
        os.replace(tmp, side)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> UniversalPerturbation:
        """Read a perturbation written by :meth:`save` (on CPU).

        Raises:
            DataNotFoundError: No such file.
            DataError: Not a file written by :meth:`save` (no ``delta`` tensor or no vlmkit metadata).
            InputError: Its ``delta`` breaks its own budget.
        """
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise DataNotFoundError(f"no universal perturbation at {str(path)!r} (expected a .safetensors file "
                                    f"written by UniversalPerturbation.save)")
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                header = f.metadata() or {}
                names = list(f.keys())
                delta = f.get_tensor("delta") if "delta" in names else None
        except SafetensorError as e:  # not a safetensors file
            raise DataError(f"{str(path)!r} is not a safetensors file: {e}") from None
        if delta is None or "vlmkit" not in header:
            raise DataError(f"{str(path)!r} is not a universal perturbation written by vlmkit "
                            f"(needs a 'delta' tensor and 'vlmkit' metadata)")
        try:
            meta = json.loads(header["vlmkit"])
            fmt = meta.get("format")
            if fmt == FORMAT:
                rec = meta.get("record")
                record = None if rec is None else UniversalRecord(**{**rec, "image_size": tuple(rec["image_size"])})
                fields = {"norm": meta["norm"], "eps": float(meta["eps"]), "targeted": bool(meta["targeted"]),
                          "target": meta["target"]}
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise DataError(f"{str(path)!r} has unreadable universal-perturbation metadata: {e!r}") from None
        if fmt != FORMAT:
            raise DataError(f"{str(path)!r} has format {fmt!r}; expected {FORMAT!r}")
        return cls(delta=delta, record=record, **fields)

    def __repr__(self) -> str:
        src = "" if self.record is None else f", models={self.record.models}, steps={self.record.steps}"
        return (f"UniversalPerturbation(norm={self.norm!r}, eps={self.eps:.5g}, size={self.image_size}, "
                f"targeted={self.targeted}, target={self.target!r}{src})")


# ---------------------------------------------------------------------- fitting
def _as_models(models: Any) -> list[Any]:
    items = [models] if torch_module(models) is not None else models
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence) or not items:
        raise InputError(f"models must be a VLM or a non-empty sequence of VLMs, got {type(models).__name__}")
    for i, m in enumerate(items):
        if torch_module(m) is None or not callable(getattr(m, "encode_image", None)):
            raise InputError(f"models[{i}] must be a VLM (an nn.Module with encode_image), got {type(m).__name__}")
    return list(items)


def _as_objectives(objective: Any, n: int) -> list[ObjectiveFn]:
    if callable(objective):
        return [objective] * n
    if isinstance(objective, Sequence) and not isinstance(objective, (str, bytes)):
        objs = list(objective)
        if len(objs) != n or not all(callable(o) for o in objs):
            raise InputError(f"objective must be one callable (model, x_adv, batch) -> (B,) or one per model "
                             f"({n}); got a sequence of {len(objs)}")
        return objs
    raise InputError(f"objective must be callable (model, x_adv, batch) -> (B,), got {type(objective).__name__}")


def _positive_int(name: str, v: Any, lo: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise InputError(f"{name}={v!r} must be an int >= {lo}")
    return v


def _model_device(m: Any) -> torch.device:
    return next(iter(torch_module(m).parameters()), torch.empty(0)).device  # type: ignore[union-attr]


def fit_universal(models: Any, images: torch.Tensor, objective: ObjectiveFn | Sequence[ObjectiveFn], *,
                  eps: float, norm: str = "linf", alpha: float | None = None, epochs: int = 5,
                  batch_size: int = 32, targeted: bool = False, target: int | str | None = None,
                  labels: torch.Tensor | None = None, seed: int = 0,
                  amp_dtype: str | torch.dtype | None = None, progress: bool = True) -> UniversalPerturbation:
    """Fit one universal perturbation on a training split (SGD-UAP, Shafahi et al., AAAI 2020).

    Projected sign-gradient (L∞) or normalised-gradient (L2) ascent on the minibatch mean of the
    objective, averaged over the source models, from ``δ = 0``; see the module docstring. The models are
    put in eval mode with frozen parameters for the run and restored afterwards.

    Args:
        models: A :class:`vlmkit.VLM`, or several (an ensemble source: the mean of their objectives).
        images: Training images ``(N, 3, H, W)`` float in [0, 1] (may stay on the CPU; minibatches are
            moved to each model's device). ``delta`` has their size.
        objective: ``(model, x_adv, batch) -> loss (B,)`` to maximise, shared by the models, or one per
            model (e.g. zero-shot cross-entropy with each model's class embeddings). Its ``prepare``, if
            any, is called on every clean minibatch for every model.
        eps: Budget on [0, 1] pixels (L∞: ``0 < eps <= 1``, e.g. ``8/255``; L2: ``0 < eps``).
        norm: "linf" or "l2".
        alpha: Step size; default ``2.5·eps / sqrt(steps)`` — Madry et al.'s ``2.5·ε/steps`` over the
            whole run would make the late steps of a long stochastic run too small to move ``δ``.
        epochs: Passes over the training split.
        batch_size: Images per step (the last minibatch of an epoch may be smaller).
        targeted: Fitted towards a target: ``target`` is required, and each objective's own
            ``targeted`` flag (where it has one) must agree.
        target: With ``targeted``: a class index (filled into ``batch["target"]`` for
            ``ZeroShotCE(targeted=True)``), or a description of a target the objective carries itself
            (e.g. the prompt of a :class:`TowardText`), stored with the result.
        labels: True classes ``(N,)`` (``batch["labels"]``, for untargeted ``ZeroShotCE``).
        seed: Seed of the minibatch order (``torch.randperm`` per epoch from one CPU generator): the same
            seed gives the bit-identical ``delta`` on CPU.
        amp_dtype: None (float32) or "bf16"/"fp16": autocast of the forward passes.
        progress: Show a tqdm progress bar.

    Returns:
        The :class:`UniversalPerturbation` (``delta`` on the CPU) with its training record.

    Raises:
        InputError: Bad models, images, objective, budget, norm, step size, counts, labels or target —
            the message names the argument — before any forward pass.
    """
    srcs = _as_models(models)
    objs = _as_objectives(objective, len(srcs))
    norm = check_norm(norm)
    eps = check_eps(eps, norm)
    check_images(images, "images", allow_empty=False)
    epochs = _positive_int("epochs", epochs)
    batch_size = _positive_int("batch_size", batch_size)
    seed = _positive_int("seed", seed, lo=0)
    if not isinstance(targeted, bool):
        raise InputError(f"targeted={targeted!r} must be a bool")
    if targeted and target is None:
        raise InputError("targeted=True needs target= (a class index, or a description of the objective's target)")
    if not targeted and target is not None:
        raise InputError(f"target={target!r} was given but targeted=False; pass targeted=True for a targeted UAP")
    if target is not None and (isinstance(target, bool) or not isinstance(target, (int, str))
                               or (isinstance(target, int) and target < 0)):
        raise InputError(f"target={target!r} must be a class index (int >= 0) or a description (str)")
    for i, o in enumerate(objs):
        flag = getattr(o, "targeted", None)
        if isinstance(flag, bool) and flag != targeted:
            raise InputError(f"targeted={targeted} but objective {o!r} (for models[{i}]) has targeted={flag}")
    N = images.shape[0]
    if labels is not None:
        if not isinstance(labels, torch.Tensor) or labels.shape != (N,) or labels.is_floating_point():
            raise InputError(f"labels must be an integer tensor ({N},) (one class per image), got "
                             f"{tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__}")
        labels = labels.long().cpu()
    amp = None if amp_dtype is None else resolve_dtype(amp_dtype)
    per_epoch = math.ceil(N / batch_size)
    total = epochs * per_epoch
    alpha = 2.5 * eps / math.sqrt(total) if alpha is None else alpha
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise InputError(f"alpha={alpha!r} (step size) must be a positive finite number")
    alpha = float(alpha)

    device = _model_device(srcs[0])
    H, W = images.shape[-2:]
    delta = torch.zeros(1, 3, H, W, device=device)  # (1, 3, H, W)
    order = torch.Generator().manual_seed(seed)  # CPU: the same order on every device
    curve: list[float] = []
    epoch_loss: list[float] = []
    nets = {id(n): n for n in (torch_module(m) for m in srcs)}
    with contextlib.ExitStack() as stack:
        bar = stack.enter_context(tqdm(total=total, desc="universal perturbation", disable=not progress, leave=False))
        for net in nets.values():
            stack.enter_context(frozen_eval(net))
        for _ in range(epochs):
            perm = torch.randperm(N, generator=order)  # (N,)
            for s in range(per_epoch):
                idx = perm[s * batch_size:(s + 1) * batch_size]  # (B,)
                xb = images[idx].detach().float()  # (B, 3, H, W)
                base: dict[str, Any] = {}
                if labels is not None:
                    base["labels"] = labels[idx]
                if targeted and isinstance(target, int):
                    base["target"] = torch.full((len(idx),), target, dtype=torch.long)
                grad = torch.zeros_like(delta)
                loss_sum = 0.0
                for i, (m, obj) in enumerate(zip(srcs, objs)):
                    dev = _model_device(m)
                    xm = xb.to(dev)
                    batch = {k: v.to(dev) for k, v in base.items()}
                    prepare = getattr(obj, "prepare", None)
                    if prepare is not None:
                        batch = prepare(m, xm, batch)
                    d = delta.detach().to(dev).requires_grad_(True)
                    with torch.enable_grad(), autocast(dev, amp):
                        loss = obj(m, torch.clamp(xm + d, 0.0, 1.0), batch)
                    loss = loss.float()
                    if loss.shape != (len(idx),):
                        raise InputError(f"objective for models[{i}] returned shape {tuple(loss.shape)}; expected "
                                         f"one loss per image ({len(idx)},)")
                    (g,) = torch.autograd.grad(loss.mean(), d)
                    grad += g.to(device)
                    loss_sum += float(loss.detach().mean())
                # mean over models; normalise_grad is scale-free for sign, and the L2 direction too
                grad /= len(srcs)
                delta = project_ball(delta + alpha * normalise_grad(grad, norm), eps, norm).detach()
                curve.append(loss_sum / len(srcs))
                bar.update(1)
                bar.set_postfix(loss=f"{curve[-1]:.4f}")
            epoch_loss.append(sum(curve[-per_epoch:]) / per_epoch)
    record = UniversalRecord(
        models=[str(getattr(m, "name", type(m).__name__)) for m in srcs], objective=[repr(o) for o in objs],
        n_train=int(N), image_size=(int(H), int(W)), epochs=epochs, steps=total, batch_size=batch_size,
        alpha=alpha, seed=seed, loss=curve, epoch_loss=epoch_loss)
    return UniversalPerturbation(delta=delta.cpu(), norm=norm, eps=eps, targeted=targeted, target=target,
                                 record=record)


__all__ = ["FORMAT", "TowardText", "UniversalPerturbation", "UniversalRecord", "fit_universal"]
