"""The one interface every model family implements: :class:`VLM`.

A ``VLM`` takes float images in ``[0, 1]`` of any size ``(B, 3, H, W)`` and applies the model's own
resize and normalisation *inside*, differentiably, so attacks optimise in pixel space and every
perturbation sees the same pixels the user sees. Families (open_clip, transformers, the toy world)
subclass it and implement a handful of hooks; everything else (input checks, preprocessing, batching,
vision tokens, attention maps, head masking) lives here once.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from vlmkit.errors import InputError
from vlmkit.models.attention import AttentionTap, install_taps, num_heads, validate_head_mask
from vlmkit.models.preprocess import PreprocessConfig, resize_and_normalise
from vlmkit.runtime import autocast, resolve_dtype
from vlmkit.validate import check_images

log = logging.getLogger("vlmkit.models")

#: ``torch.compile`` modes accepted by :meth:`VLM.fast` (any other string names a backend).
COMPILE_MODES: tuple[str, ...] = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class VisionTokens:
    """Token activations of the image tower after one layer.

    Attributes:
        patches: Spatial tokens ``(B, N, C)`` in row-major order over ``grid``.
        prefix: Non-spatial tokens (CLS, registers) ``(B, P, C)``, or None when the tower has none.
        grid: ``(gh, gw)`` with ``gh * gw == N``.
        layer: The (non-negative) layer index these tokens come from.
    """

    patches: torch.Tensor
    prefix: torch.Tensor | None
    grid: tuple[int, int]
    layer: int

    @property
    def cls(self) -> torch.Tensor | None:
        """The class token ``(B, C)`` when the tower has one (first prefix token)."""
        return None if self.prefix is None else self.prefix[:, 0]

    def as_grid(self) -> torch.Tensor:
        """Patches as a feature map ``(B, C, gh, gw)``."""
        B, N, C = self.patches.shape
        return self.patches.transpose(1, 2).reshape(B, C, *self.grid)


def torch_module(model: Any) -> nn.Module | None:
    """The ``nn.Module`` that holds a model's weights: the model itself (a :class:`VLM`) or the module a task
    model (CLIPSeg, an answer scorer) wraps as ``.model``; None when there is neither."""
    if isinstance(model, nn.Module):
        return model
    inner = getattr(model, "model", None)
    return inner if isinstance(inner, nn.Module) else None


class WrapsModule:
    """``device`` and ``dtype`` of a wrapper whose weights live in ``self.model`` (VLMs and task models)."""

    model: nn.Module

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype


@dataclass(frozen=True)
class _FastOptions:
    """The options of an active :meth:`VLM.fast` block.

    Attributes:
        precision: Autocast dtype of the image tower, or None (float32).
        channels_last: Pixels (and weights) in channels-last memory format.
        compile: Key of the compiled tower forward in ``VLM._compiled``, or None.
    """

    precision: torch.dtype | None
    channels_last: bool
    compile: str | None


def _compile_kwargs(compile: bool | str) -> dict[str, Any]:
    """``torch.compile`` keyword arguments for :meth:`VLM.fast`'s ``compile`` option."""
    kw: dict[str, Any] = {"dynamic": False}
    if isinstance(compile, str) and compile not in ("True", "default"):
        kw.update({"mode": compile} if compile in COMPILE_MODES else {"backend": compile})
    return kw


class VLM(WrapsModule, nn.Module):
    """A CLIP-family image–text model behind one interface.

    A family subclasses it and implements two forward hooks, which only this class calls:
    ``_encode_pixels`` (normalised pixels → unnormalised image features, reached through
    :meth:`encode_pixels`) and ``_encode_texts`` (strings → text features, through :meth:`encode_text`).
    It describes its image tower through the public members :attr:`blocks`, :attr:`attention_modules`,
    :attr:`num_prefix_tokens`, :meth:`tokens_from_block_output` and :meth:`token_grid`, overriding them
    where the defaults do not fit.

    Attributes:
        name: The spec the model was loaded from (e.g. ``open_clip:ViT-B-32/laion2b_s34b_b79k``).
        family: "open_clip", "hf", "toy", ...
        preprocess_cfg: Resize/normalise settings (travel with the model).
        check_inputs: Validate dtype/shape/range of images passed to ``encode_image`` (one host sync).
        meta: Free-form provenance (weights path, training record, ...).
    """

    family: str = "base"

    def __init__(self, model: nn.Module, *, name: str, preprocess_cfg: PreprocessConfig,
                 meta: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.model = model
        self.name = name
        self.preprocess_cfg = preprocess_cfg
        self.check_inputs = True
        self.meta: dict[str, Any] = dict(meta or {})
        self._tap: AttentionTap | None = None
        self._tapped: list[nn.Module] | None = None
        self._fast: _FastOptions | None = None
        self._compiled: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    # ------------------------------------------------------------------ family hooks (called by this class only)
    def _encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """The family's image forward: unnormalised image features ``(B, D)`` from normalised model input.

        Everyone else calls :meth:`encode_pixels`, which applies the options of :meth:`fast`.
        """
        raise NotImplementedError

    def _encode_texts(self, texts: list[str]) -> torch.Tensor:
        """The family's text forward: unnormalised text features ``(T, D)``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ the image tower (for interpretability)
    @property
    def blocks(self) -> list[nn.Module]:
        """The image tower's blocks in order: transformer blocks (ViT) or stages (CNN).

        A forward hook on block ``i`` sees the residual stream after layer ``i``; turn its output into
        tokens with :meth:`tokens_from_block_output`. Every family overrides it.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement the `blocks` property")

    @property
    def attention_modules(self) -> list[nn.Module] | None:
        """The self-attention module of each block, or None when the tower has none (CNN).

        Use :meth:`require_attention` to get them wrapped for :meth:`tap`.
        """
        return None

    @property
    def num_prefix_tokens(self) -> int:
        """Number of non-spatial tokens (class token, registers) before the patch tokens in each
        block's output: 1 for CLS-token ViTs, 0 for CNN stages and towers without a class token (SigLIP)."""
        return 0

    def tokens_from_block_output(self, out: Any) -> torch.Tensor:
        """A block's forward output as tokens ``(B, N, C)``, prefix tokens first.

        Unwraps tuples, puts sequence-first outputs batch-first and flattens CNN feature maps
        ``(B, C, h, w)`` row-major. The reshaping is linear, so it maps the gradient of a block's
        output the same way.

        Args:
            out: What a forward hook on a block of :attr:`blocks` receives as output (or its gradient).
        """
        out = out[0] if isinstance(out, tuple) else out
        if out.ndim == 4:  # (B, C, h, w) -> (B, h*w, C)
            return out.flatten(2).transpose(1, 2)
        return out

    def token_grid(self, n: int) -> tuple[int, int]:
        """The patch grid ``(gh, gw)`` on which ``n`` spatial tokens lie row-major (``gh * gw == n``).

        The default picks the factorisation whose aspect ratio matches the model input, else a square.

        Raises:
            InputError: ``n`` tokens fit no such grid.
        """
        H, W = self.image_size
        for gh in range(int(math.isqrt(n)), 0, -1):  # the factorisation whose aspect matches the input
            if n % gh == 0 and abs(gh / (n // gh) - H / W) < 1e-6:
                return gh, n // gh
        g = math.isqrt(n)
        if g * g == n:
            return g, g
        raise InputError(f"cannot arrange {n} tokens on a grid for input size {H}x{W}")

    def layer_index(self, layer: int) -> int:
        """The non-negative index of block ``layer`` (negative values count from the last block).

        Raises:
            InputError: ``layer`` is outside ``-num_layers .. num_layers - 1``.
        """
        n = self.num_layers
        if not -n <= layer < n:
            raise InputError(f"layer={layer} is out of range for an image tower with {n} layers (-{n}..{n - 1})")
        return layer % n

    def require_attention(self, what: str = "attention maps") -> list[nn.Module]:
        """The attention modules of the blocks, wrapped (once) so that :meth:`tap` can record and mask heads.

        Args:
            what: The feature that needs attention, for the error message.

        Raises:
            InputError: The tower has no per-layer self-attention (a CNN).
        """
        mods = self.attention_modules
        if mods is None:
            raise InputError(
                f"{what}: model {self.name!r} has a {self._tower_kind()} image tower without per-layer "
                "self-attention heads; use a ViT-tower model for attention maps, head masking and relevance"
            )
        if self._tapped is None:
            self._tapped = install_taps(mods, lambda: self._tap)
        return self._tapped

    def _tower_kind(self) -> str:
        return type(self.blocks[0]).__name__

    # ------------------------------------------------------------------ properties
    @property
    def image_size(self) -> tuple[int, int]:
        """Model input size ``(H, W)``."""
        return self.preprocess_cfg.size

    @property
    def mean(self) -> tuple[float, float, float]:
        return self.preprocess_cfg.mean

    @property
    def std(self) -> tuple[float, float, float]:
        return self.preprocess_cfg.std

    @property
    def logit_scale(self) -> float:
        """Temperature of the image–text logits: ``exp`` of the network's learnt ``logit_scale``."""
        return float(self.model.logit_scale.exp())

    @property
    def logit_bias(self) -> float | None:
        """SigLIP's learnt logit bias (the network's ``logit_bias``); None for softmax-trained CLIPs."""
        b = getattr(self.model, "logit_bias", None)
        return None if b is None else float(b)

    @property
    def num_layers(self) -> int:
        """Number of blocks in the image tower."""
        return len(self.blocks)

    @property
    def has_attention(self) -> bool:
        """Whether the image tower has per-layer self-attention (ViT) rather than none (CNN)."""
        return self.attention_modules is not None

    @property
    def heads_per_layer(self) -> list[int]:
        """Number of attention heads of each block."""
        mods = self.require_attention("heads_per_layer")
        return [num_heads(m) for m in mods]

    # ------------------------------------------------------------------ images
    def validate_images(self, x: Any, arg: str = "x") -> torch.Tensor:
        """Check that ``x`` is a float tensor ``(B, 3, H, W)`` with values in [0, 1] (the range check,
        one host sync, is skipped when ``check_inputs`` is False).

        Raises:
            InputError: Naming the argument and what was expected.
        """
        return check_images(x, arg, check_range=self.check_inputs, allow_empty=False)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """``[0, 1]`` images ``(B, 3, H, W)`` → normalised model input ``(B, 3, *image_size)``."""
        self.validate_images(x)
        x = x.to(self.device)
        pixels = resize_and_normalise(x.float() if x.dtype != torch.float32 else x, self.preprocess_cfg)
        return pixels.to(self.dtype)

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Unnormalised image features ``(B, D)`` from normalised model input (the output of :meth:`preprocess`).

        Runs the image tower with the options of an enclosing :meth:`fast` block (then the features
        are float32); :meth:`encode_image` is ``normalize(encode_pixels(preprocess(x)))``. Call it
        directly to run the tower on already preprocessed pixels, e.g. under :meth:`tap`.

        Args:
            pixels: Normalised model input ``(B, 3, *image_size)`` in the model's dtype.
        """
        opts = self._fast
        if opts is None:
            return self._encode_pixels(pixels)
        if opts.channels_last and pixels.dim() == 4:
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        fn = self._compiled[opts.compile] if opts.compile is not None else self._encode_pixels
        with autocast(pixels.device, opts.precision):
            return fn(pixels).float()  # (B, D)

    def encode_image(self, x: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Image embeddings ``(B, D)`` (L2-normalised unless ``normalize=False``), differentiable in ``x``."""
        feats = self.encode_pixels(self.preprocess(x)).float()  # (B, D)
        return F.normalize(feats, dim=-1) if normalize else feats

    @contextlib.contextmanager
    def fast(self, precision: str | torch.dtype | None = None, channels_last: bool = False,
             compile: bool | str = False) -> Iterator[VLM]:
        """Inside the block, the image tower runs in mixed precision / channels_last / compiled.

        Only the tower's forward (:meth:`encode_pixels`, and through autograd its backward) changes:
        :meth:`encode_image` still returns float32 embeddings, and what is around it — pixels,
        perturbations, the attacks' steps and ε-ball projection, similarities, losses, metrics — stays
        float32. With the defaults this is a no-op, so CPU paths stay exact. An inner block replaces
        the options of an outer one until it exits; every option is undone on exit.

        Example::

            with vlm.fast(precision="bf16", channels_last=True):
                emb = vlm.embed_images(images)  # (N, D) float32, tower in bf16

        Args:
            precision: None/"float32" (off) or "bf16"/"fp16": autocast around the tower.
            channels_last: Convolution weights and the pixel batch in channels-last memory format.
            compile: ``torch.compile`` the tower's forward: True (default mode), a mode
                (:data:`COMPILE_MODES`; "reduce-overhead" uses CUDA graphs) or a backend name
                ("eager", "aot_eager", "inductor"). The compiled function is kept on the model and
                reused by later blocks.

        Yields:
            The model itself.
        """
        amp = None if precision is None or resolve_dtype(precision) == torch.float32 else resolve_dtype(precision)
        if amp is None and not channels_last and not compile:
            yield self
            return
        key = None
        if compile:
            key = str(compile)
            if key not in self._compiled:
                self._compiled[key] = torch.compile(self._encode_pixels, **_compile_kwargs(compile))
        outer = self._fast
        convert = channels_last and not (outer is not None and outer.channels_last)
        if convert:
            self.model.to(memory_format=torch.channels_last)
        self._fast = _FastOptions(precision=amp, channels_last=channels_last, compile=key)
        try:
            yield self
        finally:
            self._fast = outer
            if convert:
                self.model.to(memory_format=torch.contiguous_format)

    @torch.inference_mode()
    def embed_images(self, images: torch.Tensor, batch_size: int = 64, progress: bool = True,
                     desc: str = "encode images") -> torch.Tensor:
        """Embed a whole image set in batches without gradients.

        Args:
            images: uint8 ``(N, 3, H, W)`` (converted per batch on the model's device) or float in [0, 1].
            batch_size: Images per forward pass.
            progress: Show a tqdm progress bar.

        Returns:
            L2-normalised embeddings ``(N, D)`` on the model's device.
        """
        if batch_size <= 0:
            raise InputError(f"batch_size must be positive, got {batch_size}")
        out = []
        for i in tqdm(range(0, len(images), batch_size), desc=desc, disable=not progress, leave=False):
            xb = images[i : i + batch_size].to(self.device, non_blocking=True)
            if xb.dtype == torch.uint8:
                xb = xb.float().div_(255)
            out.append(self.encode_image(xb))
        if not out:
            raise InputError("images is empty: nothing to embed")
        return torch.cat(out)

    # ------------------------------------------------------------------ text
    def encode_text(self, texts: Sequence[str] | str, normalize: bool = True, batch_size: int = 256) -> torch.Tensor:
        """Text embeddings ``(T, D)`` (L2-normalised unless ``normalize=False``)."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts:
            raise InputError("texts is empty: expected at least one string")
        bad = [t for t in texts if not isinstance(t, str)]
        if bad:
            raise InputError(f"texts must be strings, got {type(bad[0]).__name__}: {bad[0]!r}")
        feats = torch.cat([self._encode_texts(texts[i : i + batch_size]).float()
                           for i in range(0, len(texts), batch_size)])  # (T, D)
        return F.normalize(feats, dim=-1) if normalize else feats

    def similarity(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """Model logits ``(B, T)``: ``logit_scale * cos`` (+ ``logit_bias`` for SigLIP)."""
        logits = self.logit_scale * image_emb @ text_emb.T
        return logits + self.logit_bias if self.logit_bias is not None else logits

    # ------------------------------------------------------------------ tokens and attention
    def vision_tokens(self, x: torch.Tensor, layer: int = -1) -> VisionTokens:
        """Residual-stream tokens after block ``layer`` of the image tower (before the final norm).

        For CNN towers the "tokens" are the stage's feature map flattened row-major ``(B, h*w, C)``.
        """
        return self.vision_tokens_layers(x, [layer])[self.layer_index(layer)]

    def vision_tokens_layers(self, x: torch.Tensor, layers: Iterable[int]) -> dict[int, VisionTokens]:
        """Tokens of several layers from one forward pass: ``{layer: VisionTokens}`` (non-negative keys)."""
        return self.encode_image_and_tokens(x, layers)[1]

    def encode_image_and_tokens(self, x: torch.Tensor, layers: Iterable[int], normalize: bool = True
                                ) -> tuple[torch.Tensor, dict[int, VisionTokens]]:
        """Image embeddings ``(B, D)`` and the tokens of ``layers`` from one forward pass."""
        idx = sorted({self.layer_index(int(li)) for li in layers})
        if not idx:
            raise InputError("layers is empty: name at least one layer")
        blocks = self.blocks
        box: dict[int, Any] = {}
        handles = [blocks[li].register_forward_hook(lambda m, i, o, li=li: box.__setitem__(li, o)) for li in idx]
        try:
            emb = self.encode_image(x, normalize=normalize)
        finally:
            for h in handles:
                h.remove()
        P = self.num_prefix_tokens
        out = {}
        for li in idx:
            tokens = self.tokens_from_block_output(box[li])  # (B, N, C)
            patches = tokens[:, P:]  # (B, n, C)
            out[li] = VisionTokens(patches=patches, prefix=tokens[:, :P] if P else None,
                                   grid=self.token_grid(patches.shape[1]), layer=li)
        return emb, out

    @contextlib.contextmanager
    def tap(self, record: Iterable[int] = (), head_mask: Mapping[int, Iterable[int]] | None = None,
            retain_grad: bool = False) -> Iterator[AttentionTap]:
        """Record attention probabilities of layers ``record`` and/or mask heads during the block.

        Example::

            with vlm.tap(record=[0, 1], retain_grad=True) as t:
                sim = vlm.encode_image(x) @ text.T
            t.probs[1]  # (B, heads, N, N)
        """
        mods = self.require_attention("tap")
        n = len(mods)
        rec = {self.layer_index(int(li)) for li in record}
        masks = validate_head_mask(head_mask or {}, n, [num_heads(m) for m in mods])
        outer = self._tap
        merged = AttentionTap(record=rec | (outer.record if outer else set()),
                              head_mask={**(outer.head_mask if outer else {}), **masks},
                              retain_grad=retain_grad or (outer.retain_grad if outer else False))
        self._tap = merged
        try:
            yield merged
        finally:
            self._tap = outer

    def mask_heads(self, head_mask: Mapping[int, Iterable[int]]) -> contextlib.AbstractContextManager[AttentionTap]:
        """Context manager zeroing the outputs of the given heads: ``{layer: [head, ...]}``."""
        return self.tap(head_mask=head_mask)

    def attention(self, x: torch.Tensor, layer: int = -1) -> torch.Tensor:
        """Attention probabilities of block ``layer`` ``(B, heads, N, N)``, prefix tokens first."""
        li = self.layer_index(layer)
        with self.tap(record=[li]) as t:
            self.encode_pixels(self.preprocess(x))
        return t.probs[li]

    def __repr__(self) -> str:  # the wrapped network's full module tree is one attribute away: vlm.model
        return (f"{type(self).__name__}(name={self.name!r}, family={self.family!r}, image_size={self.image_size}, "
                f"layers={self.num_layers}, device={self.device}, dtype={self.dtype})")
