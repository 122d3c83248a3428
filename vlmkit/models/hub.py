"""Weights that may live on a hub: resolve them without ever hanging offline.

Users with network get the real download paths (open_clip pretrained tags, ``hf-hub:`` ids,
transformers hub ids). Offline — set ``VLMKIT_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1``) — nothing is
requested: weights must already be in the Hugging Face cache or on disk, and a missing file becomes a
:class:`~vlmkit.errors.WeightsNotFoundError` that names the weights, where vlmkit looked, and how to
pass a local path instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from vlmkit.errors import ModelSpecError, WeightsNotFoundError

T = TypeVar("T")

WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


def offline() -> bool:
    """True when vlmkit must not touch the network (``VLMKIT_OFFLINE`` or ``HF_HUB_OFFLINE`` set)."""
    return any(os.environ.get(k, "").lower() in ("1", "true", "yes", "on") for k in ("VLMKIT_OFFLINE", "HF_HUB_OFFLINE"))


def hf_cache_dir() -> str:
    """The Hugging Face hub cache folder in use."""
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except Exception:  # pragma: no cover - huggingface_hub is a dependency of both families
        return os.path.expanduser("~/.cache/huggingface/hub")


def cached_hub_file(repo_id: str, filename: str) -> str | None:
    """Path of ``filename`` from ``repo_id`` in the local HF cache, or None (never downloads)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(repo_id=repo_id, filename=filename)
    except Exception:
        return None
    return hit if isinstance(hit, str) and os.path.isfile(hit) else None


def fetch_or_explain(what: str, fetch: Callable[[], T], local_hint: str, cached: bool = False) -> T:
    """Run ``fetch`` (which may download) and turn any failure into a clear :class:`WeightsNotFoundError`.

    Args:
        what: Human description of the weights (e.g. "open_clip ViT-B-32 pretrained tag 'openai'").
        fetch: Loads the weights; may raise anything on network failure.
        local_hint: How to pass a local path instead (a spec example).
        cached: The weights are known to be in the local cache (offline mode then still tries).
    """
    where = f"the Hugging Face cache {hf_cache_dir()}"
    if offline() and not cached:
        raise WeightsNotFoundError(
            f"{what}: not found in {where}, and downloads are disabled (VLMKIT_OFFLINE/HF_HUB_OFFLINE is set). "
            f"Download them on a machine with network, or pass a local file/folder: {local_hint}"
        )
    try:
        return fetch()
    except WeightsNotFoundError:
        raise
    except Exception as e:  # network errors come in many types (OSError, HTTPError, RuntimeError ...)
        raise WeightsNotFoundError(
            f"{what}: could not be loaded from {where} or downloaded ({type(e).__name__}: {' '.join(str(e).split())[:300]}). "
            f"If you have no network, pass a local file/folder instead: {local_hint}"
        ) from e


def looks_like_path(s: str) -> bool:
    """Heuristic: does a spec tail name a file or folder rather than a tag/hub id?"""
    return (
        s.startswith(("/", "./", "../", "~"))
        or s.lower().endswith(WEIGHT_SUFFIXES)
        or Path(os.path.expanduser(s)).exists()
    )


def require_path(path: str, what: str, hint: str) -> Path:
    """``Path`` of an existing local weights file/folder, else a clear :class:`WeightsNotFoundError`."""
    p = Path(os.path.expanduser(path))
    if not p.exists():
        raise WeightsNotFoundError(f"{what}: no such file or folder {str(p)!r} (resolved from {path!r}). {hint}")
    return p


def load_companion(spec: str, what: str, load: Callable[[], T], hint: str = "") -> T:
    """Load a file a model needs beside its weights (tokenizer, processor), or a :class:`ModelSpecError`
    naming the spec, what is missing and how to save it (``{what}.save_pretrained(folder)``).

    Args:
        spec: The model spec, for the message.
        what: "tokenizer" or "processor".
        load: Loads it (through the offline-safe loader of the weights).
        hint: Added to the message (e.g. how to write one without network).
    """
    try:
        return load()
    except Exception as e:
        raise ModelSpecError(f"{spec!r}: no usable {what} next to the model ({type(e).__name__}: {e}); save one "
                             f"with {what}.save_pretrained(folder){hint}") from e


#: Answers of :func:`reachable` per endpoint, for the life of the process.
_REACHABLE: dict[str, bool] = {}


def hub_endpoint() -> str:
    """The Hugging Face hub endpoint in use (``HF_ENDPOINT``, default https://huggingface.co)."""
    try:
        from huggingface_hub import constants

        return str(constants.ENDPOINT).rstrip("/")
    except Exception:  # pragma: no cover - huggingface_hub is a dependency of both families
        return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def reachable(timeout_s: float = 3.0) -> bool:
    """Whether the hub answers one HEAD request within ``timeout_s`` (no retries; cached per process).

    False at once, without a request, when downloads are disabled (:func:`offline`). Any HTTP answer
    counts as reachable (the hub is up even when it refuses the bare endpoint); timeouts, DNS and
    connection errors do not.
    """
    if offline():
        return False
    endpoint = hub_endpoint()
    if endpoint not in _REACHABLE:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout_s):
                pass
            ok = True
        except urllib.error.HTTPError:  # an answer: the hub is there
            ok = True
        except Exception:  # URLError, timeout, OSError ...
            ok = False
        _REACHABLE[endpoint] = ok
    return _REACHABLE[endpoint]
