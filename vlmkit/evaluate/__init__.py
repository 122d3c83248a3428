"""The evaluation engine: grids of cells over models and a dataset, cached and resumable.

    from vlmkit.evaluate import evaluate_grid, perturbation_cells
    table = evaluate_grid(["toy:vit"], ds, perturbation_cells(["gaussian_noise", "fog"], [1, 3, 5]),
                          out_dir="outputs/my-grid")
"""

from vlmkit.evaluate.cells import CLEAN, Cell, attack_cells, cells_from_records, perturbation_cells
from vlmkit.evaluate.engine import ENGINE_VERSION, TensorCache, cell_embeddings, evaluate_grid, infer_task, with_oom_backoff
from vlmkit.evaluate.store import ResultsStore

__all__ = ["CLEAN", "Cell", "ENGINE_VERSION", "ResultsStore", "TensorCache", "attack_cells", "cell_embeddings", "cells_from_records",
           "evaluate_grid", "infer_task", "perturbation_cells", "with_oom_backoff"]
