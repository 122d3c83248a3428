"""Held-out quality metrics of a CLIP-like model on the toy world.

Every metric takes two plain callables, so any model fits:

* ``encode_image(x) -> (B, D)`` with ``x`` a float ``(B, 3, H, W)`` tensor in [0, 1] (the callable
  resizes/normalises as its model needs);
* ``encode_text(texts: list[str]) -> (T, D)``.

Embeddings are L2-normalised here. :func:`open_clip_encoders` builds the two callables for a
checkpoint folder through open_clip's ``local-dir:`` path.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..metrics.retrieval import retrieval_metrics
from .grammar import READING_TEMPLATE, ZERO_SHOT_TEMPLATE, describe
from .world import (
    SHAPES,
    WORDS,
    Scene,
    WorldConfig,
    render_spec,
    render_typographic,
    sample_spec,
    scene_rng,
    single_object_spec,
)

ImageEncoder = Callable[[torch.Tensor], torch.Tensor]
TextEncoder = Callable[[list[str]], torch.Tensor]

#: Seed of the held-out evaluation scenes; training refuses it.
EVAL_SEED: int = 999_983
#: Default seed of exported data sets; training refuses it too.
EXPORT_SEED: int = 424_242
RESERVED_SEEDS: frozenset[int] = frozenset({EVAL_SEED, EXPORT_SEED})

# sub-streams of the evaluation seed, one per benchmark
_STREAM_RETRIEVAL, _STREAM_ZERO_SHOT, _STREAM_READING, _STREAM_TYPO = 0, 2, 3, 4


def stack_images(scenes: Sequence[Scene]) -> torch.Tensor:
    """Scenes as a float ``(B, 3, H, W)`` tensor in [0, 1]."""
    arr = np.stack([s.image for s in scenes])  # (B, H, W, 3) uint8
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0)


@torch.no_grad()
def embed_images(encode_image: ImageEncoder, images: torch.Tensor, batch_size: int = 250) -> torch.Tensor:
    """L2-normalised image embeddings, ``(N, D)`` float32, computed in batches."""
    out = [encode_image(images[i : i + batch_size]).float() for i in range(0, len(images), batch_size)]
    return F.normalize(torch.cat(out), dim=-1)


@torch.no_grad()
def embed_texts(encode_text: TextEncoder, texts: Sequence[str], batch_size: int = 500) -> torch.Tensor:
    """L2-normalised text embeddings, ``(T, D)`` float32, computed in batches."""
    texts = list(texts)
    out = [encode_text(texts[i : i + batch_size]).float() for i in range(0, len(texts), batch_size)]
    return F.normalize(torch.cat(out), dim=-1)


def retrieval_scenes(n: int, seed: int = EVAL_SEED, size: int = 64) -> tuple[list[Scene], list[str]]:
    """``n`` held-out scenes of the training mixture and their complete captions (:func:`describe`)."""
    scenes = [render_spec(sample_spec(scene_rng(seed, i, _STREAM_RETRIEVAL)), size) for i in range(n)]
    return scenes, [describe(s) for s in scenes]


def retrieval_recall(
    encode_image: ImageEncoder,
    encode_text: TextEncoder,
    n: int = 1000,
    seed: int = EVAL_SEED,
    size: int = 64,
    ks: tuple[int, ...] = (1, 5),
) -> dict[str, float]:
    """Image→text and text→image Recall@k of ``n`` images against their ``n`` captions.

    Returns:
        ``{"i2t_R@1": ..., "i2t_R@5": ..., "t2i_R@1": ..., ...}`` as fractions.
    """
    scenes, captions = retrieval_scenes(n, seed, size)
    img = embed_images(encode_image, stack_images(scenes))  # (N, D)
    txt = embed_texts(encode_text, captions)  # (N, D)
    m = retrieval_metrics(img, txt, torch.arange(n), ks=ks)  # the kit's one Recall@K definition
    return {f"{d}_R@{k}": m[f"{d}_R@{k}"] for d in ("i2t", "t2i") for k in ks}


def zero_shot_classify(
    encode_image: ImageEncoder,
    encode_text: TextEncoder,
    images: torch.Tensor,
    classnames: Sequence[str],
    template: str = ZERO_SHOT_TEMPLATE,
) -> torch.Tensor:
    """Index of the best-matching prompt ``template.format(c)`` per image, ``(B,)`` long."""
    txt = embed_texts(encode_text, [template.format(c) for c in classnames])  # (C, D)
    img = embed_images(encode_image, images)  # (B, D)
    return (img @ txt.T).argmax(1)


def zero_shot_shape_accuracy(
    encode_image: ImageEncoder, encode_text: TextEncoder, n: int = 1000, seed: int = EVAL_SEED, size: int = 64
) -> dict[str, float]:
    """Zero-shot shape accuracy with ``"a photo of a {shape}"`` on ``n`` single-object scenes (no sign)."""
    scenes = [render_spec(single_object_spec(scene_rng(seed, i, _STREAM_ZERO_SHOT)), size) for i in range(n)]
    labels = torch.tensor([SHAPES.index(s.objects[0].shape) for s in scenes])
    pred = zero_shot_classify(encode_image, encode_text, stack_images(scenes), SHAPES)
    return {"zero_shot_shape_acc": float((pred == labels).float().mean())}


def reading_accuracy(
    encode_image: ImageEncoder, encode_text: TextEncoder, n: int = 1000, seed: int = EVAL_SEED, size: int = 64
) -> dict[str, float]:
    """Share of labelled scenes where ``a sign that says "{w}"`` picks the written word among :data:`WORDS`.

    The scenes are held-out samples of the world with a written sign (80% with objects, 20% sign only).
    """
    cfg = WorldConfig(p_sign=0.8, p_blank=0.0, p_sign_only=0.2)
    scenes = [render_spec(sample_spec(scene_rng(seed, i, _STREAM_READING), cfg), size) for i in range(n)]
    labels = torch.tensor([WORDS.index(s.sign.word) for s in scenes])
    pred = zero_shot_classify(encode_image, encode_text, stack_images(scenes), WORDS, READING_TEMPLATE)
    return {"reading_acc": float((pred == labels).float().mean())}


def typographic_attack(
    encode_image: ImageEncoder, encode_text: TextEncoder, n: int = 1000, seed: int = EVAL_SEED, size: int = 64
) -> dict[str, float]:
    """How often a misleading written shape word moves zero-shot shape predictions to itself.

    For ``n`` large single objects, each with a misleading shape word on a label covering part of it
    (``scam``), the same label blank (``noscam``) and the word in an unseen font on a yellow post-it
    (``synthscam``), report the share of predictions equal to the attack word and the accuracy.

    Returns:
        ``attack_share_{clean,scam,noscam,synthscam}`` and ``acc_{clean,scam,noscam,synthscam}``.
    """
    sets: dict[str, list[Scene]] = {"clean": [], "scam": [], "noscam": [], "synthscam": []}
    words, labels = [], []
    for i in range(n):
        scam, blank, synth, word = render_typographic(scene_rng(seed, i, _STREAM_TYPO), size)
        sets["clean"].append(render_spec(replace(scam.spec, sign=None), size))
        sets["scam"].append(scam)
        sets["noscam"].append(blank)
        sets["synthscam"].append(synth)
        words.append(SHAPES.index(word))
        labels.append(SHAPES.index(scam.objects[0].shape))
    words_t, labels_t = torch.tensor(words), torch.tensor(labels)
    out: dict[str, float] = {}
    for name, scenes in sets.items():
        pred = zero_shot_classify(encode_image, encode_text, stack_images(scenes), SHAPES)
        out[f"attack_share_{name}"] = float((pred == words_t).float().mean())
        out[f"acc_{name}"] = float((pred == labels_t).float().mean())
    return out


def evaluate(
    encode_image: ImageEncoder,
    encode_text: TextEncoder,
    n: int = 1000,
    seed: int = EVAL_SEED,
    size: int = 64,
) -> dict[str, float]:
    """All held-out metrics (retrieval, zero-shot shape, reading, typographic attack) on ``n`` scenes each."""
    out: dict[str, float] = {}
    out.update(retrieval_recall(encode_image, encode_text, n, seed, size))
    out.update(zero_shot_shape_accuracy(encode_image, encode_text, n, seed, size))
    out.update(reading_accuracy(encode_image, encode_text, n, seed, size))
    out.update(typographic_attack(encode_image, encode_text, n, seed, size))
    return out


#: The issue's quality bars: (metric, threshold) pairs plus the typographic ratio.
QUALITY_BARS: dict[str, float] = {
    "i2t_R@1": 0.70,
    "zero_shot_shape_acc": 0.60,
    "reading_acc": 0.80,
    "attack_share_scam": 0.25,
}


def meets_bars(metrics: dict[str, float], bars: dict[str, float] = QUALITY_BARS, ratio: float = 2.0) -> dict[str, bool]:
    """Which bars ``metrics`` meet (``typo_ratio``: scam share ≥ ``ratio`` × noscam share)."""
    ok = {k: metrics[k] >= v for k, v in bars.items()}
    ok["typo_ratio"] = metrics["attack_share_scam"] >= ratio * metrics["attack_share_noscam"]
    return ok


def open_clip_encoders(
    checkpoint: str | Path, device: str | torch.device = "cpu"
) -> tuple[ImageEncoder, TextEncoder, torch.nn.Module]:
    """Load a checkpoint folder with open_clip's ``local-dir:`` path and wrap it as two encoders.

    The image encoder takes float [0, 1] images at any size, resizes them to the model's size with
    the folder's interpolation and normalises them with its mean/std.

    Returns:
        ``(encode_image, encode_text, model)``.
    """
    import open_clip

    path = Path(checkpoint).resolve()
    model, _, _ = open_clip.create_model_and_transforms("local-dir:" + str(path), device=device)
    tokenizer = open_clip.get_tokenizer("local-dir:" + str(path))
    model.eval()
    pre = json.loads((path / "open_clip_config.json").read_text())["preprocess_cfg"]
    mean = torch.tensor(pre["mean"], device=device).view(1, 3, 1, 1)
    std = torch.tensor(pre["std"], device=device).view(1, 3, 1, 1)
    side = pre["size"] if isinstance(pre["size"], int) else pre["size"][0]
    mode = pre.get("interpolation", "bicubic")

    @torch.no_grad()
    def encode_image(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device)  # (B, 3, H, W) in [0, 1]
        if x.shape[-2:] != (side, side):
            x = F.interpolate(x, size=(side, side), mode=mode, align_corners=False).clamp_(0, 1)
        return model.encode_image((x - mean) / std)

    @torch.no_grad()
    def encode_text(texts: list[str]) -> torch.Tensor:
        return model.encode_text(tokenizer(texts).to(device))

    return encode_image, encode_text, model
