"""Exception types raised by vlmkit.

Every error names the offending input and what was expected, so a researcher reading a failed
papermill cell knows what to change without opening the source. The classes subclass the built-in
exception a Python user would naturally catch (``ValueError``, ``FileNotFoundError``, ``KeyError``).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class VLMKitError(Exception):
    """Base class of every error raised deliberately by vlmkit."""


class DataError(VLMKitError, ValueError):
    """A dataset, annotation file or image does not have the expected content or layout."""


class DataNotFoundError(VLMKitError, FileNotFoundError):
    """A file or folder a dataset needs does not exist."""


class EmptyDatasetError(DataError):
    """A dataset (or the requested subset of it) has no items."""


class ModelSpecError(VLMKitError, ValueError):
    """A model spec string cannot be parsed, or names an unknown family/architecture/tag."""


class WeightsNotFoundError(VLMKitError, FileNotFoundError):
    """Weights named by a spec are neither on disk nor reachable (e.g. offline hub download)."""


class InputError(VLMKitError, ValueError):
    """A tensor passed to a model or kernel has the wrong shape, dtype or value range."""


class RegistryError(VLMKitError, KeyError):
    """An unknown name was looked up in a registry."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


def near_matches(name: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    """Return up to ``n`` candidates close to ``name`` (for "did you mean" hints)."""
    cands = list(candidates)
    close = difflib.get_close_matches(name, cands, n=n, cutoff=0.5)
    if not close:  # fall back to substring matches, case-insensitive
        low = name.lower()
        close = [c for c in cands if low in c.lower() or c.lower() in low][:n]
    return close


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """A short ``" Did you mean: a, b?"`` suffix, or ``""`` when nothing is close."""
    close = near_matches(name, candidates)
    return f" Did you mean: {', '.join(close)}?" if close else ""
