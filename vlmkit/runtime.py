"""Device, dtype, autocast and seeds: resolved here and nowhere else.

Every entry point of vlmkit calls :func:`resolve_device` / :func:`resolve_dtype` on its
``device=``/``dtype=`` arguments and :func:`seed_everything` (or :func:`make_generator`) on its
``seed=`` argument, so "auto" means the same thing everywhere and the same parameters give the same
numbers on CPU.

For one GPU near its limit: :func:`fast_model` (bf16 autocast of the image tower, channels_last,
``torch.compile``), :func:`auto_batch_size` (from free memory) and :func:`run_batched_with_backoff`
(halves the batch on CUDA out-of-memory). All are opt-in or no-ops on CPU.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator

import numpy as np
import torch

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn ``"auto"``/``None``/``"cuda"``/``"cpu"``/``"cuda:1"`` into a :class:`torch.device`.

    ``"auto"`` picks CUDA when available, else Apple MPS, else CPU. The environment variable
    ``VLMKIT_DEVICE`` overrides ``"auto"`` (useful to force CPU in CI on a GPU box).

    Raises:
        ValueError: The device string is unknown or names CUDA where none is available.
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        env = os.environ.get("VLMKIT_DEVICE")
        if env and env != "auto":
            return resolve_device(env)
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device={device!r} is not a device; expected 'auto', 'cpu', 'cuda' or 'cuda:N'") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was requested but CUDA is not available here; use device='auto' or 'cpu'")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device | str | None = None) -> torch.dtype:
    """The parameter dtype for a model: ``None``/"auto" → float32 (the numerically safe default).

    Half precision is opt-in (``"bf16"``/``"fp16"``); for mixed precision keep float32 parameters and
    use :func:`autocast`.

    Raises:
        ValueError: Unknown dtype name.
    """
    if dtype is None or dtype == "auto":
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"dtype={dtype!r} is not supported; expected one of {sorted(set(_DTYPES))}") from None


def autocast(device: torch.device | str, dtype: str | torch.dtype | None = None) -> contextlib.AbstractContextManager:
    """Mixed-precision context for ``device``: bf16 on CUDA/CPU when ``dtype`` asks for it, else a no-op.

    Args:
        device: Where the computation runs.
        dtype: ``None``/"float32" → no autocast; "bf16"/"fp16" → ``torch.autocast`` with that dtype.
    """
    dev = torch.device(device)
    if dtype is None or resolve_dtype(dtype) == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=dev.type, dtype=resolve_dtype(dtype))


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices). Call at the top of every entry point."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed={seed!r} must be a non-negative int")
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh :class:`torch.Generator` on ``device`` seeded with ``seed`` (for perturbations)."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed={seed!r} must be a non-negative int")
    g = torch.Generator(device=torch.device(device))
    g.manual_seed(seed)
    return g


@contextlib.contextmanager
def deterministic(enabled: bool = True) -> Iterator[None]:
    """Ask torch for deterministic kernels inside the block (restores the old setting after)."""
    old = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old, warn_only=True)


# ---------------------------------------------------------------------- one GPU, near its limit
#: ``torch.compile`` modes accepted by :func:`fast_model` (any other string names a backend).
_COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError)


class Batched(list):
    """Outputs of :func:`run_batched_with_backoff` in order; ``batch_size`` is the size that last worked."""

    batch_size: int = 0


def run_batched_with_backoff(fn, n: int, batch_size: int, *, desc: str = "", progress: bool = False,
                             min_batch_size: int = 1) -> Batched:
    """Call ``fn(start, stop)`` over ``range(n)`` in batches, halving the batch on CUDA out-of-memory.

    A batch that runs out of memory is retried at half the size (down to ``min_batch_size``, then the
    error propagates); later batches keep the smaller size. Returns the outputs in order, with the
    batch size that worked as ``.batch_size`` (so a caller can start the next call there).
    """
    import logging

    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be at least 1")
    out = Batched()
    start, bs = 0, int(batch_size)
    bar = tqdm(total=n, desc=desc, disable=not progress, leave=False)
    while start < n:
        stop = min(n, start + bs)
        try:
            out.append(fn(start, stop))
        except Exception as e:
            if not _is_oom(e) or bs <= min_batch_size:
                raise
            bs = max(min_batch_size, bs // 2)
            del e
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            logging.getLogger("vlmkit.runtime").warning("out of memory: batch size halved to %d", bs)
            continue
        bar.update(stop - start)
        start = stop
    bar.close()
    out.batch_size = bs
    return out


def auto_batch_size(fn, n: int, device: torch.device | str, *, default: int = 64, probe: int = 8,
                    fraction: float = 0.8, max_batch_size: int = 4096) -> int:
    """The batch size that fills ``fraction`` of free accelerator memory for ``fn(start, stop)``.

    On CUDA: runs ``fn(0, probe)`` once, measures its peak memory per image above what was allocated
    before, and returns the largest power of two that fits ``fraction`` of the free memory (at most
    ``max_batch_size`` and ``n``). Elsewhere (CPU, MPS) returns ``default``: memory is not the limit
    there and the numbers stay those of the fixed batch size. Over-estimates are caught by
    :func:`run_batched_with_backoff`.
    """
    dev = torch.device(device)
    if dev.type != "cuda" or n <= 0:
        return int(default)
    probe = max(1, min(probe, n))
    torch.cuda.synchronize(dev)
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    try:
        res = fn(0, probe)
    except Exception as e:
        if not _is_oom(e):
            raise
        torch.cuda.empty_cache()
        return max(1, probe // 2)
    torch.cuda.synchronize(dev)
    per_image = max(1, (torch.cuda.max_memory_allocated(dev) - base) / probe)
    del res
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info(dev)
    fit = int(free * fraction / per_image)
    bs = 1 << max(0, min(fit, max_batch_size, n).bit_length() - 1) if fit >= 1 else 1
    return max(1, bs)


@contextlib.contextmanager
def fast_model(vlm, *, precision: str | torch.dtype | None = None, channels_last: bool = False,
               compile: bool | str = False) -> Iterator[None]:
    """Inside the block, ``vlm``'s image tower runs in mixed precision / channels_last / compiled.

    Only the tower's forward (and, through autograd, its backward) changes: ``encode_image`` still
    returns float32 embeddings, and what is around it — pixels, perturbations, the attacks' steps and
    ε-ball projection, similarities, losses, metrics — stays float32. With the defaults this is a
    no-op, so CPU paths stay exact.

    Args:
        vlm: A :class:`vlmkit.VLM` (anything with ``_encode_pixels(pixels)`` and ``.model``).
        precision: None/"float32" (off) or "bf16"/"fp16": :func:`autocast` around the tower.
        channels_last: Convolution weights and the pixel batch in channels-last memory format.
        compile: ``torch.compile`` the tower's forward: True (default mode), a mode ("reduce-overhead"
            uses CUDA graphs, "max-autotune") or a backend name ("eager", "aot_eager", "inductor").
            The compiled function is kept on the model and reused by later blocks.
    """
    amp = precision is not None and resolve_dtype(precision) != torch.float32
    if not (amp or channels_last or compile):
        yield
        return
    base = type(vlm)._encode_pixels.__get__(vlm)
    fn = base
    if compile:
        cache = vlm.__dict__.setdefault("_vlmkit_compiled", {})
        key = str(compile)
        if key not in cache:
            kw: dict = {"dynamic": False}
            if isinstance(compile, str) and compile not in ("True", "default"):
                kw.update({"mode": compile} if compile in _COMPILE_MODES else {"backend": compile})
            cache[key] = torch.compile(base, **kw)
        fn = cache[key]
    if channels_last:
        vlm.model.to(memory_format=torch.channels_last)

    def encode_pixels(pixels: torch.Tensor) -> torch.Tensor:
        if channels_last and pixels.dim() == 4:
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        with autocast(pixels.device, precision if amp else None):
            return fn(pixels).float()

    had = "_encode_pixels" in vlm.__dict__
    old = vlm.__dict__.get("_encode_pixels")
    object.__setattr__(vlm, "_encode_pixels", encode_pixels)
    try:
        yield
    finally:
        if had:
            object.__setattr__(vlm, "_encode_pixels", old)
        else:
            vlm.__dict__.pop("_encode_pixels", None)
        if channels_last:
            vlm.model.to(memory_format=torch.contiguous_format)
