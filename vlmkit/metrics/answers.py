"""Metrics of answers scored by option log-likelihood: margins, accuracy and POPE's yes/no scores.

Inputs are option log-likelihoods ``(B, K)`` (``-inf`` where a question has fewer than ``K`` options)
or boolean yes/no answers; see :mod:`vlmkit.tasks.adapters` for how the log-likelihoods are computed.
"""

from __future__ import annotations

import torch

from vlmkit.errors import InputError
from vlmkit.registry import METRICS


@METRICS.register("option_margin", kind="logliks")
def option_margin(logliks: torch.Tensor) -> torch.Tensor:
    """Top-1 minus top-2 option log-likelihood per question ``(B,)`` (``-inf`` pads are ignored)."""
    if logliks.ndim != 2 or logliks.shape[1] < 2:
        raise InputError(f"expected log-likelihoods (B, K >= 2), got {tuple(logliks.shape)}")
    top = logliks.topk(2, dim=1).values
    return top[:, 0] - top[:, 1]


@METRICS.register("answer_accuracy", kind="logliks")
def answer_accuracy(logliks: torch.Tensor, answers: torch.Tensor) -> float:
    """Share of questions whose best-scoring option is the answer."""
    return float((logliks.argmax(1) == answers.to(logliks.device)).float().mean())


@METRICS.register("pope_scores", kind="predictions")
def pope_scores(said_yes: torch.Tensor, is_yes: torch.Tensor) -> dict[str, float]:
    """POPE's accuracy, precision, recall, F1 and yes-ratio of yes/no answers (Li et al. 2023).

    Args:
        said_yes: ``(B,)`` bool, the model answered "yes".
        is_yes: ``(B,)`` bool, the right answer is "yes".
    """
    p, t = said_yes.bool(), is_yes.bool().to(said_yes.device)
    tp, fp, fn = float((p & t).sum()), float((p & ~t).sum()), float((~p & t).sum())
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    return {"accuracy": float((p == t).float().mean()), "precision": prec, "recall": rec,
            "f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0, "yes_ratio": float(p.float().mean())}


__all__ = ["answer_accuracy", "option_margin", "pope_scores"]
