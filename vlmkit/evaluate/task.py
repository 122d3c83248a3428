"""The task interface of the one evaluation engine.

Every task — image–text retrieval and zero-shot classification of dual encoders
(:mod:`vlmkit.evaluate.dual`), text-prompted segmentation and answer scoring of generative VLMs
(:mod:`vlmkit.tasks`) — is a :class:`Task` run by the same :class:`~vlmkit.evaluate.runner.Runner`,
which owns the cells, the seeding rule, the caches, the out-of-memory back-off, the rows and the
per-family flip rates. A task says what is specific to it:

* :meth:`Task.load_model` (from a spec) and :meth:`Task.prepare` (decode the dataset once, embed
  texts once) → :class:`TaskData`, whose :attr:`TaskData.key` hashes everything the task's numbers
  depend on besides the model and the cell (dataset content and subset, texts, templates, size, options);
* :meth:`Task.outputs`: per-image outputs of a batch of (perturbed) images, cached per cell;
* :meth:`Task.metrics` of a cell from its outputs, and :meth:`Task.flips`: what counts as a changed
  prediction for IFR/IV;
* :meth:`Task.attack_inputs`: the white-box objective and its batch for attack cells;
* :meth:`Task.context`: what perturbations that need it get (class names, per-image labels).

Tasks are registered in :data:`vlmkit.registry.TASKS` with ``kind="grid"``.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vlmkit.errors import InputError
from vlmkit.evaluate.cells import Cell
from vlmkit.evaluate.intervals import Items
from vlmkit.metrics import control_drift, cosine_drift, drift_summary, prior_shift
from vlmkit.models.base import torch_module
from vlmkit.runtime import make_generator, stable_hash


@dataclass
class TaskData:
    """What every cell of one model × dataset needs besides its own images (built by :meth:`Task.prepare`).

    Attributes:
        images: ``uint8`` ``(N, 3, S, S)`` decoded once.
        extras: Task-specific tensors and lists (caption or class embeddings, masks, options, answers ...).
        key: Hash of everything the task's outputs depend on besides the model and the cell.
        clean: The clean cell's outputs, set by the runner before any other cell runs.
        memo: Values a task derives once from ``clean`` and reuses in every cell (its clean predictions),
            each stored with the clean output it came from.
    """

    images: torch.Tensor
    extras: dict[str, Any] = field(default_factory=dict)
    key: str = ""
    clean: dict[str, torch.Tensor] | None = None
    memo: dict[str, Any] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.images)


class Task(abc.ABC):
    """A task evaluated cell by cell (see the module docstring)."""

    #: Registry name, also the ``task`` column of the rows.
    name: str = "task"
    #: Batch size when ``batch_size="auto"`` finds no accelerator to size from.
    default_batch_size: int = 64
    #: The dataset types the task evaluates (:meth:`check_dataset`).
    dataset_types: tuple[type, ...] = ()

    def options(self) -> dict[str, Any]:
        """Options that change the task's numbers (part of every cache and result key)."""
        return {}

    @abc.abstractmethod
    def load_model(self, spec: str, device: torch.device) -> Any:
        """Load the task model named by ``spec``."""

    def model_name(self, model: Any) -> str:
        """The model's name in the rows."""
        return str(getattr(model, "name", type(model).__name__))

    @abc.abstractmethod
    def prepare(self, model: Any, dataset: Any, *, image_size: int | None, cache: Any, cache_dir: Path | None,
                progress: bool) -> TaskData:
        """Decode the dataset once and compute what every cell shares (text embeddings, targets).

        ``cache`` is the grid's :class:`~vlmkit.evaluate.cache.TensorCache` for shared tensors, scoped to
        this model's weights (:func:`model_key`), so its keys need only name the data and the task.
        """

    def check_dataset(self, dataset: Any) -> None:
        """Refuse a dataset that is none of :attr:`dataset_types`, naming what the task needs."""
        if self.dataset_types and not isinstance(dataset, self.dataset_types):
            raise InputError(f"task {self.name!r} needs a {' or '.join(t.__name__ for t in self.dataset_types)}, "
                             f"got {type(dataset).__name__}")

    def context(self, data: TaskData, index: torch.Tensor) -> dict[str, Any]:
        """Keywords offered to perturbations of images ``index`` (e.g. ``classnames``, ``labels``)."""
        return {}

    def applies(self, cell: Cell) -> bool:
        """Whether the task measures ``cell`` (a text cell names the texts it perturbs); True by default."""
        return True

    def row_columns(self, out: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Extra columns of a cell's rows from its outputs (captioning: the captions), none by default."""
        return {}

    @abc.abstractmethod
    def outputs(self, model: Any, data: TaskData, cell: Cell, x: torch.Tensor, index: torch.Tensor,
                seed: int) -> dict[str, torch.Tensor]:
        """Per-item outputs ``{name: (b, ...)}`` for images ``x`` ``(b, 3, S, S)``, items ``index`` ``(b,)``."""

    @abc.abstractmethod
    def metrics(self, data: TaskData, cell: Cell, out: dict[str, torch.Tensor], seed: int) -> dict[str, float | Items]:
        """Summary metrics of one cell from its outputs (``data.clean`` holds the clean outputs).

        A metric is a number or, better, :class:`~vlmkit.evaluate.intervals.Items`: the per-item outcomes
        it is computed from, which give the row its confidence interval (and paired comparisons their
        data) without running the model again.
        """

    @abc.abstractmethod
    def flips(self, data: TaskData, out: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(clean_pred (N,), pred (N,))`` whose disagreement counts as a flip for IFR/IV."""

    def attack_inputs(self, model: Any, data: TaskData, cell: Cell, index: torch.Tensor
                      ) -> tuple[Any, dict[str, Any]]:
        """``(objective or None for the attack's default, batch)`` for an attack cell on items ``index``.

        Tasks with a white-box objective override this; the default has none.

        Raises:
            InputError: The task has no white-box objective.
        """
        raise self._no_objective(cell)

    def _no_objective(self, cell: Cell) -> InputError:
        return InputError(f"task {self.name!r} has no white-box attack objective: use clean and perturbation cells "
                          f"(got attack cell {cell.label()!r})")

    def check_cells(self, cells: Sequence[Cell]) -> None:
        """Refuse, before any work, what is not a :class:`Cell` and attack cells the task cannot run."""
        for c in cells:
            if not isinstance(c, Cell):
                raise InputError(f"cells must be vlmkit.evaluate.Cell objects, got {type(c).__name__}")
            if c.kind == "attack" and type(self).attack_inputs is Task.attack_inputs:
                raise self._no_objective(c)
            if c.kind == "text" and not hasattr(self, "text_view"):
                raise InputError(f"text cell {c.label()!r}: task {self.name!r} has no texts to perturb (text cells "
                                 "run on retrieval captions and zero-shot class names / templates)")

    @staticmethod
    def drift(clean: torch.Tensor, perturbed: torch.Tensor, seed: int) -> dict[str, Items]:
        """Representation drift against control drift (:func:`vlmkit.metrics.drift_summary`), each with its
        per-image outcomes (drift, control drift of the image's control pair, prior shift).

        The control pairs are drawn from ``seed`` (the same pairs for every cell of a run); with a single
        item there is no control pair and only the drift itself is reported.
        """
        d = cosine_drift(clean, perturbed)  # (N,)
        if len(clean) <= 1:
            return {"drift_mean": Items(d, value=float(d.mean())),
                    "drift_median": Items(d, statistic="median", value=float(d.median()))}
        summary = drift_summary(clean, perturbed, make_generator(seed))
        c = control_drift(clean, make_generator(seed))  # (N,) the same pairs as the summary's
        return {"drift_mean": Items(d, value=summary["drift_mean"]),
                "drift_median": Items(d, statistic="median", value=summary["drift_median"]),
                "control_drift_mean": Items(c, value=summary["control_drift_mean"]),
                "drift_ratio": Items(torch.stack([d, c], 1), statistic="ratio", value=summary["drift_ratio"]),
                "prior_shift_mean": Items(prior_shift(clean, perturbed), value=summary["prior_shift_mean"])}


def model_key(model: Any) -> str:
    """Identity of a model's numbers: its name and a fingerprint of its weights (shapes, sums, samples).

    Two loads of the same weights give the same key; re-trained weights under the same spec (a local
    checkpoint overwritten) give a new one, so cached cells are not reused for them.
    """
    name = getattr(model, "name", type(model).__name__)
    net = torch_module(model)
    if net is None:
        return stable_hash(name)
    h = []
    with torch.no_grad():
        for key, t in net.state_dict().items():
            if not torch.is_tensor(t) or t.numel() == 0:
                continue
            flat = t.detach().reshape(-1)
            step = max(1, flat.numel() // 64)
            h.append((key, tuple(t.shape), str(t.dtype), float(flat.double().sum()) if flat.is_floating_point()
                      else int(flat.sum()), flat[::step][:64].double().tolist()))
    return stable_hash(name, h)


__all__ = ["Task", "TaskData", "model_key"]
