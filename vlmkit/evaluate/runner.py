"""The one runner: the cells of one task model on one dataset, cached, resumable, batch-size invariant.

For every task (:class:`~vlmkit.evaluate.task.Task`) the runner owns:

* **the images of a cell**: clean, a perturbation through :meth:`Cell.apply` (image ``i`` draws from
  ``derive_seed(seed, cell.key, i)``), or an attack with the task's objective and one generator per
  image for its random start — so the numbers do not depend on the batch size, the worker count or
  the executor; a transfer cell's images are a source runner's white-box images (crafted once per
  source, shared cache), and a text cell measures the clean outputs against re-encoded perturbed texts;
* **the cost of an attack cell**: forward and backward passes and seconds per image, in its rows;
* **the run key**: a hash of everything that changes the numbers (task and its options, model name
  and weights fingerprint, precision, dataset content and subset, texts, templates, image size, seed,
  engine version). Per-image outputs are cached under ``hash(run key, cell key)`` and finished cells
  are stored under the run key, so a changed input recomputes and an unchanged one is skipped;
* out-of-memory back-off, the speed options of a :class:`~vlmkit.VLM` (``VLM.fast``), the tidy rows
  (with ``task``, ``run`` and ``config`` columns) and per-family IFR/IV.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from vlmkit.errors import InputError
from vlmkit.evaluate.cache import TensorCache
from vlmkit.evaluate.cells import CLEAN, Cell
from vlmkit.evaluate.intervals import CI_METHODS, Items, interval
from vlmkit.evaluate.store import ResultsStore
from vlmkit.evaluate.task import Task, TaskData
from vlmkit.metrics import flip_rates
from vlmkit.registry import ATTACKS
from vlmkit.results import make_row, provenance_label
from vlmkit.runtime import (
    auto_batch_size,
    derive_seed,
    item_generators,
    resolve_dtype,
    run_batched_with_backoff,
    stable_hash,
)

#: Bump when what a cached output or a stored cell means changes.
ENGINE_VERSION = "7"


def precision_name(precision: str | torch.dtype | None) -> str | None:
    """Canonical name of a mixed precision ("bf16", "fp16") or None for float32."""
    if precision is None:
        return None
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(resolve_dtype(precision))


def model_provenance(model: Any) -> dict[str, str]:
    """Extra result columns saying how a model was made: ``provenance`` for robust fine-tuned models."""
    meta = getattr(model, "meta", None)
    prov = meta.get("robust") if isinstance(meta, dict) else None
    if not prov:
        return {}
    return {"provenance": provenance_label(prov)}


def contiguous_run(index: torch.Tensor) -> slice | None:
    """``slice(a, b)`` when ``index`` ``(b,)`` lists the items ``a, a+1, …, b-1`` in order (how the engine
    batches a dataset), else None; indexing with the slice is a view of the images instead of a copy."""
    if index.ndim != 1 or len(index) == 0:
        return None
    a = int(index[0])
    return slice(a, a + len(index)) if torch.equal(index, torch.arange(a, a + len(index), dtype=index.dtype)) else None


class Runner:
    """Runs the cells of one task model on one dataset (see the module docstring).

    Args:
        task: The task.
        model: Its loaded model.
        data: What :meth:`Task.prepare` returned.
        model_key: Identity of the model's weights (:func:`vlmkit.evaluate.dual.model_key`).
        store: Results store of the grid folder.
        cache: Tensor cache of the grid folder.
        dataset_name: Name of the dataset in the rows.
        seed: The grid's seed.
        batch_size: Images per forward pass, or "auto" (from free memory on CUDA).
        progress: Progress bars.
        precision, channels_last, compile: Speed options of a VLM (``VLM.fast``); float32 by default.
        image_size: Decode size (recorded in ``config``).
        shared: The shared content-keyed cache scoped to this model (text cells' embeddings, transfer images).
        sources: ``(spec, image_size) -> Runner`` of a source model on the same dataset (transfer cells).
    """

    def __init__(self, task: Task, model: Any, data: TaskData, *, model_key: str, store: ResultsStore,
                 cache: TensorCache, dataset_name: str, seed: int, batch_size: int | str, progress: bool,
                 precision: str | torch.dtype | None = None, channels_last: bool = False,
                 compile: bool | str = False, n_boot: int = 1000, ci: float = 0.95,
                 ci_method: str = "percentile", shared: TensorCache | None = None,
                 sources: Callable[[str, int], Runner] | None = None) -> None:
        if not (batch_size == "auto" or (isinstance(batch_size, int) and not isinstance(batch_size, bool)
                                         and batch_size > 0)):
            raise InputError(f"batch_size={batch_size!r}; expected a positive int or 'auto'")
        self.task, self.model, self.data = task, model, data
        self.store, self.cache = store, cache
        self.dataset_name, self.seed, self.batch_size, self.progress = dataset_name, int(seed), batch_size, progress
        self.precision = precision_name(precision)
        self.channels_last, self.compile = bool(channels_last), compile
        if (self.precision or self.channels_last or self.compile) and not hasattr(model, "fast"):
            raise InputError(f"precision/channels_last/compile need a VLM image tower; task {task.name!r} "
                             f"model {task.model_name(model)!r} has none")
        self.model_name = task.model_name(model)
        # bf16 cells are stored apart from float32 ones, so both can share an out_dir
        self.store_model = self.model_name + (f"@{self.precision}" if self.precision else "")
        self.config = {"task": task.name, **task.options(), "image_size": int(data.images.shape[-1]),
                       "precision": self.precision or "float32"}
        #: Seed of every interval's resamples in this run (:mod:`vlmkit.evaluate.intervals`).
        self.bootstrap_seed = derive_seed(self.seed, "bootstrap")
        self.run_key = stable_hash(ENGINE_VERSION, task.name, model_key, data.key, self.config, self.seed)
        if not (isinstance(n_boot, int) and n_boot > 0) or not 0 < ci < 1 or ci_method not in CI_METHODS:
            raise InputError(f"n_boot={n_boot!r}, ci={ci!r}, ci_method={ci_method!r}; expected a positive int, a "
                             f"level in (0, 1) and one of {CI_METHODS}")
        self.intervals = {"n_boot": int(n_boot), "ci": float(ci), "ci_method": ci_method}
        # rows depend on the interval options too; the cached outputs (run_key) do not
        self.store_key = stable_hash(self.run_key, self.intervals)
        self.shared, self.sources = shared, sources
        self._transfer: dict[str, dict[str, torch.Tensor]] = {}
        self.attack_cost: dict[str, float] = {}
        self._batch_sizes: dict[str, int] = {}  # per cell kind (and attack): the size that fits, once known
        self.computed: list[str] = []  # cell keys computed (not read from the store) in this run

    @property
    def device(self) -> torch.device:
        return torch.device(getattr(self.model, "device", "cpu"))

    def fast(self) -> contextlib.AbstractContextManager:
        """The model's speed options for the whole cell (encoding and attack steps)."""
        if not (self.precision or self.channels_last or self.compile):
            return contextlib.nullcontext()
        return self.model.fast(precision=self.precision, channels_last=self.channels_last, compile=self.compile)

    # ------------------------------------------------------------------ images of a cell
    def cell_images(self, cell: Cell, index: torch.Tensor) -> torch.Tensor:
        """The images the engine measures for ``cell`` at dataset items ``index`` ``(b,)`` → ``(b, 3, S, S)``."""
        imgs = self.data.images
        if cell.sources:
            return self.transfer_images(cell, index)
        run = contiguous_run(index)  # a batch of the engine is a run of items: a view, not a gather
        x = (imgs[run] if run is not None else imgs[index.to(imgs.device)])  # (b, 3, S, S) uint8
        x = x.to(self.device, torch.float32, non_blocking=True, copy=True).div_(255)  # (b, 3, S, S), never a view
        if cell.kind == "attack":
            objective, batch = self.task.attack_inputs(self.model, self.data, cell, index)
            gens = item_generators(self.seed, cell.key, index, self.device)
            attack = ATTACKS.create(cell.name, objective, generator=gens, **dict(cell.params))
            t0 = time.perf_counter()
            x_adv = attack(self.model, x, batch).detach()
            self.attack_cost = {"forward": attack.cost["forward"], "backward": attack.cost["backward"],
                                "seconds": (time.perf_counter() - t0) / len(x)}
            return x_adv
        return cell.apply(x, index, seed=self.seed, context=self.task.context(self.data, index))

    def transfer_images(self, cell: Cell, index: torch.Tensor) -> torch.Tensor:
        """A transfer cell's images: the white-box attack of its source model(s) on this runner's decoded
        images (same size, same per-image generators), crafted once per source for the whole dataset and
        kept in the shared cache, so every target model of a grid measures the same adversarial images.

        A single source is its own runner's white-box cell (so with ``source`` = this model the images are
        exactly the white-box cell's); an ensemble maximises the mean of its members' objectives
        (:class:`~vlmkit.attacks.objectives.EnsembleObjective`). Forward/backward passes are counted per
        member. Memory: the cell's adversarial images ``(N, 3, S, S)`` float32 are held while it runs.
        """
        if self.sources is None:
            raise InputError(f"transfer cell {cell.label()!r}: this runner cannot load source models "
                             "(run it through evaluate_grid)")
        members = [self.sources(spec, int(self.data.images.shape[-1])) for spec in cell.sources]
        white = cell.white_box
        key = stable_hash("transfer", [m.run_key for m in members], white.key)
        if key not in self._transfer:
            store = TensorCache(self.shared.root, self.shared.enabled) if self.shared is not None else None
            hit = store.get(key) if store is not None else None  # keyed by the sources' runs: any target reads it
            if hit is None:
                n, bs = len(self.data), int(self.batch_size) if self.batch_size != "auto" else 32
                parts, seconds = [], 0.0
                for start in tqdm(range(0, n, bs), desc=f"crafting on {'+'.join(cell.sources)}",
                                  disable=not self.progress):
                    idx = torch.arange(start, min(n, start + bs))
                    if len(members) > 1:
                        parts.append(self._ensemble_images(members, white, idx))
                    else:
                        parts.append(members[0].cell_images(white, idx).cpu())
                        self.attack_cost = dict(members[0].attack_cost)
                    seconds += self.attack_cost["seconds"] * len(idx)
                cost = {"forward": self.attack_cost["forward"], "backward": self.attack_cost["backward"],
                        "seconds": seconds / n}
                hit = {"images": torch.cat(parts), **{f"cost_{k}": torch.tensor(float(v)) for k, v in cost.items()}}
                if store is not None:
                    store.put(key, hit)
            self._transfer = {key: hit}  # one cell's images at a time
        hit = self._transfer[key]
        self.attack_cost = {k: float(hit[f"cost_{k}"]) for k in ("forward", "backward", "seconds")}
        return hit["images"][index].to(self.device)

    def _ensemble_images(self, members: list[Runner], white: Cell, index: torch.Tensor) -> torch.Tensor:
        from vlmkit.attacks.objectives import Ensemble, EnsembleObjective

        x = members[0].data.images[index.to(members[0].data.images.device)].float().div_(255)  # (b, 3, S, S)
        parts = []
        for m in members:
            objective, batch = m.task.attack_inputs(m.model, m.data, white, index)
            if objective is None:  # the attack's own default objective
                objective = ATTACKS.create(white.name, None, **dict(white.params)).objective
            parts.append((m.model, objective, batch))
        gens = item_generators(self.seed, white.key, index, self.device)
        attack = ATTACKS.create(white.name, EnsembleObjective(parts), generator=gens, **dict(white.params))
        t0 = time.perf_counter()
        x_adv = attack(Ensemble([m.model for m in members]), x.to(self.device), {}).detach()
        self.attack_cost = {"forward": attack.cost["forward"] * len(members),
                            "backward": attack.cost["backward"] * len(members),
                            "seconds": (time.perf_counter() - t0) / len(x)}
        return x_adv.cpu()

    # ------------------------------------------------------------------ outputs of a cell
    def cell_outputs(self, cell: Cell) -> dict[str, torch.Tensor]:
        """Per-item outputs of every image under ``cell``, cached."""
        if cell.kind == "text":  # clean images, perturbed texts: the clean outputs
            return self.data.clean
        key = stable_hash(self.run_key, cell.key)
        hit = self.cache.get(key)
        if hit is not None:
            return hit

        def batch(start: int, stop: int) -> dict[str, torch.Tensor]:
            index = torch.arange(start, stop)
            x = self.cell_images(cell, index)
            with torch.inference_mode():
                out = self.task.outputs(self.model, self.data, cell, x, index, self.seed)
            if cell.kind == "attack":  # its cost per image, cached with the outputs
                out.update({f"attack_{k}": torch.full((len(index),), float(v)) for k, v in self.attack_cost.items()})
            return out

        n = len(self.data)
        kind = cell.name if cell.kind == "attack" else "encode"
        with self.fast():
            if self.batch_size == "auto":  # probed once per kind, then the size that worked
                bs = self._batch_sizes.get(kind) or auto_batch_size(batch, n, self.device,
                                                                    default=self.task.default_batch_size)
            else:
                bs = int(self.batch_size)
            parts = run_batched_with_backoff(batch, n, bs, desc=cell.label(), progress=self.progress)
            self._batch_sizes[kind] = parts.batch_size
        out = {k: torch.cat([p[k] for p in parts]).cpu() for k in parts[0]}
        out = {k: v.float() if v.is_floating_point() else v for k, v in out.items()}
        self.cache.put(key, out)
        return out

    # ------------------------------------------------------------------ rows
    def rows(self, cell: Cell, metrics: dict[str, float | Items], seconds: float, *, n: int | None = None,
             kind: str | None = None, perturbation: str | None = None, params: Any = None,
             family: str | None = None, label: str | None = None, key: str | None = None,
             columns: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """One tidy row per metric; a metric given as :class:`~vlmkit.evaluate.intervals.Items` gets its value
        and interval from its outcomes (``ci_low``, ``ci_high``, ``n_boot``, ``ci_method``) and keeps the
        per-item outcomes of mean-type metrics (``outcomes``) for paired comparisons. ``columns`` are added to
        every row (an attack cell's cost, :meth:`cost_columns`)."""
        extra: dict[str, Any] = {"precision": self.precision} if self.precision else {}
        extra.update(columns or {})
        cell_key = key or cell.key
        config = json.dumps(self.config, sort_keys=True)
        out = []
        for k, v in metrics.items():
            stats: dict[str, Any] = {"ci_low": float("nan"), "ci_high": float("nan"), "n_boot": 0, "ci_method": "none"}
            if isinstance(v, Items):  # one draw per run (common random numbers): every metric of every cell,
                # transfer cells included, resamples the same images
                value, lo, hi, how = interval(v, n_boot=self.intervals["n_boot"], ci=self.intervals["ci"],
                                              method=self.intervals["ci_method"], seed=self.bootstrap_seed)
                boot = self.intervals["n_boot"] if "percentile" in how or how == "bca" else 0
                stats = {"ci_low": lo, "ci_high": hi, "n_boot": boot, "ci_method": how}
                if v.per_item is not None:
                    stats["outcomes"] = v.per_item.astype(np.float32).tolist()
                v = value
            out.append(make_row(model=self.model_name, dataset=self.dataset_name,
                                perturbation=perturbation or cell.name, params=cell.params if params is None else params,
                                severity=cell.severity, metric=k, value=float(v), n=len(self.data) if n is None else n,
                                seed=self.seed, family=family or cell.family, kind=kind or cell.kind, cell=cell_key,
                                label=label or cell.label(), seconds=round(seconds, 4), task=self.task.name,
                                run=self.store_key, config=config, ci=self.intervals["ci"],
                                **stats, **model_provenance(self.model), **extra))
        return out

    @staticmethod
    def cost_columns(out: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """An attack cell's cost per image (``forward_passes``, ``backward_passes``, ``attack_s_per_image``), so
        attacks and robust models are compared at equal compute; NaN for outputs cached without it."""
        def mean(k: str) -> float:
            return float(out[k].float().mean()) if k in out else float("nan")
        return {"forward_passes": mean("attack_forward"), "backward_passes": mean("attack_backward"),
                "attack_s_per_image": mean("attack_seconds")}

    def run(self, cells: Sequence[Cell]) -> list[str]:
        """Evaluate the clean cell and ``cells``; returns the run's cell keys (family rows included)."""
        self.task.check_cells(cells)
        # a text cell for another task's texts (class names on a retrieval set) does not apply here: skipped, so
        # one cell list serves a notebook's retrieval and zero-shot sets alike
        cells = [c for c in cells if c.kind != "text" or self.task.applies(c)]
        todo = [CLEAN] + [c for c in cells if c.kind != "clean"]
        for cell in tqdm(todo, desc=f"{self.model_name} × {self.dataset_name}", disable=not self.progress):
            done = self.store.is_done(self.store_model, self.dataset_name, self.store_key, cell.key)
            if done and cell.kind != "clean":
                continue
            t0 = time.perf_counter()
            out = self.cell_outputs(cell)
            if cell.kind == "clean":
                self.data.clean = out
                if done:
                    continue
            if cell.kind == "text":
                view = self.task.text_view(self.model, self.data, cell, self.seed, self.shared)
                metrics = self.task.text_metrics(self.data, view, cell)
            else:
                metrics = self.task.metrics(self.data, cell, out, self.seed)
            self.store.write_cell(self.store_model, self.dataset_name, self.store_key, cell.key,
                                  self.rows(cell, metrics, time.perf_counter() - t0,
                                            columns={**(self.cost_columns(out) if cell.kind == "attack" else {}),
                                                     **self.task.row_columns(out)}))
            self.computed.append(cell.key)
        return [c.key for c in todo] + self.family_flips(cells)

    def family_flips(self, cells: Sequence[Cell]) -> list[str]:
        """IFR and IV over the cells of each perturbation (its severities and parameters), each registry
        family, and all cells ("all"), from cached outputs.

        Family rows describe the cells of this call; they are rewritten by every call.
        """
        fams: dict[str, list[torch.Tensor]] = {}
        pred0 = None
        for cell in cells:
            if cell.kind == "clean":
                continue
            if cell.kind == "text":  # the clean images' answers under the perturbed texts
                view = self.task.text_view(self.model, self.data, cell, self.seed, self.shared)
                pred0, pred = self.task.flips(self.data, self.data.clean)[0], self.task.flips(view, self.data.clean)[1]
            else:
                pred0, pred = self.task.flips(self.data, self.cell_outputs(cell))
            # the study's families are perturbation types (translate, scale ...) over their severities;
            # registry families (geometric ...) and the union ("all") group several of them
            for group in dict.fromkeys([cell.name, cell.family, "all"]):
                fams.setdefault(group, []).append(pred)
        keys = []
        for fam, preds in fams.items():
            flips = (torch.stack(preds) != pred0[None]).float()  # (cells, N)
            r = flip_rates(pred0, torch.stack(preds))
            items = {"IFR": Items(flips.mean(0), value=r["IFR"]),  # per image: the share of cells that flip it
                     "IV": Items(flips.amax(0), binary=True, value=r["IV"])}  # per image: flipped by any cell
            key = f"family-{stable_hash(fam)}"
            rows = self.rows(CLEAN, items, 0.0, n=len(pred0), kind="family",
                             perturbation=f"family:{fam}", params={"cells": len(preds)}, family=fam,
                             label=f"family:{fam}", key=key)
            self.store.write_cell(self.store_model, self.dataset_name, self.store_key, key, rows)
            keys.append(key)
        return keys


__all__ = ["ENGINE_VERSION", "Runner", "model_provenance", "precision_name"]
