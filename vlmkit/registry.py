"""One registry type for everything vlmkit can create by name.

Models, perturbations, attacks, metrics and tasks each have a :class:`Registry`. Entries are added
with one idiom, a decorator at the definition, and created by name, like timm and open_clip::

    from vlmkit.registry import PERTURBATIONS

    @PERTURBATIONS.register("gaussian_noise", family="noise")
    def gaussian_noise(x, severity=1, generator=None): ...

    PERTURBATIONS.list("gauss*")            # glob filter
    fn = PERTURBATIONS.get("gaussian_noise")
    out = PERTURBATIONS.create("gaussian_noise", severity=3)  # calls the entry

Registries are lazy: each names the modules that define its entries, and imports them the first time
it is read (:meth:`Registry.get`, ``list``, ``meta``, ``create``, ``in``, iteration, ``len``), so
``import vlmkit`` imports none of them. A new module with entries is added to its registry's
``modules`` below.

Module-level shortcuts (``list_models``, ``create_model``, ``list_perturbations`` ...) are exported
from :mod:`vlmkit`.
"""

from __future__ import annotations

import fnmatch
import importlib
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar

from vlmkit.errors import RegistryError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of factories (functions or classes) of one kind, filled lazily.

    Args:
        kind: What the registry holds, used in error messages ("perturbation", "metric", ...).
        modules: Dotted names of the modules whose import registers the entries (each with
            ``@REGISTRY.register(...)`` at the definition). They are imported, in order, on the first
            read of the registry; an import error propagates and the next read tries again.
    """

    def __init__(self, kind: str, modules: Sequence[str] = ()) -> None:
        self.kind = kind
        self.modules: tuple[str, ...] = tuple(modules)
        self._entries: dict[str, T] = {}
        self._meta: dict[str, dict[str, Any]] = {}
        self._loaded = not self.modules
        self._loader: int | None = None  # id of the thread importing ``modules`` right now
        self._lock = threading.Lock()

    def load(self) -> None:
        """Import :attr:`modules` once (a no-op afterwards, and while this thread is importing them).

        A lookup made by one of the modules while it is being imported sees the entries registered so
        far instead of importing again; another thread waits until the import is complete.
        """
        if self._loaded or self._loader == threading.get_ident():
            return
        with self._lock:
            if self._loaded:
                return
            self._loader = threading.get_ident()
            try:
                for module in self.modules:
                    importlib.import_module(module)
                self._loaded = True
            finally:
                self._loader = None

    def register(self, name: str | None = None, *, overwrite: bool = False, **meta: Any) -> Callable[[T], T]:
        """Decorator adding the decorated object under ``name`` (default: its ``__name__``).

        Registering does not load the registry's modules.

        Args:
            name: Registry key. Defaults to the decorated object's ``__name__``.
            overwrite: Allow replacing an existing entry (otherwise a duplicate name raises).
            **meta: Free-form metadata stored beside the entry (e.g. ``family="noise"``).

        Returns:
            A decorator that registers its argument and returns it unchanged.

        Raises:
            ValueError: (when decorating) The object has no name, or ``name`` is taken by another object.
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

    def list(self, pattern: str = "*", **meta_filter: Any) -> list[str]:
        """Sorted names matching a shell glob ``pattern`` and every ``meta`` key=value given.

        Args:
            pattern: Shell glob on the names (``"gauss*"``).
            **meta_filter: Metadata every returned entry has (``family="blur"``).
        """
        self.load()
        out = []
        for key in sorted(self._entries):
            if not fnmatch.fnmatchcase(key, pattern):
                continue
            meta = self._meta.get(key, {})
            if all(meta.get(k) == v for k, v in meta_filter.items()):
                out.append(key)
        return out

    def get(self, name: str) -> T:
        """The entry registered as ``name``.

        Raises:
            RegistryError: Unknown name; the message lists near matches and the known names.
        """
        self.load()
        try:
            return self._entries[name]
        except KeyError:
            raise RegistryError(
                f"unknown {self.kind} {name!r}.{did_you_mean(name, self._entries)} "
                f"Known {self.kind}s: {', '.join(sorted(self._entries)) or '(none registered)'}"
            ) from None

    def meta(self, name: str) -> dict[str, Any]:
        """A copy of the metadata stored with ``name`` at registration.

        Raises:
            RegistryError: Unknown name.
        """
        self.get(name)
        return dict(self._meta.get(name, {}))

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the entry ``name`` with the given arguments and return the result."""
        return self.get(name)(*args, **kwargs)  # type: ignore[operator]

    def __contains__(self, name: object) -> bool:
        self.load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        self.load()
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        self.load()
        return len(self._entries)

    def __repr__(self) -> str:  # does not load: a repr must not import modules
        state = f"{len(self._entries)} entries" if self._loaded else f"{len(self._entries)} entries, not loaded yet"
        return f"Registry({self.kind!r}, {state})"


#: Model families: spec prefix ("open_clip", "hf", "toy", ...) -> loader ``(rest, device, dtype, *, spec) -> VLM``.
MODELS: Registry[Callable[..., Any]] = Registry("model family", modules=(
    "vlmkit.models.openclip", "vlmkit.models.hf", "vlmkit.models.toy", "vlmkit.models.conse.model",
))
#: Perturbations: pure functions on (B,3,H,W) float tensors in [0, 1].
PERTURBATIONS: Registry[Callable[..., Any]] = Registry("perturbation", modules=(
    "vlmkit.perturb.corruptions", "vlmkit.perturb.frequency", "vlmkit.perturb.geometric",
    "vlmkit.perturb.typographic", "vlmkit.perturb.universal", "vlmkit.perturb.perception",
))
#: Attacks: classes deriving from ``vlmkit.attacks.Attack``.
ATTACKS: Registry[Callable[..., Any]] = Registry("attack", modules=(
    "vlmkit.attacks.pgd", "vlmkit.attacks.apgd", "vlmkit.attacks.freq",
))
#: Metrics: functions on embeddings, logits, predictions, masks or tokens.
METRICS: Registry[Callable[..., Any]] = Registry("metric", modules=(
    "vlmkit.metrics.calibration", "vlmkit.metrics.dirichlet", "vlmkit.metrics.drift", "vlmkit.metrics.flips",
    "vlmkit.metrics.retrieval", "vlmkit.metrics.zeroshot", "vlmkit.metrics.answers", "vlmkit.metrics.segmentation",
    "vlmkit.metrics.language", "vlmkit.metrics.captions", "vlmkit.metrics.factors", "vlmkit.interpret.monosemanticity",
))
#: Text perturbations: seeded pure functions on strings (captions, prompts, class names).
TEXT_PERTURBATIONS: Registry[Callable[..., Any]] = Registry("text perturbation", modules=("vlmkit.perturb.text",))
#: Mask corruptions: degradations of a perception module's label maps (B, H, W), and their renderers.
MASK_CORRUPTIONS: Registry[Callable[..., Any]] = Registry("mask corruption", modules=("vlmkit.perturb.masks",))
#: Tasks: dual-encoder retrieval/zero-shot grids, segmentation, answer scoring, language search.
TASKS: Registry[Callable[..., Any]] = Registry("task", modules=(
    "vlmkit.evaluate.dual", "vlmkit.tasks.segmentation", "vlmkit.tasks.answer_scoring", "vlmkit.tasks.captioning",
    "vlmkit.search.genetic",
))


def list_perturbations(pattern: str = "*", **meta: Any) -> list[str]:
    """Names of registered perturbations matching a glob and metadata (``family="blur"``)."""
    return PERTURBATIONS.list(pattern, **meta)


#: Group names a perturbation list may use besides names, globs and families.
PERTURBATION_GROUPS = {"imagenet-c": {"reference": "imagecorruptions"}}


def resolve_perturbations(names: str | Sequence[str], where: str = "perturbations") -> list[str]:
    """Registered perturbation names for a list of names, globs (``"*blur"``), families (``"noise"``) or
    groups (``"imagenet-c"``: the 19 ImageNet-C corruptions, Hendrycks & Dietterich 2019), in order,
    without repeats.

    Raises:
        RegistryError: An entry matches nothing; the message names ``where`` and near matches.
    """
    items = [names] if isinstance(names, str) else list(names)
    out: list[str] = []
    for n in items:
        if not isinstance(n, str):
            raise RegistryError(f"{where}: {n!r} is not a string; expected perturbation names, globs or families")
        if n in PERTURBATION_GROUPS:
            hits = PERTURBATIONS.list(**PERTURBATION_GROUPS[n])
        elif any(ch in n for ch in "*?["):
            hits = PERTURBATIONS.list(n)
        elif n in PERTURBATIONS:
            hits = [n]
        else:
            hits = PERTURBATIONS.list(family=n)
        if n not in PERTURBATIONS:  # a pattern or family leaves out what needs its own parameters (a saved delta)
            hits = [h for h in hits if not PERTURBATIONS.meta(h).get("needs")]
        if not hits:
            families = sorted({str(PERTURBATIONS.meta(k).get("family")) for k in PERTURBATIONS.list()})
            known = [*PERTURBATIONS.list(), *families, *PERTURBATION_GROUPS]
            raise RegistryError(f"{where}: unknown perturbation {n!r}; expected a registered name, glob, family "
                                f"({', '.join(families)}) or group ({', '.join(PERTURBATION_GROUPS)})."
                                + did_you_mean(n, known))
        out += [h for h in hits if h not in out]
    return out


def create_perturbation(name: str, *args: Any, **kwargs: Any) -> Any:
    """Call the perturbation ``name`` with the given arguments."""
    return PERTURBATIONS.create(name, *args, **kwargs)


def list_attacks(pattern: str = "*", **meta: Any) -> list[str]:
    """Names of registered attacks matching a glob and metadata."""
    return ATTACKS.list(pattern, **meta)


def create_attack(name: str, *args: Any, **kwargs: Any) -> Any:
    """Instantiate the attack ``name`` with the given arguments."""
    return ATTACKS.create(name, *args, **kwargs)


def list_metrics(pattern: str = "*", **meta: Any) -> list[str]:
    """Names of registered metrics matching a glob and metadata (``kind="embedding"``)."""
    return METRICS.list(pattern, **meta)


def create_metric(name: str, *args: Any, **kwargs: Any) -> Any:
    """Call the metric ``name`` with the given arguments."""
    return METRICS.create(name, *args, **kwargs)


__all__ = ["ATTACKS", "MASK_CORRUPTIONS", "METRICS", "TEXT_PERTURBATIONS", "MODELS", "PERTURBATIONS", "PERTURBATION_GROUPS", "Registry", "TASKS", "create_attack", "create_metric",
           "create_perturbation", "list_attacks", "list_metrics", "list_perturbations", "resolve_perturbations"]
