"""YAML parameter grids for papermill runs.

A grid file names the notebooks to run, the parameters they all get, and the axes to vary::

    name: smoke
    notebooks: [01_data, 02_attacks, 03_retrieval, 04_drift, 05_interpretability, 06_report]
    parameters:            # passed to every notebook of every run
      models: ["toy:rn", "toy:vit"]
      n_images: 32
    axes:                  # the grid: one run per combination (product of the lists)
      seed: [0, 1]
    variants:              # optional extra runs: each overrides the base parameters
      - {models: ["open_clip:ViT-B-32/laion2b_s34b_b79k"], device: cuda}
    executor: {kind: local, workers: 1, timeout_s: 1800}
    # or, on a cluster (``--executor slurm`` or ``kind: slurm``; see vlmkit.grid.cluster):
    # executor: {kind: slurm, partition: gpu, gpus_per_node: 1, cpus_per_task: 8, mem_gb: 64,
    #            timeout_min: 240, max_retries: 2, chunk_size: 1, slurm: {account: myproj}}

Each run gets a stable id from its overrides (``seed-0``, ``seed-1`` ...), and its own output folder
``<out_root>/<grid name>/<run id>/``; ``--only`` selects runs by id glob.
"""

from __future__ import annotations

import fnmatch
import hashlib
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vlmkit.errors import DataError, DataNotFoundError, InputError

_KEYS = {"name", "description", "notebooks", "parameters", "axes", "variants", "executor", "data_parameters"}
#: Executor kinds a grid may name (``executor: {kind: ...}`` or ``--executor``), see :mod:`vlmkit.grid.executors`.
EXECUTOR_KINDS = ("local", "slurm")
EXECUTOR_KEYS = {"kind", "workers", "timeout_s", "cluster", "partition", "gpus_per_node", "cpus_per_task", "mem_gb",
                 "timeout_min", "max_retries", "chunk_size", "poll_s", "slurm"}


@dataclass(frozen=True)
class Run:
    """One run of a grid: an id, the notebooks in order and their parameters."""

    grid: str
    run_id: str
    notebooks: tuple[str, ...]
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class GridSpec:
    name: str
    notebooks: list[str]
    parameters: dict[str, Any]
    axes: dict[str, list[Any]]
    variants: list[dict[str, Any]]
    executor: dict[str, Any]
    source: Path | None = None
    description: str = ""

    def runs(self, only: Sequence[str] | None = None, extra: Mapping[str, Any] | None = None) -> list[Run]:
        """Expand axes × variants into runs (filtered by id globs in ``only``)."""
        keys = list(self.axes)
        combos = [dict(zip(keys, vals)) for vals in itertools.product(*self.axes.values())] if keys else [{}]
        runs: list[Run] = []
        for variant in (self.variants or [{}]):
            for combo in combos:
                overrides = {**variant, **combo}
                params = {**self.parameters, **(extra or {}), **overrides}
                # a variant that names itself ("variant: toy") is identified by that name, not its contents
                rid_src = ({"variant": variant["variant"], **combo} if "variant" in variant else overrides)
                runs.append(Run(self.name, run_id(rid_src), tuple(self.notebooks), params))
        ids = [r.run_id for r in runs]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise InputError(f"grid {self.name!r} expands to duplicate run ids {sorted(dup)}")
        if only:
            runs = [r for r in runs if any(fnmatch.fnmatchcase(r.run_id, pat) for pat in only)]
            if not runs:
                raise InputError(f"--only {list(only)} matches no run of grid {self.name!r}; runs: {ids}")
        return runs


def _short(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "+".join(_short(x) for x in v)
    if isinstance(v, dict):
        return hashlib.sha256(json.dumps(v, sort_keys=True).encode()).hexdigest()[:6]
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", str(v))


def run_id(overrides: Mapping[str, Any]) -> str:
    """Stable, readable id of a run: ``k-v_k-v`` (hashed when long), ``default`` for no overrides."""
    if not overrides:
        return "default"
    if set(overrides) == {"variant"}:
        return _short(overrides["variant"])
    text = "_".join(f"{k}-{_short(v)}" for k, v in sorted(overrides.items()))
    if len(text) > 80:
        text = text[:60] + "-" + hashlib.sha256(text.encode()).hexdigest()[:8]
    return text


def load_grid(path: str | Path) -> GridSpec:
    """Read and validate a grid YAML file (errors name the file and the key)."""
    p = Path(path)
    if not p.is_file():
        raise DataNotFoundError(f"grid file {str(p)!r} does not exist")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise DataError(f"grid file {str(p)!r} is not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise DataError(f"grid file {str(p)!r} must hold a mapping with keys {sorted(_KEYS)}")
    unknown = set(raw) - _KEYS
    if unknown:
        raise DataError(f"grid file {str(p)!r} has unknown keys {sorted(unknown)}; expected some of {sorted(_KEYS)}")
    notebooks = raw.get("notebooks") or []
    if not notebooks or not all(isinstance(n, str) for n in notebooks):
        raise DataError(f"grid file {str(p)!r}: 'notebooks' must be a non-empty list of notebook names")
    axes = raw.get("axes") or {}
    if not isinstance(axes, dict) or not all(isinstance(v, list) and v for v in axes.values()):
        raise DataError(f"grid file {str(p)!r}: 'axes' must map parameter names to non-empty lists")
    variants = raw.get("variants") or []
    if not isinstance(variants, list) or not all(isinstance(v, dict) for v in variants):
        raise DataError(f"grid file {str(p)!r}: 'variants' must be a list of mappings")
    executor = raw.get("executor") or {}
    if not isinstance(executor, dict):
        raise DataError(f"grid file {str(p)!r}: 'executor' must be a mapping such as {{kind: local, workers: 2}}")
    unknown = set(executor) - EXECUTOR_KEYS
    if unknown:
        raise DataError(f"grid file {str(p)!r}: 'executor' has unknown keys {sorted(unknown)}; "
                        f"expected some of {sorted(EXECUTOR_KEYS)}")
    if executor.get("kind", "local") not in EXECUTOR_KINDS:
        raise DataError(f"grid file {str(p)!r}: executor kind {executor['kind']!r}; expected one of "
                        f"{', '.join(map(repr, EXECUTOR_KINDS))}")
    return GridSpec(name=str(raw.get("name") or p.stem), notebooks=list(notebooks),
                    parameters=dict(raw.get("parameters") or {}), axes=dict(axes), variants=list(variants),
                    executor=dict(executor), source=p, description=str(raw.get("description", "")))
