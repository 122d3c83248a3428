"""Zero-shot class embeddings from a prompt ensemble (Radford et al. 2021, "Learning Transferable Visual
Models From Natural Language Supervision", §3.1.4).

A class embedding is the renormalised mean of the L2-normalised text embeddings of the class name in
every template (the 80 OpenAI ImageNet templates via ``vlmkit.data.openai_templates``, or one
``"a photo of a {}."``). The result is the classifier of zero-shot evaluation, of the zero-shot attack
objectives and of TeCoA fine-tuning: logits are ``vlm.similarity(image_emb, classifier)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from vlmkit.errors import InputError

#: A prompt template: a format string with one ``{}`` or a callable ``classname -> prompt``.
Template = str | Callable[[str], str]


def fill_template(template: Template, classname: str) -> str:
    """The prompt of ``template`` for ``classname`` (``template.format(classname)`` or ``template(classname)``)."""
    return template(classname) if callable(template) else template.format(classname)


@torch.no_grad()
def zero_shot_classifier(vlm: Any, classnames: Sequence[str], templates: Sequence[Template] = ("a photo of a {}.",),
                         batch_size: int = 256) -> torch.Tensor:
    """Class embeddings ``(C, D)``, L2-normalised: per class, the mean over ``templates`` of the
    normalised text embeddings of its prompts, renormalised.

    Computed without gradients; the result is an ordinary tensor (not an inference-mode one), so it
    can enter autograd graphs as a constant (attack objectives, TeCoA's loss).

    Args:
        vlm: A :class:`vlmkit.VLM` (anything with ``encode_text(texts, batch_size=...)`` returning
            normalised embeddings).
        classnames: Class names in label order.
        templates: Format strings with one ``{}`` or callables ``classname -> prompt``.
        batch_size: Prompts per text forward pass.

    Returns:
        ``(C, D)`` float32 class embeddings on the model's device, row ``c`` for ``classnames[c]``.

    Raises:
        InputError: No class names or no templates.
    """
    if not classnames:
        raise InputError("classnames is empty: need at least one class")
    if not templates:
        raise InputError("templates is empty: need at least one prompt template")
    prompts = [fill_template(t, c) for c in classnames for t in templates]  # class-major: (C * K,)
    emb = vlm.encode_text(prompts, batch_size=batch_size)  # (C * K, D), normalised
    emb = emb.view(len(classnames), len(templates), -1).mean(dim=1)  # (C, D)
    return F.normalize(emb, dim=-1)


__all__ = ["Template", "fill_template", "zero_shot_classifier"]
