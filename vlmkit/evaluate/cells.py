"""Grid cells: what one column of a robustness study applies to the images.

A :class:`Cell` is ``clean``, a registered ``perturbation`` (name × severity × params) or a
registered ``attack`` (name × params). Its :attr:`Cell.key` is a stable hash of what it does, so
caches and result tables recognise a cell across runs, machines and executors.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import vlmkit.attacks  # noqa: F401  (registers attacks: cells are validated against the registries)
import vlmkit.perturb  # noqa: F401  (registers perturbations)
from vlmkit.errors import InputError
from vlmkit.registry import ATTACKS, PERTURBATIONS

KINDS = ("clean", "perturbation", "attack")


@dataclass(frozen=True)
class Cell:
    """One grid cell.

    Attributes:
        kind: "clean", "perturbation" or "attack".
        name: Registry name ("none" for clean).
        severity: Perturbation severity (0 for clean and attacks unless given).
        params: Extra keyword arguments (attack eps/steps, perturbation band, ...).
    """

    kind: str = "clean"
    name: str = "none"
    severity: int | float = 0
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"cell kind {self.kind!r} is unknown; expected one of {KINDS}")
        if self.kind == "perturbation":
            PERTURBATIONS.get(self.name)
        elif self.kind == "attack":
            ATTACKS.get(self.name)

    @property
    def key(self) -> str:
        blob = json.dumps({"kind": self.kind, "name": self.name, "severity": self.severity,
                           "params": dict(self.params)}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def family(self) -> str:
        if self.kind == "perturbation":
            return str(PERTURBATIONS.meta(self.name).get("family", self.name))
        return self.kind if self.kind == "clean" else str(ATTACKS.meta(self.name).get("family", "attack"))

    @property
    def params_json(self) -> str:
        return json.dumps(dict(self.params), sort_keys=True, default=str)

    def label(self) -> str:
        """Short human label, e.g. ``gaussian_noise@3`` or ``pgd{eps=0.0157}``."""
        if self.kind == "clean":
            return "clean"
        p = ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        sev = f"@{self.severity}" if self.kind == "perturbation" else ""
        return f"{self.name}{sev}" + (f"{{{p}}}" if p else "")


CLEAN = Cell()


def perturbation_cells(names: Sequence[str] | str, severities: Sequence[int | float] = (1, 2, 3, 4, 5),
                       **params: Sequence[Any] | Any) -> list[Cell]:
    """Cells for every name × severity × combination of list-valued ``params``.

    ``perturbation_cells(["gaussian_noise", "fog"], [1, 3])`` → 4 cells;
    ``perturbation_cells("band_noise", [1], band=[(0, .1), (.1, .3)])`` → 2 cells.
    Names may be globs over the registry (``"*blur"``).
    """
    names = [names] if isinstance(names, str) else list(names)
    expanded: list[str] = []
    for n in names:
        hits = PERTURBATIONS.list(n) if any(ch in n for ch in "*?[") else [n]
        if not hits:
            raise InputError(f"perturbation pattern {n!r} matches nothing; known: {PERTURBATIONS.list()}")
        expanded += hits
    keys = list(params)
    values = [v if isinstance(v, list) else [v] for v in params.values()]
    return [Cell("perturbation", n, s, dict(zip(keys, combo)))
            for n in expanded for s in severities for combo in itertools.product(*values)]


def attack_cells(name: str, **params: Sequence[Any] | Any) -> list[Cell]:
    """Cells for an attack over every combination of list-valued ``params`` (e.g. ``eps=[1/255, 4/255]``)."""
    keys = list(params)
    values = [v if isinstance(v, list) else [v] for v in params.values()]
    return [Cell("attack", name, 0, dict(zip(keys, combo))) for combo in itertools.product(*values)]


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
