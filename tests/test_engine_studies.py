"""What the studies ask of the engine: one vocabulary of cells, the drift of unchanged answers, the
confidence AUROC of clean vs perturbed images, every token layer, flips per perturbation, and which
models read which datasets. Checked against independent references (imagecorruptions' own list,
scikit-learn's AUROC, numpy arithmetic on the engine's cached embeddings)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vlmkit
from vlmkit.data import load_datasets
from vlmkit.errors import InputError, RegistryError
from vlmkit.evaluate import (
    Cell,
    cell_embeddings,
    evaluate_grid,
    evaluate_sets,
    family_drift,
    grid_cells,
    models_for,
    perturbation_cells,
)
from vlmkit.models.zeroshot import zero_shot_classifier


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return load_datasets({"retrieval": "toy", "classification": "toy"}, n_images=16, seed=0,
                         root=tmp_path_factory.mktemp("toy"))


def test_imagenet_c_group_is_the_nineteen_corruptions_of_imagecorruptions():
    from imagecorruptions import get_corruption_names

    assert sorted(vlmkit.resolve_perturbations("imagenet-c")) == sorted(get_corruption_names("all"))
    assert len(get_corruption_names("all")) == 19


def test_names_globs_and_families_resolve_and_unknown_names_fail():
    assert vlmkit.resolve_perturbations(["noise", "gaussian_noise"]) == \
        ["gaussian_noise", "impulse_noise", "shot_noise", "speckle_noise"]  # family first, no repeats
    assert vlmkit.resolve_perturbations("*_pass") == ["high_pass", "low_pass"]
    with pytest.raises(RegistryError, match="gausian_noise.*Did you mean: gaussian_noise"):
        vlmkit.resolve_perturbations(["gausian_noise"])
    with pytest.raises(RegistryError, match="unknown attack 'pgdd'"):
        grid_cells(attacks=["pgdd"])


def test_grid_cells_vocabulary():
    cells = grid_cells(["band_noise", "low_pass", "band_filter"], [1, 3],
                       perturbation_params={"band_noise": {"band": ["low", "high"], "norm": "linf", "eps": [1 / 255, 4 / 255]},
                                            "gaussian_noise": {"ignored": 1}},  # not run: ignored
                       attacks=["pgd", "freq_pgd"], epsilons=[2 / 255], attack_steps=3,
                       attack_params={"freq_pgd": {"band": ["low", "mid"]}})
    labels = [c.label() for c in cells]
    # a fixed budget sweeps the budget, not the severities; band_filter has no severities
    assert [lbl for lbl in labels if lbl.startswith("band_noise")] == [
        "band_noise band=low ε=1/255 norm=linf", "band_noise band=low ε=4/255 norm=linf",
        "band_noise band=high ε=1/255 norm=linf", "band_noise band=high ε=4/255 norm=linf"]
    assert [lbl for lbl in labels if lbl.startswith(("low_pass", "band_filter"))] == \
        ["low_pass@1", "low_pass@3", "band_filter@1"]
    assert [lbl for lbl in labels if "pgd" in lbl] == [
        "pgd ε=2/255 steps=3", "freq_pgd band=low ε=2/255 steps=3", "freq_pgd band=mid ε=2/255 steps=3"]
    with pytest.raises(InputError, match="perturbation_params names \\['gaussian_nois'\\]"):
        grid_cells(["low_pass"], perturbation_params={"gaussian_nois": {}})
    with pytest.raises(InputError, match="must map parameter names"):
        grid_cells(attacks=["pgd"], attack_params={"pgd": [1, 2]})


def test_drift_of_unchanged_answers_and_confidence_auroc_match_independent_arithmetic(toy, tmp_path):
    from sklearn.metrics import roc_auc_score

    shapes = toy["classification"][0]
    cell = Cell("perturbation", "gaussian_blur", 4)
    df = evaluate_grid("toy:vit", shapes, [cell], out_dir=tmp_path, seed=3, progress=False, device="cpu")
    got = {m: float(v) for m, v in zip(df[df.label == cell.label()].metric, df[df.label == cell.label()].value)}
    vlm = vlmkit.load_model("toy:vit", device="cpu")
    emb = {k: v.numpy().astype(np.float64) for k, v in
           cell_embeddings(vlm, shapes, [cell], out_dir=tmp_path, seed=3, device="cpu").items()}
    clf = zero_shot_classifier(vlm, shapes.classnames, ["a photo of a {}."]).numpy().astype(np.float64)
    e0, e1 = emb["clean"], emb[cell.label()]
    scale = float(vlm.logit_scale)
    logits0, logits1 = scale * e0 @ clf.T, scale * e1 @ clf.T
    kept = logits0.argmax(1) == logits1.argmax(1)
    assert 0 < kept.sum() < len(kept), "the cell should flip some answers and keep others"
    cos = (e0 * e1).sum(1) / np.linalg.norm(e0, axis=1) / np.linalg.norm(e1, axis=1)
    assert got["drift_kept_mean"] == pytest.approx((1 - cos[kept]).mean(), abs=1e-5)
    assert got["IFR"] == pytest.approx(1 - kept.mean())

    def msp(z):
        p = np.exp(z - z.max(1, keepdims=True))
        return (p / p.sum(1, keepdims=True)).max(1)

    # clean = positive class (in-distribution): AUROC of confidence separating clean from perturbed
    y = np.r_[np.ones(len(e0)), np.zeros(len(e1))]
    assert got["ood_auroc"] == pytest.approx(roc_auc_score(y, np.r_[msp(logits0), msp(logits1)]), abs=1e-6)


def test_every_token_layer_and_flips_per_perturbation(toy, tmp_path):
    ds = toy["retrieval"][0]
    cells = perturbation_cells(["translate", "rotate"], [1, 3])
    df = evaluate_grid("toy:vit", ds, cells, out_dir=tmp_path, token_layers="all", progress=False, device="cpu")
    n_layers = vlmkit.load_model("toy:vit", device="cpu").num_layers
    assert {f"dirichlet_L{i}" for i in range(n_layers)} <= set(df.metric)
    fam = df[df.kind == "family"]
    assert set(fam.family) == {"translate", "rotate", "geometric", "all"}
    ifr = fam[fam.metric == "IFR"].set_index("family")["value"]
    cell_ifr = df[(df.kind == "perturbation") & (df.metric == "IFR")].groupby("perturbation")["value"].mean()
    # each group's IFR is the mean IFR of its (equal-size) cells; IV of the union bounds each group's
    assert ifr["translate"] == pytest.approx(cell_ifr["translate"])
    assert ifr["geometric"] == pytest.approx(cell_ifr.mean())
    iv = fam[fam.metric == "IV"].set_index("family")["value"]
    assert iv["all"] >= max(iv["translate"], iv["rotate"])
    drifts = family_drift("toy:vit", ds, cells, out_dir=tmp_path, device="cpu")
    assert set(drifts) == {"control", "translate", "rotate"}
    assert drifts["translate"].shape == (2 * len(ds),) and drifts["control"].shape == (len(ds),)
    with pytest.raises(InputError, match="token_layers='some'"):
        evaluate_grid("toy:vit", ds, cells, out_dir=tmp_path, token_layers="some", progress=False)


def test_models_for_and_evaluate_sets(toy, tmp_path):
    class Real:
        name = "coco-mini"

    real = Real()
    assert models_for(toy["retrieval"][0], ["toy:vit", "conse:default"]) == ["toy:vit", "conse:default"]
    assert models_for(real, ["toy:vit", "toy:rn"], ["conse:default"]) == ["conse:default"]
    assert models_for(real, ["toy:vit", "hf:openai/clip-vit-base-patch32"], ["conse:default"]) == \
        ["hf:openai/clip-vit-base-patch32"]
    assert models_for(real, ["toy:vit"]) == []
    real.models = ["conse:default"]  # a dataset spec's own models win
    assert models_for(real, ["toy:vit", "hf:openai/clip-vit-base-patch32"]) == ["conse:default"]
    del real.models
    both = toy["classification"] + toy["retrieval"]
    df = evaluate_sets(["toy:vit"], both, [], out_dir=tmp_path, progress=False, device="cpu")
    assert set(df.dataset) == {"toy-shapes", "toy-retrieval"} and set(df.task) == {"zeroshot", "retrieval"}
    assert evaluate_sets(["toy:vit"], [real], [], out_dir=tmp_path).empty  # no model reads it: nothing run
    assert torch.is_tensor(toy["retrieval"][0].load_images(64, progress=False))


def test_a_model_loaded_once_serves_the_next_calls_but_local_weights_reload(toy, tmp_path, monkeypatch):
    from vlmkit.evaluate import engine
    from vlmkit.evaluate.dual import RetrievalTask, ZeroShotTask

    calls = []
    real = vlmkit.load_model

    def counting(spec, **kw):
        calls.append(spec)
        return real(spec, **kw)

    monkeypatch.setattr("vlmkit.evaluate.dual.load_model", counting)
    monkeypatch.setattr(engine, "_LOADED", type(engine._LOADED)())
    dev = torch.device("cpu")
    a = engine.loaded_model(RetrievalTask(), "toy:vit", dev)
    b = engine.loaded_model(ZeroShotTask(), "toy:vit", dev)  # same loader, same spec: the same object
    assert a is b and calls == ["toy:vit"]
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"")
    assert engine._names_a_local_file(f"open_clip:ViT-B-32/{weights}") and not engine._names_a_local_file("toy:vit")
    monkeypatch.setenv("VLMKIT_MODEL_CACHE", "0")
    engine.loaded_model(RetrievalTask(), "toy:vit", dev)
    assert calls == ["toy:vit", "toy:vit"]  # cache off: loaded again
