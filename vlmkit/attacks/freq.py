"""Frequency-constrained PGD: adversarial perturbations restricted to a radial frequency band.

PGD (Madry et al., 2018) whose perturbation lives in a band of the 2-D spectrum, in the spirit of the
low-/high-frequency adversarial analyses of Yin et al. (2019, "A Fourier Perspective on Model
Robustness in Computer Vision") and Sharma et al. (2019, "On the Effectiveness of Low Frequency
Perturbations"). Threat model: white-box; ``δ`` band-limited to ``[f_lo, f_hi]`` cycles per pixel
(radial, see :mod:`vlmkit.perturb.frequency`), ``‖δ‖_∞ <= ε`` or ``‖δ‖₂ <= ε`` on [0, 1] pixels,
``x + δ ∈ [0, 1]``.

Order of operations per step:

1. gradient projected onto the band, ``g_b = real(IFFT(FFT(g)·mask))``, then normalised to a unit-norm
   step (``g_b / ‖g_b‖_∞`` for L∞ — not ``sign``, which would leave the band — ``g_b / ‖g_b‖₂`` for L2);
2. ``δ ← δ + α·step``; ``δ ← real(IFFT(FFT(δ)·mask))`` (band projection);
3. onto the ball: L2 rescales (stays in the band); L∞ rescales ``δ·min(1, ε/‖δ‖_∞)`` by default
   (``linf_ball="scale"``, stays in the band) or clips (``"clip"``, the Euclidean projection, which adds
   out-of-band energy);
4. clamp ``x + δ`` to [0, 1].

So the final ``δ`` is exactly band-limited before the clamp; the clamp (and ``"clip"``) put some
energy outside the band where pixels saturate.
"""

from __future__ import annotations

from typing import Any

import torch

from vlmkit.attacks.base import NORMS, THREAT_MODEL, ObjectiveFn, batch_view, lp_norm, project_ball
from vlmkit.attacks.pgd import PGD
from vlmkit.errors import InputError
from vlmkit.perturb.frequency import Band, project_to_band, resolve_band
from vlmkit.registry import ATTACKS


@ATTACKS.register("freq_pgd", reference="Madry et al. 2018 + band constraint (Yin et al., NeurIPS 2019)",
                  threat_model=THREAT_MODEL, norms=NORMS)
class FreqPGD(PGD):
    """PGD with the perturbation projected onto a frequency band every step (see the module docstring).

    Args:
        objective: As :class:`~vlmkit.attacks.base.Attack` (default zero-shot cross-entropy).
        band: Band name ("low", "mid", "high", "all") or ``(f_lo, f_hi)`` in cycles per pixel.
        linf_ball: "scale" (band-preserving) or "clip" (Euclidean projection) for L∞.
        **kwargs: As :class:`~vlmkit.attacks.base.Attack`.
    """

    name = "freq_pgd"

    def __init__(self, objective: ObjectiveFn | None = None, *, band: Band = "low", linf_ball: str = "scale",
                 **kwargs: Any) -> None:
        super().__init__(objective, **kwargs)
        self.band = resolve_band(band)
        if linf_ball not in ("scale", "clip"):
            raise InputError(f"linf_ball={linf_ball!r} must be 'scale' or 'clip'")
        self.linf_ball = linf_ball

    def to_band(self, t: torch.Tensor) -> torch.Tensor:
        """Band projection of ``t (B, 3, H, W)``."""
        return project_to_band(t, *self.band)

    def constrain(self, delta: torch.Tensor) -> torch.Tensor:
        """Band projection, then the ball (steps 2–3 of the module docstring); before clamping."""
        delta = self.to_band(delta)  # (B, 3, H, W)
        if self.norm == "linf" and self.linf_ball == "scale":
            factor = torch.clamp(self.eps / (lp_norm(delta, "linf") + 1e-12), max=1.0)  # (B,)
            return delta * batch_view(factor, delta)
        return project_ball(delta, self.eps, self.norm)

    def step(self, i: int, x_adv: torch.Tensor, grad: torch.Tensor, loss: torch.Tensor, x: torch.Tensor,
             state: dict[str, Any]) -> torch.Tensor:
        g = self.to_band(grad)  # (B, 3, H, W)
        return x_adv + self.alpha * g / batch_view(lp_norm(g, self.norm) + 1e-12, g)

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", band={self.band}, linf_ball={self.linf_ball!r})"


__all__ = ["FreqPGD"]
