"""Execute grid runs with papermill: one output folder per run, notebooks in order, resumable.

For run ``r`` of grid ``g`` every notebook ``NN_name`` is executed into
``<out_root>/<g>/<r>/NN_name.ipynb`` with the run's parameters plus ``out_dir`` (the run folder).
A notebook that finished writes ``.done-NN_name`` (atomically, with its parameters), so re-running a
grid skips finished notebooks and runs; a failed notebook is reported with its path and the grid goes
on with the next run. Each cell has a timeout, so a hung or dead kernel ends in an error, never a hang.

The grid's results table: a finished run writes all its result rows (every ``results.parquet`` under
its folder, as :func:`vlmkit.report.collect_results` sees them) into one file
``<out_root>/<g>/cells/<r>.parquet`` (atomically), and the driver merges those files into
``<out_root>/<g>/grid_results.parquet`` (+ ``.csv``, atomically). A run counts as finished when its
notebook markers match its parameters and its cell file exists, whichever executor ran it, so a grid
resumes across executors: ``local`` (sequential, or ``workers`` processes; ``workers: gpus`` pins one
process per visible GPU) and ``slurm`` (one submitit job per run or per ``chunk_size`` runs, see
:mod:`vlmkit.grid.cluster`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from vlmkit.errors import DataNotFoundError
from vlmkit.grid.spec import GridSpec, Run, load_grid
from vlmkit.results import atomic_write

log = logging.getLogger("vlmkit.grid")

NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"


@dataclass
class RunResult:
    run: Run
    out_dir: Path
    status: str  # "done", "skipped", "failed", "planned"
    failed_notebook: Path | None = None
    error: str = ""
    seconds: float = 0.0
    log: Path | None = None  # job log (stderr) of the last attempt, for cluster runs
    attempts: int = 1
    job_id: str = ""


def notebook_path(name: str, notebooks_dir: Path) -> Path:
    p = notebooks_dir / (name if name.endswith(".ipynb") else f"{name}.ipynb")
    if not p.is_file():
        known = sorted(q.stem for q in notebooks_dir.glob("*.ipynb"))
        raise DataNotFoundError(f"notebook {name!r} not found in {str(notebooks_dir)!r}; available: {known}")
    return p


def _marker(out_dir: Path, nb: str) -> Path:
    return out_dir / f".done-{Path(nb).stem}"


def _run_params(run: Run, out_dir: Path) -> dict[str, Any]:
    return {**run.parameters, "out_dir": str(Path(out_dir).resolve())}


def _notebook_done(out_dir: Path, nb: str, params: Mapping[str, Any]) -> bool:
    marker = _marker(out_dir, nb)
    try:
        return marker.is_file() and json.loads(marker.read_text()).get("parameters") == _jsonable(params)
    except (OSError, ValueError):
        return False


def cell_file(grid_root: Path, run_id: str) -> Path:
    """The file holding all result rows of one finished run (one file per grid cell)."""
    return Path(grid_root) / "cells" / f"{run_id}.parquet"


def run_finished(run: Run, out_dir: Path) -> bool:
    """Every notebook of ``run`` finished with these parameters and its cell file exists."""
    params = _run_params(run, out_dir)
    return all(_notebook_done(out_dir, nb, params) for nb in run.notebooks) and \
        cell_file(Path(out_dir).parent, run.run_id).is_file()


def write_run_table(run: Run, out_dir: Path) -> Path:
    """Collect every results table of a finished run into its cell file (atomically); returns its path.

    Rows get ``run_id`` and a ``run`` column ``<run id>/<sub folder>`` (what the report of the whole grid
    folder shows). A run whose notebooks wrote no table gets an empty cell file: it is still finished.
    """
    import pandas as pd

    from vlmkit.errors import DataNotFoundError as _NoResults
    from vlmkit.report.html import collect_results
    from vlmkit.results import COLUMNS

    out_dir = Path(out_dir)
    try:
        df = collect_results(out_dir)
        df["run"] = [run.run_id if r == "." else f"{run.run_id}/{r}" for r in df["run"]]
    except _NoResults:
        df = pd.DataFrame(columns=[*COLUMNS, "run"])
    df.insert(0, "run_id", run.run_id)
    path = cell_file(out_dir.parent, run.run_id)
    atomic_write(path, lambda p: df.to_parquet(p, index=False))
    return path


def merge_grid_table(grid_root: str | Path, run_ids: Sequence[str] | None = None) -> Any:
    """Merge the cell files of a grid into ``grid_results.parquet``/``.csv`` (atomic) and return the table.

    ``run_ids``: the grid's runs (default: every cell file; files of runs no longer in the grid are
    left out). Rows are ordered by run id, then as each run collected them, so the table does not
    depend on which executor ran the cells or in what order they finished.
    """
    import pandas as pd

    from vlmkit.results import COLUMNS

    root = Path(grid_root)
    files = sorted((root / "cells").glob("*.parquet"), key=lambda f: f.stem) if (root / "cells").is_dir() else []
    if run_ids is not None:
        keep = set(run_ids)
        files = [f for f in files if f.stem in keep]
    frames = [f for f in (pd.read_parquet(p) for p in files) if len(f)]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run_id", *COLUMNS, "run"])
    atomic_write(root / "grid_results.parquet", lambda p: df.to_parquet(p, index=False))
    atomic_write(root / "grid_results.csv", lambda p: df.to_csv(p, index=False))
    return df


def execute_run(run: Run, out_dir: Path, *, notebooks_dir: Path = NOTEBOOKS_DIR, timeout_s: int = 1800,
                kernel_name: str = "python3", log_output: bool = False, write_table: bool = True) -> RunResult:
    """Execute the notebooks of one run in order (skipping finished ones); a run that finishes writes its
    cell file (``write_table``)."""
    import papermill as pm

    out_dir.mkdir(parents=True, exist_ok=True)
    params = _run_params(run, out_dir)
    t0 = time.perf_counter()
    ran = False
    for nb in run.notebooks:
        src = notebook_path(nb, notebooks_dir)
        marker = _marker(out_dir, nb)
        if _notebook_done(out_dir, nb, params):
            continue
        if not ran:  # the run is (re)done: its old rows leave the grid's table until it finishes
            cell_file(out_dir.parent, run.run_id).unlink(missing_ok=True)
        dst = out_dir / src.name
        try:
            pm.execute_notebook(str(src), str(dst), parameters=params, kernel_name=kernel_name,
                                execution_timeout=timeout_s, start_timeout=120, progress_bar=False,
                                log_output=log_output, cwd=str(notebooks_dir))
        except Exception as e:  # PapermillExecutionError, DeadKernelError, CellTimeoutError, ...
            msg = f"{type(e).__name__}: {' '.join(str(e).split())[:500]}"
            if getattr(e, "ename", None):  # a notebook cell raised: name the exception, not the cell source
                msg = f"{type(e).__name__} in cell {getattr(e, 'exec_count', '?')}: {e.ename}: {str(e.evalue)[:500]}"
            log.error("grid %s run %s: notebook %s failed (%s)", run.grid, run.run_id, dst, msg)
            return RunResult(run, out_dir, "failed", dst, msg, time.perf_counter() - t0)
        atomic_write(marker, lambda p: Path(p).write_text(json.dumps({"parameters": _jsonable(params),
                                                                        "finished": time.time()})))
        ran = True
    if write_table and (ran or not cell_file(out_dir.parent, run.run_id).is_file()):
        write_run_table(run, out_dir)
    return RunResult(run, out_dir, "done" if ran else "skipped", seconds=time.perf_counter() - t0)


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def _gpu_worker_init(queue: Any) -> None:
    """Pin a local worker process (and the kernels it starts) to one GPU."""
    import os

    os.environ["CUDA_VISIBLE_DEVICES"] = str(queue.get())


def _local_workers(value: Any) -> tuple[int, list[int] | None]:
    """``workers`` → (processes, GPU ids to pin one per process, or None)."""
    if isinstance(value, str) and value.lower() in ("gpus", "auto"):
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return (n, list(range(n))) if n else (1, None)
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"workers={value!r}; expected a number of processes or 'gpus' (one per visible GPU)") from None
    if n < 1:
        raise ValueError(f"workers={value!r} must be at least 1")
    return n, None


def run_grid(grid: str | Path | GridSpec, *, out_root: str | Path = "outputs", only: Sequence[str] | None = None,
             dry_run: bool = False, extra: Mapping[str, Any] | None = None, notebooks_dir: Path = NOTEBOOKS_DIR,
             timeout_s: int | None = None, executor: str | None = None, workers: int | str | None = None,
             progress: bool = True, executor_options: Mapping[str, Any] | None = None) -> list[RunResult]:
    """Expand a grid and execute its runs (see module docstring).

    Args:
        grid: YAML path or a loaded :class:`GridSpec`.
        out_root: Parent of ``<grid name>/<run id>/`` folders.
        only: Run-id globs to keep.
        dry_run: Only list the runs and their folders.
        extra: Parameters added to every run (e.g. ``{"data_path": "../shared/data"}``).
        notebooks_dir: Where the notebooks live.
        timeout_s: Per-cell timeout (default: the grid's ``executor.timeout_s`` or 1800).
        executor: "local" (default) — runs one after another, or ``workers`` processes in parallel;
            "slurm" — one submitit job per run (or per ``chunk_size`` runs), see :mod:`vlmkit.grid.cluster`.
        workers: Parallel runs for the local executor (a number, or "gpus": one per visible GPU).
        executor_options: Overrides of the grid's ``executor:`` block (partition, gpus_per_node,
            timeout_min, mem_gb, cpus_per_task, max_retries, chunk_size, cluster, poll_s, slurm).

    Returns:
        One :class:`RunResult` per run, in grid order. The merged table is ``<out_root>/<grid>/grid_results.parquet``.
    """
    spec = grid if isinstance(grid, GridSpec) else load_grid(grid)
    runs = spec.runs(only=only, extra=extra)
    root = Path(out_root) / spec.name
    ex = {**spec.executor, **{k: v for k, v in (executor_options or {}).items() if v is not None}}
    timeout = int(timeout_s or ex.get("timeout_s", 1800))
    if dry_run:
        return [RunResult(r, root / r.run_id, "planned") for r in runs]
    kind = executor or ex.get("kind", "local")
    if kind not in ("local", "slurm"):
        raise ValueError(f"executor {kind!r} is not available; expected 'local' or 'slurm'")
    results: list[RunResult] = []
    if kind == "slurm":
        from vlmkit.grid.cluster import run_submitit

        results = run_submitit(runs, root, options=ex, notebooks_dir=notebooks_dir, timeout_s=timeout,
                               name=spec.name, progress=progress)
    else:
        n_workers, gpus = _local_workers(workers or ex.get("workers", 1))
        if n_workers <= 1:
            for r in tqdm(runs, desc=f"grid {spec.name}", disable=not progress):
                results.append(execute_run(r, root / r.run_id, notebooks_dir=notebooks_dir, timeout_s=timeout))
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            init: dict[str, Any] = {}
            if gpus:
                queue = multiprocessing.get_context().Queue()
                for g in gpus:
                    queue.put(g)
                init = {"initializer": _gpu_worker_init, "initargs": (queue,)}
            with ProcessPoolExecutor(n_workers, **init) as pool:
                futs = [pool.submit(execute_run, r, root / r.run_id, notebooks_dir=notebooks_dir, timeout_s=timeout)
                        for r in runs]
                for f in tqdm(futs, desc=f"grid {spec.name}", disable=not progress):
                    results.append(f.result())
    merge_grid_table(root, [r.run_id for r in spec.runs(extra=extra)])  # every run of the grid, not only --only's
    atomic_write(root / "grid.json", lambda p: Path(p).write_text(json.dumps(
        {"grid": spec.name, "source": str(spec.source), "executor": kind, "results": "grid_results.parquet",
         "runs": [
            {"run_id": r.run.run_id, "status": r.status, "out_dir": str(r.out_dir),
             "failed_notebook": str(r.failed_notebook) if r.failed_notebook else None, "error": r.error,
             "seconds": round(r.seconds, 2), "attempts": r.attempts, "job_id": r.job_id or None,
             "log": str(r.log) if r.log else None} for r in results]}, indent=2)))
    return results


__all__ = ["RunResult", "cell_file", "execute_run", "merge_grid_table", "notebook_path", "run_finished", "run_grid",
           "write_run_table"]
