"""Papermill parameter grids: ``vlmkit grid params/X.yaml`` (see :mod:`vlmkit.grid.spec`)."""

from vlmkit.grid.runner import RunResult, execute_run, run_grid
from vlmkit.grid.spec import GridSpec, Run, load_grid, run_id

__all__ = ["GridSpec", "Run", "RunResult", "execute_run", "load_grid", "run_grid", "run_id"]
