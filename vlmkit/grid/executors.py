"""Executors: how the runs of a grid get executed (one after another, in local processes, or as jobs).

Every executor implements :class:`Executor`: ``run(runs, grid_root, ...)`` executes each unfinished
run with :func:`vlmkit.grid.execute.execute_run` (which writes the run's cell file) and returns one
:class:`~vlmkit.grid.execute.RunResult` per run, in the order given; merging the cell files into the
grid's table is left to :func:`vlmkit.grid.runner.run_grid`. Because a run's state lives in its own
folder and cell file, executors are interchangeable: a grid started by one resumes under another.

* :class:`LocalExecutor` (``kind: local``): sequential, or ``workers`` processes (``workers: gpus`` pins
  one process per visible GPU);
* :class:`vlmkit.grid.cluster.SubmititExecutor` (``kind: slurm``): one submitit job per run or per
  ``chunk_size`` runs.

The import graph is one-way: ``spec <- execute <- executors <- cluster <- runner``.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from tqdm.auto import tqdm

from vlmkit.grid.execute import NOTEBOOKS_DIR, RunResult, execute_run
from vlmkit.grid.spec import Run


class Executor(abc.ABC):
    """Executes the runs of a grid; subclasses set :attr:`kind` and implement :meth:`run`."""

    #: The name in a grid's ``executor: {kind: ...}`` block and in ``grid.json``.
    kind: ClassVar[str] = ""

    @abc.abstractmethod
    def run(self, runs: Sequence[Run], grid_root: Path, *, notebooks_dir: Path = NOTEBOOKS_DIR,
            timeout_s: int = 1800, name: str = "grid", progress: bool = True) -> list[RunResult]:
        """Execute ``runs`` (each into ``grid_root / run.run_id``) and return one result per run, in order.

        Args:
            runs: The runs to execute; finished ones come back ``skipped``.
            grid_root: The grid's folder (``<out_root>/<grid name>``).
            notebooks_dir: Where the notebooks are.
            timeout_s: Per-cell timeout.
            name: The grid's name (progress bars, job names, logs).
            progress: Show a progress bar.

        Returns:
            One :class:`RunResult` per run, in the order of ``runs``; failures are results, not exceptions.
        """


def _gpu_worker_init(queue: Any) -> None:
    """Pin a local worker process (and the kernels it starts) to one GPU."""
    import os

    os.environ["CUDA_VISIBLE_DEVICES"] = str(queue.get())


def local_workers(value: Any) -> tuple[int, list[int] | None]:
    """``workers`` → (processes, GPU ids to pin one per process, or None).

    Args:
        value: A number of processes, or ``"gpus"``/``"auto"`` for one per visible GPU (1 without GPUs).

    Raises:
        ValueError: Not a positive number nor ``"gpus"``.
    """
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


class LocalExecutor(Executor):
    """Runs on this machine: one after another, or in ``workers`` processes.

    Args:
        workers: Parallel runs: a number, or ``"gpus"`` for one process per visible GPU (each pinned to
            its GPU through ``CUDA_VISIBLE_DEVICES``).

    Raises:
        ValueError: ``workers`` is not a positive number nor ``"gpus"``.
    """

    kind: ClassVar[str] = "local"

    def __init__(self, workers: int | str = 1) -> None:
        self.workers, self.gpus = local_workers(workers)

    def run(self, runs: Sequence[Run], grid_root: Path, *, notebooks_dir: Path = NOTEBOOKS_DIR,
            timeout_s: int = 1800, name: str = "grid", progress: bool = True) -> list[RunResult]:
        """Execute ``runs`` here (see :meth:`Executor.run`)."""
        root = Path(grid_root)
        if self.workers <= 1:
            return [execute_run(r, root / r.run_id, notebooks_dir=notebooks_dir, timeout_s=timeout_s)
                    for r in tqdm(runs, desc=f"grid {name}", disable=not progress)]
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        init: dict[str, Any] = {}
        if self.gpus:
            queue = multiprocessing.get_context().Queue()
            for g in self.gpus:
                queue.put(g)
            init = {"initializer": _gpu_worker_init, "initargs": (queue,)}
        with ProcessPoolExecutor(self.workers, **init) as pool:
            futs = [pool.submit(execute_run, r, root / r.run_id, notebooks_dir=notebooks_dir, timeout_s=timeout_s)
                    for r in runs]
            return [f.result() for f in tqdm(futs, desc=f"grid {name}", disable=not progress)]


__all__ = ["Executor", "LocalExecutor", "local_workers"]
