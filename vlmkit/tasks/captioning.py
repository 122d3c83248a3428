"""The grid task ``"captioning"``: what a VLM *says* about an image, under perturbation.

The semantic-misalignment study (Cheng, "Semantic Misalignment in Vision-Language Models under Perceptual
Degradation") asks how a VLM's language goes wrong when perception degrades: hallucinated objects, omitted
(safety-critical) entities, inconsistent safety judgments. Per cell, each image is captioned (greedy or beam
decoding, a fixed prompt per model family) and asked yes/no safety questions (scored by log-likelihood,
the answer-scoring path); the captions are kept with the rows (``captions`` column) so every metric can be
recomputed. Metrics (:mod:`vlmkit.metrics.captions`):

* ``chair_i`` / ``chair_s`` (Rohrbach et al. 2018): hallucinated object mentions / all mentions; captions
  with a hallucination;
* ``recall`` / ``omission_rate`` against the ground-truth objects, and ``safety_recall`` /
  ``safety_omission_rate`` on the set's safety-critical classes;
* ``caption_drift_mean`` (cosine distance of the clean and perturbed captions' embeddings under a chosen text
  encoder) against ``caption_control_drift_mean`` (captions of two different clean images);
* ``safety_flip_rate``: images whose answer to any safety question changed from clean;
* the perception cost of the cell: ``miou_mean`` of the label maps the corruption produced against the clean
  ones (mask-corruption cells; 1 elsewhere) and ``psnr_mean`` of the images;
* drift of the vision features (the other studies' drift, against control drift).

Models: ``toycap:<name>`` (the toy world's captioner, :mod:`vlmkit.toyworld.captioning`) or a transformers
image-text-to-text model (BLIP-2, LLaVA-style, Qwen-VL-style; :class:`HFCaptioner` over the answer-scoring
adapters). Attack cells maximise the negative log-likelihood of the clean caption (:class:`CaptionNLL`, the
untargeted captioning attack of e.g. Schlarmann & Hein 2023) where the model has a differentiable path.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlmkit.errors import InputError
from vlmkit.evaluate.cells import Cell
from vlmkit.evaluate.intervals import Items
from vlmkit.evaluate.task import Task, TaskData
from vlmkit.metrics import cosine_drift
from vlmkit.metrics.captions import caption_control_drift, chair, load_vocabulary, object_recall
from vlmkit.metrics.segmentation import mean_iou
from vlmkit.registry import MASK_CORRUPTIONS, TASKS
from vlmkit.runtime import item_generators, make_generator, stable_hash
from vlmkit.tasks.adapters import AnswerScorer, load_answer_model
from vlmkit.tasks.caption_data import CaptionSet

#: The fixed captioning prompt per model family (the empty prompt: BLIP-2's own captioning mode).
PROMPTS = {"blip-2": "", "llava": "Describe the image in one sentence.",
           "qwen2_vl": "Describe the image in one sentence.", "qwen2_5_vl": "Describe the image in one sentence."}


class HFCaptioner:
    """A transformers image-text-to-text model as a captioner: :meth:`generate` through the model's own
    ``generate`` (greedy or beam search, no sampling), safety answers through the answer scorer."""

    def __init__(self, scorer: AnswerScorer, prompt: str | None = None) -> None:
        self.scorer, self.model = scorer, scorer.model
        self.name = scorer.name
        family = scorer.meta.get("model_type")
        self.prompt = PROMPTS.get(family, "Describe the image in one sentence.") if prompt is None else prompt

    @property
    def image_size(self) -> tuple[int, int]:
        return self.scorer.image_size

    @property
    def device(self) -> torch.device:
        return self.scorer.device

    def generate(self, images: torch.Tensor, prompt: str | None = None, *, num_beams: int = 1,
                 max_new_tokens: int = 30) -> list[str]:
        ad = self.scorer.adapter
        text = self.prompt if prompt is None else prompt
        out = []
        for img in images:
            inputs = ad.prompt_inputs(img[None], ad.format_prompt(text) if text else text)
            with torch.inference_mode():
                ids = self.model.generate(**inputs, num_beams=num_beams, do_sample=False, max_new_tokens=max_new_tokens)
            n = inputs["input_ids"].shape[1] if "input_ids" in inputs and ids.shape[1] > inputs["input_ids"].shape[1] else 0
            out.append(ad.tokenizer.decode(ids[0, n:], skip_special_tokens=True).strip())
        return out

    def option_logliks(self, images: torch.Tensor, questions: Sequence[str], options: Sequence[Sequence[str]]
                       ) -> torch.Tensor:
        return self.scorer.option_logliks(images, questions, options)

    def vision_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.scorer.vision_features(images)


def load_captioner(spec: str, device: str | torch.device = "cpu") -> Any:
    """``toycap:<name>`` (shipped toy captioners) or a transformers spec (``hf:Salesforce/blip2-opt-2.7b``,
    ``hf:llava-hf/llava-1.5-7b-hf``, ``hf:Qwen/Qwen2-VL-2B-Instruct`` or a local folder).

    Raises:
        ModelSpecError: An unknown toy captioner (the message lists the shipped ones).
    """
    if spec.startswith("toycap:"):
        from vlmkit.toyworld.captioning import load_toy_captioner

        return load_toy_captioner(spec, device=device)  # an unknown name: ModelSpecError listing the shipped ones
    return HFCaptioner(load_answer_model(spec, device=device))


#: Bytes kept per caption in the cached outputs (UTF-8, zero-padded; longer captions are cut there).
CAPTION_BYTES = 1024


def _to_bytes(texts: Sequence[str]) -> torch.Tensor:
    """Captions as a zero-padded uint8 tensor ``(B, CAPTION_BYTES)`` (UTF-8), cached with the outputs."""
    out = torch.zeros(len(texts), CAPTION_BYTES, dtype=torch.uint8)
    for i, t in enumerate(texts):
        raw = t.encode("utf-8")[:CAPTION_BYTES]
        if raw:
            out[i, :len(raw)] = torch.tensor(list(raw), dtype=torch.uint8)
    return out


def decode_captions(t: torch.Tensor) -> list[str]:
    """Inverse of the outputs' caption encoding."""
    return [bytes(row[row > 0].tolist()).decode("utf-8", errors="replace") for row in t.to(torch.uint8)]


class CaptionNLL:
    """Objective ``(model, x_adv, batch) -> (B,)``: the negative log-likelihood of each image's clean caption
    (maximised: the untargeted captioning attack)."""

    def __call__(self, model: Any, x_adv: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        return model.caption_nll(x_adv, batch["captions"])

    def __repr__(self) -> str:
        return "CaptionNLL()"


@TASKS.register("captioning", kind="grid", dataset="CaptionSet",
                models="toycap:rn, BLIP-2, LLaVA, Qwen-VL (hf:...)")
class CaptioningTask(Task):
    """Captions, hallucination, omission and safety judgments under perturbation (see the module docstring).

    Args:
        num_beams: 1 = greedy decoding, more = beam search.
        max_new_tokens: Longest caption.
        prompt: The captioning prompt (None: the model family's fixed prompt).
        text_encoder: Model spec of the encoder of ``caption_drift`` (a dual encoder: ``toy:vit``,
            ``open_clip:ViT-B-32/openai`` ...; None: the grid's choice per dataset — ``toy:vit`` on toy sets,
            else ``open_clip:ViT-B-32/openai``).
        synonyms: Object table of CHAIR (None: the dataset's ``vocabulary``).
    """

    name = "captioning"
    default_batch_size = 16
    dataset_types = (CaptionSet,)

    def __init__(self, num_beams: int = 1, max_new_tokens: int = 30, prompt: str | None = None,
                 text_encoder: str | None = None, synonyms: str | None = None) -> None:
        if not isinstance(num_beams, int) or num_beams < 1 or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise InputError(f"num_beams={num_beams!r}, max_new_tokens={max_new_tokens!r}; expected positive ints")
        self.num_beams, self.max_new_tokens, self.prompt = num_beams, max_new_tokens, prompt
        self.text_encoder, self.synonyms = text_encoder, synonyms

    def options(self) -> dict[str, Any]:
        return {"num_beams": self.num_beams, "max_new_tokens": self.max_new_tokens, "prompt": self.prompt,
                "text_encoder": self.text_encoder, "synonyms": self.synonyms}

    def load_model(self, spec: str, device: torch.device) -> Any:
        return load_captioner(spec, device)

    def model_name(self, model: Any) -> str:
        return str(getattr(model, "name", None) or getattr(model, "spec", type(model).__name__))

    def prepare(self, model: Any, dataset: CaptionSet, *, image_size: int | None, cache: Any,
                cache_dir: Path | None, progress: bool) -> TaskData:
        self.check_dataset(dataset)
        size = int(image_size or max(model.image_size))
        images = dataset.load_images(size=size, cache_dir=cache_dir, progress=progress)  # (N, 3, S, S) uint8
        vocab = self.synonyms or dataset.vocabulary
        encoder = self.text_encoder or ("toy:vit" if dataset.vocabulary == "toy" else "open_clip:ViT-B-32/openai")
        key = stable_hash(dataset.content_hash(), size, self.options(), encoder)
        extras = {"objects": dataset.objects, "safety": list(dataset.safety), "questions": dataset.questions,
                  "vocabulary": load_vocabulary(vocab), "masks": dataset.load_masks(size), "encoder": encoder,
                  "classes": dataset.classes}
        return TaskData(images, extras, key=key)

    def context(self, data: TaskData, index: torch.Tensor) -> dict[str, Any]:
        masks = data.extras["masks"]
        return {"masks": masks[index]} if masks is not None else {}

    # ------------------------------------------------------------------ per image
    def outputs(self, model: Any, data: TaskData, cell: Cell, x: torch.Tensor, index: torch.Tensor,
                seed: int) -> dict[str, torch.Tensor]:
        e = data.extras
        caps = model.generate(x, self.prompt, num_beams=self.num_beams, max_new_tokens=self.max_new_tokens)
        out = {"captions": _to_bytes(caps), "feats": model.vision_features(x).float().cpu()}
        qs = e["questions"]
        if qs:  # (B, Q) yes − no log-likelihood margins of the safety questions
            ll = model.option_logliks(x.repeat_interleave(len(qs), 0), qs * len(x), [["yes", "no"]] * (len(x) * len(qs)))
            ll = ll.float().reshape(len(x), len(qs), 2)
            out["safety_margin"] = (ll[..., 0] - ll[..., 1]).cpu()
        x0 = data.images[index.to(data.images.device)].to(x.device).float() / 255  # (B, 3, S, S)
        mse = (x.float() - x0).pow(2).flatten(1).mean(1).clamp_min(1e-12)
        out["psnr"] = (10 * torch.log10(1 / mse)).cpu()
        out["miou"] = self._miou(data, cell, index, seed)
        return out

    def _miou(self, data: TaskData, cell: Cell, index: torch.Tensor, seed: int) -> torch.Tensor:
        """mIoU of the label maps a mask-corruption cell produced (per image, with its own generator) against
        the clean ones; 1 for every other cell (perception untouched)."""
        masks = data.extras["masks"]
        if masks is None or cell.kind != "perturbation" or cell.name != "mask_corruption":
            return torch.ones(len(index))
        params = {k: v for k, v in cell.params.items() if k not in ("render", "miou_drop", "corruption")}
        fn = MASK_CORRUPTIONS.get(cell.params.get("corruption", "drop_small"))
        out = []
        for i, g in zip(index.tolist(), item_generators(seed, cell.key, index, "cpu")):
            m0 = masks[i:i + 1]
            m1 = fn(m0, float(cell.severity), generator=g, **params)
            out.append(float(mean_iou(m1, m0)[0]) if bool((m0 > 0).any() | (m1 > 0).any()) else 1.0)
        return torch.tensor(out)

    def metrics(self, data: TaskData, cell: Cell, out: dict[str, torch.Tensor], seed: int) -> dict[str, float | Items]:
        e = data.extras
        caps = decode_captions(out["captions"])
        gt, vocab = e["objects"], e["vocabulary"]
        ch = chair(caps, gt, vocab)
        rec = object_recall(caps, gt, vocab)
        m: dict[str, float | Items] = {
            "chair_i": Items(np.stack([ch["n_hallucinated"], ch["n_mentions"]], 1), statistic="ratio",
                             value=ch["chair_i"]),
            "chair_s": Items(ch["has_hallucination"], binary=True, value=ch["chair_s"]),
            "recall": Items(np.stack([rec["n_covered"], rec["n_gt"]], 1), statistic="ratio", value=rec["recall"]),
            "omission_rate": Items(np.stack([rec["n_gt"] - rec["n_covered"], rec["n_gt"]], 1), statistic="ratio",
                                   value=rec["omission_rate"])}
        if e["safety"]:
            sr = object_recall(caps, gt, vocab, subset=e["safety"])
            if int(np.sum(sr["n_gt"])):
                m["safety_recall"] = Items(np.stack([sr["n_covered"], sr["n_gt"]], 1), statistic="ratio",
                                           value=sr["recall"])
                m["safety_omission_rate"] = Items(np.stack([sr["n_gt"] - sr["n_covered"], sr["n_gt"]], 1),
                                                  statistic="ratio", value=sr["omission_rate"])
        m["miou_mean"] = Items(out["miou"], value=float(out["miou"].mean()))
        if cell.kind != "clean":
            psnr = out["psnr"].clamp(max=100.0)
            m["psnr_mean"] = Items(psnr, value=float(psnr.mean()))
        m.update(self.drift(data.clean["feats"], out["feats"], seed))
        emb0, emb = self._caption_embeddings(data, decode_captions(data.clean["captions"]), caps)
        if cell.kind != "clean":
            d = cosine_drift(emb0, emb)  # (N,)
            m["caption_drift_mean"] = Items(d, value=float(d.mean()))
            if "safety_margin" in out:
                flipped = ((data.clean["safety_margin"] > 0) != (out["safety_margin"] > 0)).any(1)  # (N,)
                m["safety_flip_rate"] = Items(flipped, binary=True, value=float(flipped.float().mean()))
        if len(emb0) > 1:
            c = caption_control_drift(emb0, make_generator(seed))
            m["caption_control_drift_mean"] = Items(c, value=float(c.mean()))
        return m

    def _caption_embeddings(self, data: TaskData, clean: list[str], caps: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        from vlmkit.evaluate.engine import get_task, loaded_model

        enc = loaded_model(get_task("retrieval"), data.extras["encoder"], torch.device("cpu"))
        with torch.no_grad():
            both = enc.encode_text([*clean, *caps]).float().cpu()  # (2N, D)
        return both[:len(clean)], both[len(clean):]

    def row_columns(self, out: dict[str, torch.Tensor]) -> dict[str, Any]:
        """The cell's captions (JSON list, dataset order) with every row, so its metrics can be recomputed."""
        return {"captions": json.dumps(decode_captions(out["captions"]))}

    def flips(self, data: TaskData, out: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """An answer is the vector of safety judgments (as one integer per image), else the caption itself."""
        def code(o: dict[str, torch.Tensor]) -> torch.Tensor:
            if "safety_margin" in o:
                bits = (o["safety_margin"] > 0).long()  # (N, Q)
                return (bits * (2 ** torch.arange(bits.shape[1]))).sum(1)
            return torch.tensor([hash(c) % (2**61) for c in decode_captions(o["captions"])])
        return code(data.clean), code(out)

    def attack_inputs(self, model: Any, data: TaskData, cell: Cell, index: torch.Tensor) -> tuple[Any, dict[str, Any]]:
        if not hasattr(model, "caption_nll"):
            raise InputError(f"attack cell {cell.label()!r}: {self.model_name(model)!r} has no differentiable caption "
                             "likelihood (caption_nll); white-box captioning attacks run on toycap models")
        caps = decode_captions(data.clean["captions"][index])
        return CaptionNLL(), {"captions": caps}


__all__ = ["CaptionNLL", "CaptioningTask", "HFCaptioner", "PROMPTS", "decode_captions", "load_captioner"]
