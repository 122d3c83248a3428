"""Papermill parameter grids: ``vlmkit grid params/X.yaml`` (see :mod:`vlmkit.grid.spec`).

Modules, each importing only those before it: :mod:`.spec` (grid files), :mod:`.notebooks` (the
packaged notebooks), :mod:`.execute` (one run), :mod:`.executors` (the executor interface, local),
:mod:`.cluster` (submitit), :mod:`.runner` (:func:`run_grid`).
"""

from vlmkit.grid.execute import RunResult, execute_run
from vlmkit.grid.executors import Executor, LocalExecutor
from vlmkit.grid.notebooks import copy_notebooks, packaged_notebooks
from vlmkit.grid.runner import run_grid
from vlmkit.grid.spec import GridSpec, Run, load_grid, run_id


def __getattr__(name: str) -> object:
    """``SubmititExecutor`` on first access (its module imports submitit, an optional dependency)."""
    if name == "SubmititExecutor":
        from vlmkit.grid.cluster import SubmititExecutor

        return SubmititExecutor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Executor", "GridSpec", "LocalExecutor", "Run", "RunResult", "SubmititExecutor", "copy_notebooks",
           "execute_run", "load_grid", "packaged_notebooks", "run_grid", "run_id"]
