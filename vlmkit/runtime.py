"""Device, dtype, autocast and seeds: resolved here and nowhere else.

Every entry point of vlmkit calls :func:`resolve_device` / :func:`resolve_dtype` on its
``device=``/``dtype=`` arguments and :func:`seed_everything` (or :func:`make_generator`) on its
``seed=`` argument, so "auto" means the same thing everywhere and the same parameters give the same
numbers on CPU.
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
