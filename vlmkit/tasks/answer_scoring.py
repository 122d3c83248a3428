"""The grid task ``"answer_scoring"``: multiple-choice and yes/no questions by option log-likelihood.

A generative VLM (BLIP-2, Li et al. 2023; LLaVA; Qwen-VL) answers a question about an image by the
best-scoring of its options, each scored by its log-likelihood given the image and the prompt (see
:mod:`vlmkit.tasks.adapters`) — the protocol of the hidden-instability study's multiple-choice
evaluation, which also tracks the margin ``score(top1) − score(top2)``. Yes/no questions (POPE, Li
et al. 2023, "Evaluating Object Hallucination in Large Vision-Language Models") are scored the same
way with the options ``["yes", "no"]``.

:class:`AnswerScoringTask` reports accuracy, IFR/IV of answers, margins and their change, and drift
of the model's vision features under any perturbation. Its pieces live in their own modules:

* models: :mod:`vlmkit.tasks.adapters` (:class:`~vlmkit.tasks.adapters.AnswerScorer`,
  :func:`~vlmkit.tasks.adapters.load_answer_model`, the adapters);
* data: :mod:`vlmkit.tasks.questions` (:class:`~vlmkit.tasks.questions.QuestionSet`, JSONL and toy-world
  loaders) and :mod:`vlmkit.toyworld.task_sets` (toy-world question generation);
* metrics: :mod:`vlmkit.metrics.answers` (``option_margin``, ``answer_accuracy``, ``pope_scores``).

Attack cells (white-box, on [0, 1] pixels) maximise :class:`AnswerCE`, the cross-entropy of the right
option under the softmax over the options' log-likelihoods — the untargeted multiple-choice attack on
generative VLMs (as in Schlarmann & Hein 2023, "On the Adversarial Robustness of Multi-Modal
Foundation Models"). They need an adapter with a differentiable pixel path (``Blip2Adapter``);
processor-based adapters resize through PIL and are refused with a clear error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlmkit.data.images import check_mode
from vlmkit.errors import InputError
from vlmkit.evaluate.cells import Cell
from vlmkit.evaluate.intervals import Items
from vlmkit.evaluate.task import Task, TaskData
from vlmkit.metrics import cosine_drift, flip_rates
from vlmkit.metrics.answers import answer_accuracy, option_margin, pope_scores
from vlmkit.registry import TASKS
from vlmkit.runtime import stable_hash
from vlmkit.tasks.adapters import AnswerScorer, load_answer_model
from vlmkit.tasks.questions import QuestionSet


def _is_yes_no(opts: Sequence[str]) -> bool:
    return sorted(o.strip().lower() for o in opts) == ["no", "yes"]


class AnswerCE:
    """Objective ``(model, x_adv, batch) -> (B,)``: ``−log softmax(option log-likelihoods)[answer]``.

    ``batch`` holds ``questions``, ``options`` (lists of ``B``), ``answers`` ``(B,)``, ``reduce`` and ``kmax``.
    """

    def __call__(self, model: AnswerScorer, x_adv: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        ll = model.option_logliks(x_adv, batch["questions"], batch["options"], reduce=batch["reduce"],
                                  pad_to=batch["kmax"], grad=True)  # (B, K)
        answers = batch["answers"].to(ll.device)
        return -ll.log_softmax(1).gather(1, answers[:, None])[:, 0]

    def __repr__(self) -> str:
        return "AnswerCE()"


@TASKS.register("answer_scoring", kind="grid", dataset="QuestionSet",
                models="BLIP-2, LLaVA, Qwen2-VL (hf:Salesforce/blip2-opt-2.7b, ...)")
class AnswerScoringTask(Task):
    """Multiple-choice and yes/no answers by option log-likelihood under perturbations.

    Metrics per cell: ``accuracy`` (and ``accuracy/<kind>`` per question kind), ``margin_mean``
    (top-1 − top-2 log-likelihood), ``answer_loglik_mean`` (of the right option), POPE's
    ``pope_accuracy``/``pope_precision``/``pope_recall``/``pope_f1``/``yes_ratio`` on yes/no items,
    drift of the vision features (``drift_mean``, ``control_drift_mean``, ``drift_ratio``,
    ``prior_shift_mean``); for perturbed cells also ``IFR`` (answers changed),
    ``margin_change_mean`` (perturbed − clean margin) and ``drift_mean_unflipped`` (drift of items
    whose answer held: the hidden instability of Wani et al. 2026). Family rows give IFR/IV of answers.

    Args:
        reduce: Option score, ``"sum"`` or ``"mean"`` log-likelihood of its tokens.
        mode: Decode geometry, ``"squash"`` (default: no object is cropped out of a count question) or ``"crop"``.
    """

    name = "answer_scoring"
    default_batch_size = 16
    dataset_types = (QuestionSet,)

    def __init__(self, reduce: str = "sum", mode: str = "squash") -> None:
        if reduce not in ("sum", "mean"):
            raise InputError(f"reduce={reduce!r}; expected 'sum' or 'mean'")
        self.reduce, self.mode = reduce, check_mode(mode)

    def options(self) -> dict[str, Any]:
        return {"reduce": self.reduce, "mode": self.mode}

    def load_model(self, spec: str, device: torch.device) -> AnswerScorer:
        return load_answer_model(spec, device=device, reduce=self.reduce)

    def prepare(self, model: AnswerScorer, dataset: QuestionSet, *, image_size: int | None, cache: Any,
                cache_dir: Path | None, progress: bool) -> TaskData:
        self.check_dataset(dataset)
        size = int(image_size or max(model.image_size))
        images = dataset.load_images(size=size, mode=self.mode, cache_dir=cache_dir, progress=progress)
        ad = model.adapter
        key = stable_hash(dataset.content_hash(), size, self.options(), getattr(ad, "template", ""),
                          getattr(ad, "features", ""), type(ad).__name__)
        extras = {"questions": dataset.questions, "options": dataset.options, "answers": dataset.answers,
                  "kinds": dataset.kinds, "kmax": dataset.max_options,
                  # questions about one image share it as their sampled unit (intervals resample images)
                  "image_of": torch.as_tensor(np.unique([str(p) for p in dataset.paths], return_inverse=True)[1]),
                  "yes_no": torch.tensor([_is_yes_no(o) for o in dataset.options]),
                  "yes_index": torch.tensor([[s.lower() for s in o].index("yes") if _is_yes_no(o) else -1
                                             for o in dataset.options])}
        return TaskData(images, extras, key=key)

    def outputs(self, model: AnswerScorer, data: TaskData, cell: Cell, x: torch.Tensor, index: torch.Tensor,
                seed: int) -> dict[str, torch.Tensor]:
        e = data.extras
        idx = index.tolist()
        ll = model.option_logliks(x, [e["questions"][i] for i in idx], [e["options"][i] for i in idx],
                                  reduce=self.reduce, pad_to=e["kmax"])
        return {"logliks": ll, "feats": model.vision_features(x).cpu()}

    def metrics(self, data: TaskData, cell: Cell, out: dict[str, torch.Tensor], seed: int) -> dict[str, float | Items]:
        e = data.extras
        ll, answers = out["logliks"], e["answers"]
        pred = ll.argmax(1)
        margin = option_margin(ll)
        groups = e["image_of"]
        correct = pred == answers
        gold = ll.gather(1, answers[:, None])[:, 0]
        m: dict[str, float | Items] = {
            "accuracy": Items(correct, binary=True, groups=groups, value=answer_accuracy(ll, answers)),
            "margin_mean": Items(margin, groups=groups, value=float(margin.mean())),
            "answer_loglik_mean": Items(gold, groups=groups, value=float(gold.mean()))}
        kinds = e["kinds"]
        for k in sorted(set(kinds)):
            sel = torch.tensor([kk == k for kk in kinds])
            m[f"accuracy/{k}"] = float((pred[sel] == answers[sel]).float().mean())
        yn = e["yes_no"]
        if bool(yn.any()):
            yi = e["yes_index"][yn]
            pope = pope_scores(pred[yn] == yi, answers[yn] == yi)
            m.update({f"pope_{k}" if k != "yes_ratio" else k: v for k, v in pope.items()})
        f0, f = data.clean["feats"], out["feats"]
        m.update(self.drift(f0, f, seed))
        d = cosine_drift(f0, f)
        if cell.kind != "clean":
            pred0 = data.clean["logliks"].argmax(1)
            m["IFR"] = Items(pred0 != pred, binary=True, groups=groups, value=flip_rates(pred0, pred)["IFR"])
            m["margin_change_mean"] = float((margin - option_margin(data.clean["logliks"])).mean())
            held = pred == pred0
            m["drift_mean_unflipped"] = float(d[held].mean()) if bool(held.any()) else float("nan")
        return m

    def flips(self, data: TaskData, out: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return data.clean["logliks"].argmax(1), out["logliks"].argmax(1)

    def attack_inputs(self, model: AnswerScorer, data: TaskData, cell: Cell, index: torch.Tensor
                      ) -> tuple[Any, dict[str, Any]]:
        if not getattr(model.adapter, "differentiable", False):
            raise InputError(f"attack cell {cell.label()!r}: the adapter {type(model.adapter).__name__} of "
                             f"{model.name!r} has no differentiable pixel path; white-box attacks need one "
                             "(e.g. Blip2Adapter)")
        e, idx = data.extras, index.tolist()
        return AnswerCE(), {"questions": [e["questions"][i] for i in idx], "options": [e["options"][i] for i in idx],
                            "answers": e["answers"][index], "reduce": self.reduce, "kmax": e["kmax"]}


__all__ = ["AnswerCE", "AnswerScoringTask"]
