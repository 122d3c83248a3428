"""Offline-aware resolution of task models' weights: a hub id or a ``save_pretrained`` folder.

Follows :mod:`vlmkit.models.hub`: with ``VLMKIT_OFFLINE=1``/``HF_HUB_OFFLINE=1`` nothing is requested
and uncached weights raise :class:`~vlmkit.errors.WeightsNotFoundError` naming the weights, the cache
searched and the local-folder alternative.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from vlmkit.errors import ModelSpecError
from vlmkit.models import hub


def strip_prefix(spec: str, prefixes: Sequence[str]) -> str:
    """``spec`` without the first of ``prefixes`` it starts with."""
    for p in prefixes:
        if spec.startswith(p):
            return spec[len(p):]
    return spec


def resolve_source(spec: str, what: str, example: str) -> tuple[str, bool, Any]:
    """``(source, is_local, load)`` for a hub id or local folder: ``load(fn)`` calls ``fn(**kw)`` offline-safely."""
    if not isinstance(spec, str) or not spec.strip():
        raise ModelSpecError(f"{what}: model spec must be a non-empty string like {example!r}, got {spec!r}")
    rest = spec.strip()
    if hub.looks_like_path(rest):
        src = str(hub.require_path(rest, f"{what} folder for {spec!r}",
                                   "Expected a folder written by model.save_pretrained(...) with config.json."))
        if not os.path.isfile(os.path.join(src, "config.json")):
            raise ModelSpecError(f"{src!r} has no config.json: expected a folder written by save_pretrained()")
        return src, True, lambda fn: fn()
    cached = hub.cached_hub_file(rest, "config.json") is not None
    kw = {"local_files_only": True} if hub.offline() else {}

    def load(fn: Any) -> Any:
        return hub.fetch_or_explain(f"{what} {rest!r}", lambda: fn(**kw),
                                    local_hint="a local folder saved with save_pretrained (and its processor)",
                                    cached=cached)

    return rest, False, load


__all__ = ["resolve_source", "strip_prefix"]
