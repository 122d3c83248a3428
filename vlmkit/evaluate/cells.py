"""Grid cells: what one column of a robustness study applies to the images — and the one way to apply it.

A :class:`Cell` is ``clean``, a registered ``perturbation`` (name × severity × params) or a
registered ``attack`` (name × params). Its :attr:`Cell.key` is a stable hash of what it does, so
caches and result tables recognise a cell across runs, machines and executors.

**Seeding rule.** Applying a cell to image ``i`` of a dataset draws its randomness from
``derive_seed(seed, cell.key, i)`` only (a counter-based rule, :func:`vlmkit.runtime.item_generators`),
never from a batch: every batch size, worker count and executor gives bit-identical inputs on CPU,
and a notebook gallery that calls :meth:`Cell.apply` with the dataset indices shows exactly the image
the engine measured. Attack cells need a model and an objective; the engine runs them with one
generator per image for the random start (see :func:`vlmkit.evaluate.cell_images`).
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

from vlmkit.errors import InputError, RegistryError, did_you_mean
from vlmkit.registry import ATTACKS, PERTURBATIONS, TEXT_PERTURBATIONS, resolve_perturbations
from vlmkit.runtime import item_generators

KINDS = ("clean", "perturbation", "attack", "text")
#: What a text cell perturbs: retrieval captions, or zero-shot class names or prompt templates.
TEXT_TARGETS = ("captions", "classnames", "templates")
#: Context keywords that hold one value per image (sliced with the batch); the others are shared.
ITEM_KEYS = ("labels", "masks")
#: Keywords a task's context supplies (never a cell parameter).
CONTEXT_KEYS = ("labels", "masks", "classnames")


def _accepts(fn: Any) -> tuple[set[str], bool]:
    """(keyword names ``fn`` accepts, whether it takes ``**kwargs``)."""
    raw = getattr(fn, "raw", fn)
    params = inspect.signature(raw).parameters
    return set(params), any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def eps_text(v: float) -> str:
    """``4/255`` for budgets that are whole 255ths, else the number."""
    f = Fraction(float(v)).limit_denominator(255)
    if f.denominator == 255 and abs(float(f) - float(v)) < 1e-9:
        return f"{f.numerator}/255"
    return f"{v:g}"


@dataclass(frozen=True)
class Cell:
    """One grid cell.

    Attributes:
        kind: "clean", "perturbation", "attack" or "text" (a registered text perturbation of the captions,
            class names or templates: ``params["target"]``, default the task's own texts; the images stay
            clean, only the texts are re-encoded).
        name: Registry name ("none" for clean).
        severity: Perturbation severity (0 for clean and attacks unless given).
        params: Extra keyword arguments (attack eps/steps, perturbation band, ...). An attack's ``source``
            (a model spec, or several joined by ``+`` / given as a list: an ensemble) makes it a transfer
            cell: the images are crafted on the source model(s) and measured on the grid's model.
    """

    kind: str = "clean"
    name: str = "none"
    severity: int | float = 0
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"cell kind {self.kind!r} is unknown; expected one of {KINDS}")
        if not isinstance(self.params, Mapping):
            raise InputError(f"cell {self.name!r}: params must be a mapping, got {type(self.params).__name__}")
        if self.kind == "perturbation":
            fn = PERTURBATIONS.get(self.name)
            names, anykw = _accepts(fn)
            bad = sorted(k for k in self.params if (k not in names and not anykw) or k in ("generator", "severity"))
            if bad:
                raise InputError(f"perturbation {self.name!r} has no parameter(s) {bad}; it takes "
                                 f"{sorted(names - {'x', 'severity', 'generator'})}")
            missing = [k for k in PERTURBATIONS.meta(self.name).get("needs", ())
                       if k not in self.params and k not in CONTEXT_KEYS]
            if missing:
                raise InputError(f"perturbation {self.name!r} needs parameter(s) {missing}"
                                 + (" (make its cells with universal_cells(paths))" if self.name == "universal" else ""))
        elif self.kind == "attack":
            ATTACKS.get(self.name)
            if "generator" in self.params or "seed" in self.params:
                raise InputError(f"attack cell {self.name!r}: 'seed'/'generator' are set by the engine "
                                 "(evaluate_grid(seed=...)), not by cell params")
            if "source" in self.params:
                object.__setattr__(self, "params", {**self.params, "source": _source_text(self.params["source"])})
            try:  # the attack's own checks (eps range, norm, steps) before any work starts
                ATTACKS.create(self.name, None, **dict(self.white_box.params))
            except TypeError as e:
                raise InputError(f"attack cell {self.name!r}: {e}") from None
        elif self.kind == "text":
            fn = TEXT_PERTURBATIONS.get(self.name)
            target = self.params.get("target", "captions")
            if target not in TEXT_TARGETS:
                raise InputError(f"text cell {self.name!r}: target={target!r}; expected one of {TEXT_TARGETS}")
            names, anykw = _accepts(fn)
            bad = sorted(k for k in self.params if k != "target" and ((k not in names and not anykw)
                                                                    or k in ("rng", "severity", "text")))
            if bad:
                raise InputError(f"text perturbation {self.name!r} has no parameter(s) {bad}; it takes "
                                 f"{sorted(names - {'text', 'severity', 'rng'})} and 'target'")
            fn("probe", self.severity)  # its own severity check, before any work

    @property
    def key(self) -> str:
        """Stable hash of (kind, name, severity, params)."""
        blob = json.dumps({"kind": self.kind, "name": self.name, "severity": self.severity,
                           "params": dict(self.params)}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def sources(self) -> list[str]:
        """The model specs an attack cell's images are crafted on (empty: the measured model, white-box)."""
        src = self.params.get("source") if self.kind == "attack" else None
        return str(src).split("+") if src else []

    @property
    def white_box(self) -> Cell:
        """This cell without its ``source``: the white-box attack the source model(s) run."""
        if not self.sources:
            return self
        return Cell(self.kind, self.name, self.severity, {k: v for k, v in self.params.items() if k != "source"})

    @property
    def family(self) -> str:
        if self.kind == "text":
            return "text:" + str(TEXT_PERTURBATIONS.meta(self.name).get("family", self.name))
        if self.kind == "perturbation":
            return str(PERTURBATIONS.meta(self.name).get("family", self.name))
        return self.kind if self.kind == "clean" else str(ATTACKS.meta(self.name).get("family", "attack"))

    @property
    def params_json(self) -> str:
        return json.dumps(dict(self.params), sort_keys=True, default=str)

    def label(self) -> str:
        """Short human label, e.g. ``gaussian_noise@3``, ``band_noise@2 band=(0.1, 0.3)`` or ``pgd ε=4/255``."""
        if self.kind == "clean":
            return "clean"
        parts = []
        for k, v in sorted(self.params.items()):
            if k == "sha256":  # the content identity of a file parameter: in the key, not the label
                continue
            if k == "path" and isinstance(v, str):
                parts.append(Path(v).stem)
            elif k == "eps" and isinstance(v, (int, float)):
                parts.append(f"ε={eps_text(v)}")
            elif isinstance(v, float):
                parts.append(f"{k}={v:g}")
            else:
                parts.append(f"{k}={v}")
        sev = f"@{self.severity}" if self.kind in ("perturbation", "text") and "eps" not in self.params else ""
        return " ".join([f"{'text:' if self.kind == 'text' else ''}{self.name}{sev}", *parts])

    def apply(self, x: torch.Tensor, index: Sequence[int] | torch.Tensor, *, seed: int,
              context: Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None) -> torch.Tensor:
        """Apply a clean or perturbation cell to images ``x`` ``(B, 3, H, W)`` in [0, 1] (the one path).

        Args:
            x: The images, which are items ``index`` of their dataset.
            index: Dataset index of each image ``(B,)``: image ``i`` draws from ``derive_seed(seed, key, i)``.
            seed: The grid's seed.
            context: Keywords offered to the perturbation, passed only where it accepts them
                (``classnames``; per-image values such as ``labels`` aligned with ``x``).
            overrides: Parameters replaced for this call only, where the perturbation takes them, with the
                cell's own generators (e.g. ``{"fill": 0.0}`` to move a mask with its image).

        Returns:
            The perturbed images ``(B, 3, H, W)``; ``x`` itself for the clean cell.
        """
        if self.kind == "clean":
            return x
        if self.kind == "attack":
            raise InputError(f"attack cell {self.label()!r} needs a model and an objective: "
                             "use vlmkit.evaluate.cell_images(model, dataset, cell, indices)")
        if self.kind == "text":
            return x  # a text cell measures clean images against perturbed texts
        idx = index.tolist() if isinstance(index, torch.Tensor) else list(index)
        if len(idx) != len(x):
            raise InputError(f"index has {len(idx)} entries for {len(x)} images")
        fn = PERTURBATIONS.get(self.name)
        names, anykw = _accepts(fn)
        ctx = {k: v for k, v in (context or {}).items() if anykw or k in names}
        params = {**self.params, **{k: v for k, v in (overrides or {}).items() if anykw or k in names}}
        if PERTURBATIONS.meta(self.name).get("batched"):  # no randomness: one call is the per-image calls
            return fn(x, self.severity, **params, **ctx)
        gens = item_generators(seed, self.key, idx, x.device)
        if PERTURBATIONS.meta(self.name).get("item_generators"):  # one call, each image drawing from its own
            return fn(x, self.severity, generator=gens, **params, **ctx)
        call = fn
        if hasattr(fn, "check") and hasattr(fn, "raw"):  # the contract's checks once for the batch
            fn.check(x, self.severity)
            call = fn.raw
        outs = []
        for j, g in enumerate(gens):
            item = {k: (v[j:j + 1] if k in ITEM_KEYS else v) for k, v in ctx.items()}
            outs.append(call(x[j:j + 1], self.severity, generator=g, **params, **item))
        y = torch.cat(outs)
        if y.shape != x.shape:
            raise InputError(f"{self.name} returned shape {tuple(y.shape)} for input {tuple(x.shape)}")
        return y


CLEAN = Cell()


def _source_text(source: Any) -> str:
    """An attack's ``source`` as one string: a spec, or an ensemble's specs joined by ``+``."""
    items = [source] if isinstance(source, str) else list(source) if isinstance(source, (list, tuple)) else []
    parts = [p.strip() for s in items if isinstance(s, str) for p in s.split("+")]
    if (not items or not all(isinstance(s, str) for s in items) or not all(parts)
            or len(set(parts)) != len(parts)):
        raise InputError(f"attack source={source!r}; expected a model spec ('toy:rn'), or an ensemble of distinct "
                         "specs as a list or joined by '+' ('toy:rn+toy:vit')")
    return "+".join(parts)


def transfer_params(transfer: Mapping[str, Any] | None) -> dict[str, Any]:
    """The :func:`grid_cells` keywords of a notebook's ``transfer`` parameter: ``{"attack": "pgd", "sources":
    ["toy:vit", "toy:rn+toy:vit"], "eps": 4/255, "steps": 5, ...}`` (the attack's other parameters alongside)
    → one transfer cell per source; ``{}`` or None → none.

    Raises:
        InputError: Not a mapping, no ``attack`` or ``sources``, or bad sources.
        RegistryError: Unknown attack.
    """
    if not transfer:
        return {}
    if not isinstance(transfer, Mapping) or "attack" not in transfer or not transfer.get("sources"):
        raise InputError(f"transfer={transfer!r}; expected {{'attack': NAME, 'sources': [SPEC or 'A+B', ...], "
                         "<attack parameters>}} or {}")
    sources = transfer["sources"]
    sources = [sources] if isinstance(sources, str) else list(sources)
    params = {k: v for k, v in transfer.items() if k not in ("attack", "sources")}
    return {"attacks": [str(transfer["attack"])], "attack_params": {str(transfer["attack"]): {
        **params, "source": [_source_text(s) for s in sources]}}}


def universal_cells(paths: Sequence[str | Path] | str | Path) -> list[Cell]:
    """One ``universal`` perturbation cell per saved universal perturbation (``.safetensors`` written by
    :meth:`vlmkit.attacks.universal.UniversalPerturbation.save`), keyed by the file's content."""
    from vlmkit.perturb.universal import file_sha256

    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    return [Cell("perturbation", "universal", 1, {"path": str(Path(p).resolve()), "sha256": file_sha256(p)})
            for p in items]


def text_cells(names: Sequence[str] | str, severities: Sequence[int] = (1, 3, 5), **params: Sequence[Any] | Any
               ) -> list[Cell]:
    """Text cells for every registered text perturbation name (or glob) × severity × combination of
    list-valued ``params`` (``target=["classnames", "templates"]``).

    Raises:
        RegistryError: A name matches no registered text perturbation.
    """
    out = []
    for n in [names] if isinstance(names, str) else list(names):
        hits = TEXT_PERTURBATIONS.list(n) if any(ch in str(n) for ch in "*?[") else [n] if n in TEXT_PERTURBATIONS else []
        if not hits:
            raise RegistryError(f"text_perturbations: unknown text perturbation {n!r}; expected one of "
                                f"{TEXT_PERTURBATIONS.list()}." + did_you_mean(str(n), TEXT_PERTURBATIONS.list()))
        out += [Cell("text", h, int(s), p) for h in hits for p in _combos(params) for s in severities]
    return out


def _combos(params: Mapping[str, Any]) -> list[dict[str, Any]]:
    keys = list(params)
    values = [v if isinstance(v, list) else [v] for v in params.values()]
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def perturbation_cells(names: Sequence[str] | str, severities: Sequence[int | float] = (1, 2, 3, 4, 5),
                       **params: Sequence[Any] | Any) -> list[Cell]:
    """Cells for every name × severity × combination of list-valued ``params``.

    ``perturbation_cells(["gaussian_noise", "fog"], [1, 3])`` → 4 cells;
    ``perturbation_cells("band_noise", [1], band=[(0, .1), (.1, .3)])`` → 2 cells.
    Names may be globs (``"*blur"``), families (``"noise"``) or ``"imagenet-c"``
    (:func:`vlmkit.registry.resolve_perturbations`); an unknown name is an error. A perturbation
    registered without severities (``band_filter``) gets one cell at severity 1 whatever ``severities``,
    and so does a cell whose ``params`` fix the budget (``eps=[1/255, 4/255]``: one cell per budget).
    """
    expanded = resolve_perturbations(names)
    levels = list(severities)
    if not levels:
        raise InputError("perturbation_cells: severities is empty; expected e.g. [1, 3, 5]")
    return [Cell("perturbation", n, s, p) for n in expanded for p in _combos(params)
            for s in (levels if PERTURBATIONS.meta(n).get("severities") and "eps" not in p else [1])]


def attack_cells(name: str, **params: Sequence[Any] | Any) -> list[Cell]:
    """Cells for an attack over every combination of list-valued ``params`` (e.g. ``eps=[1/255, 4/255]``).

    Raises:
        RegistryError: ``name`` is not a registered attack.
    """
    if name not in ATTACKS:
        raise RegistryError(f"attacks: unknown attack {name!r}; expected one of {ATTACKS.list()}."
                            + did_you_mean(str(name), ATTACKS.list()))
    return [Cell("attack", name, 0, p) for p in _combos(params)]


def grid_cells(perturbations: Sequence[str] = (), severities: Sequence[int | float] = (1, 2, 3, 4, 5), *,
               perturbation_params: Mapping[str, Mapping[str, Any]] | None = None, attacks: Sequence[str] = (),
               epsilons: Sequence[float] = (), attack_steps: int | None = None,
               attack_params: Mapping[str, Mapping[str, Any]] | None = None,
               text_perturbations: Sequence[str] = (), text_severities: Sequence[int] = (1, 3, 5),
               text_params: Mapping[str, Mapping[str, Any]] | None = None) -> list[Cell]:
    """The cells of a notebook's grid parameters, in one vocabulary.

    Args:
        perturbations: Names, globs, families or groups (:func:`vlmkit.registry.resolve_perturbations`).
        severities: Severities of each perturbation.
        perturbation_params: Per perturbation name, parameters to sweep (lists) or fix, e.g.
            ``{"band_noise": {"band": ["low", "mid", "high"], "norm": "linf", "eps": [1/255, 4/255]}}``.
        attacks: Registered attack names.
        epsilons: L∞ budgets of every attack (unless its ``attack_params`` give ``eps``).
        attack_steps: Iterations of every attack (unless its ``attack_params`` give ``steps``).
        attack_params: Per attack name, parameters to sweep or fix (``{"freq_pgd": {"band": ["low", "high"]}}``;
            ``{"pgd": {"source": ["toy:rn", "toy:rn+toy:vit"]}}``: transfer cells crafted on those models).
        text_perturbations: Registered text perturbations (names or globs) of the captions / prompts.
        text_severities: Their severities (0–5).
        text_params: Per text perturbation, parameters to sweep or fix (``{"synonym": {"target": ["classnames"]}}``).

    Entries of ``*_params`` for perturbations or attacks the grid does not run are ignored (so one
    notebook default serves several grids), but their keys must be registered names.

    Raises:
        InputError: A ``*_params`` key is not a registered perturbation or attack, or its value not a mapping.
        RegistryError: Unknown perturbation or attack.
    """
    pp, ap = dict(perturbation_params or {}), dict(attack_params or {})
    names = resolve_perturbations(list(perturbations)) if perturbations else []
    for where, given, registry in (("perturbation_params", pp, PERTURBATIONS), ("attack_params", ap, ATTACKS)):
        unknown = [k for k in given if k not in registry]
        if unknown:
            raise InputError(f"{where} names {unknown}, which are not registered; expected keys among "
                             f"{registry.list()}." + did_you_mean(str(unknown[0]), registry.list()))
        bad = [k for k, v in given.items() if not isinstance(v, Mapping)]
        if bad:
            raise InputError(f"{where}[{bad[0]!r}] must map parameter names to values, got {given[bad[0]]!r}")
    cells = [c for n in names for c in perturbation_cells(n, severities, **pp.get(n, {}))]
    for a in attacks:
        params = dict(ap.get(a, {}))
        if "eps" not in params and epsilons:
            params["eps"] = [float(e) for e in epsilons]
        if "steps" not in params and attack_steps is not None:
            params["steps"] = int(attack_steps)
        cells += attack_cells(a, **params)
    tp = dict(text_params or {})
    unknown = [k for k in tp if k not in TEXT_PERTURBATIONS]
    if unknown:
        raise InputError(f"text_params names {unknown}, which are not registered text perturbations; expected keys "
                         f"among {TEXT_PERTURBATIONS.list()}." + did_you_mean(str(unknown[0]), TEXT_PERTURBATIONS.list()))
    for n in text_perturbations:
        cells += text_cells(n, text_severities, **tp.get(n, {}))
    return cells


def cells_from_records(records: Iterable[Mapping[str, Any]]) -> list[Cell]:
    """Cells from plain dicts ``{kind, name, severity, params}`` (YAML grids)."""
    out = []
    for r in records:
        extra = set(r) - {"kind", "name", "severity", "params"}
        if extra:
            raise InputError(f"grid cell {dict(r)} has unknown keys {sorted(extra)}; expected kind, name, severity, params")
        out.append(Cell(r.get("kind", "perturbation"), r.get("name", "none"), r.get("severity", 0),
                        dict(r.get("params", {}) or {})))
    return out
