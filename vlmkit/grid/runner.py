"""Run a grid: expand it, hand its runs to an executor, merge the grid's table.

:func:`run_grid` expands a grid file (:mod:`vlmkit.grid.spec`) into runs, gives them to an
:class:`~vlmkit.grid.executors.Executor` (``local``: sequential or ``workers`` processes; ``slurm``:
submitit jobs, :mod:`vlmkit.grid.cluster`), each of which executes every run with
:func:`vlmkit.grid.execute.execute_run` into ``<out_root>/<grid>/<run id>/`` and writes the run's cell
file ``<out_root>/<grid>/cells/<run id>.parquet``. The driver then merges the cell files into
``<out_root>/<grid>/grid_results.parquet`` (+ ``.csv``, atomically) with
:func:`vlmkit.results.merge_files`, and writes ``grid.json`` (each run's status). Finished runs are
skipped whichever executor finished them, so a grid resumes across executors.

Before any executor starts (and for a dry run), :func:`run_grid` checks what can be checked without
running anything: the output folder can be written, every notebook exists and declares every
parameter the runs carry with a value of its type (:func:`vlmkit.grid.contract.check_parameters`),
and every model spec resolves, its weights cached or reachable (:func:`vlmkit.grid.contract.check_models`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vlmkit.errors import InputError
from vlmkit.grid.contract import check_models, check_parameters, check_run_datasets
from vlmkit.grid.execute import (
    NOTEBOOKS_DIR,
    RunResult,
    cell_file,
    execute_run,
    notebook_path,
    run_finished,
    write_run_table,
)
from vlmkit.grid.executors import Executor, LocalExecutor
from vlmkit.grid.spec import EXECUTOR_KINDS, GridSpec, load_grid
from vlmkit.results import COLUMNS, atomic_write, csv_view, merge_files


def merge_grid_table(grid_root: str | Path, run_ids: Sequence[str] | None = None) -> Any:
    """Merge the cell files of a grid into ``grid_results.parquet``/``.csv`` (atomic) and return the table.

    ``run_ids``: the grid's runs (default: every cell file; files of runs no longer in the grid are
    left out). Rows are ordered by run id, then as each run collected them, so the table does not
    depend on which executor ran the cells or in what order they finished.
    """
    root = Path(grid_root)
    files = sorted((root / "cells").glob("*.parquet"), key=lambda f: f.stem) if (root / "cells").is_dir() else []
    if run_ids is not None:
        keep = set(run_ids)
        files = [f for f in files if f.stem in keep]
    df = merge_files(files, columns=["run_id", *COLUMNS, "run"])
    atomic_write(root / "grid_results.parquet", lambda p: df.to_parquet(p, index=False))
    atomic_write(root / "grid_results.csv", lambda p: csv_view(df).to_csv(p, index=False))
    return df


def executor_for(kind: str, options: Mapping[str, Any] | None = None, workers: int | str | None = None) -> Executor:
    """The executor of ``kind`` configured from a grid's ``executor:`` block.

    Args:
        kind: ``"local"`` or ``"slurm"``.
        options: The ``executor:`` block (``workers`` for local; submitit resources for slurm).
        workers: Local parallel runs, overriding ``options["workers"]``.

    Raises:
        ValueError: Unknown kind, or bad ``workers``.
    """
    options = dict(options or {})
    if kind == "local":
        try:
            return LocalExecutor(workers or options.get("workers", 1))
        except ValueError as e:
            raise InputError(f"local executor: {e}") from None
    if kind == "slurm":
        from vlmkit.grid.cluster import SubmititExecutor  # imports submitit (optional) when present

        return SubmititExecutor(options)
    raise InputError(f"executor {kind!r} is not available; expected one of {', '.join(map(repr, EXECUTOR_KINDS))}")


def check_out_root(out_root: str | Path) -> Path:
    """``out_root`` as a Path, or a one-line :class:`InputError` when it (or a parent) is a file or the folder
    it would be made in is not writable. Creates nothing (a dry run leaves no folder behind)."""
    out = Path(out_root).expanduser()
    for p in [out, *out.parents]:
        if p.exists():
            if not p.is_dir():
                raise InputError(f"output folder (--out) {str(out_root)!r}: {str(p)!r} is a file, not a folder")
            if not os.access(p, os.W_OK | os.X_OK):
                what = "is" if p == out else f"would be created in {str(p)!r}, which is"
                raise InputError(f"output folder (--out) {str(out_root)!r} {what} not writable")
            break
    return out


def run_grid(grid: str | Path | GridSpec, *, out_root: str | Path = "outputs", only: Sequence[str] | None = None,
             dry_run: bool = False, extra: Mapping[str, Any] | None = None, notebooks_dir: Path = NOTEBOOKS_DIR,
             timeout_s: int | None = None, executor: str | Executor | None = None, workers: int | str | None = None,
             progress: bool = True, executor_options: Mapping[str, Any] | None = None,
             overrides: Mapping[str, Any] | None = None, check_weights: bool = True) -> list[RunResult]:
    """Expand a grid and execute its runs (see module docstring).

    Args:
        grid: YAML path or a loaded :class:`GridSpec`.
        out_root: Parent of ``<grid name>/<run id>/`` folders.
        only: Run-id globs to keep.
        dry_run: Only list the runs and their folders.
        extra: Parameters added to every run (e.g. ``{"data_path": "../shared/data"}``); variants and axes
            override them, and no notebook needs to declare them.
        overrides: Parameters of every run that win over everything (``-p``/``-y`` on the command line);
            checked like the grid's own.
        notebooks_dir: Where the notebooks live (default: the packaged ones, ``vlmkit notebooks DIR``
            copies them out for edits).
        timeout_s: Per-cell timeout (default: the grid's ``executor.timeout_s`` or 1800).
        executor: "local" (default) — runs one after another, or ``workers`` processes in parallel;
            "slurm" — one submitit job per run (or per ``chunk_size`` runs), see :mod:`vlmkit.grid.cluster`;
            or an :class:`~vlmkit.grid.executors.Executor` instance.
        workers: Parallel runs for the local executor (a number, or "gpus": one per visible GPU).
        executor_options: Overrides of the grid's ``executor:`` block (partition, gpus_per_node,
            timeout_min, mem_gb, cpus_per_task, max_retries, chunk_size, cluster, poll_s, slurm).
        check_weights: Require the weights of every model spec of the runs to be cached or reachable
            before anything runs (a dry run only parses the specs).

    Returns:
        One :class:`RunResult` per run, in grid order. The merged table is ``<out_root>/<grid>/grid_results.parquet``.

    Raises:
        DataError, InputError, ModelSpecError, WeightsNotFoundError: Before anything runs (see the module
            docstring), with a one-line message naming the grid file and the key.
    """
    spec = grid if isinstance(grid, GridSpec) else load_grid(grid)
    check_out_root(out_root)
    runs = spec.runs(only=only, extra=extra, overrides=overrides)
    check_parameters(spec, notebooks_dir, extra=extra, overrides=overrides)
    root = Path(out_root) / spec.name
    # finished runs are skipped: their models need only parse (a finished grid resumes offline)
    todo = [r for r in runs if dry_run or not run_finished(r, root / r.run_id, notebooks_dir)]
    check_models([r for r in runs if r not in todo], weights=False, source=spec.source)
    check_models(todo, weights=check_weights and not dry_run, source=spec.source, extra=extra)
    check_run_datasets(todo, source=spec.source, extra=extra)
    ex = {**spec.executor, **{k: v for k, v in (executor_options or {}).items() if v is not None}}
    timeout = int(timeout_s or ex.get("timeout_s", 1800))
    if dry_run:
        return [RunResult(r, root / r.run_id, "planned") for r in runs]
    runner = executor if isinstance(executor, Executor) else \
        executor_for(executor or ex.get("kind", "local"), ex, workers)
    kind = runner.kind
    results = runner.run(runs, root, notebooks_dir=notebooks_dir, timeout_s=timeout, name=spec.name,
                         progress=progress)
    merge_grid_table(root, [r.run_id for r in spec.runs(extra=extra, overrides=overrides)])  # all runs, not only --only's
    atomic_write(root / "grid.json", lambda p: Path(p).write_text(json.dumps(
        {"grid": spec.name, "source": str(spec.source), "executor": kind, "results": "grid_results.parquet",
         "runs": [
            {"run_id": r.run.run_id, "status": r.status, "out_dir": str(r.out_dir),
             "failed_notebook": str(r.failed_notebook) if r.failed_notebook else None, "error": r.error,
             "seconds": round(r.seconds, 2), "attempts": r.attempts, "job_id": r.job_id or None,
             "log": str(r.log) if r.log else None} for r in results]}, indent=2)))
    return results


__all__ = ["EXECUTOR_KINDS", "NOTEBOOKS_DIR", "RunResult", "cell_file", "check_out_root", "execute_run", "executor_for",
           "merge_grid_table", "notebook_path", "run_finished", "run_grid", "write_run_table"]
