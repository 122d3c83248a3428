"""Relevance maps for ViT image towers: Chefer et al. gradient-weighted attention rollout and Grad-CAM.

Both explain the model's logit for a text target (:mod:`vlmkit.interpret.targets`) and return heat
maps ``(B, H, W)`` on the frame of the images passed in (the patch grid upsampled bilinearly through
the model's own resize/crop, :func:`vlmkit.interpret.geometry.grid_to_image`), min-max normalised
to [0, 1] per image.

**Chefer relevance** (Chefer, Gur & Wolf 2021, "Generic Attention-model Explainability for
Interpreting Bi-Modal and Encoder-Decoder Transformers", ICCV; eqs. 5–6). For every block ``b``
with attention probabilities ``A_b`` ``(B, heads, N, N)`` and their gradient ``∇A_b`` w.r.t. the
score::

    Ā_b = E_h[(∇A_b ⊙ A_b)^+]            # (B, N, N)
    R  ← R + Ā_b · R,   R_0 = I           # (B, N, N), from the first block to the last

The map is the row of ``R`` of the token that becomes the image embedding, over the patch columns.
Which row depends on the tower's pooling (:func:`readout`): the class token for CLS-pooled towers
(OpenAI/open_clip ``pool_type='tok'``, transformers CLIP, timm ``global_pool='token'``); the mean
over the *patch* rows for average-pooled towers (open_clip ``pool_type='avg'``, timm ``'avg'``) since
the embedding is their mean; and the mean over *all* token rows for attention-pooled towers without
a class token (SigLIP's MAP head, open_clip ``attn_pool``) — the pooling head attends over every
token, and with no class token the rows' average is the natural stand-in (documented choice; the
paper's ViT experiments use the CLS row). ``R_0 = I`` adds a constant to every patch of a mean
readout, which the normalisation removes.

**Grad-CAM** (Selvaraju et al. 2017, ICCV) on the last block's patch tokens, as in pytorch-grad-cam's
ViT recipe: tokens ``(B, N, C)`` → feature map ``(B, C, gh, gw)``; weights = spatial mean of the
gradient; ``cam = ReLU(Σ_c w_c · F_c)``. The tokens are taken where the last block reads them — the
output of its first LayerNorm (open_clip ``ln_1``, transformers ``layer_norm1``, timm ``norm1``), the
target layer pytorch-grad-cam's ViT tutorial uses (``model.blocks[-1].norm1``). The block's *output*
patch tokens are useless for CLS-pooled towers: only the class token of the last block reaches the
embedding, so their gradient is exactly zero. CNN towers (no such norm) use the stage output.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from vlmkit.errors import InputError
from vlmkit.interpret.geometry import grid_to_image, minmax_normalise
from vlmkit.interpret.targets import Target, resolve_text_targets, target_scores

Readout = Literal["cls", "patch_mean", "token_mean"]


def readout(vlm: Any) -> Readout:
    """Which token rows the image embedding is read from (see the module docstring).

    Returns:
        ``"cls"``, ``"patch_mean"`` or ``"token_mean"``.
    """
    P = vlm.num_prefix_tokens
    family = getattr(vlm, "family", "")
    if family == "hf":
        return "cls" if getattr(vlm, "model_type", "clip") == "clip" else "token_mean"
    visual = getattr(getattr(vlm, "model", None), "visual", None)
    if visual is not None and hasattr(visual, "transformer"):  # open_clip VisionTransformer
        if getattr(visual, "attn_pool", None) is not None:
            return "token_mean"
        return "patch_mean" if getattr(visual, "pool_type", "tok") == "avg" else "cls"
    trunk = getattr(visual, "trunk", None)
    if trunk is not None:  # timm ViT inside open_clip
        pool = getattr(trunk, "global_pool", "token")
        if pool == "token" and P > 0:
            return "cls"
        if pool == "avg":
            return "patch_mean"
        return "token_mean"
    return "cls" if P > 0 else "token_mean"


def _readout_weights(kind: Readout, N: int, P: int, device: torch.device) -> torch.Tensor:
    w = torch.zeros(N, device=device)  # (N,) weights over the rows of R
    if kind == "cls":
        w[0] = 1.0
    elif kind == "patch_mean":
        w[P:] = 1.0 / (N - P)
    else:
        w[:] = 1.0 / N
    return w


def _images_for_grad(vlm: Any, images: torch.Tensor) -> torch.Tensor:
    vlm.validate_images(images, "images")
    return images.detach().to(vlm.device).float().requires_grad_(True)


def _chunks(n: int, batch_size: int, desc: str, progress: bool) -> Sequence[slice]:
    if batch_size <= 0:
        raise InputError(f"batch_size must be positive, got {batch_size}")
    starts = range(0, n, batch_size)
    it = tqdm(starts, desc=desc, leave=False, disable=not progress or len(starts) <= 1)
    return [slice(s, min(n, s + batch_size)) for s in it]


def _split_target(target: Target, sl: slice, n: int) -> Target:
    """The part of a per-image target that belongs to images ``sl``."""
    if isinstance(target, str) or isinstance(target, int):
        return target
    if isinstance(target, torch.Tensor):
        if target.ndim == 0 or (target.is_floating_point() and target.ndim == 1) or target.shape[0] != n:
            return target
        return target[sl]
    if isinstance(target, Sequence) and len(target) == n:
        return list(target)[sl]
    return target


def chefer_grid(vlm: Any, images: torch.Tensor, target: Target, *, classifier: torch.Tensor | None = None,
                start_layer: int = 0, readout_kind: Readout | None = None) -> torch.Tensor:
    """Chefer relevance on the patch grid for one batch ``(B, gh, gw)`` (unnormalised).

    Args:
        vlm: A ViT-tower :class:`vlmkit.VLM`.
        images: Float images in [0, 1] ``(B, 3, H, W)``.
        target: See :mod:`vlmkit.interpret.targets`.
        classifier: Class embeddings for class-index targets.
        start_layer: First block whose attention is propagated (earlier blocks are skipped).
        readout_kind: Override :func:`readout`.
    """
    L = vlm.num_layers
    layers = list(range(vlm.layer_index(start_layer), L))
    x = _images_for_grad(vlm, images)
    text = resolve_text_targets(vlm, target, x.shape[0], classifier)  # (B, D)
    with torch.enable_grad(), vlm.tap(record=layers) as t:
        score = target_scores(vlm, vlm.encode_image(x), text)  # (B,)
        probs = [t.probs[li] for li in layers]
        grads = torch.autograd.grad(score.sum(), probs)
    B, _, N, _ = probs[0].shape
    P = vlm.num_prefix_tokens
    R = torch.eye(N, device=x.device).expand(B, N, N).clone()  # (B, N, N)
    for A, G in zip(probs, grads):
        cam = (G * A.detach()).clamp_min(0).mean(1)  # (B, N, N)  E_h[(∇A ⊙ A)^+]
        R = R + torch.bmm(cam, R)
    w = _readout_weights(readout_kind or readout(vlm), N, P, x.device)
    rel = torch.einsum("n,bnm->bm", w, R)[:, P:]  # (B, N - P)
    return rel.reshape(B, *vlm.token_grid(N - P))


def gradcam_module(vlm: Any, layer: int = -1) -> torch.nn.Module:
    """The module whose output tokens Grad-CAM reads for block ``layer``: the block's first
    LayerNorm (its attention input) for transformer blocks, else the block itself (CNN stages)."""
    block = vlm.blocks[vlm.layer_index(layer)]
    for name in ("ln_1", "layer_norm1", "norm1"):
        mod = getattr(block, name, None)
        if isinstance(mod, torch.nn.Module):
            return mod
    return block


def gradcam_grid(vlm: Any, images: torch.Tensor, target: Target, *, classifier: torch.Tensor | None = None,
                 layer: int = -1) -> torch.Tensor:
    """Grad-CAM on the patch tokens of block ``layer`` for one batch ``(B, gh, gw)`` (unnormalised, ReLU'd)."""
    x = _images_for_grad(vlm, images)
    text = resolve_text_targets(vlm, target, x.shape[0], classifier)
    li = vlm.layer_index(layer)
    box: dict[str, torch.Tensor] = {}
    handle = gradcam_module(vlm, li).register_forward_hook(
        lambda m, i, o: box.__setitem__("out", o[0] if isinstance(o, tuple) else o))
    try:
        with torch.enable_grad():
            score = target_scores(vlm, vlm.encode_image(x), text)  # (B,)
            (grad,) = torch.autograd.grad(score.sum(), box["out"])
    finally:
        handle.remove()
    # the family's reshaping to (B, N, C) (transpose / flatten) is linear: apply it to both
    tokens, grad = vlm.tokens_from_block_output(box["out"]), vlm.tokens_from_block_output(grad)
    P = vlm.num_prefix_tokens
    feats, grad = tokens.detach()[:, P:], grad[:, P:]  # (B, n, C)
    weights = grad.mean(1, keepdim=True)  # (B, 1, C)  spatial mean of the gradient
    cam = (feats * weights).sum(-1).clamp_min(0)  # (B, n)
    return cam.reshape(cam.shape[0], *vlm.token_grid(cam.shape[1]))


def relevance_map(vlm: Any, images: torch.Tensor, target: Target, *, method: str = "chefer",
                  classifier: torch.Tensor | None = None, normalize: bool = True, batch_size: int = 32,
                  progress: bool = True, return_grid: bool = False, **kwargs: Any) -> torch.Tensor:
    """Heat maps ``(B, H, W)`` of what in each image drives its score for ``target``.

    Args:
        vlm: A :class:`vlmkit.VLM` with a ViT tower (Grad-CAM also works on CNN towers' last stage).
        images: Float images in [0, 1] ``(B, 3, H, W)`` of any size.
        target: Prompt(s), class indices (with ``classifier``) or text embeddings.
        method: ``"chefer"`` (gradient-weighted attention relevance) or ``"gradcam"``.
        classifier: Class embeddings ``(C, D)`` from a prompt ensemble, for class-index targets.
        normalize: Min-max normalise each map to [0, 1] (on the grid, and again after upsampling).
        batch_size: Images per forward/backward pass.
        progress: tqdm bar over batches.
        return_grid: Return the maps on the patch grid ``(B, gh, gw)`` instead of the image frame.
        **kwargs: ``start_layer`` (chefer) or ``layer`` (gradcam).

    Returns:
        Heat maps on the image frame ``(B, H, W)`` (CPU, float32).
    """
    if method not in ("chefer", "gradcam"):
        raise InputError(f"method={method!r}; expected 'chefer' or 'gradcam'")
    if method == "chefer":
        vlm.require_attention("chefer relevance")
    vlm.validate_images(images, "images")
    n = images.shape[0]
    fn = chefer_grid if method == "chefer" else gradcam_grid
    out = []
    for sl in _chunks(n, batch_size, f"{method} relevance", progress):
        g = fn(vlm, images[sl], _split_target(target, sl, n), classifier=classifier, **kwargs).float()
        if normalize:
            g = minmax_normalise(g)
        if not return_grid:
            g = grid_to_image(g, vlm.preprocess_cfg, tuple(images.shape[-2:]))
            if normalize:
                g = minmax_normalise(g)
        out.append(g.detach().cpu())
    return torch.cat(out)


def chefer_relevance(vlm: Any, images: torch.Tensor, target: Target, **kwargs: Any) -> torch.Tensor:
    """:func:`relevance_map` with ``method="chefer"``."""
    return relevance_map(vlm, images, target, method="chefer", **kwargs)


def grad_cam(vlm: Any, images: torch.Tensor, target: Target, **kwargs: Any) -> torch.Tensor:
    """:func:`relevance_map` with ``method="gradcam"``."""
    return relevance_map(vlm, images, target, method="gradcam", **kwargs)


def mass_in_mask(maps: torch.Tensor, masks: torch.Tensor, eps: float = 1e-12) -> dict[str, torch.Tensor]:
    """How much of each heat map falls inside a ground-truth mask, against the mask's area share.

    Args:
        maps: Non-negative heat maps ``(B, H, W)``.
        masks: Bool masks ``(B, H, W)`` on the same frame.

    Returns:
        ``{"mass": (B,), "area": (B,), "ratio": (B,)}``: the share of the map's total mass inside the
        mask, the mask's share of the image, and their ratio (1 = no better than uniform).
    """
    if maps.shape != masks.shape:
        raise InputError(f"maps {tuple(maps.shape)} and masks {tuple(masks.shape)} must have the same shape")
    m = maps.float().clamp_min(0).flatten(1)
    k = masks.float().flatten(1).to(m.device)
    mass = (m * k).sum(1) / m.sum(1).clamp_min(eps)
    area = k.mean(1)
    return {"mass": mass, "area": area, "ratio": mass / area.clamp_min(eps)}
