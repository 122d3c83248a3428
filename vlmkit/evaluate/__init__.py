"""The evaluation engine: grids of cells over models and a dataset, for every task, cached and resumable.

    from vlmkit.evaluate import evaluate_grid, perturbation_cells
    table = evaluate_grid(["toy:vit"], ds, perturbation_cells(["gaussian_noise", "fog"], [1, 3, 5]),
                          out_dir="outputs/my-grid")

Rooms: :mod:`.cells` (what a cell applies, and the one way to apply it), :mod:`.task` (the task
interface), :mod:`.dual` (retrieval and zero-shot tasks of dual encoders), :mod:`.runner` (the one
runner), :mod:`.engine` (entry points), :mod:`.sets` (which models read which datasets), :mod:`.store` and :mod:`.cache` (files), :mod:`.spectral`
(Fourier heat maps).
"""

from vlmkit.evaluate.cache import TensorCache
from vlmkit.evaluate.cells import (
    CLEAN,
    Cell,
    attack_cells,
    cells_from_records,
    grid_cells,
    perturbation_cells,
    text_cells,
    transfer_params,
    universal_cells,
)
from vlmkit.evaluate.dual import RetrievalTask, ZeroShotTask, infer_task
from vlmkit.evaluate.engine import cell_embeddings, cell_images, evaluate_grid, get_task
from vlmkit.evaluate.runner import ENGINE_VERSION, Runner
from vlmkit.evaluate.sets import (
    evaluate_sets,
    family_drift,
    is_toy_dataset,
    is_toy_model,
    models_for,
    natural_adversarial,
)
from vlmkit.evaluate.spectral import fourier_heatmap
from vlmkit.evaluate.store import ResultsStore
from vlmkit.evaluate.task import Task, TaskData, model_key

__all__ = ["CLEAN", "Cell", "ENGINE_VERSION", "ResultsStore", "RetrievalTask", "Runner", "Task", "TaskData",
           "TensorCache", "ZeroShotTask", "attack_cells", "cell_embeddings", "cell_images", "cells_from_records",
           "evaluate_grid", "evaluate_sets", "family_drift", "fourier_heatmap", "get_task", "grid_cells", "infer_task", "text_cells", "transfer_params", "universal_cells", "is_toy_dataset", "is_toy_model",
           "model_key", "models_for", "natural_adversarial", "perturbation_cells"]
