"""One registry type for everything vlmkit can create by name.

Models, perturbations, attacks, metrics and tasks each have a :class:`Registry`. Entries are added
with a decorator and created by name, like timm and open_clip::

    from vlmkit.registry import PERTURBATIONS

    @PERTURBATIONS.register("gaussian_noise")
    def gaussian_noise(x, severity=1, generator=None): ...

    PERTURBATIONS.list("gauss*")            # glob filter
    fn = PERTURBATIONS.get("gaussian_noise")
    out = PERTURBATIONS.create("gaussian_noise", severity=3)  # calls the entry

Module-level shortcuts (``list_models``, ``create_model``, ``list_perturbations`` ...) are exported
from :mod:`vlmkit`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from vlmkit.errors import RegistryError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of factories (functions or classes) of one kind.

    Args:
        kind: What the registry holds, used in error messages ("perturbation", "metric", ...).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str | None = None, *, overwrite: bool = False, **meta: Any) -> Callable[[T], T]:
        """Decorator adding ``obj`` under ``name`` (default: its ``__name__``).

        Args:
            name: Registry key. Defaults to the decorated object's ``__name__``.
            overwrite: Allow replacing an existing entry (otherwise a duplicate name raises).
            **meta: Free-form metadata stored beside the entry (e.g. ``family="noise"``).
        """

        def deco(obj: T) -> T:
            key = name or getattr(obj, "__name__", None)
            if not key:
                raise ValueError(f"cannot register {obj!r} in the {self.kind} registry without a name")
            if key in self._entries and not overwrite and self._entries[key] is not obj:
                raise ValueError(f"{self.kind} {key!r} is already registered; pass overwrite=True to replace it")
            self._entries[key] = obj
            self._meta[key] = dict(meta)
            return obj

        return deco

    def add(self, name: str, obj: T, *, overwrite: bool = False, **meta: Any) -> T:
        """Register ``obj`` under ``name`` without decorator syntax."""
        return self.register(name, overwrite=overwrite, **meta)(obj)

    def list(self, pattern: str = "*", **meta_filter: Any) -> list[str]:
        """Sorted names matching a shell glob ``pattern`` and every ``meta`` key=value given."""
        out = []
        for key in sorted(self._entries):
            if not fnmatch.fnmatchcase(key, pattern):
                continue
            meta = self._meta.get(key, {})
            if all(meta.get(k) == v for k, v in meta_filter.items()):
                out.append(key)
        return out

    def get(self, name: str) -> T:
        """The entry registered as ``name``; unknown names list near matches."""
        try:
            return self._entries[name]
        except KeyError:
            raise RegistryError(
                f"unknown {self.kind} {name!r}.{did_you_mean(name, self._entries)} "
                f"Known {self.kind}s: {', '.join(sorted(self._entries)) or '(none registered)'}"
            ) from None

    def meta(self, name: str) -> dict[str, Any]:
        """Metadata stored with ``name`` at registration."""
        self.get(name)
        return dict(self._meta.get(name, {}))

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the entry ``name`` with the given arguments and return the result."""
        return self.get(name)(*args, **kwargs)  # type: ignore[operator]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self)} entries)"


#: Model families: spec prefix ("open_clip", "hf", "toy", ...) -> loader ``(rest, device, dtype) -> VLM``.
MODELS: Registry[Callable[..., Any]] = Registry("model family")
#: Perturbations: pure functions on (B,3,H,W) float tensors in [0, 1].
PERTURBATIONS: Registry[Callable[..., Any]] = Registry("perturbation")
#: Attacks: classes deriving from ``vlmkit.attacks.Attack``.
ATTACKS: Registry[Callable[..., Any]] = Registry("attack")
#: Metrics: functions on embeddings, logits or tokens.
METRICS: Registry[Callable[..., Any]] = Registry("metric")
#: Tasks beyond dual-encoder retrieval/classification.
TASKS: Registry[Callable[..., Any]] = Registry("task")


def list_perturbations(pattern: str = "*", **meta: Any) -> list[str]:
    """Names of registered perturbations matching a glob."""
    return PERTURBATIONS.list(pattern, **meta)


def create_perturbation(name: str, *args: Any, **kwargs: Any) -> Any:
    """Call the perturbation ``name``."""
    return PERTURBATIONS.create(name, *args, **kwargs)


def list_attacks(pattern: str = "*", **meta: Any) -> list[str]:
    """Names of registered attacks matching a glob."""
    return ATTACKS.list(pattern, **meta)


def create_attack(name: str, *args: Any, **kwargs: Any) -> Any:
    """Instantiate the attack ``name``."""
    return ATTACKS.create(name, *args, **kwargs)


def list_metrics(pattern: str = "*", **meta: Any) -> list[str]:
    """Names of registered metrics matching a glob."""
    return METRICS.list(pattern, **meta)


def create_metric(name: str, *args: Any, **kwargs: Any) -> Any:
    """Call the metric ``name``."""
    return METRICS.create(name, *args, **kwargs)
