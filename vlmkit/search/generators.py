"""Text-to-image generators ``G`` for the language-induced adversarial search.

The search (Zhu et al., "Natural Language Induced Adversarial Images", ACM Multimedia 2024) scores a
prompt by the images ``G`` draws from it. ``G`` is pluggable: :class:`ToyWorldGenerator` (the toy world's
renderer, :func:`vlmkit.toyworld.render`, which also knows its ground truth) or
:class:`DiffusersGenerator` (a ``diffusers`` text-to-image pipeline, imported lazily; optional).
Anything that satisfies :class:`TextToImage` works.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Protocol

import torch

from vlmkit.errors import InputError


class TextToImage(Protocol):
    """``G``: ``(prompt, n, seed) -> (n, 3, H, W)`` float images in [0, 1], deterministic given ``seed``.

    A generator that knows its ground truth may also define ``depicts(prompt, cls) -> bool`` (whether
    ``G(prompt)`` shows the true class); prompts for which it is False are never counted as adversarial.
    """

    name: str

    def __call__(self, prompt: str, n: int, seed: int) -> torch.Tensor: ...


class ToyWorldGenerator:
    """The toy world's renderer as ``G`` (:func:`vlmkit.toyworld.render`): image ``i`` uses seed ``seed + i``.

    Args:
        size: Image side in pixels.
    """

    name = "toyworld"

    def __init__(self, size: int = 64) -> None:
        self.size = int(size)

    def depicts(self, prompt: str, cls: str) -> bool:
        """Ground truth: the parsed prompt draws exactly one object and it has the class's shape (or
        colour, for colour classes) — e.g. ``'a "heart" "circle" star'`` fails, since the grammar reads
        the second quoted word as a second shape."""
        from vlmkit.toyworld import COLOR_NAMES, SHAPES, parse_prompt

        objs = parse_prompt(prompt).objects
        if cls in SHAPES:
            return [o["shape"] for o in objs] == [cls]
        if cls in COLOR_NAMES:
            return len(objs) == 1 and objs[0].get("color", cls) == cls
        return True

    def __call__(self, prompt: str, n: int, seed: int) -> torch.Tensor:
        from vlmkit.toyworld import render

        try:
            return torch.stack([render(prompt, seed=seed + i, size=self.size).to_tensor() for i in range(n)])
        except ValueError as e:
            raise InputError(f"the toy world cannot render prompt {prompt!r}: {e}") from e


class DiffusersGenerator:
    """A ``diffusers`` text-to-image pipeline as ``G`` (optional extra: ``pip install diffusers``).

    Args:
        pipeline: A loaded pipeline (anything called as ``pipe(prompt, num_images_per_prompt=n,
            generator=..., output_type="pt", ...)`` returning ``.images`` ``(n, 3, H, W)`` in [0, 1]), or
            a hub id / local folder loaded with ``diffusers.AutoPipelineForText2Image`` (offline-aware).
        steps: Denoising steps.
        guidance_scale: Classifier-free guidance scale.
        size: Output side (``height = width``), or None for the pipeline's default.
        device: Where the pipeline runs ("auto", "cpu", "cuda").
        dtype: Pipeline dtype when loading by id (e.g. "fp16").
        name: Name in result tables (default: the id or the pipeline's class).
    """

    def __init__(self, pipeline: Any, *, steps: int = 25, guidance_scale: float = 7.5, size: int | None = None,
                 device: str = "auto", dtype: str | torch.dtype | None = None, name: str | None = None) -> None:
        from vlmkit.runtime import resolve_device, resolve_dtype

        self.device = resolve_device(device)
        if isinstance(pipeline, (str, os.PathLike)):
            pipeline_id = str(pipeline)
            try:
                import diffusers
            except ImportError as e:
                raise ImportError("DiffusersGenerator needs the optional 'diffusers' package: pip install diffusers "
                                  "(or pass a loaded pipeline object)") from e
            from vlmkit.models import hub

            kw = {"local_files_only": True} if hub.offline() and not hub.looks_like_path(pipeline_id) else {}
            pipe = hub.fetch_or_explain(
                f"diffusers pipeline {pipeline_id!r}",
                lambda: diffusers.AutoPipelineForText2Image.from_pretrained(
                    pipeline_id, torch_dtype=resolve_dtype(dtype, self.device), **kw),
                local_hint="a local folder saved with pipeline.save_pretrained(folder)",
                cached=(hub.looks_like_path(pipeline_id)
                        or hub.cached_hub_file(pipeline_id, "model_index.json") is not None))
            self.pipeline = pipe.to(self.device)
            self.name = name or pipeline_id
        else:
            self.pipeline = pipeline
            self.name = name or type(pipeline).__name__
        self.steps, self.guidance_scale, self.size = int(steps), float(guidance_scale), size

    def __call__(self, prompt: str, n: int, seed: int) -> torch.Tensor:
        g = torch.Generator(device=self.device).manual_seed(int(seed))
        kw: dict[str, Any] = {"num_images_per_prompt": n, "num_inference_steps": self.steps,
                              "guidance_scale": self.guidance_scale, "generator": g, "output_type": "pt"}
        if self.size:
            kw.update(height=self.size, width=self.size)
        images = self.pipeline(prompt, **kw).images
        images = images if isinstance(images, torch.Tensor) else torch.stack(list(images))
        return images.float().clamp(0, 1).cpu()


GENERATORS: dict[str, Callable[..., TextToImage]] = {"toyworld": ToyWorldGenerator, "diffusers": DiffusersGenerator}


__all__ = ["DiffusersGenerator", "GENERATORS", "TextToImage", "ToyWorldGenerator"]
