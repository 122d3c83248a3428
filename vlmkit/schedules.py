"""Learning-rate schedules shared by vlmkit's training loops (toy-world CLIP training, robust fine-tuning).

A schedule is a factor in ``[0, 1]`` of each parameter group's peak learning rate, as a function of
the run's progress ``frac`` in ``[0, 1]`` (step / steps, or elapsed / budget). Optimiser parameter
groups keep their peak rate under ``"base_lr"``; :func:`apply_lr_factor` sets ``lr = base_lr * factor``.

This module depends on nothing in vlmkit but its errors, so any training loop can use it.
"""

from __future__ import annotations

import math

import torch

from vlmkit.errors import InputError


def warmup_cosine(frac: float, warmup_frac: float, min_frac: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to 0 (Loshchilov & Hutter, 2017, "SGDR", without restarts).

    ``factor = max(frac, min_frac) / warmup_frac`` while ``frac < warmup_frac``, then
    ``0.5 * (1 + cos(pi * t))`` with ``t = (frac - warmup_frac) / (1 - warmup_frac)`` clipped at 1.

    Args:
        frac: Progress of the run in ``[0, 1]``.
        warmup_frac: Share of the run spent warming up, in ``[0, 1]`` (0: no warm-up).
        min_frac: Floor of the progress during warm-up, so the first step does not run at rate 0
            (the training loops pass ``1 / steps``).

    Returns:
        The factor of the peak learning rate.

    Raises:
        InputError: ``warmup_frac`` outside ``[0, 1]``.
    """
    if not 0.0 <= warmup_frac <= 1.0:
        raise InputError(f"warmup_frac={warmup_frac!r} must be in [0, 1]")
    if frac < warmup_frac:
        return max(frac, min_frac) / warmup_frac
    t = (frac - warmup_frac) / max(1e-9, 1.0 - warmup_frac)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def apply_lr_factor(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Set every parameter group's ``lr`` to its ``base_lr`` times ``factor``.

    Raises:
        InputError: A parameter group has no ``"base_lr"`` entry.
    """
    for g in optimizer.param_groups:
        if "base_lr" not in g:
            raise InputError("apply_lr_factor needs each optimiser parameter group to carry its peak rate as 'base_lr'")
        g["lr"] = g["base_lr"] * factor


__all__ = ["apply_lr_factor", "warmup_cosine"]
