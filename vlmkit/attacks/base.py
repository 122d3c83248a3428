"""The attack template: :class:`Attack` owns everything but the update step.

Threat model of every attack here: **white-box** (gradients of the objective through the whole
model, including its differentiable resize/normalisation), an additive perturbation ``δ`` on float
pixels in ``[0, 1]`` with ``‖δ‖_p <= ε`` (``p`` = ∞ or 2, over all ``3·H·W`` values of an image) and
``x + δ ∈ [0, 1]``. The objective is any callable ``(model, x_adv, batch) -> loss (B,)`` to
**maximise** (see :mod:`vlmkit.attacks.objectives`).

A subclass implements :meth:`Attack.step` (and optionally :meth:`Attack.init_state`,
:meth:`Attack.random_init`, :meth:`Attack.constrain`); the base class does, once for all:

* input checks, device placement, eval mode and frozen parameters (restored afterwards);
* the random start and seeding (``seed`` → a fresh generator per call, so the same seed gives the
  same adversarial images on CPU; or an explicit ``generator``);
* projection onto the ε-ball and clamping to [0, 1] after every step;
* autocast (``amp_dtype="bf16"``, mainly for CUDA) around the forward pass;
* optional best-iterate tracking (``keep_best``): return, per image, the iterate with the highest loss.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

import torch
from torch import nn

from vlmkit.attacks.objectives import Objective
from vlmkit.errors import InputError
from vlmkit.models.base import torch_module
from vlmkit.perturb.base import check_images
from vlmkit.perturb.frequency import check_budget, check_norm
from vlmkit.runtime import autocast, make_generator, resolve_dtype

NORMS = ("linf", "l2")
#: The threat model every attack here shares (registry metadata).
THREAT_MODEL = ("white-box; additive delta on [0, 1] pixels, ||delta||_{norm} <= eps, x + delta clamped to "
                "[0, 1]")


class ObjectiveFn(Protocol):
    """``(model, x_adv (B, 3, H, W), batch) -> loss (B,)`` to maximise."""

    def __call__(self, model: Any, x_adv: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor: ...


def check_eps(eps: float, norm: str) -> float:
    """``0 < eps <= 1`` for L∞ (pixels are in [0, 1]), ``0 < eps`` finite for L2: the budget rule shared with
    the bounded perturbations (:func:`vlmkit.perturb.frequency.check_budget`)."""
    return check_budget("eps", eps, norm)


def batch_view(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-item vector ``(B,)`` viewed as ``(B, 1, ..., 1)`` to broadcast against ``like`` ``(B, ...)``."""
    return v.view(-1, *([1] * (like.ndim - 1)))


def lp_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-item norm of ``delta (B, ...)`` → ``(B,)``."""
    flat = delta.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


def project_ball(delta: torch.Tensor, eps: float | torch.Tensor, norm: str) -> torch.Tensor:
    """Euclidean projection of each item of ``delta (B, ...)`` onto the ``norm``-ball of radius ``eps``."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    n = delta.flatten(1).norm(dim=1)  # (B,)
    factor = torch.clamp(eps / (n + 1e-12), max=1.0)
    return delta * batch_view(factor, delta)


def normalise_grad(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """Steepest-ascent direction of unit ``norm``: ``sign(g)`` for L∞, ``g / ‖g‖₂`` for L2."""
    if norm == "linf":
        return grad.sign()
    n = grad.flatten(1).norm(dim=1)  # (B,)
    return grad / batch_view(n + 1e-12, grad)


@contextlib.contextmanager
def frozen_eval(model: nn.Module) -> Iterator[None]:
    """Eval mode, parameters without grad, and (for a VLM) no per-call range checks; restored after."""
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    check = getattr(model, "check_inputs", None)
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    if check is not None:
        model.check_inputs = False  # iterates are in [0, 1] by construction; skip the host sync per step
    try:
        yield
    finally:
        for m, mode in modes:  # per module: a VLM wrapper may be in train mode around an eval-mode network
            m.training = mode
        for p, flag in flags:
            p.requires_grad_(flag)
        if check is not None:
            model.check_inputs = check


class Attack:
    """Base class of the white-box attacks (torchattacks-style template method).

    Args:
        objective: Callable ``(model, x_adv, batch) -> (B,)`` to maximise; ``None`` uses the
            subclass's :meth:`default_objective`.
        eps: Budget ε on [0, 1] pixels (L∞: ``0 < eps <= 1``).
        alpha: Step size; default ``2.5 · eps / steps`` (Madry et al., 2018).
        steps: Number of gradient steps (``>= 1``).
        norm: "linf" or "l2".
        random_start: Start from a random point of the ε-ball (else from ``x``).
        seed: Seed of the random start (a fresh generator per call: same seed → same output).
        generator: An explicit generator instead of ``seed`` (its state advances across calls), or
            one generator per image of the batch (each image's random start drawn from its own).
        amp_dtype: None (float32) or "bf16"/"fp16": autocast of the forward pass (:func:`vlmkit.runtime.autocast`).
        keep_best: Return the iterate with the highest loss per image (one extra forward pass) instead
            of the last one.

    Call ``attack(model, x, batch)`` → ``x_adv`` with ``‖x_adv - x‖ <= eps`` and values in [0, 1].
    """

    name = "attack"

    def __init__(self, objective: ObjectiveFn | None = None, *, eps: float = 4 / 255, alpha: float | None = None,
                 steps: int = 10, norm: str = "linf", random_start: bool = True, seed: int = 0,
                 generator: torch.Generator | Sequence[torch.Generator] | None = None,
                 amp_dtype: str | torch.dtype | None = None,
                 keep_best: bool = False) -> None:
        self.norm = check_norm(norm)
        self.eps = check_eps(eps, self.norm)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise InputError(f"steps={steps!r} must be an int >= 1")
        self.steps = steps
        alpha = 2.5 * self.eps / steps if alpha is None else alpha
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
            raise InputError(f"alpha={alpha!r} (step size) must be a positive finite number")
        self.alpha = float(alpha)
        if not isinstance(seed, int) or seed < 0:
            raise InputError(f"seed={seed!r} must be a non-negative int")
        self.seed = seed
        self.generator = generator
        self.random_start = bool(random_start)
        self.amp_dtype = None if amp_dtype is None else resolve_dtype(amp_dtype)
        self.keep_best = bool(keep_best)
        self.objective = objective if objective is not None else self.default_objective()
        if not callable(self.objective):
            raise InputError(f"objective must be callable (model, x_adv, batch) -> (B,), got {type(objective).__name__}")
        self.cost: dict[str, int] = {"forward": 0, "backward": 0}

    # ------------------------------------------------------------------ hooks
    #: Passes of the model each image of the last :meth:`attack` call went through: ``forward`` counts every
    #: evaluation of the objective (and one for an objective's ``prepare``), ``backward`` every gradient.
    #: Every image of a batch goes through each pass once, so these are per image, whatever the batch
    #: size; the engine stores them with the attack's seconds per image in its rows (attack cost).
    cost: dict[str, int]

    def default_objective(self) -> ObjectiveFn:
        """The objective used when none is given (zero-shot cross-entropy unless overridden)."""
        from vlmkit.attacks.objectives import ZeroShotCE

        return ZeroShotCE()

    def init_state(self, x: torch.Tensor, x_adv: torch.Tensor) -> dict[str, Any]:
        """Per-call mutable state handed to :meth:`step`."""
        return {}

    def step(self, i: int, x_adv: torch.Tensor, grad: torch.Tensor, loss: torch.Tensor, x: torch.Tensor,
             state: dict[str, Any]) -> torch.Tensor:
        """One update from ``x_adv`` given ``grad = ∂loss/∂x_adv`` and ``loss (B,)``; projected afterwards."""
        raise NotImplementedError

    def random_init(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Random starting point: L∞ uniform in the ball; L2 uniform direction, radius ``eps·U(0, 1)``."""
        if self.norm == "linf":
            d = (torch.rand(x.shape, generator=g, device=g.device) * 2 - 1) * self.eps
        else:
            d = torch.randn(x.shape, generator=g, device=g.device)
            r = torch.rand(x.shape[0], generator=g, device=g.device) * self.eps
            d = d / batch_view(d.flatten(1).norm(dim=1) + 1e-12, d) * batch_view(r, d)
        return x + d.to(x.device, x.dtype)

    def constrain(self, delta: torch.Tensor) -> torch.Tensor:
        """Map a perturbation into the threat model's set (default: the ε-ball), before clamping."""
        return project_ball(delta, self.eps, self.norm)

    def project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``clamp(x + constrain(x_adv - x), 0, 1)``."""
        return torch.clamp(x + self.constrain(x_adv - x), 0.0, 1.0)

    # ------------------------------------------------------------------ template
    def loss_and_grad(self, model: nn.Module, x_adv: torch.Tensor, batch: Mapping[str, Any]
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Objective per sample ``(B,)`` at ``x_adv`` and its gradient ``(B, 3, H, W)``."""
        x_adv = x_adv.detach().requires_grad_(True)
        self.cost["forward"] += 1
        self.cost["backward"] += 1
        with torch.enable_grad(), autocast(x_adv.device, self.amp_dtype):
            loss = self.objective(model, x_adv, batch)
        loss = loss.float()
        if loss.shape != x_adv.shape[:1]:
            raise InputError(f"objective returned shape {tuple(loss.shape)}; expected one loss per image "
                             f"({x_adv.shape[0]},)")
        (grad,) = torch.autograd.grad(loss.sum(), x_adv)
        return loss.detach(), grad.detach()

    def evaluate(self, model: nn.Module, x_adv: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        """Objective per sample ``(B,)`` without gradients."""
        self.cost["forward"] += 1
        with torch.no_grad(), autocast(x_adv.device, self.amp_dtype):
            return self.objective(model, x_adv, batch).float()

    def _generator(self, device: torch.device) -> torch.Generator | list[torch.Generator]:
        if self.generator is not None:
            return self.generator
        return make_generator(self.seed, device)

    def start(self, x: torch.Tensor) -> torch.Tensor:
        """The first iterate: a random point of the ball (projected) or ``x`` itself.

        With a list of generators (one per image, as the engine passes them) each image draws its
        start from its own generator, so the result does not depend on how images are batched.
        """
        if not self.random_start:
            return x.clone()
        g = self._generator(x.device)
        if isinstance(g, torch.Generator):
            return self.project(self.random_init(x, g), x)
        if len(g) != len(x):
            raise InputError(f"got {len(g)} generators for a batch of {len(x)} images; expected one per image")
        return self.project(torch.cat([self.random_init(x[i:i + 1], gi) for i, gi in enumerate(g)]), x)

    def __call__(self, model: nn.Module, x: torch.Tensor, batch: Mapping[str, Any] | None = None) -> torch.Tensor:
        """Adversarial images ``(B, 3, H, W)`` in [0, 1] for clean images ``x`` (not modified)."""
        return self.attack(model, x, batch)

    def attack(self, model: Any, x: torch.Tensor, batch: Mapping[str, Any] | None = None) -> torch.Tensor:
        """Run the attack; see the class docstring. ``batch`` holds what the objective needs (labels, ...)."""
        check_images(x)
        if x.shape[0] == 0:
            raise InputError("x is an empty batch (B=0)")
        if batch is not None and not isinstance(batch, Mapping):
            raise InputError(f"batch must be a mapping (dict) of what the objective needs, got {type(batch).__name__}")
        net = torch_module(model)  # a VLM, or the network a task model (CLIPSeg, an answer scorer) wraps
        if net is None:
            raise InputError(f"model must be an nn.Module or wrap one as .model, got {type(model).__name__}")
        device = next(iter(net.parameters()), torch.empty(0)).device
        x = x.detach().to(device=device, dtype=torch.float32)
        batch = dict(batch or {})
        self.cost = {"forward": 0, "backward": 0}
        with frozen_eval(net):
            prepare = getattr(self.objective, "prepare", None)
            if prepare is not None:
                batch = prepare(model, x, batch)
                if getattr(type(self.objective), "prepare", None) is not Objective.prepare:
                    self.cost["forward"] += 1  # what an objective prepares (the clean embedding, ...) is one pass
            return self._run(model, x, batch).detach()

    def _run(self, model: nn.Module, x: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        x_adv = self.start(x)
        state = self.init_state(x, x_adv)
        best_x = best_loss = None
        for i in range(self.steps):
            loss, grad = self.loss_and_grad(model, x_adv, batch)
            if self.keep_best:
                best_x, best_loss = self._update_best(best_x, best_loss, x_adv, loss, state)
            x_adv = self.project(self.step(i, x_adv, grad, loss, x, state).detach(), x)
        if not self.keep_best:
            return x_adv
        best_x, best_loss = self._update_best(best_x, best_loss, x_adv, self.evaluate(model, x_adv, batch), state)
        return best_x

    @staticmethod
    def _update_best(best_x: torch.Tensor | None, best_loss: torch.Tensor | None, x_adv: torch.Tensor,
                     loss: torch.Tensor, state: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        if best_x is None or best_loss is None:
            improved = torch.ones_like(loss, dtype=torch.bool)
            best_x, best_loss = x_adv.clone(), loss.clone()
        else:
            improved = loss > best_loss  # (B,)
            best_x = torch.where(batch_view(improved, x_adv), x_adv, best_x)
            best_loss = torch.where(improved, loss, best_loss)
        state.update(best_x=best_x, best_loss=best_loss, improved=improved)
        return best_x, best_loss

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(norm={self.norm!r}, eps={self.eps:.5g}, alpha={self.alpha:.5g}, "
                f"steps={self.steps}, random_start={self.random_start}, objective={self.objective!r})")
