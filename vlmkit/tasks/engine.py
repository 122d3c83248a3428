"""Grids for task models beyond dual encoders, on the evaluation engine's cells, seeds, caches and tables.

:func:`evaluate_task_grid` is what :func:`vlmkit.evaluate.evaluate_grid` calls for a task registered
in :data:`vlmkit.registry.TASKS` (``"segmentation"``, ``"answer_scoring"``). It keeps every contract
of the dual-encoder engine:

* cells are :class:`~vlmkit.evaluate.cells.Cell` objects (clean and any registered perturbation);
  perturbed pixels of a batch are drawn from the generator the engine would use for that cell and
  batch (the same seed formula), so a perturbation is the same image whichever task reads it;
* per-image outputs of a cell are cached (:class:`~vlmkit.evaluate.engine.TensorCache`) and each
  finished cell is written atomically by :class:`~vlmkit.evaluate.store.ResultsStore`, so grids
  resume with nothing redone;
* rows are tidy (:func:`vlmkit.results.make_row`) with the engine's extra columns (``family``,
  ``kind``, ``cell``, ``label``, ``seconds``) plus ``task``; per-family IFR/IV rows come from
  :func:`vlmkit.metrics.flip_rates` over each task's notion of a changed prediction.

A task subclasses :class:`Task`: it loads its model from a spec, prepares the dataset once
(decoded images plus what the task needs: masks and prompt embeddings, questions and options),
computes per-image outputs of a batch of (perturbed) images, and turns a cell's outputs into
metrics. Attack cells need a white-box objective per task and are refused with a clear error.
"""

from __future__ import annotations

import abc
import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from vlmkit.errors import InputError
from vlmkit.evaluate.cells import CLEAN, Cell
from vlmkit.evaluate.engine import ENGINE_VERSION, TensorCache, grid_context, with_oom_backoff
from vlmkit.evaluate.store import ResultsStore, slug
from vlmkit.metrics import flip_rates
from vlmkit.registry import PERTURBATIONS, TASKS
from vlmkit.results import make_row
from vlmkit.runtime import make_generator, seed_everything

log = logging.getLogger("vlmkit.tasks")

#: Bump when what a cached task output means changes.
TASK_ENGINE_VERSION = "1"


def _hash(*parts: Any) -> str:
    """The engine's key hash (JSON of the parts, SHA-256, 16 hex digits): same inputs, same perturbation seeds."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class TaskData:
    """What every cell of one model × dataset needs besides its own images (built by :meth:`Task.prepare`).

    Attributes:
        images: ``uint8`` ``(N, 3, S, S)`` decoded once.
        extras: Task-specific tensors and lists (masks, prompt embeddings, options, answers ...).
        clean: The clean cell's outputs, set by the runner before any perturbed cell runs.
        key: Hash of everything the task's outputs depend on besides the model and the cell.
    """

    images: torch.Tensor
    extras: dict[str, Any] = field(default_factory=dict)
    clean: dict[str, torch.Tensor] | None = None
    key: str = ""


class Task(abc.ABC):
    """A task evaluated cell by cell (see the module docstring).

    Subclasses set :attr:`name` and implement :meth:`load_model`, :meth:`prepare`, :meth:`outputs`,
    :meth:`metrics` and :meth:`flips`.
    """

    name: str = "task"

    @abc.abstractmethod
    def load_model(self, spec: str, device: torch.device) -> Any:
        """Load the task model named by ``spec`` (a hub id, ``hf:`` id or local folder)."""

    def model_name(self, model: Any) -> str:
        return str(getattr(model, "name", type(model).__name__))

    @abc.abstractmethod
    def prepare(self, model: Any, dataset: Any, *, image_size: int | None, cache_dir: Path | None,
                progress: bool) -> TaskData:
        """Decode the dataset once and compute what every cell shares (text embeddings, targets)."""

    @abc.abstractmethod
    def outputs(self, model: Any, data: TaskData, cell: Cell, x: torch.Tensor, start: int, stop: int,
                runner: TaskRunner) -> dict[str, torch.Tensor]:
        """Per-item outputs ``{name: (b, ...)}`` for images ``x`` ``(b, 3, S, S)`` = items ``start:stop``."""

    @abc.abstractmethod
    def metrics(self, data: TaskData, cell: Cell, out: dict[str, torch.Tensor], seed: int) -> dict[str, float]:
        """Summary metrics of one cell from its outputs (``data.clean`` holds the clean outputs)."""

    @abc.abstractmethod
    def flips(self, data: TaskData, out: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(clean_pred (N,), pred (N,))`` whose disagreement counts as a flip for IFR/IV."""


class TaskRunner:
    """Runs the cells of one task model on one dataset (see :func:`evaluate_task_grid`)."""

    def __init__(self, task: Task, model: Any, data: TaskData, *, store: ResultsStore, cache: TensorCache,
                 dataset_name: str, seed: int, batch_size: int, progress: bool) -> None:
        self.task, self.model, self.data = task, model, data
        self.store, self.cache = store, cache
        self.model_name = task.model_name(model)
        self.dataset_name, self.seed, self.batch_size, self.progress = dataset_name, seed, batch_size, progress
        self.base_key = _hash(self.model_name, task.name, data.key, ENGINE_VERSION, TASK_ENGINE_VERSION, seed)
        self.computed: list[str] = []

    @property
    def device(self) -> torch.device:
        return torch.device(getattr(self.model, "device", "cpu"))

    def batch_seed(self, cell: Cell, start: int) -> int:
        """Seed of the perturbation generator of ``cell`` for the batch starting at item ``start``
        (the formula of :class:`vlmkit.evaluate.engine.GridRunner`)."""
        return int(_hash(self.seed, cell.key, start), 16) % (2**62)

    def cell_images(self, cell: Cell, start: int, stop: int) -> torch.Tensor:
        x = self.data.images[start:stop].to(self.device).float().div_(255)  # (b, 3, S, S)
        if cell.kind == "clean":
            return x
        if cell.kind == "attack":
            raise InputError(f"task {self.task.name!r} has no white-box attack objective: use clean and "
                             f"perturbation cells (got attack cell {cell.label()!r})")
        g = make_generator(self.batch_seed(cell, start), self.device)
        return PERTURBATIONS.get(cell.name)(x, cell.severity, generator=g, **dict(cell.params))

    def cell_outputs(self, cell: Cell) -> dict[str, torch.Tensor]:
        key = _hash(self.base_key, cell.key)
        hit = self.cache.get(key)
        if hit is not None:
            return hit

        def batch(start: int, stop: int) -> dict[str, torch.Tensor]:
            x = self.cell_images(cell, start, stop)
            with torch.inference_mode():
                return self.task.outputs(self.model, self.data, cell, x, start, stop, self)

        parts = with_oom_backoff(batch, len(self.data.images), self.batch_size, desc=cell.label(),
                                 progress=self.progress)
        out = {k: torch.cat([p[k] for p in parts]).cpu() for k in parts[0]}
        self.cache.put(key, out)
        return out

    def rows(self, cell: Cell, metrics: dict[str, float], seconds: float) -> list[dict[str, Any]]:
        n = len(self.data.images)
        return [make_row(model=self.model_name, dataset=self.dataset_name, perturbation=cell.name, params=cell.params,
                         severity=cell.severity, metric=k, value=v, n=n, seed=self.seed, family=cell.family,
                         kind=cell.kind, cell=cell.key, label=cell.label(), seconds=round(seconds, 4),
                         task=self.task.name)
                for k, v in metrics.items()]

    def run(self, cells: Sequence[Cell]) -> None:
        todo = [CLEAN] + [c for c in cells if c.kind != "clean"]
        for c in todo:
            if c.kind == "attack":
                raise InputError(f"task {self.task.name!r} has no white-box attack objective: use clean and "
                                 f"perturbation cells (got attack cell {c.label()!r})")
        for cell in tqdm(todo, desc=f"{self.model_name} × {self.dataset_name}", disable=not self.progress):
            done = self.store.is_done(self.model_name, self.dataset_name, cell.key)
            if done and cell.kind != "clean":
                continue
            t0 = time.perf_counter()
            out = self.cell_outputs(cell)
            if cell.kind == "clean":
                self.data.clean = out
                if done:
                    continue
            metrics = self.task.metrics(self.data, cell, out, self.seed)
            self.store.write_cell(self.model_name, self.dataset_name, cell.key,
                                  self.rows(cell, metrics, time.perf_counter() - t0))
            self.computed.append(cell.key)
        self.family_flips(cells)

    def family_flips(self, cells: Sequence[Cell]) -> None:
        """IFR and IV over each perturbation family (and over all cells), from cached outputs."""
        fams: dict[str, list[torch.Tensor]] = {}
        pred0 = None
        for cell in cells:
            if cell.kind == "clean":
                continue
            pred0, pred = self.task.flips(self.data, self.cell_outputs(cell))
            fams.setdefault(cell.family, []).append(pred)
            fams.setdefault("all", []).append(pred)
        for fam, preds in fams.items():
            r = flip_rates(pred0, torch.stack(preds))
            fam_cell = Cell("clean", "none", 0, {"family": fam, "cells": len(preds)})
            rows = [make_row(model=self.model_name, dataset=self.dataset_name, perturbation=f"family:{fam}",
                             params={"cells": len(preds)}, severity=0, metric=k, value=r[k], n=len(pred0),
                             seed=self.seed, family=fam, kind="family", cell=fam_cell.key, label=f"family:{fam}",
                             seconds=0.0, task=self.task.name) for k in ("IFR", "IV")]
            self.store.write_cell(self.model_name, self.dataset_name, f"family-{slug(fam)}", rows)


def get_task(task: str | Task, **kwargs: Any) -> Task:
    """A :class:`Task` instance from a registered name (``TASKS``) or an instance."""
    if isinstance(task, Task):
        if kwargs:
            raise InputError(f"task options {sorted(kwargs)} given with a Task instance; set them on the instance")
        return task
    import vlmkit.tasks  # noqa: F401  (registers the tasks)

    entry = TASKS.get(task)
    if TASKS.meta(task).get("kind") != "grid":
        raise InputError(f"task {task!r} is not evaluated over grids of cells; grid tasks: "
                         f"{TASKS.list(kind='grid')} (plus the engine's 'retrieval' and 'zeroshot')")
    return entry(**kwargs)


def evaluate_task_grid(task: str | Task, models: Sequence[str | Any] | str | Any, dataset: Any, cells: Sequence[Cell],
                       *, out_dir: str | os.PathLike, seed: int = 0, batch_size: int | str = 16, device: str = "auto",
                       image_size: int | None = None, dataset_name: str | None = None, cache: bool = True,
                       progress: bool = True, task_options: dict[str, Any] | None = None) -> pd.DataFrame:
    """Evaluate task models on one dataset over a grid of cells and return the merged tidy table.

    Args:
        task: A registered grid task (``"segmentation"``, ``"answer_scoring"``) or a :class:`Task`.
        models: Model specs (``"hf:CIDAS/clipseg-rd64-refined"``, a local folder ...) or loaded task models.
        dataset: A dataset of the task (``SegmentationSet``, ``QuestionSet``).
        cells: Grid cells; the clean cell is always evaluated.
        out_dir: Results folder (``results.parquet``/``.csv``, per-cell files, caches).
        seed: Seeds perturbations (per cell and batch) and control pairs.
        batch_size: Images per perturbation call and forward pass (halved on CUDA out-of-memory; "auto" → 16).
        device: "auto", "cpu", "cuda".
        image_size: Decode/perturb resolution (default: the task's, usually the model input size).
        dataset_name: Name in the table (default: the dataset's name).
        cache: Reuse cached outputs.
        progress: Progress bars.
        task_options: Keyword arguments of the task's constructor when ``task`` is a name.

    Returns:
        The merged results table (one row per model × cell × metric; a ``task`` column names the task).
    """
    seed_everything(seed)
    t = get_task(task, **(task_options or {}))
    batch_size = 16 if batch_size == "auto" else int(batch_size)
    if batch_size < 1:
        raise InputError(f"batch_size={batch_size} must be positive")
    models = list(models) if isinstance(models, (list, tuple)) else [models]
    out, store, tcache, dev, name = grid_context(models, dataset, out_dir, cache, device, dataset_name)
    for m in models:
        model = t.load_model(m, dev) if isinstance(m, str) else m
        data = t.prepare(model, dataset, image_size=image_size, cache_dir=out / "cache" / "images", progress=progress)
        runner = TaskRunner(t, model, data, store=store, cache=tcache, dataset_name=name, seed=seed,
                            batch_size=batch_size, progress=progress)
        runner.run(cells)
    return store.merge()


__all__ = ["TASK_ENGINE_VERSION", "Task", "TaskData", "TaskRunner", "evaluate_task_grid", "get_task"]
