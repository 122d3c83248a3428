"""ImageNet class names, WordNet ids, CLIP prompt templates and the ImageNet-A/-R class subsets.

Everything is read from JSON files shipped in ``vlmkit/data/assets/`` (no open_clip import, no
network):

* ``imagenet_classnames.json``: the 1000 cleaned class names OpenAI used for CLIP zero-shot
  ImageNet (as ``open_clip.zero_shot_metadata.IMAGENET_CLASSNAMES``), in the standard class order.
* ``openai_templates.json``: OpenAI's 80 ImageNet prompt templates as ``str.format`` strings
  (``"a photo of a {}."``).
* ``imagenet_wnids.json``: the 1000 ILSVRC-2012 WordNet ids sorted, i.e. position = class index.
* ``imagenet_subsets.json``: the 200 classes of ImageNet-A (from ``thousand_k_to_200`` in
  hendrycks/natural-adv-examples ``eval.py``) and of ImageNet-R (``imagenet_r_wnids`` in
  hendrycks/imagenet-r ``eval.py``), as wnids and as indices into the 1000 classes. Both datasets
  are ImageFolders whose sorted wnid folders give labels ``0..199`` in that same order, so
  ``logits_1k[:, imagenet_r_indices()]`` are the logits for ImageNet-R labels.

All functions return fresh lists, so callers may modify them.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any


@lru_cache(maxsize=None)
def _asset(name: str) -> Any:
    text = resources.files("vlmkit.data").joinpath("assets", name).read_text(encoding="utf-8")
    return json.loads(text)


def imagenet_classnames() -> list[str]:
    """The 1000 OpenAI-cleaned ImageNet-1k class names, index = standard class index."""
    return list(_asset("imagenet_classnames.json")["classnames"])


def openai_templates() -> list[str]:
    """OpenAI's 80 CLIP ImageNet prompt templates as format strings, e.g. ``"a photo of a {}."``."""
    return list(_asset("openai_templates.json")["templates"])


def imagenet_wnids() -> list[str]:
    """The 1000 ILSVRC-2012 WordNet ids in sorted (= standard class index) order."""
    return list(_asset("imagenet_wnids.json")["wnids"])


def imagenet_a_wnids() -> list[str]:
    """The 200 WordNet ids of ImageNet-A, sorted (= ImageNet-A label order)."""
    return list(_asset("imagenet_subsets.json")["imagenet_a"]["wnids"])


def imagenet_a_indices() -> list[int]:
    """ImageNet-1k class index of each ImageNet-A label ``0..199`` (ascending)."""
    return list(_asset("imagenet_subsets.json")["imagenet_a"]["indices"])


def imagenet_r_wnids() -> list[str]:
    """The 200 WordNet ids of ImageNet-R, sorted (= ImageNet-R label order)."""
    return list(_asset("imagenet_subsets.json")["imagenet_r"]["wnids"])


def imagenet_r_indices() -> list[int]:
    """ImageNet-1k class index of each ImageNet-R label ``0..199`` (ascending)."""
    return list(_asset("imagenet_subsets.json")["imagenet_r"]["indices"])


def imagenet_subset_classnames(subset: str) -> list[str]:
    """OpenAI class names of ``subset`` (``"imagenet-a"`` or ``"imagenet-r"``) in its label order.

    Raises:
        ValueError: Unknown subset name.
    """
    key = subset.lower().replace("-", "_").replace("imagenet_", "")
    if key not in ("a", "r"):
        raise ValueError(f"unknown ImageNet subset {subset!r}; expected 'imagenet-a' or 'imagenet-r'")
    names = imagenet_classnames()
    idx = imagenet_a_indices() if key == "a" else imagenet_r_indices()
    return [names[i] for i in idx]
