"""Answer scoring for generative VLMs: multiple-choice and yes/no questions by option log-likelihood.

A generative VLM (BLIP-2, Li et al. 2023, "BLIP-2: Bootstrapping Language-Image Pre-training with
Frozen Image Encoders and Large Language Models"; LLaVA; Qwen-VL) answers a question about an image
with text. Instead of generating and parsing, each candidate answer ``o`` is scored by its
log-likelihood under the model, given the image and the prompt::

    score(o) = Σ_j log p(o_j | image, prompt, o_<j)        (reduce="sum"; "mean" divides by |o|)

and the prediction is the best-scoring option — the protocol of the hidden-instability study's
multiple-choice evaluation, which also tracks the margin ``score(top1) − score(top2)``. Yes/no
questions (POPE, Li et al. 2023, "Evaluating Object Hallucination in Large Vision-Language Models")
are scored the same way with the options ``["yes", "no"]``.

Pieces:

* the adapter protocol :class:`ImageTextAdapter` — build model inputs from an image and a prompt,
  tokenise an answer, pool vision features. :class:`ProcessorAdapter` fits any transformers processor
  (LLaVA's and Qwen2-VL's chat templates included); :class:`Blip2Adapter` adds BLIP-2's prompt and a
  differentiable pixel path. :func:`option_logliks` does the scoring for every adapter;
* :func:`load_answer_model` → :class:`AnswerScorer` (``hf:Salesforce/blip2-opt-2.7b``,
  ``hf:llava-hf/llava-1.5-7b-hf``, ``hf:Qwen/Qwen2-VL-2B-Instruct`` or a local folder, offline-aware);
* data: :class:`QuestionSet` from a JSONL file (:func:`load_question_jsonl`) or generated from the
  toy world's ground truth (:func:`export_toy_questions`: counts, colours, shapes and POPE-style
  "is there a …?" questions with absent-object negatives);
* the grid task ``"answer_scoring"`` (:class:`AnswerScoringTask`): accuracy, IFR/IV of answers,
  margins and their change, and drift of the model's vision features under any perturbation.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from PIL import Image

from vlmkit.data.images import ImageDataset, OnError, check_mode, check_on_error
from vlmkit.errors import DataError, DataNotFoundError, EmptyDatasetError, InputError, ModelSpecError
from vlmkit.evaluate.cells import Cell
from vlmkit.metrics import control_drift, cosine_drift, flip_rates, prior_shift
from vlmkit.models.base import PreprocessConfig, WrapsModule, resize_and_normalise
from vlmkit.registry import METRICS, TASKS
from vlmkit.runtime import make_generator, resolve_device, resolve_dtype
from vlmkit.tasks.engine import Task, TaskData, TaskRunner, _hash
from vlmkit.tasks.loading import resolve_source, strip_prefix
from vlmkit.validate import check_images

#: BLIP-2's zero-shot VQA prompt for its OPT models (Li et al. 2023, §4.2).
BLIP2_TEMPLATE = "Question: {question} Answer:"
_PIL_RESAMPLE = {0: "nearest", 1: "bilinear", 2: "bilinear", 3: "bicubic", 4: "area", 5: "bicubic"}
_CLIP_MEAN, _CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


# ----------------------------------------------------------------------------------------------------
# Adapters
# ----------------------------------------------------------------------------------------------------


@runtime_checkable
class ImageTextAdapter(Protocol):
    """What answer scoring needs from one family of image-text-to-text models.

    Attributes:
        image_size: The model's input size ``(H, W)`` (the default decode resolution of a grid).
        pad_token_id: Token id used to pad answers of different lengths (masked out).
    """

    image_size: tuple[int, int]
    pad_token_id: int

    def format_prompt(self, question: str) -> str:
        """The text given to the model before the answer (template, chat turns)."""

    def prompt_inputs(self, image: torch.Tensor, prompt: str) -> dict[str, torch.Tensor]:
        """Model inputs for one image ``(1, 3, H, W)`` in [0, 1] and one prompt: ``input_ids (1, L)``,
        ``attention_mask (1, L)`` and the image tensors the model's forward takes, on the model's device."""

    def answer_ids(self, option: str, prompt: str) -> list[int]:
        """Token ids of the answer ``option`` as it continues ``prompt`` (no special tokens)."""

    def vision_features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled vision features ``(B, D)`` of images ``(B, 3, H, W)`` in [0, 1] (for drift)."""


def _processor_image_size(image_processor: Any, default: int = 224) -> tuple[int, int]:
    for attr in ("crop_size", "size"):
        s = getattr(image_processor, attr, None)
        if isinstance(s, dict) or hasattr(s, "get"):
            s = dict(s)
            if "height" in s and "width" in s and s["height"] and s["width"]:
                return int(s["height"]), int(s["width"])
            if s.get("shortest_edge"):
                return int(s["shortest_edge"]), int(s["shortest_edge"])
        elif isinstance(s, int):
            return s, s
    return default, default


def _pool(feats: Any, batch: int) -> torch.Tensor:
    """``(B, D)`` from what ``get_image_features`` returns: tensors ``(B, T, D)``/``(B, D)``/``(B*T, D)`` or lists."""
    if not isinstance(feats, (torch.Tensor, list, tuple)):
        feats = feats.pooler_output if getattr(feats, "pooler_output", None) is not None else feats[0]
    if isinstance(feats, (list, tuple)):
        return torch.stack([f.float().reshape(-1, f.shape[-1]).mean(0) for f in feats])
    f = feats.float()
    if f.ndim == 3:
        return f.mean(1)
    if f.ndim == 2 and f.shape[0] == batch:
        return f
    if f.ndim == 2 and f.shape[0] % batch == 0:  # flattened tokens of equally sized images (Qwen2-VL)
        return f.reshape(batch, -1, f.shape[-1]).mean(1)
    raise InputError(f"cannot pool image features of shape {tuple(f.shape)} for {batch} images; "
                     "pass an adapter with its own vision_features()")


class ProcessorAdapter(WrapsModule):
    """Adapter over a transformers processor: fits BLIP-2, LLaVA, Qwen2-VL and other image-text-to-text models.

    Pixels go through the processor (``do_rescale=False`` on float images in [0, 1]), so the model sees
    exactly its own preprocessing. With a chat template (LLaVA-1.5, Qwen2-VL) the question becomes one
    user turn holding the image and the text, followed by the generation prompt; without one the
    ``template`` is used as is (include the processor's image token where it needs one).

    Args:
        model: The transformers model (its forward returns ``logits`` over the full sequence).
        processor: Its processor (``AutoProcessor``).
        template: Format string with ``{question}`` (default ``"{question}"`` with a chat template,
            else BLIP-2's ``"Question: {question} Answer:"``).
        chat: Use the processor's chat template (default: when it has one).
        answer_prefix: Text put before every option (default: a space unless the prompt ends in whitespace).
    """

    def __init__(self, model: Any, processor: Any, *, template: str | None = None, chat: bool | None = None,
                 answer_prefix: str | None = None) -> None:
        self.model, self.processor = model, processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.chat = bool(getattr(processor, "chat_template", None)) if chat is None else bool(chat)
        self.template = template or ("{question}" if self.chat else BLIP2_TEMPLATE)
        if "{question}" not in self.template:
            raise InputError(f"template {self.template!r} has no '{{question}}' field")
        self.answer_prefix = answer_prefix
        ip = getattr(processor, "image_processor", None)
        self.image_size = _processor_image_size(ip) if ip is not None else (224, 224)
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self.pad_token_id = int(pad if pad is not None else 0)

    def format_prompt(self, question: str) -> str:
        text = self.template.format(question=question)
        if not self.chat:
            return text
        msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
        return self.processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)

    def _to_model(self, enc: Any) -> dict[str, torch.Tensor]:
        out = {}
        for k, v in dict(enc).items():
            if isinstance(v, torch.Tensor):
                v = v.to(self.device)
                out[k] = v.to(self.dtype) if v.is_floating_point() else v
        return out

    def prompt_inputs(self, image: torch.Tensor, prompt: str) -> dict[str, torch.Tensor]:
        img = check_images(image if image.ndim == 4 else image[None], "image")[0].float().cpu()
        enc = self.processor(images=[img], text=[prompt], return_tensors="pt", do_rescale=False)
        return self._to_model(enc)

    def answer_ids(self, option: str, prompt: str) -> list[int]:
        prefix = self.answer_prefix if self.answer_prefix is not None else ("" if not prompt or prompt[-1].isspace()
                                                                             else " ")
        return list(self.tokenizer(prefix + option, add_special_tokens=False)["input_ids"])

    def vision_features(self, images: torch.Tensor) -> torch.Tensor:
        imgs = [im.float().cpu() for im in check_images(images, "images")]
        enc = self._to_model(self.processor.image_processor(images=imgs, return_tensors="pt", do_rescale=False))
        return _pool(self.model.get_image_features(**enc), len(imgs))


class Blip2Adapter(ProcessorAdapter):
    """BLIP-2 (Li et al. 2023): ``"Question: {question} Answer:"`` and a differentiable pixel path.

    Pixels are resized and normalised in torch from the image processor's settings (squash resize,
    CLIP mean/std by default), and the prompt is preceded by ``num_query_tokens`` image tokens whose
    embeddings the model replaces with the Q-Former's outputs — exactly what ``Blip2Processor`` builds.

    Args:
        model: ``Blip2ForConditionalGeneration``.
        processor: ``Blip2Processor`` (its tokenizer and image processor settings are used).
        template: Prompt format string with ``{question}``.
        features: What :meth:`vision_features` returns: ``"vision"`` (default; the mean of the ViT's
            output tokens), ``"cls"`` (the ViT's pooled class token) or ``"query"`` (the mean of the
            language-projected Q-Former queries the LLM reads).
    """

    def __init__(self, model: Any, processor: Any, *, template: str | None = None, answer_prefix: str | None = None,
                 features: str = "vision") -> None:
        super().__init__(model, processor, template=template or BLIP2_TEMPLATE, chat=False, answer_prefix=answer_prefix)
        if features not in ("vision", "cls", "query"):
            raise InputError(f"features={features!r}; expected 'vision', 'cls' or 'query'")
        self.features = features
        ip = getattr(processor, "image_processor", None)
        interp = _PIL_RESAMPLE.get(int(getattr(ip, "resample", 3) or 3), "bicubic")
        self.preprocess_cfg = PreprocessConfig(size=self.image_size, mean=tuple(getattr(ip, "image_mean", _CLIP_MEAN)),
                                               std=tuple(getattr(ip, "image_std", _CLIP_STD)),
                                               interpolation=interp, resize_mode="squash")
        cfg = model.config
        self.image_token_id = getattr(cfg, "image_token_id", None)
        if self.image_token_id is None:
            self.image_token_id = getattr(cfg, "image_token_index", None)
        if self.image_token_id is None:
            raise ModelSpecError("this BLIP-2 checkpoint's config has no image_token_id (older than transformers "
                                 "4.47); use an updated checkpoint such as Salesforce/blip2-opt-2.7b from the hub")
        self.num_query_tokens = int(getattr(processor, "num_query_tokens", None) or cfg.num_query_tokens)

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images, "images")
        return resize_and_normalise(images.to(self.device).float(), self.preprocess_cfg).to(self.dtype)

    def prompt_inputs(self, image: torch.Tensor, prompt: str) -> dict[str, torch.Tensor]:
        image = image if image.ndim == 4 else image[None]
        ids = [self.image_token_id] * self.num_query_tokens + list(self.tokenizer(prompt)["input_ids"])
        input_ids = torch.tensor([ids], device=self.device)
        return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
                "pixel_values": self.pixels(image)}

    def vision_features(self, images: torch.Tensor) -> torch.Tensor:
        out = self.model.get_image_features(pixel_values=self.pixels(images))
        if self.features == "query":
            return out.pooler_output.float().mean(1)
        if self.features == "cls":
            return out.vision_outputs.pooler_output.float()
        return out.last_hidden_state.float().mean(1)


def _repeat(v: torch.Tensor, k: int) -> torch.Tensor:
    return v.repeat(k, *([1] * (v.ndim - 1)))


def option_logliks(model: Any, adapter: ImageTextAdapter, image: torch.Tensor, question: str,
                   options: Sequence[str], reduce: str = "sum") -> torch.Tensor:
    """Log-likelihood of each answer option given one image and question ``(K,)``.

    The prompt's inputs are built once and every option's tokens appended (right-padded, masked),
    so the ``K`` sequences run as one batch; the score of option ``k`` is
    ``Σ_j log softmax(logits[L + j − 1])[a_kj]`` over its tokens ``a_k`` (``L`` = prompt length).

    Args:
        model: The transformers model (forward → ``logits (K, L + M, V)``).
        adapter: Builds the inputs (:class:`ImageTextAdapter`).
        image: ``(3, H, W)`` or ``(1, 3, H, W)`` in [0, 1].
        question: The question text (formatted by ``adapter.format_prompt``).
        options: Candidate answers (at least one).
        reduce: ``"sum"`` (total log-likelihood) or ``"mean"`` (per answer token).

    Raises:
        InputError: No options, an option that tokenises to nothing, or an unknown ``reduce``.
    """
    if reduce not in ("sum", "mean"):
        raise InputError(f"reduce={reduce!r}; expected 'sum' or 'mean'")
    options = list(options)
    if not options:
        raise InputError(f"question {question!r} has no options to score")
    prompt = adapter.format_prompt(question)
    inputs = adapter.prompt_inputs(image, prompt)
    ids, att = inputs.pop("input_ids"), inputs.pop("attention_mask")
    if ids.shape[0] != 1:
        raise InputError(f"adapter.prompt_inputs must return one sequence, got input_ids {tuple(ids.shape)}")
    answers = [adapter.answer_ids(o, prompt) for o in options]
    for o, a in zip(options, answers):
        if not a:
            raise InputError(f"option {o!r} of question {question!r} tokenises to no tokens")
    K, L, M = len(options), ids.shape[1], max(len(a) for a in answers)
    seq = torch.full((K, L + M), adapter.pad_token_id, dtype=ids.dtype, device=ids.device)
    mask = torch.zeros((K, L + M), dtype=att.dtype, device=att.device)
    seq[:, :L], mask[:, :L] = ids, att
    valid = torch.zeros((K, M), dtype=torch.bool, device=ids.device)
    for k, a in enumerate(answers):
        seq[k, L:L + len(a)] = torch.tensor(a, dtype=ids.dtype, device=ids.device)
        mask[k, L:L + len(a)] = 1
        valid[k, :len(a)] = True
    extra = {k: _repeat(v, K) for k, v in inputs.items()}
    logits = model(input_ids=seq, attention_mask=mask, **extra).logits  # (K, L + M, V)
    logp = logits[:, L - 1:L + M - 1].float().log_softmax(-1)  # (K, M, V): predicts tokens L .. L+M-1
    tok = logp.gather(-1, seq[:, L:, None])[..., 0].masked_fill(~valid, 0.0)  # (K, M)
    total = tok.sum(1)
    return total / valid.sum(1) if reduce == "mean" else total


# ----------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------


class AnswerScorer(WrapsModule):
    """A generative VLM that scores answer options (see :func:`option_logliks`).

    Attributes:
        model: The transformers model (eval mode, frozen).
        adapter: Its :class:`ImageTextAdapter`.
        name: The spec it was loaded from.
        reduce: Default option score reduction (``"sum"`` or ``"mean"``).
    """

    family = "image-text-to-text"

    def __init__(self, model: Any, adapter: ImageTextAdapter, *, name: str, reduce: str = "sum",
                 meta: dict[str, Any] | None = None) -> None:
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.adapter, self.name, self.reduce = adapter, name, reduce
        self.meta = dict(meta or {})

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.adapter.image_size)  # type: ignore[return-value]

    def score(self, image: torch.Tensor, question: str, options: Sequence[str],
              reduce: str | None = None) -> torch.Tensor:
        """Option log-likelihoods ``(K,)`` for one image ``(3, H, W)`` and question."""
        with torch.inference_mode():
            return option_logliks(self.model, self.adapter, image, question, options, reduce or self.reduce).float()

    def option_logliks(self, images: torch.Tensor, questions: Sequence[str], options: Sequence[Sequence[str]],
                       reduce: str | None = None, pad_to: int | None = None) -> torch.Tensor:
        """Option log-likelihoods ``(B, K_max)`` (``-inf`` where an item has fewer options).

        Args:
            images: ``(B, 3, H, W)`` in [0, 1].
            questions: ``B`` questions.
            options: ``B`` option lists.
            reduce: Overrides :attr:`reduce`.
            pad_to: Width of the result (default: the largest option count).
        """
        check_images(images, "images")
        if not len(images) == len(questions) == len(options):
            raise InputError(f"got {len(images)} images, {len(questions)} questions and {len(options)} option lists")
        k = pad_to or max(len(o) for o in options)
        out = torch.full((len(images), k), float("-inf"))
        for i, (q, opts) in enumerate(zip(questions, options)):
            out[i, :len(opts)] = self.score(images[i], q, opts, reduce).cpu()
        return out

    def answer(self, images: torch.Tensor, questions: Sequence[str], options: Sequence[Sequence[str]]) -> list[str]:
        """The best-scoring option of each question."""
        idx = self.option_logliks(images, questions, options).argmax(1).tolist()
        return [opts[i] for opts, i in zip(options, idx)]

    def vision_features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled vision features ``(B, D)`` (the adapter's choice; drift is measured on them)."""
        with torch.inference_mode():
            return self.adapter.vision_features(images).float()

    def __repr__(self) -> str:
        return f"AnswerScorer(name={self.name!r}, adapter={type(self.adapter).__name__}, device={self.device})"


_MODEL_CLASSES = {"blip-2": "Blip2ForConditionalGeneration", "llava": "LlavaForConditionalGeneration",
                  "qwen2_vl": "Qwen2VLForConditionalGeneration", "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration"}


def load_answer_model(spec: str, device: str | torch.device | None = "auto", dtype: str | torch.dtype | None = None, *,
                      adapter: ImageTextAdapter | None = None, template: str | None = None,
                      reduce: str = "sum") -> AnswerScorer:
    """Load a transformers image-text-to-text model as an :class:`AnswerScorer`.

    Args:
        spec: ``"hf:Salesforce/blip2-opt-2.7b"``, ``"hf:llava-hf/llava-1.5-7b-hf"``,
            ``"hf:Qwen/Qwen2-VL-2B-Instruct"``, the bare hub id, or a ``save_pretrained`` folder holding
            the model and its processor.
        device: "auto", "cpu", "cuda".
        dtype: Parameter dtype ("bf16", "fp16"; default float32).
        adapter: A custom :class:`ImageTextAdapter` (default: :class:`Blip2Adapter` for BLIP-2,
            :class:`ProcessorAdapter` otherwise).
        template: Prompt template with ``{question}`` for the default adapter.
        reduce: Option score reduction, ``"sum"`` or ``"mean"``.

    Raises:
        WeightsNotFoundError: Offline and not cached, or the download failed.
        ModelSpecError: The processor cannot be loaded.
    """
    import transformers
    from transformers import AutoConfig, AutoProcessor

    rest = strip_prefix(str(spec), ("hf:", "transformers:", "vlm:"))
    src, _, load = resolve_source(rest, "image-text-to-text model", "hf:Salesforce/blip2-opt-2.7b")
    config = load(lambda **kw: AutoConfig.from_pretrained(src, **kw))
    model_type = getattr(config, "model_type", None)
    cls = getattr(transformers, _MODEL_CLASSES.get(model_type, "AutoModelForImageTextToText"))
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    model = load(lambda **kw: cls.from_pretrained(src, dtype=dt, **kw)).to(dev)
    try:
        processor = load(lambda **kw: AutoProcessor.from_pretrained(src, **kw))
    except Exception as e:
        raise ModelSpecError(f"{spec!r}: no usable processor next to the model ({type(e).__name__}: {e}); save one "
                             "with processor.save_pretrained(folder)") from e
    if adapter is None:
        adapter = (Blip2Adapter(model, processor, template=template) if model_type == "blip-2"
                   else ProcessorAdapter(model, processor, template=template))
    return AnswerScorer(model, adapter, name=str(spec), reduce=reduce,
                        meta={"spec": str(spec), "weights": src, "model_type": model_type})


# ----------------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------


class QuestionSet(ImageDataset):
    """Questions about images, each with options and the index of the right one.

    Args:
        paths: Image file per question (several questions may share an image).
        questions: Question text per item.
        options: Candidate answers per item (at least two, distinct).
        answers: Index of the right option per item.
        kinds: Question kind per item (``"count"``, ``"color"``, ``"shape"``, ``"exists"``, ``"mcq"``...).
        ids: Identifier per item.
        name: Dataset name.

    Raises:
        DataError: Lengths disagree, fewer than two or duplicate options, or an answer index out of range.
    """

    task = "answer_scoring"

    def __init__(self, paths: Sequence[str | Path], questions: Sequence[str], options: Sequence[Sequence[str]],
                 answers: Sequence[int] | torch.Tensor, *, kinds: Sequence[str] | None = None,
                 ids: Sequence[str] | None = None, name: str = "questions", on_error: OnError = "raise") -> None:
        super().__init__(paths, name=name, on_error=on_error)
        n = len(self.paths)
        self.questions = [str(q) for q in questions]
        self.options = [[str(o) for o in opts] for opts in options]
        self.answers = torch.as_tensor(answers, dtype=torch.long).reshape(-1)
        self.kinds = [str(k) for k in kinds] if kinds is not None else ["mcq"] * n
        self.ids = [str(i) for i in ids] if ids is not None else [str(i) for i in range(n)]
        lens = {len(self.questions), len(self.options), len(self.answers), len(self.kinds), len(self.ids)}
        if lens != {n}:
            raise DataError(f"{name}: {n} images but {len(self.questions)} questions, "
                            f"{len(self.options)} option lists, "
                            f"{len(self.answers)} answers, {len(self.kinds)} kinds, {len(self.ids)} ids")
        for i, (opts, a) in enumerate(zip(self.options, self.answers.tolist())):
            _check_options(opts, f"{name} item {self.ids[i]!r}")
            if not 0 <= a < len(opts):
                raise DataError(f"{name} item {self.ids[i]!r}: answer index {a} is outside its {len(opts)} options")

    @property
    def max_options(self) -> int:
        return max((len(o) for o in self.options), default=0)

    def _select(self, indices: list[int]) -> QuestionSet:
        return QuestionSet([self.paths[i] for i in indices], [self.questions[i] for i in indices],
                           [self.options[i] for i in indices], self.answers[indices] if indices else [],
                           kinds=[self.kinds[i] for i in indices], ids=[self.ids[i] for i in indices],
                           name=self.name, on_error=self.on_error)

    def __getitem__(self, i: int) -> dict[str, Any]:
        j = self._index(i)
        return {"index": j, "id": self.ids[j], "path": self.paths[j], "question": self.questions[j],
                "options": list(self.options[j]), "answer": int(self.answers[j]), "kind": self.kinds[j]}

    def content_hash(self) -> str:
        """Hash of the images and every question, option list and answer."""
        return _hash(super().content_hash(), self.questions, self.options, self.answers.tolist())

    def summary(self) -> dict[str, Any]:
        kinds: dict[str, int] = {}
        for k in self.kinds:
            kinds[k] = kinds.get(k, 0) + 1
        return {**super().summary(), "questions": len(self), "kinds": kinds}


def _check_options(opts: Any, where: str) -> None:
    if not isinstance(opts, list) or len(opts) < 2:
        raise DataError(f"{where}: 'options' must be a list of at least two answers, got {opts!r}")
    if not all(isinstance(o, str) and o.strip() for o in opts):
        raise DataError(f"{where}: every option must be a non-empty string, got {opts!r}")
    if len({o.strip().lower() for o in opts}) != len(opts):
        raise DataError(f"{where}: options must be distinct, got {opts!r}")


def _answer_index(answer: Any, opts: list[str], where: str) -> int:
    if isinstance(answer, bool):
        raise DataError(f"{where}: 'answer' must be one of the options or an index, got {answer!r}")
    if isinstance(answer, int):
        if not 0 <= answer < len(opts):
            raise DataError(f"{where}: answer index {answer} is outside its {len(opts)} options {opts}")
        return answer
    if isinstance(answer, str):
        if answer in opts:
            return opts.index(answer)
        low = [o.strip().lower() for o in opts]
        if answer.strip().lower() in low:
            return low.index(answer.strip().lower())
    raise DataError(f"{where}: answer {answer!r} is not one of the options {opts}")


def load_question_jsonl(path: str | Path, image_root: str | Path | None = None, *, name: str | None = None,
                        on_error: OnError = "raise") -> QuestionSet:
    """Load questions from a JSONL file: one JSON object per line.

    Each line::

        {"image": "images/000001.png", "question": "What colour is the star?",
         "options": ["red", "blue", "green", "white"], "answer": "red",
         "id": "000001-color", "kind": "color"}                      # id and kind optional

    ``answer`` is one of the options (exact, else case-insensitive) or its index. A yes/no question
    may omit ``options`` when ``answer`` is ``"yes"`` or ``"no"`` (POPE style): the options are then
    ``["yes", "no"]``. Blank lines are skipped.

    Args:
        path: The JSONL file.
        image_root: Folder the ``image`` paths are relative to (default: the file's folder).
        name: Dataset name (default: the file's stem).
        on_error: Image decoding policy.

    Raises:
        DataNotFoundError: The file, the image root or an image is missing.
        DataError: A line is not a JSON object, lacks a field, or has bad options/answer (the message
            names the line).
        EmptyDatasetError: No questions.
    """
    check_on_error(on_error)
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataNotFoundError(f"questions file not found: {p}")
    root = Path(image_root).expanduser() if image_root is not None else p.parent
    if not root.is_dir():
        raise DataNotFoundError(f"image root not found (or not a folder): {root}")
    paths, qs, opts_all, answers, kinds, ids = [], [], [], [], [], []
    for ln, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{p.name} line {ln}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where} is not valid JSON: {e.msg} (column {e.colno})") from e
        if not isinstance(rec, dict):
            raise DataError(f"{where} must be a JSON object with image, question, options, answer")
        missing = [k for k in ("image", "question", "answer") if k not in rec]
        if missing:
            raise DataError(f"{where} lacks {missing}; expected keys image, question, options, answer "
                            f"(got {sorted(rec)})")
        if not isinstance(rec["question"], str) or not rec["question"].strip():
            raise DataError(f"{where}: 'question' must be a non-empty string")
        opts = rec.get("options")
        if opts is None:
            if isinstance(rec["answer"], str) and rec["answer"].strip().lower() in ("yes", "no"):
                opts = ["yes", "no"]
            else:
                raise DataError(f"{where} has no 'options' (only yes/no questions may omit them)")
        _check_options(opts, where)
        answers.append(_answer_index(rec["answer"], opts, where))
        paths.append(root / str(rec["image"]))
        qs.append(rec["question"])
        opts_all.append(opts)
        kinds.append(str(rec.get("kind", "yesno" if [o.lower() for o in opts] == ["yes", "no"] else "mcq")))
        ids.append(str(rec.get("id", len(ids))))
    if not qs:
        raise EmptyDatasetError(f"questions file {p} has no questions")
    ds = QuestionSet(paths, qs, opts_all, answers, kinds=kinds, ids=ids, name=name or p.stem, on_error=on_error)
    ds.check_files(on_error)
    return ds


NUMBER_WORDS = ("zero", "one", "two", "three", "four")
TOY_KINDS = ("count", "color", "shape", "exists")


def toy_questions(scene: Any, rng: Any, kinds: Sequence[str] = TOY_KINDS, pope: str = "random", n_options: int = 4,
                  min_visible: float = 0.35) -> list[dict[str, Any]]:
    """Questions about one toy scene from its ground truth.

    * ``count`` — "How many objects are there in the image?" (options one/two/three), asked only when
      every object is clearly visible;
    * ``color`` — "What colour is the {shape}?" for a visible object whose shape is unique in the scene;
    * ``shape`` — "What shape is the {colour} object?" for a visible object whose colour is unique;
    * ``exists`` — POPE's protocol (Li et al. 2023): one "yes" question about a visible object and one
      "no" question about an absent one. ``pope="random"`` asks about a shape absent from the scene
      ("Is there a heart in the image?"); ``pope="adversarial"`` asks about a present shape in a colour
      it does not have ("Is there a blue star in the image?"). A written word is not an object: a
      sign reading "heart" does not make "Is there a heart?" a yes — a typographic lure.

    Args:
        scene: A rendered :class:`~vlmkit.toyworld.Scene`.
        rng: ``numpy.random.Generator`` for choices and option order.
        kinds: Which kinds to ask.
        pope: ``"random"`` or ``"adversarial"`` negatives.
        n_options: Options of colour/shape questions (the answer and ``n_options − 1`` distractors).
        min_visible: Least visible share of an object that questions may refer to.

    Returns:
        Records ``{"question", "options", "answer", "kind"}``.
    """
    from vlmkit.toyworld import COLOR_NAMES, SHAPES

    bad = [k for k in kinds if k not in TOY_KINDS]
    if bad:
        raise InputError(f"unknown question kinds {bad}; expected some of {TOY_KINDS}")
    if pope not in ("random", "adversarial"):
        raise InputError(f"pope={pope!r}; expected 'random' or 'adversarial'")
    if not 2 <= n_options <= len(COLOR_NAMES):
        raise InputError(f"n_options={n_options} must be in [2, {len(COLOR_NAMES)}]")
    objs = scene.objects
    vis = [o for o in objs if o.visible_fraction >= min_visible]
    out: list[dict[str, Any]] = []

    def mcq(question: str, answer: str, pool: Sequence[str], kind: str) -> dict[str, Any]:
        others = [c for c in pool if c != answer]
        picks = [others[i] for i in rng.permutation(len(others))[: n_options - 1]]
        opts = [answer, *picks]
        opts = [opts[i] for i in rng.permutation(len(opts))]
        return {"question": question, "options": opts, "answer": answer, "kind": kind}

    if "count" in kinds and vis and all(o.visible_fraction >= min_visible or o.visible_fraction == 0 for o in objs):
        n = len(vis)
        if 1 <= n <= 3:
            out.append({"question": "How many objects are there in the image?", "options": ["one", "two", "three"],
                        "answer": NUMBER_WORDS[n], "kind": "count"})
    shapes = [o.shape for o in objs]
    colors = [o.color for o in objs]
    if "color" in kinds:
        cands = [o for o in vis if shapes.count(o.shape) == 1]
        if cands:
            o = cands[int(rng.integers(len(cands)))]
            out.append(mcq(f"What colour is the {o.shape}?", o.color, COLOR_NAMES, "color"))
    if "shape" in kinds:
        cands = [o for o in vis if colors.count(o.color) == 1]
        if cands:
            o = cands[int(rng.integers(len(cands)))]
            out.append(mcq(f"What shape is the {o.color} object?", o.shape, SHAPES, "shape"))
    if "exists" in kinds and vis:
        from vlmkit.toyworld.grammar import article

        o = vis[int(rng.integers(len(vis)))]
        if pope == "random":
            absent = [s for s in SHAPES if s not in shapes]
            neg = absent[int(rng.integers(len(absent)))] if absent else None
            pos_q, neg_q = f"Is there {article(o.shape)} {o.shape} in the image?", (
                None if neg is None else f"Is there {article(neg)} {neg} in the image?")
        else:
            pairs = {(ob.color, ob.shape) for ob in objs}
            wrong = [c for c in COLOR_NAMES if (c, o.shape) not in pairs]
            neg = wrong[int(rng.integers(len(wrong)))] if wrong else None
            pos_q = f"Is there {article(o.color)} {o.color} {o.shape} in the image?"
            neg_q = None if neg is None else f"Is there {article(neg)} {neg} {o.shape} in the image?"
        out.append({"question": pos_q, "options": ["yes", "no"], "answer": "yes", "kind": "exists"})
        if neg_q is not None:
            out.append({"question": neg_q, "options": ["yes", "no"], "answer": "no", "kind": "exists"})
    return out


def export_toy_questions(root: str | Path, n_images: int = 100, seed: int | None = None, size: int = 64,
                         kinds: Sequence[str] = TOY_KINDS, pope: str = "random", n_options: int = 4) -> Path:
    """Write a toy-world question set: ``images/<id>.png``, ``questions.jsonl`` and ``ground_truth.json``.

    Args:
        root: Output folder (created).
        n_images: Scenes rendered (each gives up to 5 questions, see :func:`toy_questions`).
        seed: Scene stream seed (default: the toy world's held-out export seed).
        size: Image side.
        kinds, pope, n_options: See :func:`toy_questions`.

    Returns:
        ``root`` as a Path (load it with :func:`load_question_jsonl` on ``root / "questions.jsonl"``).
    """
    from vlmkit.toyworld import EXPORT_SEED, render_spec, sample_spec, scene_rng
    from vlmkit.toyworld.export import scene_record

    seed = EXPORT_SEED if seed is None else int(seed)
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    lines, gt = [], {}
    for i in range(n_images):
        scene = render_spec(sample_spec(scene_rng(seed, i, 9)), size)
        stem = f"{i:06d}"
        Image.fromarray(scene.image).save(root / "images" / f"{stem}.png")
        gt[stem] = scene_record(scene)
        for j, rec in enumerate(toy_questions(scene, scene_rng(seed, i, 10), kinds, pope, n_options)):
            lines.append(json.dumps({"id": f"{stem}-{j}", "image": f"images/{stem}.png", **rec}))
    if not lines:
        raise DataError(f"no question could be asked about {n_images} toy scenes with kinds={list(kinds)}")
    (root / "questions.jsonl").write_text("\n".join(lines) + "\n")
    (root / "ground_truth.json").write_text(json.dumps(gt))
    return root


def load_toy_questions(root: str | Path, n_images: int = 32, seed: int = 0, size: int = 64,
                       kinds: Sequence[str] = TOY_KINDS, pope: str = "random") -> QuestionSet:
    """Export (once) and load a toy-world question set under ``root/toy-questions-…``."""
    from vlmkit.toyworld import EXPORT_SEED

    tag = f"n{n_images}-s{seed}-px{size}-{pope}-{'+'.join(kinds)}"
    folder = Path(root) / f"toy-questions-{tag}"
    if not (folder / "questions.jsonl").is_file():
        export_toy_questions(folder, n_images=n_images, seed=EXPORT_SEED + 104729 * (seed + 1), size=size,
                             kinds=kinds, pope=pope)
    return load_question_jsonl(folder / "questions.jsonl", name="toy-questions")


# ----------------------------------------------------------------------------------------------------
# Grid task
# ----------------------------------------------------------------------------------------------------


def _is_yes_no(opts: Sequence[str]) -> bool:
    return sorted(o.strip().lower() for o in opts) == ["no", "yes"]


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

    def __init__(self, reduce: str = "sum", mode: str = "squash") -> None:
        if reduce not in ("sum", "mean"):
            raise InputError(f"reduce={reduce!r}; expected 'sum' or 'mean'")
        self.reduce, self.mode = reduce, check_mode(mode)

    def load_model(self, spec: str, device: torch.device) -> AnswerScorer:
        return load_answer_model(spec, device=device, reduce=self.reduce)

    def prepare(self, model: AnswerScorer, dataset: QuestionSet, *, image_size: int | None, cache_dir: Path | None,
                progress: bool) -> TaskData:
        if not isinstance(dataset, QuestionSet):
            raise InputError(f"task 'answer_scoring' needs a QuestionSet, got {type(dataset).__name__}")
        size = int(image_size or max(model.image_size))
        images = dataset.load_images(size=size, mode=self.mode, cache_dir=cache_dir, progress=progress)
        ad = model.adapter
        key = _hash(dataset.content_hash(), size, self.mode, self.reduce, getattr(ad, "template", ""),
                    getattr(ad, "features", ""), type(ad).__name__)
        extras = {"questions": dataset.questions, "options": dataset.options, "answers": dataset.answers,
                  "kinds": dataset.kinds, "kmax": dataset.max_options,
                  "yes_no": torch.tensor([_is_yes_no(o) for o in dataset.options]),
                  "yes_index": torch.tensor([[s.lower() for s in o].index("yes") if _is_yes_no(o) else -1
                                             for o in dataset.options])}
        return TaskData(images, extras, key=key)

    def outputs(self, model: AnswerScorer, data: TaskData, cell: Cell, x: torch.Tensor, start: int, stop: int,
                runner: TaskRunner) -> dict[str, torch.Tensor]:
        e = data.extras
        ll = model.option_logliks(x, e["questions"][start:stop], e["options"][start:stop], reduce=self.reduce,
                                  pad_to=e["kmax"])
        return {"logliks": ll, "feats": model.vision_features(x).cpu()}

    def metrics(self, data: TaskData, cell: Cell, out: dict[str, torch.Tensor], seed: int) -> dict[str, float]:
        e = data.extras
        ll, answers = out["logliks"], e["answers"]
        pred = ll.argmax(1)
        margin = option_margin(ll)
        m: dict[str, float] = {"accuracy": answer_accuracy(ll, answers), "margin_mean": float(margin.mean()),
                               "answer_loglik_mean": float(ll.gather(1, answers[:, None])[:, 0].mean())}
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
        d = cosine_drift(f0, f)
        m["drift_mean"] = float(d.mean())
        if len(f0) > 1:
            c = control_drift(f0, make_generator(seed))
            m.update(control_drift_mean=float(c.mean()), drift_ratio=float(d.mean() / c.mean().clamp_min(1e-12)))
        m["prior_shift_mean"] = float(prior_shift(f0, f).mean())
        if cell.kind != "clean":
            pred0 = data.clean["logliks"].argmax(1)
            m["IFR"] = flip_rates(pred0, pred)["IFR"]
            m["margin_change_mean"] = float((margin - option_margin(data.clean["logliks"])).mean())
            held = pred == pred0
            m["drift_mean_unflipped"] = float(d[held].mean()) if bool(held.any()) else float("nan")
        return m

    def flips(self, data: TaskData, out: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return data.clean["logliks"].argmax(1), out["logliks"].argmax(1)


__all__ = ["AnswerScorer", "AnswerScoringTask", "BLIP2_TEMPLATE", "Blip2Adapter", "ImageTextAdapter",
           "ProcessorAdapter", "QuestionSet", "TOY_KINDS", "answer_accuracy", "export_toy_questions", "load_answer_model",
           "load_question_jsonl", "load_toy_questions", "option_logliks", "option_margin", "pope_scores",
           "toy_questions"]
