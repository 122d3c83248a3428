"""The grid engine: models × one dataset × cells → tidy rows, cached, resumable.

Work is done once: text (or class-prompt) embeddings once per model × dataset, clean outputs once,
each cell's outputs once; drift, flips and margins reuse them. Every task — ``retrieval``,
``zeroshot`` (:mod:`vlmkit.evaluate.dual`), ``segmentation``, ``answer_scoring`` (:mod:`vlmkit.tasks`)
— is a :class:`~vlmkit.evaluate.task.Task` found by name in :data:`vlmkit.registry.TASKS` and run by
the one :class:`~vlmkit.evaluate.runner.Runner`, so cells, seeds, caches, rows, attack cells and
family flip rates mean the same for every task.

One GPU near its limit (all opt-in; the defaults give the float32 numbers): ``precision="bf16"``
runs a VLM's image tower — for encoding and inside attacks — under autocast while pixels,
perturbations, attack steps and projections, similarities and metrics stay float32 (the cell cache
and the rows record the precision); ``channels_last``; ``compile``; ``batch_size="auto"`` (from free
memory on CUDA, halved on out-of-memory); ``resident`` keeps the decoded uint8 images on the device.
None of them changes which randomness an image gets: that depends on the seed, the cell and the
image's index only.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from vlmkit.errors import InputError
from vlmkit.evaluate.cache import TensorCache
from vlmkit.evaluate.cells import CLEAN, Cell
from vlmkit.evaluate.dual import infer_task
from vlmkit.evaluate.runner import Runner
from vlmkit.evaluate.store import ResultsStore, check_out_dir
from vlmkit.evaluate.task import Task, TaskData, model_key
from vlmkit.registry import TASKS
from vlmkit.runtime import cache_root, resolve_device, seed_everything

_DUAL_DEFAULTS: dict[str, Any] = {"templates": ("a photo of a {}.",), "token_layers": (), "attack_objective": None}


def get_task(task: str | Task, **options: Any) -> Task:
    """A :class:`Task` from a registered grid task name (``TASKS``) and its options, or an instance."""
    if isinstance(task, Task):
        if options:
            raise InputError(f"task options {sorted(options)} given with a Task instance; set them on the instance")
        return task
    if not isinstance(task, str):
        raise InputError(f"task={task!r}; expected a registered grid task name or a vlmkit.evaluate.Task")
    entry = TASKS.get(task)
    if TASKS.meta(task).get("kind") != "grid":
        raise InputError(f"task {task!r} is not evaluated over grids of cells; grid tasks: {TASKS.list(kind='grid')}")
    try:
        return entry(**options)
    except TypeError as e:
        raise InputError(f"task {task!r}: {e}") from None


def _task_for(dataset: Any, task: str | Task | None, templates: Sequence[str], token_layers: Sequence[int] | str,
              attack_objective: str | None, task_options: Mapping[str, Any] | None) -> Task:
    """The task object of a call, with the dual-encoder keywords routed to the tasks that take them."""
    task = task or infer_task(dataset)
    opts = dict(task_options or {})
    given = {"templates": tuple(templates), "token_layers": token_layers if isinstance(token_layers, str) else tuple(token_layers),
             "attack_objective": attack_objective}
    changed = [k for k, v in given.items() if v != _DUAL_DEFAULTS[k]]
    if task == "zeroshot":
        opts = {**given, **opts}
    elif task == "retrieval":
        if "templates" in changed:
            raise InputError("templates are for zero-shot classification; task 'retrieval' uses the captions")
        opts = {"token_layers": given["token_layers"], "attack_objective": attack_objective, **opts}
    elif changed:
        name = task if isinstance(task, str) else type(task).__name__
        raise InputError(f"{changed} are options of the dual-encoder tasks 'retrieval' and 'zeroshot', not of task "
                         f"{name!r}; set them on a Task instance or pass its own options as task_options")
    return get_task(task, **opts)


def grid_context(models: Sequence[Any], dataset: Any, out_dir: str | os.PathLike, cache: bool, device: str,
                 dataset_name: str | None) -> tuple[Path, ResultsStore, TensorCache, torch.device, str]:
    """Checks and shared state of a grid call: ``(out, results store, tensor cache, device, dataset name)``.

    Raises:
        InputError: No models, an empty dataset, or an ``out_dir`` that is (under) a file.
    """
    if not models:
        raise InputError("models is empty: pass at least one model spec")
    if len(dataset) == 0:
        raise InputError("dataset is empty")
    out = check_out_dir(out_dir)
    name = dataset_name or getattr(dataset, "name", "") or type(dataset).__name__
    return out, ResultsStore(out), TensorCache(out / "cache" / "tensors", enabled=cache), resolve_device(device), name


def shared_cache(enabled: bool = True) -> TensorCache:
    """The content-keyed tensor cache every grid call shares (``runtime.cache_root() / "tensors"``): what a
    task prepares once per model and data (text embeddings, class embeddings, targets), keyed by the
    model's weights fingerprint and the content, never by output folder or notebook."""
    return TensorCache(cache_root() / "tensors", enabled=enabled)


#: Models loaded from a spec, kept for the next call in the same process (a notebook evaluates the same
#: models on several datasets); at most ``VLMKIT_MODEL_CACHE`` of them (default 3; 0 keeps none).
_LOADED: OrderedDict[tuple[str, str, str], Any] = OrderedDict()


def _names_a_local_file(spec: str) -> bool:
    """A spec naming weights on disk (``open_clip:/path``, ``hf:/path``, ``open_clip:ARCH/path.pt``)."""
    rest = spec.split(":", 1)[-1]
    parts = rest.split("/")
    return any(os.path.exists("/".join(parts[i:])) for i in range(len(parts)) if parts[i:] != [""])


def loaded_model(t: Task, spec: str, device: torch.device) -> Any:
    """``t.load_model(spec, device)``, reused from an earlier call in this process when it loaded the same
    spec for the same kind of task on the same device. Specs of weights on disk are always loaded again,
    so a checkpoint retrained under the same path is seen.
    """
    size = int(os.environ.get("VLMKIT_MODEL_CACHE", "3"))
    owner = next(c for c in type(t).__mro__ if "load_model" in vars(c))  # retrieval and zero-shot share theirs
    key = (f"{owner.__module__}.{owner.__qualname__}", spec, str(device))
    if size > 0 and key in _LOADED:
        _LOADED.move_to_end(key)
        return _LOADED[key]
    model = t.load_model(spec, device)
    if size > 0 and not _names_a_local_file(spec):
        _LOADED[key] = model
        while len(_LOADED) > size:
            _LOADED.popitem(last=False)
    return model


def _runners(models: Sequence[str | Any], dataset: Any, t: Task, *, out: Path, store: ResultsStore,
             tcache: TensorCache, dev: torch.device, name: str, seed: int, batch_size: int | str,
             image_size: int | None, progress: bool, resident: bool | None, speed: dict[str, Any]):
    """Yield one prepared :class:`Runner` per model (loaded one at a time).

    Each runner can ask for a source model's runner on the same dataset (transfer cells); sources are
    loaded by spec through the same model cache and prepared at the asking runner's image size.
    """
    sources: dict[tuple[str, int], Runner] = {}

    def runner(m: str | Any, size: int | None, quiet: bool = False) -> Runner:
        model = loaded_model(t, m, dev) if isinstance(m, str) else m
        mkey = model_key(model)
        scoped = shared_cache(tcache.enabled).scoped(mkey)
        data = t.prepare(model, dataset, image_size=size, cache=scoped, cache_dir=None, progress=progress and not quiet)
        _place(data, model, resident)
        return Runner(t, model, data, model_key=mkey, store=store, cache=tcache, dataset_name=name, seed=seed,
                      batch_size=batch_size, progress=progress, shared=scoped, sources=source, **speed)

    def source(spec: str, size: int) -> Runner:
        if (spec, size) not in sources:
            sources[(spec, size)] = runner(spec, size, quiet=True)
        return sources[(spec, size)]

    for m in models:
        yield runner(m, image_size)


def _place(data: TaskData, model: Any, resident: bool | None) -> None:
    """Keep the uint8 images on the model's device when asked (None: on CUDA when they fit in a quarter of
    its free memory; COCO-5k at 224 px is about 750 MB)."""
    dev = torch.device(getattr(model, "device", "cpu"))
    if resident is None:
        resident = dev.type == "cuda" and data.images.numel() < torch.cuda.mem_get_info(dev)[0] / 4
    if resident and data.images.device != dev:
        data.images = data.images.to(dev)


def evaluate_grid(models: Sequence[str | Any] | str | Any, dataset: Any, cells: Sequence[Cell], *,
                  out_dir: str | os.PathLike, task: str | Task | None = None, seed: int = 0,
                  batch_size: int | str = 64, device: str = "auto", templates: Sequence[str] = ("a photo of a {}.",),
                  image_size: int | None = None, token_layers: Sequence[int] | str = (), dataset_name: str | None = None,
                  attack_objective: str | None = None, task_options: Mapping[str, Any] | None = None,
                  cache: bool = True, progress: bool = True, precision: str | None = None,
                  channels_last: bool = False, compile: bool | str = False,
                  resident: bool | None = None, n_boot: int = 1000, ci: float = 0.95,
                  ci_method: str = "percentile") -> pd.DataFrame:
    """Evaluate models on one dataset over a grid of cells and return this call's tidy rows.

    Args:
        models: Model specs or loaded models (a :class:`~vlmkit.VLM`, or a task model).
        dataset: A captioned (retrieval), labelled/typographic (zero-shot) or task dataset
            (``SegmentationSet``, ``QuestionSet``: their ``task`` attribute names the task).
        cells: Grid cells (:mod:`vlmkit.evaluate.cells`); the clean cell is always evaluated.
        out_dir: Results folder (``results.parquet``/``.csv`` with every run stored there, per-cell
            files, caches).
        task: A registered grid task name (``TASKS.list(kind="grid")``) or a :class:`Task` instance
            (default: from the dataset).
        seed: Seeds perturbations and attack starts (per cell and image: never per batch) and control pairs.
        batch_size: Images per forward pass (halved automatically on CUDA out-of-memory), or "auto":
            from free memory on CUDA (the task's default elsewhere). The numbers do not depend on it.
        device: "auto", "cpu", "cuda".
        templates: Prompt templates of zero-shot class embeddings (task ``zeroshot``).
        image_size: Decode/perturb resolution (default: the model's input size).
        token_layers: Layers whose vision tokens get Dirichlet energy and token drift (dual encoders), or
            ``"all"``: every layer of each model.
        dataset_name: Name in the table (default: the dataset's name).
        attack_objective: Objective of attack cells for dual encoders (default: the task's).
        task_options: Keyword arguments of the task's constructor (e.g. ``{"flip_iou": 0.3}``).
        cache: Reuse cached outputs.
        progress: Progress bars over models, cells and batches.
        precision: None (float32) or "bf16": autocast of a VLM's image tower for encoding and attacks.
            Its cells are cached and stored apart from float32 ones (rows carry ``precision``).
        channels_last: Channels-last memory format for the tower's convolutions.
        compile: ``torch.compile`` the tower (True, a mode such as "reduce-overhead", or a backend).
        resident: Keep the decoded uint8 images on the device (None: on CUDA when they fit).
        n_boot: Bootstrap resamples of each row's interval (:mod:`vlmkit.evaluate.intervals`).
        ci: Confidence level of the intervals.
        ci_method: ``"percentile"`` or ``"bca"`` for the item bootstrap (proportions get Wilson's
            interval, per-caption retrieval the cluster bootstrap over images).

    Returns:
        The rows of this call (one per model × cell × metric, and per-family IFR/IV rows), each with
        its interval (``ci_low``, ``ci_high``, ``ci``, ``n_boot``, ``ci_method``) and, for mean-type
        metrics, its per-item ``outcomes`` (for :func:`vlmkit.stats.compare`); the folder's
        ``results.parquet`` holds them together with earlier runs stored there.
    """
    seed_everything(seed)
    t = _task_for(dataset, task, templates, token_layers, attack_objective, task_options)
    cells = list(cells)
    t.check_cells(cells)  # before any model is loaded
    models = list(models) if isinstance(models, (list, tuple)) else [models]
    out, store, tcache, dev, name = grid_context(models, dataset, out_dir, cache, device, dataset_name)
    speed = {"precision": precision, "channels_last": channels_last, "compile": compile, "n_boot": n_boot, "ci": ci,
             "ci_method": ci_method}
    done: list[tuple[str, str]] = []
    for runner in _runners(models, dataset, t, out=out, store=store, tcache=tcache, dev=dev, name=name, seed=seed,
                           batch_size=batch_size, image_size=image_size, progress=progress, resident=resident,
                           speed=speed):
        done += [(runner.store_key, k) for k in runner.run(cells)]
    table = store.merge()
    keep = pd.MultiIndex.from_tuples(done, names=["run", "cell"])
    mine = pd.MultiIndex.from_frame(table[["run", "cell"]]).isin(keep)
    return table[mine].reset_index(drop=True)


def _one_runner(model: str | Any, dataset: Any, out_dir: str | os.PathLike, *, task: str | Task | None, seed: int,
                batch_size: int | str, device: str, templates: Sequence[str], image_size: int | None,
                task_options: Mapping[str, Any] | None, precision: str | None, progress: bool,
                resident: bool | None, token_layers: Sequence[int] | str = ()) -> Runner:
    t = _task_for(dataset, task, templates, token_layers, None, task_options)
    out, store, tcache, dev, name = grid_context([model], dataset, out_dir, True, device, None)
    return next(_runners([model], dataset, t, out=out, store=store, tcache=tcache, dev=dev, name=name, seed=seed,
                         batch_size=batch_size, image_size=image_size, progress=progress, resident=resident,
                         speed={"precision": precision}))


def cell_embeddings(model: str | Any, dataset: Any, cells: Sequence[Cell], *, out_dir: str | os.PathLike,
                    task: str | Task | None = None, seed: int = 0, batch_size: int | str = 64, device: str = "auto",
                    templates: Sequence[str] = ("a photo of a {}.",), image_size: int | None = None,
                    task_options: Mapping[str, Any] | None = None, precision: str | None = None,
                    progress: bool = False, resident: bool | None = None, output: str = "emb",
                    token_layers: Sequence[int] | str = ()) -> dict[str, torch.Tensor]:
    """Per-image outputs ``{cell label: (N, ...)}`` (clean included) from the same cache as
    :func:`evaluate_grid` — for distributions (drift histograms) rather than summary rows.

    ``output`` names the task output (``"emb"`` for dual encoders, ``"feats"`` for answer scoring ...);
    pass the ``token_layers`` of the :func:`evaluate_grid` call whose cache should be read.
    """
    r = _one_runner(model, dataset, out_dir, task=task, seed=seed, batch_size=batch_size, device=device,
                    templates=templates, image_size=image_size, task_options=task_options, precision=precision,
                    progress=progress, resident=resident, token_layers=token_layers)
    result = {}
    for c in [CLEAN, *[c for c in cells if c.kind != "clean"]]:
        outs = r.cell_outputs(c)
        if output not in outs:
            raise InputError(f"output={output!r}; task {r.task.name!r} outputs {sorted(outs)}")
        result[c.label()] = outs[output]
    return result


def cell_images(model: str | Any, dataset: Any, cell: Cell, indices: Sequence[int], *, out_dir: str | os.PathLike,
                task: str | Task | None = None, seed: int = 0, device: str = "auto",
                templates: Sequence[str] = ("a photo of a {}.",), image_size: int | None = None,
                task_options: Mapping[str, Any] | None = None) -> torch.Tensor:
    """The images ``(len(indices), 3, S, S)`` in [0, 1] that :func:`evaluate_grid` measures for ``cell`` at
    dataset items ``indices`` with the same arguments — bit for bit on CPU, whatever its batch size.

    For clean and perturbation cells the model only sets the decode size; attack cells run the attack
    against the model with the task's objective, as the engine does. Notebook galleries use this.
    """
    r = _one_runner(model, dataset, out_dir, task=task, seed=seed, batch_size=1, device=device, templates=templates,
                    image_size=image_size, task_options=task_options, precision=None, progress=False,
                    resident=False)
    idx = torch.as_tensor(list(indices), dtype=torch.long)
    if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= len(r.data)):
        raise InputError(f"indices must lie in [0, {len(r.data)}) for dataset {r.dataset_name!r}")
    return r.cell_images(cell, idx).cpu()


__all__ = ["cell_embeddings", "cell_images", "evaluate_grid", "get_task", "grid_context"]
