"""Auto-PGD (APGD-CE): PGD with momentum and a budget-aware step-size schedule.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020 (the first attack of AutoAttack). Threat model: white-box,
``‖δ‖_∞ <= ε`` or ``‖δ‖₂ <= ε`` on [0, 1] pixels, ``x + δ ∈ [0, 1]``; here on any objective to maximise
(default: zero-shot cross-entropy, hence "CE").

Algorithm (per image; the paper's Alg. 1, with the constants of the authors' reference code):

* start: ``x₀ = x + ε·t/‖t‖`` (``t`` uniform in [-1, 1] for L∞, Gaussian for L2), step size ``η = 2ε``;
* ``z = Π(x_k + η·s(∇L(x_k)))`` with ``s`` = sign (L∞) or ``g/‖g‖₂`` (L2), then
  ``x_{k+1} = Π(x_k + a·(z - x_k) + (1 - a)·(x_k - x_{k-1}))`` with momentum ``a = 0.75`` (``a = 1``
  at the first step); Π = projection onto the ball, then clamp to [0, 1];
* checkpoints: the first after ``p₁ = ⌈0.22·N⌉`` iterations (``max(int(0.22·N), 1)``), then every
  ``max(previous gap - int(0.03·N), int(0.06·N))`` iterations. At a checkpoint ``η`` is halved and the
  iterate restarts from the best point (with its gradient) when (1) the loss increased in at most
  ``ρ = 0.75`` of the iterations since the last checkpoint, or (2) ``η`` was not reduced at the last
  checkpoint and the best loss did not improve since;
* the returned image is the best (highest-loss) iterate.
"""

from __future__ import annotations

from typing import Any

import torch

from vlmkit.attacks.base import NORMS, THREAT_MODEL, Attack, ObjectiveFn, batch_view, normalise_grad
from vlmkit.errors import InputError
from vlmkit.registry import ATTACKS


@ATTACKS.register("apgd_ce", reference="Croce & Hein, ICML 2020",
                  threat_model=THREAT_MODEL, norms=NORMS)
class APGD(Attack):
    """APGD (Croce & Hein, ICML 2020) on any objective; default zero-shot cross-entropy (APGD-CE).

    White-box, L∞ or L2 budget ``eps`` on [0, 1] pixels. Always random-starts (from the ``seed``/
    ``generator``) and returns the highest-loss iterate.

    Args:
        objective: Callable ``(model, x_adv, batch) -> (B,)`` to maximise.
        eps: Budget (L∞: ``0 < eps <= 1``).
        steps: Iterations ``N`` (the paper uses 100).
        norm: "linf" or "l2".
        rho: Oscillation threshold of condition (1) (0.75).
        momentum: Momentum ``a`` (0.75).
        **kwargs: ``seed``, ``generator``, ``amp_dtype`` as :class:`~vlmkit.attacks.base.Attack`.
    """

    name = "apgd_ce"

    def __init__(self, objective: ObjectiveFn | None = None, *, eps: float = 4 / 255, steps: int = 100,
                 norm: str = "linf", rho: float = 0.75, momentum: float = 0.75, **kwargs: Any) -> None:
        for k in ("alpha", "random_start", "keep_best"):
            if k in kwargs:
                raise InputError(f"APGD sets {k} itself (step size 2·eps with halving, random start, best iterate)")
        super().__init__(objective, eps=eps, steps=steps, norm=norm, alpha=2 * eps if isinstance(eps, (int, float)) and eps > 0 else None,
                         random_start=True, keep_best=True, **kwargs)
        if not 0 < rho <= 1 or not 0 < momentum <= 1:
            raise InputError(f"rho={rho!r} and momentum={momentum!r} must be in (0, 1]")
        self.rho, self.momentum = float(rho), float(momentum)

    def random_init(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if self.norm == "linf":
            t = torch.rand(x.shape, generator=g, device=g.device) * 2 - 1
            t = t / batch_view(t.flatten(1).abs().amax(1), t)
        else:
            t = torch.randn(x.shape, generator=g, device=g.device)
            t = t / batch_view(t.flatten(1).norm(dim=1) + 1e-12, t)
        return x + self.eps * t.to(x.device, x.dtype)

    def init_state(self, x: torch.Tensor, x_adv: torch.Tensor) -> dict[str, Any]:
        n, B = self.steps, x.shape[0]
        return {
            "eta": torch.full((B,), 2 * self.eps, device=x.device),  # (B,) step sizes
            "x_prev": x_adv.clone(),
            "grad_best": torch.zeros_like(x),
            "losses": [],
            "k": max(int(0.22 * n), 1), "k_min": max(int(0.06 * n), 1), "k_decr": max(int(0.03 * n), 1),
            "counter": 0,
            "reduced_last": torch.ones(B, dtype=torch.bool, device=x.device),
            "best_at_last_check": None,
        }

    def _checkpoint(self, x_adv: torch.Tensor, grad: torch.Tensor, s: dict[str, Any]
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        k = s["k"]
        window = torch.stack(s["losses"][-(k + 1):])  # (k+1, B)
        n_incr = (window[1:] > window[:-1]).sum(0)  # (B,)
        cond1 = n_incr <= k * self.rho
        cond2 = ~s["reduced_last"] & (s["best_at_last_check"] >= s["best_loss"])
        reduce = cond1 | cond2  # (B,)
        s["reduced_last"] = reduce
        s["best_at_last_check"] = s["best_loss"].clone()
        s["eta"] = torch.where(reduce, s["eta"] / 2, s["eta"])
        m = batch_view(reduce, x_adv)
        x_adv = torch.where(m, s["best_x"], x_adv)
        grad = torch.where(m, s["grad_best"], grad)
        s["counter"] = 0
        s["k"] = max(k - s["k_decr"], s["k_min"])
        return x_adv, grad

    def step(self, i: int, x_adv: torch.Tensor, grad: torch.Tensor, loss: torch.Tensor, x: torch.Tensor,
             state: dict[str, Any]) -> torch.Tensor:
        s = state
        s["losses"].append(loss)
        s["grad_best"] = torch.where(batch_view(s["improved"], grad), grad, s["grad_best"])
        if i == 0:
            s["best_at_last_check"] = s["best_loss"].clone()
        else:
            s["counter"] += 1
            if s["counter"] == s["k"]:
                x_adv, grad = self._checkpoint(x_adv, grad, s)
        a = 1.0 if i == 0 else self.momentum
        eta = batch_view(s["eta"], x_adv)
        z = self.project(x_adv + eta * normalise_grad(grad, self.norm), x)  # (B, 3, H, W)
        x_new = self.project(x_adv + a * (z - x_adv) + (1 - a) * (x_adv - s["x_prev"]), x)
        s["x_prev"] = x_adv
        return x_new


__all__ = ["APGD"]
