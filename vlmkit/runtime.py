"""Device, dtype, autocast and seeds: resolved here and nowhere else.

Every entry point of vlmkit calls :func:`resolve_device` / :func:`resolve_dtype` on its
``device=``/``dtype=`` arguments and :func:`seed_everything` (or :func:`make_generator`) on its
``seed=`` argument, so "auto" means the same thing everywhere and the same parameters give the same
numbers on CPU.

For one GPU near its limit: :func:`auto_batch_size` (from free memory) and
:func:`run_batched_with_backoff` (halves the batch on CUDA out-of-memory); bf16 autocast of the image
tower, channels_last and ``torch.compile`` are the model's own context manager,
:meth:`vlmkit.VLM.fast`. All are opt-in or no-ops on CPU.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
from collections.abc import Iterator, Sequence
from pathlib import Path

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


def cache_root() -> Path:
    """The content-keyed cache shared by every notebook, grid run and process of a user: ``$VLMKIT_CACHE``
    or ``~/.cache/vlmkit``. Decoded images (``images/``) and prepared per-model tensors such as text
    embeddings (``tensors/``) live there under keys made of content hashes and model fingerprints only, so
    the same captions are encoded once per model whatever notebook, output folder or run asks.
    """
    root = os.environ.get("VLMKIT_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "vlmkit"


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


def stable_hash(*parts: object) -> str:
    """16 hex digits of SHA-256 over the JSON of ``parts`` (keys sorted): the key hash of caches and seeds."""
    return hashlib.sha256(json.dumps(list(parts), sort_keys=True, default=str).encode()).hexdigest()[:16]


def derive_seed(*parts: object) -> int:
    """A seed in ``[0, 2**62)`` that is a pure function of ``parts`` (:func:`stable_hash` as a number).

    The counter-based seeding rule of the engine: the randomness applied to item ``i`` of a dataset
    under one grid cell is drawn from ``derive_seed(seed, cell_key, i)``, never from a batch, so
    every batch size, worker count and executor gives the same inputs.
    """
    return int(stable_hash(*parts), 16) % (2**62)


def item_generators(seed: int, key: str, indices: Sequence[int] | torch.Tensor,
                    device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One fresh generator per item index: ``make_generator(derive_seed(seed, key, i), device)``."""
    idx = indices.tolist() if isinstance(indices, torch.Tensor) else list(indices)
    return [make_generator(derive_seed(int(seed), str(key), int(i)), device) for i in idx]


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
