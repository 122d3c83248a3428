"""The grid engine: models × one dataset × cells → tidy rows, cached, resumable.

Work is done once: text (or class-prompt) embeddings once per model × dataset, clean image
embeddings once, each cell's perturbed embeddings once; drift, flips and margins reuse them. Every
intermediate is cached under ``<out_dir>/cache`` keyed by model, dataset content, cell and engine
version; every finished cell is written atomically (see :class:`~vlmkit.evaluate.store.ResultsStore`),
so a killed grid resumes with nothing lost and nothing redone.

Tasks (chosen from the dataset type unless given):

* ``retrieval`` (captioned images): image→text / text→image Recall@{1,5,10}, median ranks, flips of
  the top-1 retrieved caption, retrieval margin;
* ``zeroshot`` (labelled or typographic images): top-1/top-5, ECE, label flips, margin; for
  typographic sets also the share of predictions moved to the attack word.

Both add representation drift against control drift, and — for ``token_layers`` — Dirichlet energy
and token drift of vision tokens per layer.

One GPU near its limit (all opt-in; the defaults give the float32 numbers of before): ``precision="bf16"``
runs the image tower — for encoding and inside attacks — under autocast while pixels, perturbations,
attack steps and ε-ball projections, similarities and metrics stay float32 (the cell cache and the rows
record the precision); ``channels_last``; ``compile`` (``torch.compile``; "reduce-overhead" adds CUDA
graphs); ``batch_size="auto"`` (from free memory on CUDA, halved on out-of-memory); ``resident`` keeps
the decoded uint8 images on the device (default: on CUDA), so a cell makes no host round-trip.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from vlmkit.data import CaptionedImages, LabelledImages, TypographicImages
from vlmkit.errors import InputError
from vlmkit.evaluate.cells import CLEAN, Cell
from vlmkit.evaluate.store import ResultsStore, slug
from vlmkit.metrics import (
    build_zero_shot_classifier,
    class_probabilities,
    control_drift,
    cosine_drift,
    dirichlet_energy,
    expected_calibration_error,
    flip_rates,
    margin,
    prior_shift,
    retrieval_metrics,
    token_drift,
    topk_accuracy,
)
from vlmkit.models import VLM, load_model
from vlmkit.registry import ATTACKS, PERTURBATIONS
from vlmkit.results import atomic_write, make_row
from vlmkit.runtime import (
    auto_batch_size,
    fast_model,
    make_generator,
    resolve_device,
    resolve_dtype,
    run_batched_with_backoff,
    seed_everything,
)

log = logging.getLogger("vlmkit.evaluate")

#: Bump when what a cached embedding means changes.
ENGINE_VERSION = "1"


def _hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class TensorCache:
    """``torch.save``-d dicts of tensors under a folder, written atomically."""

    def __init__(self, root: Path, enabled: bool = True) -> None:
        self.root = root
        self.enabled = enabled
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> dict[str, torch.Tensor] | None:
        path = self.root / f"{key}.pt"
        if self.enabled and path.is_file():
            self.hits += 1
            return torch.load(path, map_location="cpu", weights_only=True)
        self.misses += 1
        return None

    def put(self, key: str, value: dict[str, torch.Tensor]) -> None:
        if not self.enabled:
            return
        atomic_write(self.root / f"{key}.pt", lambda p: torch.save({k: v.detach().cpu() for k, v in value.items()}, p))


@dataclass
class TaskData:
    """Everything a cell needs besides its own images, prepared once per model × dataset."""

    task: str
    images: torch.Tensor  # (N, 3, S, S) uint8
    targets: torch.Tensor  # retrieval: caption embeddings (T, D); zeroshot: class embeddings (C, D)
    text_to_image: torch.Tensor | None = None  # (T,)
    labels: torch.Tensor | None = None  # (N,)
    attack_labels: torch.Tensor | None = None  # (N,) typographic sets
    extras: dict[str, Any] = field(default_factory=dict)


def infer_task(dataset: Any) -> str:
    own = getattr(dataset, "task", None)  # task datasets (vlmkit.tasks: SegmentationSet, QuestionSet) name theirs
    if isinstance(own, str):
        return own
    if isinstance(dataset, CaptionedImages):
        return "retrieval"
    if isinstance(dataset, (LabelledImages, TypographicImages)):
        return "zeroshot"
    raise InputError(f"cannot infer a task for {type(dataset).__name__}; pass task='retrieval' or 'zeroshot'")


def _dataset_key(dataset: Any, size: int, extra: Any = None) -> str:
    texts = getattr(dataset, "captions", None) or getattr(dataset, "classnames", None)
    return _hash(dataset.content_hash(), size, texts, extra)


def with_oom_backoff(fn: Callable[[int, int], torch.Tensor | dict], n: int, batch_size: int,
                     desc: str = "", progress: bool = True) -> list[Any]:
    """Call ``fn(start, stop)`` over ``range(n)`` in batches, halving the batch on CUDA out-of-memory
    (:func:`vlmkit.runtime.run_batched_with_backoff`)."""
    return run_batched_with_backoff(fn, n, batch_size, desc=desc, progress=progress)


def _precision(precision: str | torch.dtype | None) -> str | None:
    """Canonical name of a mixed precision ("bf16", "fp16") or None for float32."""
    if precision is None:
        return None
    dt = resolve_dtype(precision)
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dt)


class GridRunner:
    """Runs cells for one model on one dataset (see :func:`evaluate_grid`)."""

    def __init__(self, vlm: VLM, dataset: Any, data: TaskData, *, store: ResultsStore, cache: TensorCache,
                 dataset_name: str, seed: int, batch_size: int | str, token_layers: Sequence[int], progress: bool,
                 attack_objective: str | None, precision: str | torch.dtype | None = None,
                 channels_last: bool = False, compile: bool | str = False) -> None:
        self.vlm, self.dataset, self.data = vlm, dataset, data
        self.store, self.cache = store, cache
        self.dataset_name, self.seed, self.batch_size = dataset_name, seed, batch_size
        if not (batch_size == "auto" or (isinstance(batch_size, int) and batch_size > 0)):
            raise InputError(f"batch_size={batch_size!r}; expected a positive int or 'auto'")
        self.token_layers = list(token_layers)
        self.progress = progress
        self.attack_objective = attack_objective
        self.precision = _precision(precision)
        self.channels_last, self.compile = bool(channels_last), compile
        self._batch_sizes: dict[str, int] = {}  # per cell kind (and attack): the size that fits, once known
        self.store_model = vlm.name + (f"@{self.precision}" if self.precision else "")  # cell files of its own
        # float32 keys are those of before; a mixed precision gets its own cached embeddings
        self.base_key = _hash(vlm.name, _dataset_key(dataset, data.images.shape[-1]), ENGINE_VERSION, seed,
                              self.token_layers, *([self.precision] if self.precision else []))
        self.computed: list[str] = []  # cell keys computed (not read from the store) in this run

    # ------------------------------------------------------------------ images of a cell
    def _cell_images(self, cell: Cell, start: int, stop: int) -> torch.Tensor:
        x = self.data.images[start:stop].to(self.vlm.device, non_blocking=True).float().div_(255)  # (b, 3, S, S)
        if cell.kind == "clean":
            return x
        g = make_generator(int(_hash(self.seed, cell.key, start), 16) % (2**62), self.vlm.device)
        if cell.kind == "perturbation":
            return PERTURBATIONS.get(cell.name)(x, cell.severity, generator=g, **dict(cell.params))
        return self._attack(cell, x, start, stop, g)

    def _attack(self, cell: Cell, x: torch.Tensor, start: int, stop: int, g: torch.Generator) -> torch.Tensor:
        """Run an attack cell on one batch with the task's objective (white-box, on [0, 1] pixels)."""
        from vlmkit.attacks import EmbeddingDrift, RetrievalCE, ZeroShotCE

        d = self.data
        batch: dict[str, Any] = {"text_emb": d.targets}
        if d.task == "zeroshot":
            batch["labels"] = d.labels[start:stop].to(x.device)
        else:  # every caption of each image is a positive
            img = torch.arange(start, stop, device=x.device)
            batch["positives"] = d.text_to_image.to(x.device)[None, :] == img[:, None]  # (B, T)
        kind = self.attack_objective or ("default" if cell.name in ("feature_pgd", "retrieval_pgd") else d.task)
        objective = {"zeroshot": ZeroShotCE, "retrieval": RetrievalCE, "drift": EmbeddingDrift}.get(kind)
        if objective is None and kind != "default":
            raise InputError(f"attack_objective={kind!r}; expected 'zeroshot', 'retrieval' or 'drift'")
        params = {"generator": g, **dict(cell.params)}
        attack = ATTACKS.create(cell.name, objective() if objective else None, **params)
        return attack(self.vlm, x, batch).detach()

    # ------------------------------------------------------------------ embeddings of a cell
    def cell_outputs(self, cell: Cell) -> dict[str, torch.Tensor]:
        """Embeddings (and per-layer token statistics) of every image under ``cell``, cached."""
        key = _hash(self.base_key, cell.key)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        layers = self.token_layers

        def batch(start: int, stop: int) -> dict[str, torch.Tensor]:
            x = self._cell_images(cell, start, stop)
            with torch.inference_mode():
                if not layers:
                    return {"emb": self.vlm.encode_image(x)}
                emb, toks = self.vlm.encode_image_and_tokens(x, layers)
                out = {"emb": emb}
                clean_toks = None
                if cell.kind != "clean":
                    x0 = self.data.images[start:stop].to(self.vlm.device).float().div_(255)
                    clean_toks = self.vlm.vision_tokens_layers(x0, layers)
                for li, vt in toks.items():  # metrics in float32 (a no-op unless the tower ran in bf16)
                    out[f"dirichlet_L{li}"] = dirichlet_energy(vt.patches.float(), vt.grid)
                    out[f"token_drift_L{li}"] = (token_drift(clean_toks[li].patches.float(), vt.patches.float())
                                                 if clean_toks else torch.zeros(len(x), device=x.device))
                return out

        n = len(self.data.images)
        kind = cell.name if cell.kind == "attack" else "encode"
        with fast_model(self.vlm, precision=self.precision, channels_last=self.channels_last, compile=self.compile):
            if self.batch_size == "auto":  # probed once per kind, then the size that worked
                bs = self._batch_sizes.get(kind) or auto_batch_size(batch, n, self.vlm.device)
            else:  # every cell starts at the given size (batches seed random perturbations)
                bs = int(self.batch_size)
            parts = run_batched_with_backoff(batch, n, bs, desc=cell.label(), progress=self.progress)
            self._batch_sizes[kind] = parts.batch_size
        out = {k: torch.cat([p[k] for p in parts]).float().cpu() for k in parts[0]}
        self.cache.put(key, out)
        return out

    # ------------------------------------------------------------------ metrics of a cell
    def predictions(self, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(top-1 prediction, scores) for each image: a class (zeroshot) or a caption (retrieval)."""
        scores = self.vlm.similarity(emb, self.data.targets.to(emb.device)) if self.data.task == "zeroshot" \
            else emb @ self.data.targets.to(emb.device).T  # (N, C) or (N, T)
        return scores.argmax(dim=1), scores

    def metrics(self, cell: Cell, out: dict[str, torch.Tensor], clean: dict[str, torch.Tensor]) -> dict[str, float]:
        emb, emb0 = out["emb"], clean["emb"]
        pred, scores = self.predictions(emb)
        pred0, _ = self.predictions(emb0)
        m: dict[str, float] = {}
        if self.data.task == "retrieval":
            m.update(retrieval_metrics(emb, self.data.targets, self.data.text_to_image))
        else:
            m.update(topk_accuracy(scores, self.data.labels, ks=(1, 5)))
            probs = class_probabilities(scores, sigmoid=self.vlm.logit_bias is not None)
            m["ece"] = expected_calibration_error(probs, self.data.labels)
            if self.data.attack_labels is not None:
                m["attack_word_rate"] = float((pred == self.data.attack_labels).float().mean())
        m["margin_mean"] = float(margin(scores).mean())
        d = cosine_drift(emb0, emb)
        c = control_drift(emb0, make_generator(self.seed))
        m.update(drift_mean=float(d.mean()), drift_median=float(d.median()), control_drift_mean=float(c.mean()),
                 drift_ratio=float(d.mean() / c.mean().clamp_min(1e-12)),
                 prior_shift_mean=float(prior_shift(emb0, emb).mean()))
        if cell.kind != "clean":
            m["IFR"] = flip_rates(pred0, pred)["IFR"]
        for k, v in out.items():
            if k.startswith(("dirichlet_L", "token_drift_L")) and not (cell.kind == "clean" and k.startswith("token")):
                m[k] = float(v.mean())
        return m

    def rows(self, cell: Cell, metrics: dict[str, float], seconds: float) -> list[dict[str, Any]]:
        n = len(self.data.images)
        return [make_row(model=self.vlm.name, dataset=self.dataset_name, perturbation=cell.name, params=cell.params,
                         severity=cell.severity, metric=k, value=v, n=n, seed=self.seed, family=cell.family,
                         kind=cell.kind, cell=cell.key, label=cell.label(), seconds=round(seconds, 4),
                         **model_provenance(self.vlm), **({"precision": self.precision} if self.precision else {}))
                for k, v in metrics.items()]

    def run(self, cells: Sequence[Cell]) -> None:
        todo = [CLEAN] + [c for c in cells if c.kind != "clean"]
        clean = None
        for cell in tqdm(todo, desc=f"{self.vlm.name} × {self.dataset_name}", disable=not self.progress):
            done = self.store.is_done(self.store_model, self.dataset_name, cell.key)
            if done and cell.kind != "clean":
                continue
            t0 = time.perf_counter()
            out = self.cell_outputs(cell)
            if cell.kind == "clean":
                clean = out
                if done:
                    continue
            metrics = self.metrics(cell, out, clean)
            self.store.write_cell(self.store_model, self.dataset_name, cell.key,
                                  self.rows(cell, metrics, time.perf_counter() - t0))
            self.computed.append(cell.key)
        self.family_flips(cells, clean)

    def family_flips(self, cells: Sequence[Cell], clean: dict[str, torch.Tensor]) -> None:
        """IFR and IV over each perturbation family (and over all cells), from cached embeddings."""
        pred0, _ = self.predictions(clean["emb"])
        fams: dict[str, list[torch.Tensor]] = {}
        for cell in cells:
            if cell.kind == "clean":
                continue
            pred, _ = self.predictions(self.cell_outputs(cell)["emb"])
            fams.setdefault(cell.family, []).append(pred)
            fams.setdefault("all", []).append(pred)
        for fam, preds in fams.items():
            r = flip_rates(pred0, torch.stack(preds))
            fam_cell = Cell("clean", "none", 0, {"family": fam, "cells": len(preds)})
            rows = [make_row(model=self.vlm.name, dataset=self.dataset_name, perturbation=f"family:{fam}",
                             params={"cells": len(preds)}, severity=0, metric=k, value=r[k], n=len(pred0),
                             seed=self.seed, family=fam, kind="family", cell=fam_cell.key, label=f"family:{fam}",
                             seconds=0.0, **({"precision": self.precision} if self.precision else {}))
                    for k in ("IFR", "IV")]
            self.store.write_cell(self.store_model, self.dataset_name, f"family-{slug(fam)}", rows)


def prepare(vlm: VLM, dataset: Any, task: str, *, image_size: int | None, templates: Sequence[str],
            cache: TensorCache, cache_dir: Path | None, progress: bool, resident: bool | None = False) -> TaskData:
    """Decode images once and embed the texts (captions or class prompts) once, cached.

    ``resident``: keep the uint8 images on the model's device (None: when that device is CUDA and they
    fit in a quarter of its free memory; COCO-5k at 224 px is about 750 MB).
    """
    size = int(image_size or max(vlm.image_size))
    images = dataset.load_images(size=size, cache_dir=cache_dir, progress=progress)  # (N, 3, S, S) uint8
    if len(images) == 0:
        raise InputError(f"dataset {getattr(dataset, 'name', '')!r} is empty")
    dev = vlm.device
    if resident is None and dev.type == "cuda":
        resident = images.numel() * images.element_size() < torch.cuda.mem_get_info(dev)[0] / 4
    if resident and images.device != dev:
        images = images.to(dev)
    key = _hash(vlm.name, _dataset_key(dataset, size, list(templates)), task, ENGINE_VERSION, "text")
    hit = cache.get(key)
    if task == "retrieval":
        targets = hit["targets"] if hit else vlm.encode_text(dataset.captions).detach()
        data = TaskData(task, images, targets, text_to_image=dataset.text_to_image)
    elif task == "zeroshot":
        targets = hit["targets"] if hit else build_zero_shot_classifier(vlm, dataset.classnames, templates)
        attack = getattr(dataset, "attack_labels", None)
        data = TaskData(task, images, targets, labels=dataset.labels, attack_labels=attack)
    else:
        raise InputError(f"task={task!r}; expected 'retrieval' or 'zeroshot'")
    if hit is None:
        cache.put(key, {"targets": data.targets})
    data.targets = data.targets.to(vlm.device)
    return data


def grid_context(models: Sequence[Any], dataset: Any, out_dir: str | os.PathLike, cache: bool, device: str,
                 dataset_name: str | None) -> tuple[Path, ResultsStore, TensorCache, torch.device, str]:
    """Checks and shared state of a grid run: ``(out, results store, tensor cache, device, dataset name)``.

    Raises:
        InputError: No models, or an empty dataset.
    """
    if not models:
        raise InputError("models is empty: pass at least one model spec")
    if len(dataset) == 0:
        raise InputError("dataset is empty")
    out = Path(out_dir)
    name = dataset_name or getattr(dataset, "name", "") or type(dataset).__name__
    return out, ResultsStore(out), TensorCache(out / "cache" / "tensors", enabled=cache), resolve_device(device), name


def model_provenance(vlm: Any) -> dict[str, str]:
    """Extra result columns saying how a model was made: ``provenance`` for robust fine-tuned models."""
    prov = getattr(vlm, "meta", {}).get("robust") if isinstance(getattr(vlm, "meta", None), dict) else None
    if not prov:
        return {}
    from vlmkit.robust.towers import provenance_label

    return {"provenance": provenance_label(prov)}


def evaluate_grid(models: Sequence[str | VLM] | str | VLM, dataset: Any, cells: Sequence[Cell], *,
                  out_dir: str | os.PathLike, task: str | None = None, seed: int = 0, batch_size: int | str = 64,
                  device: str = "auto", templates: Sequence[str] = ("a photo of a {}.",),
                  image_size: int | None = None, token_layers: Sequence[int] = (), dataset_name: str | None = None,
                  attack_objective: str | None = None, cache: bool = True, progress: bool = True,
                  precision: str | None = None, channels_last: bool = False, compile: bool | str = False,
                  resident: bool | None = None) -> pd.DataFrame:
    """Evaluate models on one dataset over a grid of cells and return the merged tidy table.

    Args:
        models: Model specs or loaded :class:`VLM` objects.
        dataset: A captioned (retrieval) or labelled/typographic (zero-shot) dataset.
        cells: Grid cells (see :mod:`vlmkit.evaluate.cells`); the clean cell is always evaluated.
        out_dir: Results folder (``results.parquet``/``.csv``, per-cell files, caches).
        task: "retrieval" or "zeroshot" (default: from the dataset type), or a grid task of
            ``vlmkit.TASKS`` ("segmentation", "answer_scoring") or a ``vlmkit.tasks.Task`` instance,
            run by :func:`vlmkit.tasks.evaluate_task_grid` with the same cells, seeds, caches and rows.
        seed: Seeds perturbations (per cell and batch), control pairs and attacks' random starts.
        batch_size: Images per forward pass (halved automatically on CUDA out-of-memory), or "auto":
            from free memory on CUDA (64 elsewhere). Random perturbations are seeded per batch, so their
            numbers depend on the batch size: compare runs made with the same size.
        device: "auto", "cpu", "cuda".
        templates: Prompt templates for zero-shot class embeddings.
        image_size: Decode/perturb resolution (default: the model's input size).
        token_layers: Layers whose vision tokens get Dirichlet energy and token drift.
        dataset_name: Name in the table (default: the dataset's name).
        attack_objective: Objective for attack cells (default: the task's).
        cache: Reuse cached embeddings.
        progress: Progress bars over models, cells and batches.
        precision: None (float32) or "bf16": autocast of the image tower for encoding and attacks;
            perturbations, attack steps/projections and metrics stay float32. Its cells are cached and
            stored apart from float32 ones (rows carry ``precision``), so both can share an ``out_dir``.
        channels_last: Channels-last memory format for the tower's convolutions and the pixel batches.
        compile: ``torch.compile`` the tower (True, a mode such as "reduce-overhead", or a backend).
        resident: Keep the decoded uint8 images on the device (None: on CUDA when they fit).

    Returns:
        The merged results table (one row per model × cell × metric).
    """
    seed_everything(seed)
    task = task or infer_task(dataset)
    if not isinstance(task, str) or task not in ("retrieval", "zeroshot"):  # a vlmkit.tasks grid task (TASKS)
        from vlmkit.tasks.engine import evaluate_task_grid

        return evaluate_task_grid(task, models, dataset, cells, out_dir=out_dir, seed=seed, batch_size=batch_size,
                                  device=device, image_size=image_size, dataset_name=dataset_name, cache=cache,
                                  progress=progress)
    models = [models] if isinstance(models, (str, VLM)) else list(models)
    out, store, tcache, dev, name = grid_context(models, dataset, out_dir, cache, device, dataset_name)
    for m in models:
        vlm = load_model(m, device=dev) if isinstance(m, str) else m
        data = prepare(vlm, dataset, task, image_size=image_size, templates=templates, cache=tcache,
                       cache_dir=out / "cache" / "images", progress=progress, resident=resident)
        runner = GridRunner(vlm, dataset, data, store=store, cache=tcache, dataset_name=name, seed=seed,
                            batch_size=batch_size, token_layers=token_layers, progress=progress,
                            attack_objective=attack_objective, precision=precision, channels_last=channels_last,
                            compile=compile)
        runner.run(cells)
    return store.merge()


def cell_embeddings(model: str | VLM, dataset: Any, cells: Sequence[Cell], *, out_dir: str | os.PathLike,
                    task: str | None = None, seed: int = 0, batch_size: int | str = 64, device: str = "auto",
                    templates: Sequence[str] = ("a photo of a {}.",), image_size: int | None = None,
                    progress: bool = False, precision: str | None = None, channels_last: bool = False,
                    compile: bool | str = False, resident: bool | None = None) -> dict[str, torch.Tensor]:
    """Per-image embeddings ``{cell label: (N, D)}`` (clean included), from the same cache as
    :func:`evaluate_grid` — for distributions (drift histograms) rather than summary rows."""
    task = task or infer_task(dataset)
    out = Path(out_dir)
    tcache = TensorCache(out / "cache" / "tensors")
    vlm = load_model(model, device=resolve_device(device)) if isinstance(model, str) else model
    data = prepare(vlm, dataset, task, image_size=image_size, templates=templates, cache=tcache,
                   cache_dir=out / "cache" / "images", progress=progress, resident=resident)
    runner = GridRunner(vlm, dataset, data, store=ResultsStore(out), cache=tcache,
                        dataset_name=getattr(dataset, "name", "") or "dataset", seed=seed, batch_size=batch_size,
                        token_layers=(), progress=progress, attack_objective=None, precision=precision,
                        channels_last=channels_last, compile=compile)
    return {c.label(): runner.cell_outputs(c)["emb"] for c in [CLEAN, *[c for c in cells if c.kind != "clean"]]}


__all__ = ["cell_embeddings", "ENGINE_VERSION", "GridRunner", "TaskData", "TensorCache", "evaluate_grid", "infer_task", "prepare",
           "with_oom_backoff", "vlmkit"]
