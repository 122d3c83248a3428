"""Execute grid runs with papermill: one output folder per run, notebooks in order, resumable.

For run ``r`` of grid ``g`` every notebook ``NN_name`` is executed into
``<out_root>/<g>/<r>/NN_name.ipynb`` with the run's parameters plus ``out_dir`` (the run folder).
A notebook that finished writes ``.done-NN_name`` (atomically, with its parameters), so re-running a
grid skips finished notebooks and runs; a failed notebook is reported with its path and the grid goes
on with the next run. Each cell has a timeout, so a hung or dead kernel ends in an error, never a hang.
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


def notebook_path(name: str, notebooks_dir: Path) -> Path:
    p = notebooks_dir / (name if name.endswith(".ipynb") else f"{name}.ipynb")
    if not p.is_file():
        known = sorted(q.stem for q in notebooks_dir.glob("*.ipynb"))
        raise DataNotFoundError(f"notebook {name!r} not found in {str(notebooks_dir)!r}; available: {known}")
    return p


def _marker(out_dir: Path, nb: str) -> Path:
    return out_dir / f".done-{Path(nb).stem}"


def execute_run(run: Run, out_dir: Path, *, notebooks_dir: Path = NOTEBOOKS_DIR, timeout_s: int = 1800,
                kernel_name: str = "python3", log_output: bool = False) -> RunResult:
    """Execute the notebooks of one run in order (skipping finished ones)."""
    import papermill as pm

    out_dir.mkdir(parents=True, exist_ok=True)
    params = {**run.parameters, "out_dir": str(out_dir.resolve())}
    t0 = time.perf_counter()
    ran = False
    for nb in run.notebooks:
        src = notebook_path(nb, notebooks_dir)
        marker = _marker(out_dir, nb)
        if marker.is_file() and json.loads(marker.read_text()).get("parameters") == _jsonable(params):
            continue
        dst = out_dir / src.name
        try:
            pm.execute_notebook(str(src), str(dst), parameters=params, kernel_name=kernel_name,
                                execution_timeout=timeout_s, start_timeout=120, progress_bar=False,
                                log_output=log_output, cwd=str(notebooks_dir))
        except Exception as e:  # PapermillExecutionError, DeadKernelError, CellTimeoutError, ...
            msg = f"{type(e).__name__}: {' '.join(str(e).split())[:500]}"
            log.error("grid %s run %s: notebook %s failed (%s)", run.grid, run.run_id, dst, msg)
            return RunResult(run, out_dir, "failed", dst, msg, time.perf_counter() - t0)
        atomic_write(marker, lambda p: Path(p).write_text(json.dumps({"parameters": _jsonable(params),
                                                                        "finished": time.time()})))
        ran = True
    return RunResult(run, out_dir, "done" if ran else "skipped", seconds=time.perf_counter() - t0)


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def run_grid(grid: str | Path | GridSpec, *, out_root: str | Path = "outputs", only: Sequence[str] | None = None,
             dry_run: bool = False, extra: Mapping[str, Any] | None = None, notebooks_dir: Path = NOTEBOOKS_DIR,
             timeout_s: int | None = None, executor: str | None = None, workers: int | None = None,
             progress: bool = True) -> list[RunResult]:
    """Expand a grid and execute its runs (see module docstring).

    Args:
        grid: YAML path or a loaded :class:`GridSpec`.
        out_root: Parent of ``<grid name>/<run id>/`` folders.
        only: Run-id globs to keep.
        dry_run: Only list the runs and their folders.
        extra: Parameters added to every run (e.g. ``{"data_path": "../shared/data"}``).
        notebooks_dir: Where the notebooks live.
        timeout_s: Per-cell timeout (default: the grid's ``executor.timeout_s`` or 1800).
        executor: "local" (default) — runs one after another, or ``workers`` processes in parallel.
        workers: Parallel runs for the local executor.
    """
    spec = grid if isinstance(grid, GridSpec) else load_grid(grid)
    runs = spec.runs(only=only, extra=extra)
    root = Path(out_root) / spec.name
    ex = {**spec.executor}
    timeout = int(timeout_s or ex.get("timeout_s", 1800))
    n_workers = int(workers or ex.get("workers", 1))
    if dry_run:
        return [RunResult(r, root / r.run_id, "planned") for r in runs]
    kind = executor or ex.get("kind", "local")
    if kind != "local":
        raise ValueError(f"executor {kind!r} is not available; this version runs grids with executor 'local'")
    results: list[RunResult] = []
    if n_workers <= 1:
        for r in tqdm(runs, desc=f"grid {spec.name}", disable=not progress):
            results.append(execute_run(r, root / r.run_id, notebooks_dir=notebooks_dir, timeout_s=timeout))
    else:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(n_workers) as pool:
            futs = [pool.submit(execute_run, r, root / r.run_id, notebooks_dir=notebooks_dir, timeout_s=timeout)
                    for r in runs]
            for f in tqdm(futs, desc=f"grid {spec.name}", disable=not progress):
                results.append(f.result())
    atomic_write(root / "grid.json", lambda p: Path(p).write_text(json.dumps(
        {"grid": spec.name, "source": str(spec.source), "runs": [
            {"run_id": r.run.run_id, "status": r.status, "out_dir": str(r.out_dir),
             "failed_notebook": str(r.failed_notebook) if r.failed_notebook else None, "error": r.error,
             "seconds": round(r.seconds, 2)} for r in results]}, indent=2)))
    return results


__all__ = ["RunResult", "execute_run", "notebook_path", "run_grid"]
