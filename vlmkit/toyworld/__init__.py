"""vlmkit's model organism: a toy world with known ground truth and small CLIP models trained on it.

What it is for
--------------
No pretrained CLIP weights can be fetched where vlmkit is developed and tested, yet its perturbation
experiments need a model that (a) aligns images with captions, (b) classifies zero-shot from
prompts, (c) reads text in images and (d) is fooled by typographic attacks, plus data whose every
pixel's meaning is known. The toy world gives all of that offline and in seconds:

* a procedural renderer (:func:`sample_scene`, :func:`render_spec`) of 64×64 scenes with 1–3 objects
  (8 shapes, 8 colours, 2 sizes, 5 positions) on flat/gradient/stripes/noise/blotches backgrounds,
  and in some scenes a label with a written word; ground truth per object (attributes, bbox, mask,
  visible mask) and for the word (text, label box, word box, glyph mask);
* a caption grammar (:mod:`.grammar`) that imitates web alt-text, including transcriptions of the
  written word and scenes where the writing *is* the subject — the mechanism that teaches real CLIP
  to read and makes typographic attacks work on it;
* :func:`render` — the renderer as a text-to-image generator for prompts of the grammar;
* exports in the data layer's layouts (:mod:`.export`): COCO-captions retrieval, classification,
  SCAM-style typographic sets;
* two shipped open_clip checkpoints trained by :func:`train` (``rn``: ModifiedResNet tower,
  ``vit``: ViT tower) in open_clip's ``local-dir`` format (:func:`checkpoint_dir`);
* held-out metrics (:mod:`.evaluate`) that take any ``encode_image``/``encode_text`` callables.

What it cannot stand in for
---------------------------
The organism has the *mechanisms* of CLIP (contrastive alignment, prompt-based zero-shot, reading,
typographic vulnerability) but not its *scale*: a few hundred thousand synthetic scenes, a closed
vocabulary of ~40 words, 64-pixel images, flat colours and no natural-image statistics (texture,
lighting, clutter, long-tailed concepts). Absolute numbers (accuracies, attack success, robustness
curves) say nothing about real CLIP models; use the organism to check that a pipeline measures what
it claims (known ground truth, known failure modes) and to compare conditions, then confirm findings
on real checkpoints. Its texts are out-of-distribution beyond the grammar, and its fp16 weights are
tiny (ResNet width 16, 4-layer 128-wide transformers).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import WeightsNotFoundError, did_you_mean
from .evaluate import EVAL_SEED, EXPORT_SEED, evaluate, open_clip_encoders
from .export import export_classification, export_retrieval, export_typographic
from .generate import render
from .grammar import describe, parse_prompt, sample_caption
from .train import TrainConfig, TrainResult, train  # the function: shadows the submodule attribute
from .world import (
    BACKGROUNDS,
    COLOR_NAMES,
    FACTORS,
    POSITION_NAMES,
    SHAPES,
    SIZE_NAMES,
    WORDS,
    ObjectGT,
    Scene,
    SceneSpec,
    SignGT,
    WorldConfig,
    factor_embeddings,
    render_spec,
    sample_scene,
    sample_spec,
    scene_rng,
)

CHECKPOINTS_ROOT: Path = Path(__file__).resolve().parent / "checkpoints"
_REQUIRED = ("open_clip_config.json", "open_clip_model.safetensors")


def list_checkpoints() -> list[str]:
    """Names of the shipped checkpoints (folders holding an open_clip config and weights)."""
    if not CHECKPOINTS_ROOT.is_dir():
        return []
    return sorted(p.name for p in CHECKPOINTS_ROOT.iterdir() if p.is_dir() and all((p / f).is_file() for f in _REQUIRED))


def checkpoint_dir(name: str) -> Path:
    """Folder of the shipped checkpoint ``name`` (open_clip ``local-dir`` layout).

    Load it with ``open_clip.create_model_and_transforms("local-dir:" + str(checkpoint_dir("vit")))``.

    Raises:
        WeightsNotFoundError: ``name`` is not a shipped checkpoint (the message lists them).
    """
    names = list_checkpoints()
    if name not in names:
        raise WeightsNotFoundError(
            f"no toy checkpoint named {name!r}; shipped: {', '.join(names) or 'none'}.{did_you_mean(name, names)}"
        )
    return CHECKPOINTS_ROOT / name


__all__ = [
    "BACKGROUNDS", "CHECKPOINTS_ROOT", "COLOR_NAMES", "EVAL_SEED", "EXPORT_SEED", "FACTORS", "ObjectGT",
    "POSITION_NAMES", "Scene", "SceneSpec", "SHAPES", "SignGT", "SIZE_NAMES", "WORDS", "WorldConfig",
    "checkpoint_dir", "describe", "evaluate", "export_classification", "export_retrieval", "export_typographic",
    "factor_embeddings", "list_checkpoints", "open_clip_encoders", "parse_prompt", "render", "render_spec",
    "sample_caption", "sample_scene", "sample_spec", "scene_rng", "train", "TrainConfig", "TrainResult",
]
