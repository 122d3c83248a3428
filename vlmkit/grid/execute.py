"""Execute one grid run with papermill: its notebooks in order, resumable, then its cell file.

For run ``r`` of grid ``g`` every notebook ``NN_name`` is executed into
``<out_root>/<g>/<r>/NN_name.ipynb`` with the run's parameters plus ``out_dir`` (the run folder), each
notebook getting only the parameters it declares (:func:`vlmkit.grid.contract.parameters_for`).
A notebook that finished writes ``.done-NN_name`` (atomically, with the parameters it was passed and
the names it declared), so executing a run again skips its finished notebooks; a failed notebook ends the run with a ``failed``
:class:`RunResult` naming it. Each cell has a timeout, so a hung or dead kernel ends in an error,
never a hang.

A run that finishes writes all its result rows (every ``results.parquet`` under its folder, see
:func:`vlmkit.results.result_files`) into one file ``<out_root>/<g>/cells/<r>.parquet`` (atomically).
A run counts as finished when its notebook markers match its parameters and its cell file exists,
whichever executor ran it (:mod:`vlmkit.grid.executors`).

This module imports nothing else of :mod:`vlmkit.grid` but the grid spec and contract, so every executor can use it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmkit.errors import DataNotFoundError
from vlmkit.grid.contract import notebook_parameters, parameters_for
from vlmkit.grid.notebooks import packaged_notebooks
from vlmkit.grid.spec import Run
from vlmkit.results import COLUMNS, atomic_write, merge_files, result_files

log = logging.getLogger("vlmkit.grid")

#: The notebooks a grid executes by default: those shipped inside the package (``vlmkit/notebooks``).
NOTEBOOKS_DIR: Path = packaged_notebooks()


@dataclass
class RunResult:
    """What became of one run of a grid.

    Attributes:
        run: The run.
        out_dir: Its output folder.
        status: ``"done"``, ``"skipped"`` (already finished), ``"failed"`` or ``"planned"`` (dry run).
        failed_notebook: The executed copy of the notebook that failed.
        error: One line on the failure.
        seconds: Wall time of this execution.
        log: Job log (stderr) of the last attempt, for cluster runs.
        attempts: Executions of the run (cluster runs are retried).
        job_id: Cluster job of the last attempt.
    """

    run: Run
    out_dir: Path
    status: str
    failed_notebook: Path | None = None
    error: str = ""
    seconds: float = 0.0
    log: Path | None = None
    attempts: int = 1
    job_id: str = ""


def notebook_path(name: str, notebooks_dir: Path) -> Path:
    """The notebook ``name`` (with or without ``.ipynb``) in ``notebooks_dir``.

    Raises:
        DataNotFoundError: No such notebook; the message lists the available ones.
    """
    p = notebooks_dir / (name if name.endswith(".ipynb") else f"{name}.ipynb")
    if not p.is_file():
        known = sorted(q.stem for q in notebooks_dir.glob("*.ipynb"))
        raise DataNotFoundError(f"notebook {name!r} not found in {str(notebooks_dir)!r}; available: {known}")
    return p


def _marker(out_dir: Path, nb: str) -> Path:
    return out_dir / f".done-{Path(nb).stem}"


def _run_params(run: Run, out_dir: Path) -> dict[str, Any]:
    return {**run.parameters, "out_dir": str(Path(out_dir).resolve())}


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def _notebook_done(out_dir: Path, nb: str, params: Mapping[str, Any], declared: Any = None) -> bool:
    """The marker of ``nb`` records the parameters it would be passed now.

    ``params``: the run's parameters; ``declared``: the notebook's parameter names (default: those its
    marker recorded). Markers written before notebooks got only their own parameters hold them all.
    """
    marker = _marker(out_dir, nb)
    try:
        if not marker.is_file():
            return False
        done = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    if "declared" not in done:
        return done.get("parameters") == _jsonable(params)
    names = done["declared"] if declared is None else declared
    return done.get("parameters") == _jsonable(parameters_for(params, names))


class _KnownParameters(logging.Filter):
    """Drops papermill's "Passed unknown parameter" warnings: notebooks are passed only what they declare,
    so the warning comes from papermill's pattern missing an annotation it cannot read (``int | None``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Passed unknown parameter")


def _quiet_papermill() -> None:
    pm_log = logging.getLogger("papermill")
    if not any(isinstance(f, _KnownParameters) for f in pm_log.filters):
        pm_log.addFilter(_KnownParameters())


def cell_file(grid_root: Path, run_id: str) -> Path:
    """The file holding all result rows of one finished run (one file per grid cell)."""
    return Path(grid_root) / "cells" / f"{run_id}.parquet"


def run_finished(run: Run, out_dir: Path, notebooks_dir: Path | None = None) -> bool:
    """Every notebook of ``run`` finished with these parameters and its cell file exists.

    ``notebooks_dir``: read what each notebook declares from there; default: the names its marker recorded.
    """
    params = _run_params(run, out_dir)

    def declared(nb: str) -> Any:
        return None if notebooks_dir is None else list(notebook_parameters(notebook_path(nb, Path(notebooks_dir))))

    return all(_notebook_done(out_dir, nb, params, declared(nb)) for nb in run.notebooks) and \
        cell_file(Path(out_dir).parent, run.run_id).is_file()


def write_run_table(run: Run, out_dir: Path) -> Path:
    """Collect every results table of a finished run into its cell file (atomically); returns its path.

    Rows get ``run_id`` and a ``run`` column ``<run id>/<sub folder>`` (what the report of the whole grid
    folder shows). A run whose notebooks wrote no table gets an empty cell file: it is still finished.
    """
    out_dir = Path(out_dir)

    def run_label(f: Path) -> dict[str, str]:
        sub = str(f.parent.relative_to(out_dir))
        return {"run": run.run_id if sub == "." else f"{run.run_id}/{sub}"}

    df = merge_files(result_files(out_dir), columns=[*COLUMNS, "run"], with_columns=run_label)
    df.insert(0, "run_id", run.run_id)
    path = cell_file(out_dir.parent, run.run_id)
    atomic_write(path, lambda p: df.to_parquet(p, index=False))
    return path


def execute_run(run: Run, out_dir: Path, *, notebooks_dir: Path = NOTEBOOKS_DIR, timeout_s: int = 1800,
                kernel_name: str = "python3", log_output: bool = False, write_table: bool = True) -> RunResult:
    """Execute the notebooks of one run in order, skipping finished ones.

    Each notebook is passed only the parameters it declares (the run's and ``out_dir``), so papermill
    warns of none; its marker records those, so changing a parameter re-executes the first notebook
    that declares it and every notebook after it (later notebooks may read what earlier ones wrote).

    Args:
        run: The run.
        out_dir: Its output folder (created); notebooks get it as their ``out_dir`` parameter.
        notebooks_dir: Where the notebooks are; also their working directory.
        timeout_s: Per-cell timeout.
        kernel_name: Jupyter kernel.
        log_output: Stream the notebooks' output into the log.
        write_table: Write the run's cell file when it finishes (or when it is missing).

    Returns:
        ``done`` (something ran), ``skipped`` (everything had finished) or ``failed`` (with the notebook
        and the error); failures are returned, not raised.
    """
    import papermill as pm

    _quiet_papermill()
    out_dir.mkdir(parents=True, exist_ok=True)
    params = _run_params(run, out_dir)
    t0 = time.perf_counter()
    ran = False
    for nb in run.notebooks:
        src = notebook_path(nb, notebooks_dir)
        marker = _marker(out_dir, nb)
        declared = sorted(notebook_parameters(src))
        nb_params = parameters_for(params, declared)
        if not ran and _notebook_done(out_dir, nb, params, declared):
            continue  # once one notebook re-executes, the later ones do too: they may read what it writes
        if not ran:  # the run is (re)done: its old rows leave the grid's table until it finishes
            cell_file(out_dir.parent, run.run_id).unlink(missing_ok=True)
        dst = out_dir / src.name
        try:
            pm.execute_notebook(str(src), str(dst), parameters=nb_params, kernel_name=kernel_name,
                                execution_timeout=timeout_s, start_timeout=120, progress_bar=False,
                                log_output=log_output, cwd=str(notebooks_dir))
        except Exception as e:  # PapermillExecutionError, DeadKernelError, CellTimeoutError, ...
            msg = f"{type(e).__name__}: {' '.join(str(e).split())[:500]}"
            if getattr(e, "ename", None):  # a notebook cell raised: name the exception, not the cell source
                msg = f"{type(e).__name__} in cell {getattr(e, 'exec_count', '?')}: {e.ename}: {str(e.evalue)[:500]}"
            log.error("grid %s run %s: notebook %s failed (%s)", run.grid, run.run_id, dst, msg)
            return RunResult(run, out_dir, "failed", dst, msg, time.perf_counter() - t0)
        record = {"parameters": _jsonable(nb_params), "declared": declared, "finished": time.time()}
        atomic_write(marker, lambda p, record=record: Path(p).write_text(json.dumps(record)))
        ran = True
    if write_table and (ran or not cell_file(out_dir.parent, run.run_id).is_file()):
        write_run_table(run, out_dir)
    return RunResult(run, out_dir, "done" if ran else "skipped", seconds=time.perf_counter() - t0)


__all__ = ["NOTEBOOKS_DIR", "RunResult", "cell_file", "execute_run", "notebook_path", "run_finished",
           "write_run_table"]
