"""The new grid axes in the one engine: text cells (perturbed captions / prompts on clean images) and
transfer cells (crafted on a source model or an ensemble, measured on the grid's model)."""

from __future__ import annotations

import pandas as pd
import pytest

from vlmkit.data import load_coco_captions
from vlmkit.errors import InputError, RegistryError
from vlmkit.evaluate import Cell, evaluate_grid, grid_cells


@pytest.fixture(scope="module")
def toy_retrieval(tmp_path_factory):
    from vlmkit.toyworld.export import export_retrieval

    root = export_retrieval(tmp_path_factory.mktemp("toyret") / "r", n=16, progress=False)
    return load_coco_captions(root / "captions.json", root / "images")


PGD = {"eps": 4 / 255, "steps": 3}


@pytest.fixture(scope="module")
def transfer_table(toy_retrieval, tmp_path_factory) -> pd.DataFrame:
    cells = grid_cells(attacks=["pgd"], attack_params={"pgd": {**PGD, "source": ["toy:vit", "toy:rn", "toy:rn+toy:vit"]}})
    cells.append(Cell("attack", "pgd", 0, PGD))  # white-box
    cells += grid_cells(text_perturbations=["synonym", "swap_color"], text_severities=[2])
    cells += grid_cells(text_perturbations=["synonym"], text_severities=[2], text_params={"synonym": {"target": "classnames"}})
    return evaluate_grid(["toy:vit", "toy:rn"], toy_retrieval, cells, out_dir=tmp_path_factory.mktemp("o"),
                         progress=False, n_boot=200)


def _rows(df, model, label):
    return df[(df.model == model) & (df.label == label)].set_index("metric").sort_index()


def test_transfer_diagonal_equals_the_white_box_cell_exactly(transfer_table) -> None:
    for m in ("toy:vit", "toy:rn"):
        white = _rows(transfer_table, m, "pgd ε=4/255 steps=3")
        diag = _rows(transfer_table, m, f"pgd ε=4/255 source={m} steps=3")
        cols = ["value", "ci_low", "ci_high", "forward_passes", "backward_passes"]
        assert len(white) > 5
        pd.testing.assert_frame_equal(white[cols], diag[cols])


def test_transfer_off_diagonal_is_weaker_than_white_box_and_ensembles_count_both_members(transfer_table) -> None:
    r1 = lambda m, lab: _rows(transfer_table, m, lab).loc["i2t_R@1", "value"]  # noqa: E731
    for target, other in (("toy:vit", "toy:rn"), ("toy:rn", "toy:vit")):
        assert r1(target, f"pgd ε=4/255 source={other} steps=3") >= r1(target, "pgd ε=4/255 steps=3")
    ens = _rows(transfer_table, "toy:vit", "pgd ε=4/255 source=toy:rn+toy:vit steps=3")
    assert ens.loc["i2t_R@1", "backward_passes"] == 2 * 3  # 3 steps on each of the two members


def test_text_cells_keep_the_images_and_move_only_the_texts(transfer_table) -> None:
    syn = _rows(transfer_table, "toy:vit", "text:synonym@2")
    swap = _rows(transfer_table, "toy:vit", "text:swap_color@2")
    clean = _rows(transfer_table, "toy:vit", "clean")
    assert "drift_mean" not in syn.index  # the images are the clean ones: no image drift row
    # meaning-preserving edits barely move the caption embeddings; changing a colour moves them a lot
    assert syn.loc["text_drift_mean", "value"] < 0.25 * swap.loc["text_drift_mean", "value"]
    assert swap.loc["i2t_R@1", "value"] < clean.loc["i2t_R@1", "value"]
    assert set(swap["family"]) == {"text:meaning-changing"}
    # a text cell for zero-shot class names does not apply to a retrieval set: skipped, not an error
    assert not transfer_table.label.str.contains("target=classnames").any()


def test_bad_axes_fail_when_the_cell_is_made() -> None:
    with pytest.raises(InputError, match="source"):
        Cell("attack", "pgd", 0, {"source": ["toy:rn", "toy:rn"]})
    with pytest.raises(InputError, match="target"):
        Cell("text", "synonym", 1, {"target": "images"})
    with pytest.raises(RegistryError, match="text perturbation"):
        grid_cells(text_perturbations=["synonim"])
    with pytest.raises(InputError, match="severity"):
        Cell("text", "synonym", 7)
    assert Cell("attack", "pgd", 0, {"source": ["toy:rn", "toy:vit"]}).sources == ["toy:rn", "toy:vit"]


def test_transfer_matrix_has_the_white_box_diagonal(transfer_table) -> None:
    from vlmkit.evaluate.axes import transfer_matrix

    mat = transfer_matrix(transfer_table, "i2t_R@1")
    assert list(mat.columns) == ["toy:rn", "toy:vit"] and set(mat.index) == {"toy:rn", "toy:vit", "toy:rn+toy:vit"}
    for m in ("toy:vit", "toy:rn"):
        white = _rows(transfer_table, m, "pgd ε=4/255 steps=3").loc["i2t_R@1", "value"]
        assert mat.loc[m, m] == white
    assert "[" in transfer_matrix(transfer_table, "IFR", with_interval=True).loc["toy:rn", "toy:vit"]
    with pytest.raises(InputError, match="no attack rows"):
        transfer_matrix(transfer_table, "top1")


def test_invariance_vs_sensitivity_on_the_toy_worlds_ground_truth() -> None:
    """The grammar's meaning flips (checked false for the scene) move the caption embedding far more than its
    rewordings; measured: invariance 0.001, sensitivity 0.19, ratio ≈ 136 [109, 174] on 60 scenes."""
    from vlmkit.evaluate.axes import invariance_sensitivity
    from vlmkit.toyworld.probes import probe_set

    _, records = probe_set(40, seed=0)
    t = invariance_sensitivity(["toy:vit"], records, dataset="toy-probes", n_boot=300).set_index("label")
    assert t.loc["ratio", "ci_low"] > 10
    assert t.loc["invariance", "value"] < t.loc["sensitivity", "value"]
    assert {"color", "shape", "count", "preserving"} <= set(t.index)


def test_factor_table_on_the_toy_factor_sweeps(tmp_path) -> None:
    """One factor forced at a time (the toy world's ``toy-factors`` set, unseen values included): the unseen
    ``tiny`` size is the size sweep's error hot spot (measured ratio 3.0 with 4 scenes per value, seed 0)."""
    from vlmkit.data import load_datasets
    from vlmkit.evaluate.axes import factor_table

    ds = load_datasets({"factors": "toy"}, n_images=16, seed=0, root=tmp_path)["factors"][0]
    assert ds.name == "toy-factors" and set(ds.factors.sweep) == {"background", "size", "position", "color", "sign"}
    rows = evaluate_grid(["toy:vit"], ds, [], out_dir=tmp_path / "o", progress=False, n_boot=200)
    t = factor_table(rows, ds, n_boot=200)
    size = t[t.factor == "size"].set_index("value")
    assert set(size.index) == {"small", "large", "tiny"} and (size.n == 4).all()
    assert size.loc["tiny", "error_ratio"] > 1 and size.loc["tiny", "accuracy"] < size.loc["large", "accuracy"]
    with pytest.raises(InputError, match="no per-image factors"):
        factor_table(rows, load_datasets({"classification": "toy"}, n_images=8, seed=0, root=tmp_path)
                     ["classification"][0])


def test_a_saved_universal_perturbation_is_a_perturbation_cell(toy_retrieval, tmp_path) -> None:
    """Fit a UAP on toy:vit (training scenes), save it, measure it on held-out images of both toy models."""
    import torch

    import vlmkit
    from vlmkit.attacks import EmbeddingDrift
    from vlmkit.attacks.universal import UniversalPerturbation, fit_universal
    from vlmkit.evaluate.cells import universal_cells
    from vlmkit.registry import resolve_perturbations
    from vlmkit.toyworld.world import sample_scene

    train = torch.stack([sample_scene(7, i).to_tensor() for i in range(16)])  # (16, 3, 64, 64), not the eval set
    uap = fit_universal(vlmkit.load_model("toy:vit"), train, EmbeddingDrift(), eps=8 / 255, epochs=2, batch_size=8,
                        progress=False)
    path = uap.save(tmp_path / "uap.safetensors")
    (cell,) = universal_cells([path])
    assert cell.label() == "universal@1 uap" and len(cell.params["sha256"]) == 64
    x = toy_retrieval.load_images(size=64).float() / 255  # (16, 3, 64, 64)
    assert torch.equal(cell.apply(x, range(len(x)), seed=0), UniversalPerturbation.load(path).apply(x))
    rows = evaluate_grid(["toy:vit", "toy:rn"], toy_retrieval, [cell], out_dir=tmp_path / "o", progress=False,
                         n_boot=100)
    drift = rows[(rows.label == cell.label()) & (rows.metric == "drift_mean")].set_index("model").value
    assert (drift > 0).all()
    assert "universal" not in resolve_perturbations(["*"])  # globs and families skip it: it needs its file
    with pytest.raises(InputError, match="needs parameter"):
        Cell("perturbation", "universal", 1)
