"""YAML parameter grids for papermill runs.

A grid file names the notebooks to run, the parameters they all get, and the axes to vary::

    name: smoke
    notebooks: [01_data, 02_attacks, 03_retrieval, 04_drift, 05_interpretability, 06_captions, 07_report]
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
``<out_root>/<grid name>/<run id>/``; ``--only`` selects runs by id glob. ``vlmkit grid X.yaml -p KEY VALUE``
(``-y YAML``) sets a parameter of every run over everything the file says.

A grid is named by its file or, for the grids shipped in ``vlmkit/params/``, by its name
(:func:`grid_path`). Every notebook declares its parameters (``n_images: int = 16`` in its
``parameters`` cell) and is passed only those; :mod:`vlmkit.grid.contract` refuses, before anything
runs, a parameter no notebook declares or a value of the wrong type.
"""

from __future__ import annotations

import fnmatch
import hashlib
import itertools
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vlmkit.errors import DataError, DataNotFoundError, InputError, did_you_mean

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

    def runs(self, only: Sequence[str] | None = None, extra: Mapping[str, Any] | None = None,
             overrides: Mapping[str, Any] | None = None) -> list[Run]:
        """Expand axes × variants into runs (filtered by id globs in ``only``).

        A run's parameters are the base ``parameters``, then ``extra`` (e.g. ``data_path``), then its
        variant, then its axes values, then ``overrides`` (the command line's ``-p``/``-y``: final).
        Overrides do not change run ids.
        """
        keys = list(self.axes)
        combos = [dict(zip(keys, vals)) for vals in itertools.product(*self.axes.values())] if keys else [{}]
        runs: list[Run] = []
        for variant in (self.variants or [{}]):
            for combo in combos:
                own = {**variant, **combo}
                params = {**self.parameters, **(extra or {}), **own, **(overrides or {})}
                # a variant that names itself ("variant: toy") is identified by that name, not its contents
                rid_src = ({"variant": variant["variant"], **combo} if "variant" in variant else own)
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


def packaged_grids_dir() -> Path:
    """The folder of the grids shipped inside the package (``vlmkit/params``; it may not exist)."""
    import vlmkit

    return Path(vlmkit.__file__).parent / "params"


def packaged_grids() -> list[str]:
    """Names of the packaged grids (``vlmkit grid NAME``)."""
    folder = packaged_grids_dir()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def grid_path(name_or_path: str | Path) -> Path:
    """The grid file of a path, or else of the name of a packaged grid (``smoke`` -> ``vlmkit/params/smoke.yaml``).

    Raises:
        DataNotFoundError: Neither a file nor a packaged grid; the message lists the packaged grids.
    """
    p = Path(name_or_path).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        raise DataNotFoundError(f"grid file {str(p)!r} is a folder; expected a grid YAML file or the name of a "
                                f"packaged grid ({', '.join(packaged_grids()) or 'none packaged'})")
    name = str(name_or_path)
    if "/" not in name and "\\" not in name:
        stem = name.removesuffix(".yaml").removesuffix(".yml")
        packaged = packaged_grids_dir() / f"{stem}.yaml"
        if stem and packaged.is_file():
            return packaged
    names = packaged_grids()
    raise DataNotFoundError(f"grid file {str(p)!r} does not exist and is not the name of a packaged grid."
                            f"{did_you_mean(p.stem, names)} Packaged grids: {', '.join(names) or '(none)'}")


def _fail(where: str, msg: str) -> DataError:
    return DataError(f"{where}: {msg}")


def _got(v: Any) -> str:
    text = " ".join(repr(v).split())
    return text if len(text) <= 60 else text[:57] + "..."


def _section(raw: Mapping[str, Any], key: str, kind: type, where: str, message: Callable[[Any], str]) -> Any:
    """The grid file's ``key`` (an empty ``kind`` when absent), refused with ``message(value)`` when not a ``kind``."""
    value = raw.get(key)
    if value is None:
        return kind()
    if not isinstance(value, kind):
        raise _fail(where, message(value))
    return value


def load_grid(path: str | Path) -> GridSpec:
    """Read and validate a grid YAML file, given by path or by the name of a packaged grid (:func:`grid_path`).

    Raises:
        DataNotFoundError: No such file nor packaged grid.
        DataError: Not YAML, not a mapping, or a key of the wrong shape; one line naming the file, the key and
            what was expected.
    """
    p = grid_path(path)
    where = f"grid file {str(p)!r}"
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise DataError(f"{where} is not valid YAML: {' '.join(str(e).split())}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{where} cannot be read: {e}") from None
    if raw is None:
        raise DataError(f"{where} is empty; expected a mapping with keys such as notebooks, parameters, axes")
    if not isinstance(raw, dict):
        raise DataError(f"{where} must hold a mapping with keys {sorted(_KEYS)}; got a {type(raw).__name__}")
    unknown = sorted(map(str, set(raw) - _KEYS))
    if unknown:
        hint = "".join(did_you_mean(k, _KEYS) for k in unknown[:1])
        raise DataError(f"{where} has unknown keys {unknown}; expected some of {sorted(_KEYS)}.{hint}".rstrip("."))
    notebooks = raw.get("notebooks")
    if isinstance(notebooks, str):
        notebooks = [notebooks]
    if not isinstance(notebooks, list) or not notebooks or not all(isinstance(n, str) and n for n in notebooks):
        raise _fail(where, f"'notebooks' must be a non-empty list of notebook names such as [01_data, 03_retrieval]; "
                           f"got {_got(notebooks)}")
    name = raw.get("name", p.stem)
    if not isinstance(name, (str, int)) or not str(name).strip() or isinstance(name, bool):
        raise _fail(where, f"'name' must be a string (the grid's output folder); got {_got(name)}")
    if re.search(r"[/\\]", str(name)) or str(name) in (".", ".."):
        raise _fail(where, f"'name' {str(name)!r} must be a plain folder name, without '/'")
    params = _section(raw, "parameters", dict, where,
                      lambda v: f"'parameters' must be a mapping such as {{n_images: 16, seed: 0}}; got {_got(v)}")
    axes = _section(raw, "axes", dict, where,
                    lambda v: f"'axes' must map parameter names to non-empty lists such as {{seed: [0, 1]}}; got {_got(v)}")
    for k, v in axes.items():
        if not isinstance(v, list) or not v:
            raise _fail(where, f"'axes' must map parameter names to non-empty lists: axes.{k} should be a list "
                               f"such as [{_got(v)}]; got {_got(v)}")
    variants = _section(raw, "variants", list, where,
                        lambda v: f"'variants' must be a list of mappings such as [{{variant: toy, models: [toy:vit]}}]; "
                                  f"got {_got(v)}")
    for i, v in enumerate(variants):
        if not isinstance(v, dict):
            raise _fail(where, f"'variants' must be a list of mappings: variants[{i}] is {_got(v)}")
    executor = _section(raw, "executor", dict, where,
                        lambda v: f"'executor' must be a mapping such as {{kind: local, workers: 2}}; got {_got(v)}")
    unknown = sorted(map(str, set(executor) - EXECUTOR_KEYS))
    if unknown:
        raise _fail(where, f"'executor' has unknown keys {unknown}; expected some of {sorted(EXECUTOR_KEYS)}")
    if executor.get("kind", "local") not in EXECUTOR_KINDS:
        raise _fail(where, f"executor kind {executor['kind']!r}; expected one of {', '.join(map(repr, EXECUTOR_KINDS))}")
    for key in ("workers", "timeout_s"):
        v = executor.get(key)
        if v is not None and not (isinstance(v, int) and not isinstance(v, bool) and v > 0) and \
                not (key == "workers" and isinstance(v, str) and v.lower() in ("gpus", "auto")):
            want = "a positive number of processes or 'gpus'" if key == "workers" else "a positive number of seconds"
            raise _fail(where, f"executor.{key} must be {want}; got {_got(v)}")
    description = raw.get("description", "")
    return GridSpec(name=str(name), notebooks=list(notebooks), parameters=dict(params), axes=dict(axes),
                    variants=list(variants), executor=dict(executor), source=p,
                    description="" if description is None else str(description))


__all__ = ["EXECUTOR_KEYS", "EXECUTOR_KINDS", "GridSpec", "Run", "grid_path", "load_grid", "packaged_grids",
           "packaged_grids_dir", "run_id"]
