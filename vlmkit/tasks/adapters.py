"""Generative VLMs that score answer options by log-likelihood: adapters, the scorer and its loader.

A generative VLM (BLIP-2, Li et al. 2023, "BLIP-2: Bootstrapping Language-Image Pre-training with
Frozen Image Encoders and Large Language Models"; LLaVA; Qwen-VL) answers a question about an image
with text. Instead of generating and parsing, each candidate answer ``o`` is scored by its
log-likelihood under the model, given the image and the prompt::

    score(o) = Σ_j log p(o_j | image, prompt, o_<j)        (reduce="sum"; "mean" divides by |o|)

Pieces:

* the adapter protocol :class:`ImageTextAdapter` — build model inputs from an image and a prompt,
  tokenise an answer, pool vision features. :class:`ProcessorAdapter` fits any transformers processor
  (LLaVA's and Qwen2-VL's chat templates included); :class:`Blip2Adapter` adds BLIP-2's prompt and a
  differentiable pixel path. :func:`option_logliks` does the scoring for every adapter;
* :func:`load_answer_model` → :class:`AnswerScorer` (``hf:Salesforce/blip2-opt-2.7b``,
  ``hf:llava-hf/llava-1.5-7b-hf``, ``hf:Qwen/Qwen2-VL-2B-Instruct`` or a local folder, offline-aware).

The grid task that uses them is :class:`vlmkit.tasks.answer_scoring.AnswerScoringTask`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch

from vlmkit.errors import InputError, ModelSpecError
from vlmkit.models import hub
from vlmkit.models.base import WrapsModule
from vlmkit.models.preprocess import PreprocessConfig, resize_and_normalise
from vlmkit.runtime import resolve_device, resolve_dtype
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

    #: Pixels go through the processor (PIL/numpy): no gradient reaches them.
    differentiable = False

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

    #: The pixel path is torch all the way (resize + normalise), so attacks get gradients.
    differentiable = True

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
              reduce: str | None = None, grad: bool = False) -> torch.Tensor:
        """Option log-likelihoods ``(K,)`` for one image ``(3, H, W)`` and question (``grad``: differentiable
        with respect to the image, for attacks)."""
        with torch.inference_mode(not grad):
            return option_logliks(self.model, self.adapter, image, question, options, reduce or self.reduce).float()

    def option_logliks(self, images: torch.Tensor, questions: Sequence[str], options: Sequence[Sequence[str]],
                       reduce: str | None = None, pad_to: int | None = None, grad: bool = False) -> torch.Tensor:
        """Option log-likelihoods ``(B, K_max)`` (``-inf`` where an item has fewer options).

        Args:
            images: ``(B, 3, H, W)`` in [0, 1].
            questions: ``B`` questions.
            options: ``B`` option lists.
            reduce: Overrides :attr:`reduce`.
            pad_to: Width of the result (default: the largest option count).
            grad: Keep the graph to the images (white-box attacks; needs ``adapter.differentiable``).
        """
        check_images(images, "images")
        if not len(images) == len(questions) == len(options):
            raise InputError(f"got {len(images)} images, {len(questions)} questions and {len(options)} option lists")
        k = pad_to or max(len(o) for o in options)
        rows = []
        for i, (q, opts) in enumerate(zip(questions, options)):
            s = self.score(images[i], q, opts, reduce, grad=grad)
            pad = torch.full((k - len(opts),), float("-inf"), device=s.device)
            rows.append(torch.cat([s, pad]))
        out = torch.stack(rows)  # (B, k)
        return out if grad else out.cpu()

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
    processor = hub.load_companion(spec, "processor",
                                   lambda: load(lambda **kw: AutoProcessor.from_pretrained(src, **kw)))
    if adapter is None:
        adapter = (Blip2Adapter(model, processor, template=template) if model_type == "blip-2"
                   else ProcessorAdapter(model, processor, template=template))
    return AnswerScorer(model, adapter, name=str(spec), reduce=reduce,
                        meta={"spec": str(spec), "weights": src, "model_type": model_type})


__all__ = ["AnswerScorer", "BLIP2_TEMPLATE", "Blip2Adapter", "ImageTextAdapter", "ProcessorAdapter",
           "load_answer_model", "option_logliks"]
