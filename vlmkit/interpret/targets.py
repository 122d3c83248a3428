"""What an explanation explains: the image–text score of a prompt, or of a class of a prompt ensemble.

Relevance maps and Grad-CAM differentiate one scalar per image. vlmkit explains the model's own
logit for a text target, CLIP-style: ``s = logit_scale · cos(e_img, e_txt)`` (+ ``logit_bias`` for
SigLIP; a constant that does not change gradients). A target is given as

* a prompt (``str``) shared by the whole batch, or one prompt per image (``list[str]``);
* class indices (``int``, ``list[int]``, ``LongTensor (B,)``) together with a ``classifier`` ``(C, D)``
  from :func:`vlmkit.models.zeroshot.zero_shot_classifier` (the prompt-ensemble class embedding,
  Radford et al. 2021, §3.1.4);
* text embeddings ``(D,)`` or ``(B, D)`` (renormalised here).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Union

import torch
import torch.nn.functional as F

from vlmkit.errors import InputError

Target = Union[str, Sequence[str], int, Sequence[int], torch.Tensor]


def resolve_text_targets(vlm: Any, target: Target, batch: int, classifier: torch.Tensor | None = None) -> torch.Tensor:
    """Turn any :data:`Target` into L2-normalised text embeddings, one per image ``(B, D)``.

    Args:
        vlm: A :class:`vlmkit.VLM`.
        target: Prompt(s), class index/indices (with ``classifier``) or text embeddings.
        batch: Number of images ``B``.
        classifier: Class embeddings ``(C, D)`` for class-index targets.

    Raises:
        InputError: Lengths that do not match the batch, indices without a classifier or out of range.
    """
    dev = vlm.device
    if isinstance(target, str):
        with torch.no_grad():
            return vlm.encode_text([target]).to(dev).expand(batch, -1).clone()  # (B, D)
    if isinstance(target, torch.Tensor) and target.is_floating_point():
        t = target.detach().float().to(dev)
        if t.ndim == 1:
            t = t[None].expand(batch, -1)
        if t.ndim != 2 or t.shape[0] != batch:
            raise InputError(f"text-embedding target must be (D,) or (B={batch}, D), got {tuple(target.shape)}")
        return F.normalize(t, dim=-1)
    if isinstance(target, (int, torch.Tensor)) or (
        isinstance(target, Sequence) and len(target) > 0 and all(isinstance(t, int) for t in target)
    ):
        if classifier is None:
            raise InputError("class-index targets need classifier=(C, D) class embeddings "
                             "(vlmkit.models.zeroshot.zero_shot_classifier)")
        idx = torch.as_tensor(target, dtype=torch.long).flatten()
        if idx.numel() == 1:
            idx = idx.expand(batch)
        if idx.numel() != batch:
            raise InputError(f"got {idx.numel()} class indices for a batch of {batch} images")
        C = classifier.shape[0]
        if int(idx.min()) < 0 or int(idx.max()) >= C:
            raise InputError(f"class indices must lie in 0..{C - 1}, got {idx.tolist()}")
        return F.normalize(classifier.detach().float().to(dev)[idx.to(dev)], dim=-1)  # (B, D)
    if isinstance(target, Sequence) and all(isinstance(t, str) for t in target):
        target = list(target)
        if len(target) != batch:
            raise InputError(f"got {len(target)} prompts for a batch of {batch} images; pass one prompt per image "
                             "or a single string for all")
        with torch.no_grad():
            return vlm.encode_text(target).to(dev)  # (B, D)
    raise InputError(f"target must be a prompt, prompts, class indices or text embeddings, got {type(target).__name__}")


def target_scores(vlm: Any, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
    """The model's logit of each image for its own text target ``(B,)``.

    Args:
        vlm: A :class:`vlmkit.VLM` (for ``logit_scale`` / ``logit_bias``).
        image_emb: L2-normalised image embeddings ``(B, D)``.
        text_emb: L2-normalised text embeddings ``(B, D)``.
    """
    s = vlm.logit_scale * (image_emb * text_emb.to(image_emb.dtype)).sum(-1)  # (B,)
    return s + vlm.logit_bias if vlm.logit_bias is not None else s
