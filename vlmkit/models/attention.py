"""Per-head access to the self-attention of ViT image towers, for every model family.

One mechanism serves three features: reading attention maps (``VLM.attention``), masking heads
(``VLM.mask_heads``) and gradient-weighted relevance (which needs the attention probabilities with
their autograd graph). At load time each vision attention module gets a thin wrapper around its
``forward``. While nothing is recorded or masked the wrapper calls the original forward untouched
(fused kernels, bit-identical outputs). Inside a :class:`AttentionTap` the wrapper runs an explicit
implementation of the same attention that exposes the probabilities ``softmax(q k^T / sqrt(d))``
``# (B, heads, N, N)`` and zeroes the outputs of masked heads before the output projection (head
ablation as in Michel et al., 2019, "Are Sixteen Heads Really Better than One?").

Supported attention modules (the explicit paths are checked against the originals in tests):

* ``torch.nn.MultiheadAttention`` (open_clip ``VisionTransformer`` blocks),
* ``timm.layers.Attention`` (open_clip's timm towers, e.g. SigLIP ``ViT-B-16-SigLIP``),
* transformers ``CLIPAttention`` / ``SiglipAttention`` (and look-alikes with ``q_proj``/``k_proj``/
  ``v_proj``/``out_proj``).
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlmkit.errors import InputError


@dataclass
class AttentionTap:
    """What the wrapped attention modules record and mask during a forward pass.

    Attributes:
        record: Layer indices whose attention probabilities are stored in ``probs``.
        head_mask: ``{layer: [head, ...]}``: outputs of these heads are zeroed.
        retain_grad: Call ``retain_grad()`` on recorded probabilities (for relevance maps).
        probs: Filled during the forward: ``{layer: (B, heads, N, N)}``.
    """

    record: set[int] = field(default_factory=set)
    head_mask: dict[int, list[int]] = field(default_factory=dict)
    retain_grad: bool = False
    probs: dict[int, torch.Tensor] = field(default_factory=dict)

    def active_for(self, layer: int) -> bool:
        return layer in self.record or bool(self.head_mask.get(layer))


def _finish(
    tap: AttentionTap, layer: int, probs: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """Record ``probs`` and apply the head mask; returns per-head outputs ``# (B, h, N, d)``."""
    if layer in tap.record:
        if tap.retain_grad and probs.requires_grad:
            probs.retain_grad()
        tap.probs[layer] = probs
    out = probs @ v  # (B, h, N, d)
    heads = tap.head_mask.get(layer)
    if heads:
        keep = torch.ones(out.shape[1], device=out.device, dtype=out.dtype)
        keep[list(heads)] = 0
        out = out * keep.view(1, -1, 1, 1)
    return out


def _softmax_scores(q: torch.Tensor, k: torch.Tensor, scale: float, mask: torch.Tensor | None) -> torch.Tensor:
    scores = (q * scale) @ k.transpose(-2, -1)  # (B, h, N, N)
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(mask, float("-inf"))
        else:
            scores = scores + mask
    return scores.softmax(dim=-1)


def _mha_explicit(mod: nn.MultiheadAttention, tap: AttentionTap, layer: int, query: torch.Tensor,
                  key: torch.Tensor, value: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
    if not (query is key and key is value) and not (torch.equal(query, key) and torch.equal(key, value)):
        raise InputError("attention taps support self-attention only (query, key and value must be the same tensor)")
    x = query if mod.batch_first else query.transpose(0, 1)  # (B, N, C)
    B, N, C = x.shape
    h = mod.num_heads
    d = C // h
    qkv = F.linear(x, mod.in_proj_weight, mod.in_proj_bias)  # (B, N, 3C)
    q, k, v = qkv.view(B, N, 3, h, d).permute(2, 0, 3, 1, 4)  # each (B, h, N, d)
    probs = _softmax_scores(q, k, d**-0.5, attn_mask)
    out = _finish(tap, layer, probs, v).transpose(1, 2).reshape(B, N, C)  # (B, N, C)
    out = mod.out_proj(out)
    return out if mod.batch_first else out.transpose(0, 1)


def _timm_explicit(mod: nn.Module, tap: AttentionTap, layer: int, x: torch.Tensor,
                   attn_mask: torch.Tensor | None) -> torch.Tensor:
    B, N, _ = x.shape
    h, d = mod.num_heads, mod.head_dim
    gate = mod.gate(x).sigmoid() if getattr(mod, "gate", None) is not None else None
    q, k, v = mod.qkv(x).reshape(B, N, 3, h, d).permute(2, 0, 3, 1, 4).unbind(0)  # (B, h, N, d)
    q, k = mod.q_norm(q), mod.k_norm(k)
    probs = _softmax_scores(q, k, mod.scale, attn_mask)
    out = _finish(tap, layer, probs, v).transpose(1, 2).reshape(B, N, h * d)
    out = mod.norm(out) if hasattr(mod, "norm") else out
    if gate is not None:
        out = out * gate
    return mod.proj(out)


def _hf_explicit(mod: nn.Module, tap: AttentionTap, layer: int, hidden_states: torch.Tensor,
                 attention_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    B, N, C = hidden_states.shape
    h, d = mod.num_heads, mod.head_dim

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(B, N, h, d).transpose(1, 2)  # (B, h, N, d)

    q, k, v = split(mod.q_proj(hidden_states)), split(mod.k_proj(hidden_states)), split(mod.v_proj(hidden_states))
    probs = _softmax_scores(q, k, mod.scale, attention_mask)
    out = _finish(tap, layer, probs, v).transpose(1, 2).reshape(B, N, h * d)
    return mod.out_proj(out), probs


def attention_kind(mod: nn.Module) -> str | None:
    """Which explicit implementation fits ``mod`` ("mha", "timm", "hf"), or None."""
    if isinstance(mod, nn.MultiheadAttention):
        return "mha"
    if all(hasattr(mod, a) for a in ("qkv", "num_heads", "head_dim", "scale", "proj", "q_norm", "k_norm")):
        return "timm"
    if all(hasattr(mod, a) for a in ("q_proj", "k_proj", "v_proj", "out_proj", "num_heads", "head_dim", "scale")):
        return "hf"
    return None


def num_heads(mod: nn.Module) -> int:
    """Number of heads of a supported attention module."""
    return int(mod.num_heads)


def install_taps(modules: Iterable[nn.Module], get_tap: Callable[[], AttentionTap | None]) -> list[nn.Module]:
    """Wrap each attention module's ``forward`` so an active :class:`AttentionTap` can see inside it.

    Args:
        modules: The vision tower's attention modules, in layer order.
        get_tap: Returns the tap currently active on the owning model, or None.

    Returns:
        The wrapped modules (layer ``i`` is element ``i``).

    Raises:
        InputError: A module type without an explicit implementation.
    """
    wrapped = []
    for layer, mod in enumerate(modules):
        kind = attention_kind(mod)
        if kind is None:
            raise InputError(
                f"attention module {type(mod).__name__} of layer {layer} is not supported for attention maps / "
                "head masking; supported: nn.MultiheadAttention, timm Attention, transformers CLIP/SigLIP attention"
            )
        if getattr(mod, "_vlmkit_tapped", False):
            wrapped.append(mod)
            continue
        # the class's forward, called on ``self``: a deep copy of the model (e.g. a frozen teacher for
        # robust fine-tuning) then runs on its own weights, not on the original module's
        original = type(mod).forward

        def forward(self: nn.Module, *args: Any, __orig: Callable = original, __layer: int = layer,
                    __kind: str = kind, **kwargs: Any) -> Any:
            tap = get_tap()
            if tap is None or not tap.active_for(__layer):
                return __orig(self, *args, **kwargs)
            if __kind == "mha":
                q = args[0] if args else kwargs["query"]
                k = args[1] if len(args) > 1 else kwargs.get("key", q)
                v = args[2] if len(args) > 2 else kwargs.get("value", q)
                out = _mha_explicit(self, tap, __layer, q, k, v, kwargs.get("attn_mask"))
                return out, None
            if __kind == "timm":
                x = args[0] if args else kwargs["x"]
                mask = args[1] if len(args) > 1 else kwargs.get("attn_mask")
                return _timm_explicit(self, tap, __layer, x, mask)
            hs = args[0] if args else kwargs["hidden_states"]
            mask = args[1] if len(args) > 1 else kwargs.get("attention_mask")
            return _hf_explicit(self, tap, __layer, hs, mask)

        mod.forward = types.MethodType(forward, mod)
        mod._vlmkit_tapped = True
        wrapped.append(mod)
    return wrapped


def validate_head_mask(head_mask: Mapping[int, Iterable[int]], n_layers: int, n_heads: list[int]) -> dict[int, list[int]]:
    """Normalise ``{layer: heads}`` (negative layers allowed) and check every index is in range."""
    out: dict[int, list[int]] = {}
    for layer, heads in head_mask.items():
        li = int(layer)
        if not -n_layers <= li < n_layers:
            raise InputError(f"head mask names layer {layer}, but the vision tower has {n_layers} layers (0..{n_layers - 1})")
        li %= n_layers
        hs = sorted({int(h) for h in heads})
        bad = [h for h in hs if not 0 <= h < n_heads[li]]
        if bad:
            raise InputError(f"head mask names heads {bad} of layer {li}, which has {n_heads[li]} heads (0..{n_heads[li] - 1})")
        out[li] = sorted(set(out.get(li, [])) | set(hs))
    return out
