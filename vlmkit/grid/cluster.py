"""Grid runs as cluster jobs through submitit: ``vlmkit grid params/X.yaml --executor slurm``.

Each unfinished run of the grid (or each chunk of ``chunk_size`` runs) becomes one job of
``submitit.AutoExecutor(cluster="slurm")``; the job executes the run's notebooks with
:func:`vlmkit.grid.execute.execute_run` and writes the run's cell file, exactly as the local executor
does, and the submitting process merges the cell files into the grid's results table.
:class:`SubmititExecutor` is this path as an :class:`~vlmkit.grid.executors.Executor`. So:

* resumable across executors: runs whose notebooks and cell file are finished are not submitted,
  whichever executor finished them; a requeued job (time-out, preemption) resumes at its first
  unfinished notebook (jobs are :class:`submitit.helpers.Checkpointable`);
* no collisions: each run writes only its own folder and its own cell file, atomically;
* a failed run (a notebook error or a dead job) is resubmitted up to ``max_retries`` times, then
  reported with its failed notebook and its job log while the other runs go on.

The grid's ``executor:`` block (or CLI flags) sets the resources::

    executor: {kind: slurm, partition: gpu, gpus_per_node: 1, cpus_per_task: 8, mem_gb: 64,
               timeout_min: 240, max_retries: 2, chunk_size: 1,
               slurm: {account: myproj, array_parallelism: 32}}   # any other submitit slurm_* parameter

``cluster: local`` runs the same path with submitit's local executor (each job a local process), which
is what the tests use; ``cluster: debug`` runs jobs in-process.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from vlmkit.grid.execute import NOTEBOOKS_DIR, RunResult, execute_run, run_finished, write_run_table
from vlmkit.grid.executors import Executor
from vlmkit.grid.spec import Run

log = logging.getLogger("vlmkit.grid")

#: Keys of the ``executor:`` block the submitit path reads (besides ``kind``, ``workers``, ``timeout_s``).
OPTIONS = ("cluster", "partition", "gpus_per_node", "cpus_per_task", "mem_gb", "timeout_min", "max_retries",
           "chunk_size", "poll_s", "slurm")


def _checkpointable() -> type:
    try:
        from submitit.helpers import Checkpointable
    except ImportError:  # the class must stay importable without submitit (local executor only)
        return object
    return Checkpointable


class CellJob(_checkpointable()):  # type: ignore[misc]
    """What one job runs: some grid runs in order, each writing its cell file when it finishes.

    A requeued job (time-out or preemption) is resubmitted with the same arguments and skips the
    notebooks that already finished (``.done-*`` markers).
    """

    def __call__(self, runs: Sequence[Run], grid_root: str, notebooks_dir: str, timeout_s: int) -> list[RunResult]:
        root = Path(grid_root)
        return [execute_run(r, root / r.run_id, notebooks_dir=Path(notebooks_dir), timeout_s=timeout_s)
                for r in runs]


def make_executor(folder: Path, options: Mapping[str, Any], *, name: str = "vlmkit-grid") -> Any:
    """A ``submitit.AutoExecutor`` for ``options["cluster"]`` (default "slurm") with the grid's resources."""
    try:
        import submitit
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the slurm executor needs submitit: pip install 'vlmkit[cluster]' (or pip install submitit)") from e
    cluster = str(options.get("cluster") or "slurm")
    ex = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=cluster)
    params: dict[str, Any] = {"name": name, "timeout_min": int(options.get("timeout_min") or 240),
                              "gpus_per_node": int(options.get("gpus_per_node") or 0),
                              "cpus_per_task": int(options.get("cpus_per_task") or 1), "nodes": 1, "tasks_per_node": 1}
    if options.get("mem_gb"):
        params["mem_gb"] = float(options["mem_gb"])
    if options.get("partition"):
        params["slurm_partition"] = str(options["partition"])
    for k, v in dict(options.get("slurm") or {}).items():
        params[k if k.startswith("slurm_") else f"slurm_{k}"] = v
    ex.update_parameters(**params)
    return ex


def _chunks(runs: Sequence[Run], size: int) -> list[list[Run]]:
    return [list(runs[i:i + size]) for i in range(0, len(runs), size)]


def _short(e: BaseException, limit: int = 500) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[-limit:]}"


def run_submitit(runs: Sequence[Run], grid_root: Path, *, options: Mapping[str, Any],
                 notebooks_dir: Path = NOTEBOOKS_DIR, timeout_s: int = 1800, name: str = "grid",
                 progress: bool = True) -> list[RunResult]:
    """Submit the unfinished ``runs`` as submitit jobs, retry failures, and return one result per run.

    Does not merge the table (:func:`vlmkit.grid.runner.run_grid` does, after this returns).

    Args:
        runs: The runs; finished ones are not submitted (they come back ``skipped``).
        grid_root: The grid's folder; jobs write their logs under ``grid_root/_jobs``.
        options: The grid's ``executor:`` block (:data:`OPTIONS`).
        notebooks_dir: Where the notebooks are.
        timeout_s: Per-cell timeout.
        name: The grid's name (job names, logs).
        progress: Show a progress bar.
    """
    from submitit.helpers import as_completed
    from tqdm.auto import tqdm

    root = Path(grid_root)
    chunk_size = max(1, int(options.get("chunk_size") or 1))
    max_retries = max(0, int(options.get("max_retries", 1) if options.get("max_retries") is not None else 1))
    cluster = str(options.get("cluster") or "slurm")
    poll = float(options.get("poll_s") or (0.5 if cluster in ("local", "debug") else 15))
    results: dict[str, RunResult] = {}
    todo: list[Run] = []
    for r in runs:
        out = root / r.run_id
        if run_finished(r, out):
            results[r.run_id] = RunResult(r, out, "skipped", attempts=0)
        else:
            todo.append(r)
    if not todo:
        return [results[r.run_id] for r in runs]
    root.mkdir(parents=True, exist_ok=True)
    executor = make_executor(root / "_jobs", options, name=f"vlmkit-{name}")
    args = (str(root.resolve()), str(Path(notebooks_dir).resolve()), int(timeout_s))
    attempts = {r.run_id: 1 for r in todo}
    chunks = _chunks(todo, chunk_size)
    jobs = executor.map_array(CellJob(), chunks, *[[a] * len(chunks) for a in args])  # a job array on slurm
    pending = dict(zip(jobs, chunks))
    for job in jobs:
        log.info("grid %s: submitted job %s (%s)", name, job.job_id, ", ".join(r.run_id for r in pending[job]))
    bar = tqdm(total=len(todo), desc=f"grid {name} ({cluster})", disable=not progress)
    while pending:
        job = next(as_completed(list(pending), poll_frequency=poll))
        chunk = pending.pop(job)
        stderr = Path(job.paths.stderr)
        try:
            by_id = {res.run.run_id: res for res in job.result()}
            crash = ""
        except Exception as e:  # the job died (node failure, kill, out of memory, time-out past requeues...)
            by_id, crash = {}, f"job {job.job_id} failed: {_short(e)}"
        retry: list[Run] = []
        for r in chunk:
            res = by_id.get(r.run_id) or RunResult(r, root / r.run_id, "failed", error=crash or "no result")
            res.log, res.job_id, res.attempts = stderr, str(job.job_id), attempts[r.run_id]
            if res.status == "failed" and attempts[r.run_id] <= max_retries:
                log.warning("grid %s run %s failed in job %s (attempt %d of %d; log %s): %s; resubmitting",
                            name, r.run_id, job.job_id, attempts[r.run_id], max_retries + 1, stderr, res.error)
                attempts[r.run_id] += 1
                retry.append(r)
                continue
            if res.status == "failed":
                log.error("grid %s run %s failed after %d attempts; log %s; %s", name, r.run_id,
                          attempts[r.run_id], stderr, res.error)
            elif not run_finished(r, res.out_dir):  # e.g. a job from an older version: write the cell file here
                write_run_table(r, res.out_dir)
            results[r.run_id] = res
            bar.update(1)
        for c in _chunks(retry, chunk_size):
            new = executor.submit(CellJob(), c, *args)
            log.info("grid %s: resubmitted as job %s (%s)", name, new.job_id, ", ".join(r.run_id for r in c))
            pending[new] = c
    bar.close()
    return [results[r.run_id] for r in runs]


class SubmititExecutor(Executor):
    """Runs as submitit jobs (slurm, or submitit's ``local``/``debug`` clusters): see :func:`run_submitit`.

    Args:
        options: The grid's ``executor:`` block (:data:`OPTIONS`: cluster, partition, gpus_per_node,
            cpus_per_task, mem_gb, timeout_min, max_retries, chunk_size, poll_s, slurm).
    """

    kind: ClassVar[str] = "slurm"

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        self.options = dict(options or {})

    def run(self, runs: Sequence[Run], grid_root: Path, *, notebooks_dir: Path = NOTEBOOKS_DIR,
            timeout_s: int = 1800, name: str = "grid", progress: bool = True) -> list[RunResult]:
        """Submit the unfinished ``runs`` as jobs, retry failures, return one result per run (see :meth:`Executor.run`)."""
        return run_submitit(runs, grid_root, options=self.options, notebooks_dir=notebooks_dir, timeout_s=timeout_s,
                            name=name, progress=progress)


def describe(results: Sequence[RunResult]) -> str:
    """One line per failed run: id, attempts, failed notebook and job log."""
    lines = []
    for r in results:
        if r.status == "failed":
            lines.append(f"{r.run.run_id}: failed after {r.attempts} attempt(s); notebook {r.failed_notebook}; "
                         f"job log {r.log}")
    return "\n".join(lines)


__all__ = ["CellJob", "OPTIONS", "SubmititExecutor", "describe", "make_executor", "run_submitit"]
