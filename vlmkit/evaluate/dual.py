"""Dual-encoder tasks of the engine: image–text retrieval and zero-shot classification.

* ``retrieval`` (captioned images): image→text / text→image Recall@{1,5,10}, median ranks, flips of
  the top-1 retrieved caption, retrieval margin (Radford et al. 2021; the COCO Karpathy protocol);
* ``zeroshot`` (labelled or typographic images): top-1/top-5, ECE (Guo et al. 2017), label flips,
  margin, the MSP AUROC of clean vs perturbed images (``ood_auroc``, Hendrycks & Gimpel 2017); for typographic sets also the share of predictions moved to the attack word
  (Goh et al. 2021; SCAM, Westerhoff et al. 2025).

Both add representation drift against control drift, the drift of the images whose answer did not
flip (``drift_kept_mean``: the hidden instability of Wani et al. 2026) and, for ``token_layers``, Dirichlet energy and
token drift of the vision tokens per layer. Attack cells use the task's white-box objective:
zero-shot cross-entropy, image→text contrastive cross-entropy with every caption of an image a
positive, or embedding drift (``attack_objective="drift"``, the FARE objective).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vlmkit.attacks import EmbeddingDrift, RetrievalCE, ZeroShotCE
from vlmkit.data import CaptionedImages, LabelledImages, TypographicImages
from vlmkit.errors import InputError
from vlmkit.evaluate.cells import Cell
from vlmkit.evaluate.intervals import Items
from vlmkit.evaluate.task import Task, TaskData
from vlmkit.metrics import (
    auroc,
    class_probabilities,
    cosine_drift,
    dirichlet_energy,
    expected_calibration_error,
    flip_rates,
    margin,
    retrieval_outcomes_from_scores,
    token_drift,
    topk_accuracy,
)
from vlmkit.models import VLM, load_model
from vlmkit.models.zeroshot import zero_shot_classifier
from vlmkit.perturb.text import perturb_templates, perturb_texts
from vlmkit.registry import TASKS
from vlmkit.runtime import stable_hash

OBJECTIVES = {"zeroshot": ZeroShotCE, "retrieval": RetrievalCE, "drift": EmbeddingDrift}
#: Attacks whose own default objective is used unless ``attack_objective`` is given.
OWN_OBJECTIVE = ("feature_pgd", "retrieval_pgd")


class DualEncoderTask(Task):
    """Common part of retrieval and zero-shot: a :class:`~vlmkit.VLM`, embeddings, drift, tokens.

    Args:
        token_layers: Layers whose vision tokens get Dirichlet energy and token drift, or ``"all"``: every
            layer of each model.
        attack_objective: Objective of attack cells ("zeroshot", "retrieval", "drift"); default: the task's.
    """

    def __init__(self, token_layers: Sequence[int] | str = (), attack_objective: str | None = None) -> None:
        if isinstance(token_layers, str) and token_layers != "all":
            raise InputError(f"token_layers={token_layers!r}; expected a list of layer indices or 'all'")
        self.token_layers: list[int] | str = token_layers if isinstance(token_layers, str) else [int(i) for i in token_layers]
        if attack_objective is not None and attack_objective not in OBJECTIVES:
            raise InputError(f"attack_objective={attack_objective!r}; expected one of {sorted(OBJECTIVES)}")
        self.attack_objective = attack_objective

    def options(self) -> dict[str, Any]:
        return {"token_layers": self.token_layers, "attack_objective": self.attack_objective}

    def load_model(self, spec: str, device: torch.device) -> VLM:
        return load_model(spec, device=device)

    def text_targets(self, vlm: VLM, dataset: Any) -> torch.Tensor:
        """Caption embeddings ``(T, D)`` or class embeddings ``(C, D)``."""
        raise NotImplementedError

    def prepare(self, model: VLM, dataset: Any, *, image_size: int | None, cache: Any, cache_dir: Path | None,
                progress: bool) -> TaskData:
        self.check_dataset(dataset)
        size = int(image_size or max(model.image_size))
        images = dataset.load_images(size=size, cache_dir=cache_dir, progress=progress)  # (N, 3, S, S) uint8
        if len(images) == 0:
            raise InputError(f"dataset {getattr(dataset, 'name', '')!r} is empty")
        texts = self.texts(dataset)
        key = stable_hash(dataset.content_hash(), size, texts, self.options())
        # keyed by what the embeddings depend on (the cache is scoped to this model's weights), not by the
        # images, their size or the output folder: every notebook and run of a grid shares them
        tkey = stable_hash("text", self.name, texts, self.text_options())
        hit = cache.get(tkey)
        targets = hit["targets"] if hit else self.text_targets(model, dataset).detach()
        if hit is None:
            cache.put(tkey, {"targets": targets})
        return TaskData(images, {"targets": targets.to(model.device), "texts": list(texts), **self.extras(dataset)},
                        key=key)

    def texts(self, dataset: Any) -> Any:
        raise NotImplementedError

    def text_options(self) -> dict[str, Any]:
        """Options the text embeddings depend on besides the texts (zero-shot: the templates)."""
        return {}

    #: What a text cell may perturb for this task (its ``target`` parameter; the first is the default).
    text_targets_allowed: tuple[str, ...] = ()

    def encode_texts(self, model: VLM, texts: list[str], templates: list[str] | None) -> torch.Tensor:
        """Targets ``(T, D)`` of (perturbed) texts: caption embeddings, or class embeddings."""
        raise NotImplementedError

    def applies(self, cell: Cell) -> bool:
        """A text cell applies when it perturbs this task's texts (no ``target``: the task's own)."""
        return cell.kind != "text" or cell.params.get("target", self.text_targets_allowed[0]) in self.text_targets_allowed

    def text_view(self, model: VLM, data: TaskData, cell: Cell, seed: int, cache: Any) -> TaskData:
        """``data`` as a text cell sees it: its texts perturbed — text ``i`` from
        ``derive_seed(seed, cell.key, i)`` (:func:`vlmkit.perturb.text.perturb_texts`) — and re-encoded; the
        images and their clean outputs are shared. The new targets are cached by content (``cache`` is the
        shared cache scoped to the model), so a text cell costs one text encoding per model."""
        target = cell.params.get("target", self.text_targets_allowed[0] if self.text_targets_allowed else None)
        if target not in self.text_targets_allowed:
            raise InputError(f"text cell {cell.label()!r}: task {self.name!r} perturbs "
                             f"{list(self.text_targets_allowed)}, not {target!r}")
        params = {k: v for k, v in cell.params.items() if k != "target"}
        texts, templates = list(data.extras["texts"]), data.extras.get("templates")
        if target == "templates":
            templates = perturb_templates(cell.name, list(templates), int(cell.severity), seed, **params)
        else:
            texts = perturb_texts(cell.name, texts, int(cell.severity), seed, **params)
        key = stable_hash("text", self.name, texts, templates)
        hit = cache.get(key)
        targets = hit["targets"] if hit else self.encode_texts(model, texts, templates).detach()
        if hit is None:
            cache.put(key, {"targets": targets})
        extras = {**data.extras, "targets": targets.to(data.extras["targets"].device), "texts": texts,
                  "templates": templates}
        return TaskData(data.images, extras, key=data.key, clean=data.clean)

    def text_metrics(self, data: TaskData, view: TaskData, cell: Cell) -> dict[str, Items]:
        """Metrics of a text cell: the task's metrics of the clean images against the perturbed texts, the
        answers that changed (``IFR``: image i's top caption / class differs from the one under clean texts)
        and the text drift (cosine distance of each text's embedding to its clean one, ``text_drift_mean``)."""
        emb0 = data.clean["emb"]
        scores = self.scores(view, emb0)
        m = self.task_metrics(view, emb0, scores)
        mg = margin(scores)  # (N,)
        m["margin_mean"] = Items(mg, value=float(mg.mean()))
        pred0, pred = self.clean_prediction(data), scores.argmax(1)
        m["IFR"] = Items(pred0 != pred, binary=True, value=flip_rates(pred0, pred[None])["IFR"])
        d = cosine_drift(data.extras["targets"].float(), view.extras["targets"].float())  # (T,)
        m["text_drift_mean"] = Items(d, value=float(d.mean()))
        return m

    def extras(self, dataset: Any) -> dict[str, Any]:
        return {}

    # ------------------------------------------------------------------ per image
    def outputs(self, model: VLM, data: TaskData, cell: Cell, x: torch.Tensor, index: torch.Tensor,
                seed: int) -> dict[str, torch.Tensor]:
        layers = list(range(model.num_layers)) if self.token_layers == "all" else self.token_layers
        if not layers:
            return {"emb": model.encode_image(x)}
        emb, toks = model.encode_image_and_tokens(x, layers)
        out = {"emb": emb}
        clean_toks = None
        if cell.kind != "clean":
            x0 = data.images[index.to(data.images.device)].to(model.device).float().div_(255)
            clean_toks = model.vision_tokens_layers(x0, layers)
        for li, vt in toks.items():  # metrics in float32 (a no-op unless the tower ran in bf16)
            out[f"dirichlet_L{li}"] = dirichlet_energy(vt.patches.float(), vt.grid)
            out[f"token_drift_L{li}"] = (token_drift(clean_toks[li].patches.float(), vt.patches.float())
                                         if clean_toks else torch.zeros(len(x), device=x.device))
        return out

    def scores(self, data: TaskData, emb: torch.Tensor) -> torch.Tensor:
        """Image-to-target scores ``(N, T)`` (captions) or ``(N, C)`` (classes)."""
        raise NotImplementedError

    def flips(self, data: TaskData, out: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.clean_prediction(data), self.prediction(data, out["emb"])

    def prediction(self, data: TaskData, emb: torch.Tensor, scores: torch.Tensor | None = None) -> torch.Tensor:
        """``argmax`` of the scores of ``emb`` ``(N, D)`` → ``(N,)``, kept in ``data.memo`` by the embeddings'
        content (BLAKE2b of their bytes): a cell's metrics compute it from their scores and the family flip
        rates, which reread the cell's outputs from the cache, find it instead of scoring the cell again."""
        e = emb.detach().float().cpu().contiguous()
        key = f"prediction:{tuple(e.shape)}:{hashlib.blake2b(e.numpy(), digest_size=16).hexdigest()}"
        pred = data.memo.get(key)
        if pred is None:
            pred = data.memo[key] = (self.scores(data, emb) if scores is None else scores).argmax(1)
        return pred

    def clean_prediction(self, data: TaskData) -> torch.Tensor:
        """``argmax`` of the clean images' scores ``(N,)``, computed once per clean output and reused by every cell."""
        emb0 = data.clean["emb"]
        seen = data.memo.get("clean_prediction")
        if seen is None or seen[0] is not emb0:
            seen = data.memo["clean_prediction"] = (emb0, self.scores(data, emb0).argmax(1))
        return seen[1]

    def metrics(self, data: TaskData, cell: Cell, out: dict[str, torch.Tensor], seed: int) -> dict[str, Items]:
        emb, emb0 = out["emb"], data.clean["emb"]
        scores = self.scores(data, emb)
        m = self.task_metrics(data, emb, scores)
        mg = margin(scores)  # (N,)
        m["margin_mean"] = Items(mg, value=float(mg.mean()))
        m.update(self.drift(emb0, emb, seed))
        if cell.kind != "clean":
            pred0, pred = self.clean_prediction(data), self.prediction(data, emb, scores)  # = self.flips(data, out)
            flipped = pred0 != pred  # (N,)
            m["IFR"] = Items(flipped, binary=True, value=flip_rates(pred0, pred)["IFR"])
            kept = ~flipped  # hidden instability: drift where the answer did not change (Wani et al. 2026)
            if bool(kept.any()):
                d = cosine_drift(emb0[kept], emb[kept])
                m["drift_kept_mean"] = Items(d, value=float(d.mean()))
            m.update(self.shift_detection(data, emb0, emb))
        for k, v in out.items():
            if k.startswith(("dirichlet_L", "token_drift_L")) and not (cell.kind == "clean" and k.startswith("token")):
                m[k] = Items(v, value=float(v.mean()))
        return m

    def task_metrics(self, data: TaskData, emb: torch.Tensor, scores: torch.Tensor) -> dict[str, Items | float]:
        raise NotImplementedError

    def shift_detection(self, data: TaskData, emb0: torch.Tensor, emb: torch.Tensor) -> dict[str, Items]:
        """Metrics that tell perturbed from clean inputs (none by default)."""
        return {}

    # ------------------------------------------------------------------ attacks
    def attack_batch(self, data: TaskData, index: torch.Tensor, device: torch.device) -> dict[str, Any]:
        raise NotImplementedError

    def attack_inputs(self, model: VLM, data: TaskData, cell: Cell, index: torch.Tensor) -> tuple[Any, dict[str, Any]]:
        kind = self.attack_objective or ("default" if cell.name in OWN_OBJECTIVE else self.name)
        objective = OBJECTIVES[kind]() if kind != "default" else None
        batch = {"text_emb": data.extras["targets"], **self.attack_batch(data, index, model.device)}
        return objective, batch


@TASKS.register("retrieval", kind="grid", dataset="CaptionedImages", models="any VLM (dual encoder)")
class RetrievalTask(DualEncoderTask):
    """Image–text retrieval on captioned images (see the module docstring)."""

    name = "retrieval"
    dataset_types = (CaptionedImages,)

    def texts(self, dataset: CaptionedImages) -> list[str]:
        return list(dataset.captions)

    def text_targets(self, vlm: VLM, dataset: CaptionedImages) -> torch.Tensor:
        return vlm.encode_text(dataset.captions)

    text_targets_allowed = ("captions",)

    def encode_texts(self, model: VLM, texts: list[str], templates: list[str] | None) -> torch.Tensor:
        return model.encode_text(texts)

    def extras(self, dataset: CaptionedImages) -> dict[str, Any]:
        return {"text_to_image": dataset.text_to_image}

    def scores(self, data: TaskData, emb: torch.Tensor) -> torch.Tensor:
        return emb @ data.extras["targets"].to(emb.device).T  # (N, T)

    def task_metrics(self, data: TaskData, emb: torch.Tensor, scores: torch.Tensor) -> dict[str, Items | float]:
        o = retrieval_outcomes_from_scores(scores, data.extras["text_to_image"])  # scores: emb @ targets.T
        owner = data.extras["text_to_image"]  # t2i: a caption's image is its sampled unit
        m: dict[str, Items | float] = {}
        for k in (1, 5, 10):
            hi, ht = o[f"i2t_R@{k}"], o[f"t2i_R@{k}"]
            m[f"i2t_R@{k}"] = Items(hi, binary=True, value=float(hi.float().mean()))
            m[f"t2i_R@{k}"] = Items(ht, binary=True, groups=owner, value=float(ht.float().mean()))
        m["i2t_medr"] = Items(o["i2t_rank"], statistic="median", value=float(o["i2t_rank"].float().median()))
        m["t2i_medr"] = float(o["t2i_rank"].float().median())
        return m

    def attack_batch(self, data: TaskData, index: torch.Tensor, device: torch.device) -> dict[str, Any]:
        img = index.to(device)
        # every caption of each image is a positive
        return {"positives": data.extras["text_to_image"].to(device)[None, :] == img[:, None]}  # (B, T)


@TASKS.register("zeroshot", kind="grid", dataset="LabelledImages, TypographicImages",
                models="any VLM (dual encoder)")
class ZeroShotTask(DualEncoderTask):
    """Zero-shot classification with a prompt ensemble (see the module docstring).

    Args:
        templates: Prompt templates of the class embeddings (CLIP's prompt ensemble, Radford et al. 2021).
        token_layers, attack_objective: As :class:`DualEncoderTask`.
    """

    name = "zeroshot"
    dataset_types = (LabelledImages, TypographicImages)

    def __init__(self, templates: Sequence[str] = ("a photo of a {}.",), token_layers: Sequence[int] | str = (),
                 attack_objective: str | None = None) -> None:
        super().__init__(token_layers, attack_objective)
        if isinstance(templates, str) or not templates or not all(isinstance(t, str) and "{}" in t for t in templates):
            raise InputError(f"templates={templates!r}; expected a non-empty list of strings with a '{{}}' slot")
        self.templates = list(templates)

    def options(self) -> dict[str, Any]:
        return {**super().options(), "templates": self.templates}

    def texts(self, dataset: Any) -> list[str]:
        return list(dataset.classnames)

    def text_options(self) -> dict[str, Any]:
        return {"templates": self.templates}

    def text_targets(self, vlm: VLM, dataset: Any) -> torch.Tensor:
        return zero_shot_classifier(vlm, dataset.classnames, self.templates)

    text_targets_allowed = ("classnames", "templates")

    def encode_texts(self, model: VLM, texts: list[str], templates: list[str] | None) -> torch.Tensor:
        return zero_shot_classifier(model, texts, templates or self.templates)

    def extras(self, dataset: Any) -> dict[str, Any]:
        return {"labels": dataset.labels, "attack_labels": getattr(dataset, "attack_labels", None),
                "classnames": list(dataset.classnames), "templates": list(self.templates)}

    def prepare(self, model: VLM, dataset: Any, **kwargs: Any) -> TaskData:
        data = super().prepare(model, dataset, **kwargs)
        data.extras["model"] = model  # similarity uses the model's logit scale (and bias, for SigLIP)
        return data

    def context(self, data: TaskData, index: torch.Tensor) -> dict[str, Any]:
        return {"classnames": data.extras["classnames"], "labels": data.extras["labels"][index]}

    def scores(self, data: TaskData, emb: torch.Tensor) -> torch.Tensor:
        return data.extras["model"].similarity(emb, data.extras["targets"].to(emb.device))  # (N, C)

    def task_metrics(self, data: TaskData, emb: torch.Tensor, scores: torch.Tensor) -> dict[str, float]:
        labels = data.extras["labels"].to(scores.device)
        acc = topk_accuracy(scores, labels, ks=(1, 5))
        top = scores.topk(min(5, scores.shape[1]), dim=1).indices  # (N, 5)
        m: dict[str, Items | float] = {
            "top1": Items(top[:, 0] == labels, binary=True, value=acc["top1"]),
            "top5": Items((top == labels[:, None]).any(1), binary=True, value=acc["top5"])}
        probs = class_probabilities(scores, sigmoid=data.extras["model"].logit_bias is not None)
        conf, pred = probs.float().max(1)
        m["ece"] = Items(torch.stack([conf, (pred == labels).float()], 1), statistic="ece",
                         value=expected_calibration_error(probs, labels))
        attack = data.extras["attack_labels"]
        if attack is not None:
            hit = scores.argmax(1) == attack.to(scores.device)
            m["attack_word_rate"] = Items(hit, binary=True, value=float(hit.float().mean()))
        return m

    def shift_detection(self, data: TaskData, emb0: torch.Tensor, emb: torch.Tensor) -> dict[str, Items]:
        """``ood_auroc``: AUROC of the maximum class probability separating clean (in-distribution) from
        perturbed images (the MSP baseline, Hendrycks & Gimpel 2017; 0.5 = the shift is invisible to the
        model's confidence, 1 = every perturbed image is less confident than every clean one)."""
        sig = data.extras["model"].logit_bias is not None
        conf0 = class_probabilities(self.scores(data, emb0), sigmoid=sig).max(1).values  # (N,)
        conf = class_probabilities(self.scores(data, emb), sigmoid=sig).max(1).values  # (N,)
        return {"ood_auroc": Items(torch.stack([conf0, conf], 1), statistic="auroc", value=auroc(conf0, conf))}

    def attack_batch(self, data: TaskData, index: torch.Tensor, device: torch.device) -> dict[str, Any]:
        return {"labels": data.extras["labels"][index].to(device)}


def infer_task(dataset: Any) -> str:
    """The task a dataset is evaluated with: its own ``task`` attribute, or from its type."""
    own = getattr(dataset, "task", None)  # task datasets (SegmentationSet, QuestionSet) name theirs
    if isinstance(own, str):
        return own
    if isinstance(dataset, CaptionedImages):
        return "retrieval"
    if isinstance(dataset, (LabelledImages, TypographicImages)):
        return "zeroshot"
    raise InputError(f"cannot infer a task for {type(dataset).__name__}; pass task='retrieval', 'zeroshot' "
                     f"or a registered grid task ({TASKS.list(kind='grid')})")


__all__ = ["DualEncoderTask", "RetrievalTask", "ZeroShotTask", "infer_task"]
