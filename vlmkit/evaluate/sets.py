"""Which models evaluate which datasets, and one call over all the datasets of a role.

A grid's ``models`` are evaluated on every dataset they can read: the toy-world models
(``toy:...``, trained on 64-px rendered scenes) only on the toy-world sets (named ``toy-...``), other
models on everything. A real-photo dataset that none of ``models`` can read is evaluated by
``photo_models`` (``conse:default``, a model trained on real photos that needs no download), so a
toy-world grid run with ``--data`` still measures the real photos::

    data = load_datasets(datasets, n_images=64, seed=0, root=out / "data")
    table = evaluate_sets(models, data["retrieval"], cells, out_dir=out / "retrieval",
                          photo_models=["conse:default"], seed=0)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from vlmkit.errors import InputError
from vlmkit.evaluate.cells import Cell
from vlmkit.evaluate.engine import cell_embeddings, evaluate_grid
from vlmkit.metrics import control_drift, cosine_drift
from vlmkit.results import COLUMNS
from vlmkit.runtime import make_generator

#: Model families trained on the toy world only.
TOY_FAMILIES = ("toy", "toycap")


def is_toy_model(model: str | Any) -> bool:
    """A toy-world model: a ``toy:`` spec or a loaded model of family ``toy``."""
    if isinstance(model, str):
        return model.split(":", 1)[0] in TOY_FAMILIES
    return getattr(model, "family", None) in TOY_FAMILIES


def is_toy_dataset(dataset: Any) -> bool:
    """A toy-world dataset (the toy world's sets are named ``toy-...``)."""
    return str(getattr(dataset, "name", "")).startswith("toy-")


def models_for(dataset: Any, models: Sequence[str | Any], photo_models: Sequence[str | Any] = ()) -> list[str | Any]:
    """The models that evaluate ``dataset`` (see the module docstring).

    Args:
        dataset: A dataset of the data layer.
        models: The grid's models.
        photo_models: Models for real photos when none of ``models`` reads them.

    Returns:
        The set's own ``models`` when its spec names them (``{"format": "coco", ..., "models": [...]}``);
        else ``models`` on toy-world sets, and the non-toy ``models`` on other sets, or ``photo_models``
        when there are none.
    """
    own = getattr(dataset, "models", None)
    if own:
        return list(own)
    if is_toy_dataset(dataset):
        return list(models)
    real = [m for m in models if not is_toy_model(m)]
    return real or list(photo_models)


def evaluate_sets(models: Sequence[str | Any], datasets: Sequence[Any], cells: Sequence[Cell], *,
                  out_dir: str | os.PathLike, photo_models: Sequence[str | Any] = (), **kwargs: Any) -> pd.DataFrame:
    """:func:`~vlmkit.evaluate.evaluate_grid` on each dataset with the models that read it.

    Args:
        models: Model specs or loaded models.
        datasets: Datasets (e.g. every dataset of one role of :func:`vlmkit.data.load_datasets`).
        cells: Grid cells.
        out_dir: Results folder shared by the datasets (rows carry the dataset's name).
        photo_models: See :func:`models_for`.
        **kwargs: Passed to :func:`~vlmkit.evaluate.evaluate_grid` (``seed``, ``device``, ``batch_size``...).

    Returns:
        The rows of every dataset, in order (:func:`empty_rows` when no dataset has a model).
    """
    tables = []
    for ds in datasets:
        chosen = models_for(ds, models, photo_models)
        if chosen:
            tables.append(evaluate_grid(chosen, ds, cells, out_dir=out_dir, **kwargs))
    return pd.concat(tables, ignore_index=True) if tables else empty_rows()


def empty_rows() -> pd.DataFrame:
    """A table with the engine's columns and no rows (what a role without datasets evaluates to)."""
    cols = [*COLUMNS, "task", "kind", "family", "label", "cell", "ci_low", "ci_high"]
    numeric = {"value", "severity", "ci_low", "ci_high"}
    return pd.DataFrame({c: pd.Series(dtype="float64" if c in numeric else "object") for c in cols})


def family_drift(model: str | Any, dataset: Any, cells: Sequence[Cell], *, out_dir: str | os.PathLike, seed: int = 0,
                 by: str = "name", **kwargs: Any) -> dict[str, torch.Tensor]:
    """Per-image drift ``1 − cos(e(x), e(x'))`` pooled over the cells of each perturbation (``by="name"``:
    translate, scale ... over their severities) or registry family (``by="family"``), and the
    control drift between different clean images (``"control"``) — the distributions of Wani et al.
    2026, Fig. 1 — from the same cache as :func:`~vlmkit.evaluate.evaluate_grid`.

    Args:
        model: A model spec or loaded model.
        dataset: The dataset.
        cells: Perturbation cells.
        out_dir: The results folder of the grid (its cache is reused).
        seed: The grid's seed (perturbations and control pairs).
        by: ``"name"`` or ``"family"``.
        **kwargs: Passed to :func:`~vlmkit.evaluate.cell_embeddings`.

    Returns:
        ``{"control": (N,), group: (N · cells of the group,)}``.
    """
    if by not in ("name", "family"):
        raise InputError(f"by={by!r}; expected 'name' or 'family'")
    emb = cell_embeddings(model, dataset, cells, out_dir=out_dir, seed=seed, **kwargs)
    out: dict[str, list[torch.Tensor]] = {"control": [control_drift(emb["clean"], make_generator(seed))]}
    for c in cells:
        if c.kind != "clean":
            out.setdefault(c.name if by == "name" else c.family, []).append(cosine_drift(emb["clean"], emb[c.label()]))
    return {k: torch.cat(v) for k, v in out.items()}


__all__ = ["TOY_FAMILIES", "empty_rows", "evaluate_sets", "family_drift", "natural_adversarial", "is_toy_dataset", "is_toy_model", "models_for"]


def natural_adversarial(models: Sequence[str | Any], data: Mapping[str, Sequence[Any]], *, out_dir: str | os.PathLike,
                        typographic_modes: Sequence[str] = ("semantic", "random", "empty"), typographic_severity: int = 3,
                        segmentation_models: Sequence[str | Any] = (), vqa_models: Sequence[str | Any] = (),
                        language_search: Mapping[str, Any] | None = None, photo_models: Sequence[str | Any] = (),
                        seed: int = 0, device: str = "auto", progress: bool = False) -> pd.DataFrame:
    """The rows of the natural-adversarial study (see :func:`vlmkit.report.studies.natural_section`).

    * classification and hard sets: zero-shot clean and under the synthetic typographic attack, one cell per
      mode (``semantic``: a wrong class name written on the image, Goh et al. 2021; ``random``: a random
      word; ``empty``: a blank label, the control);
    * typographic sets (SCAM, RTA-100, the toy world's): clean accuracy and attack-word rate;
    * segmentation and VQA sets with ``segmentation_models`` / ``vqa_models`` (clean);
    * ``language_search``: prompts whose toy-world renderings fool each toy-world model while meaning the
      true class (:func:`vlmkit.search.language_search`; its keys are ``classes`` and
      :class:`~vlmkit.search.SearchConfig` fields), on the first classification set's classes.

    Args:
        models: The grid's models.
        data: Role -> datasets (:func:`vlmkit.data.load_datasets`); absent roles are skipped.
        out_dir: Results folder (``language/`` below it holds the search's rows).
        typographic_modes, typographic_severity: The synthetic typographic cells.
        segmentation_models, vqa_models: Task models of the segmentation and vqa roles.
        language_search: Search options; empty or None: no search.
        photo_models: See :func:`models_for`.
        seed, device, progress: As :func:`~vlmkit.evaluate.evaluate_grid`.

    Returns:
        The rows (empty when the run has none of these roles).
    """
    from vlmkit.evaluate.cells import grid_cells

    out = Path(out_dir)
    typo = grid_cells(["typographic"], [typographic_severity],
                      perturbation_params={"typographic": {"mode": list(typographic_modes)}})
    kw = {"seed": seed, "device": device, "progress": progress}
    parts = [evaluate_sets(models, data[role], [] if role == "typographic" else typo, out_dir=out,
                           photo_models=photo_models, **kw) for role in ("classification", "hard", "typographic")
             if data.get(role)]
    parts += [evaluate_sets(list(m), data[role], [], out_dir=out, **kw)
              for role, m in (("segmentation", segmentation_models), ("vqa", vqa_models)) if data.get(role) and m]
    search = dict(language_search or {})
    toy = [m for m in models if is_toy_model(m)]
    if search and toy and data.get("classification"):
        from vlmkit.results import write_table
        from vlmkit.search import language_search as run_search

        classes = search.pop("classes", None)
        names = data["classification"][0].classnames
        curves = pd.concat([run_search(m, names, classes, seed=seed, **search).curves for m in toy], ignore_index=True)
        write_table(curves, out / "language")
        parts.append(curves)
    return pd.concat(parts, ignore_index=True) if parts else empty_rows()
