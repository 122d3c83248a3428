"""Papermill parameter grids: ``vlmkit grid params/X.yaml`` (see :mod:`vlmkit.grid.spec`).

Modules, each importing only those before it: :mod:`.spec` (grid files), :mod:`.contract` (the
parameters notebooks declare, checked before anything runs), :mod:`.notebooks` (the packaged
notebooks), :mod:`.execute` (one run), :mod:`.executors` (the executor interface, local),
:mod:`.cluster` (submitit), :mod:`.runner` (:func:`run_grid`).
"""

from vlmkit.grid.contract import (
    NAME_CHECKS,
    Param,
    check_models,
    check_parameters,
    check_value,
    notebook_parameters,
    parameters_for,
)
from vlmkit.grid.execute import RunResult, execute_run
from vlmkit.grid.executors import Executor, LocalExecutor
from vlmkit.grid.notebooks import copy_notebooks, packaged_notebooks
from vlmkit.grid.runner import run_grid
from vlmkit.grid.spec import GridSpec, Run, grid_path, load_grid, packaged_grids, run_id


def __getattr__(name: str) -> object:
    """``SubmititExecutor`` on first access (its module imports submitit, an optional dependency)."""
    if name == "SubmititExecutor":
        from vlmkit.grid.cluster import SubmititExecutor

        return SubmititExecutor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "NAME_CHECKS",
    "Executor",
    "GridSpec",
    "LocalExecutor",
    "Param",
    "Run",
    "RunResult",
    "SubmititExecutor",
    "check_models",
    "check_parameters",
    "check_value",
    "copy_notebooks",
    "execute_run",
    "grid_path",
    "load_grid",
    "notebook_parameters",
    "packaged_grids",
    "packaged_notebooks",
    "parameters_for",
    "run_grid",
    "run_id",
]
