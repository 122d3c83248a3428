"""The grid engine: closed-form cells, resume without recomputation, determinism, OOM back-off, real photos."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import vlmkit
from vlmkit.data import load_coco_captions, load_labelled_csv
from vlmkit.evaluate import Cell, ResultsStore, evaluate_grid, perturbation_cells
from vlmkit.perturb import register_perturbation
from vlmkit.registry import PERTURBATIONS

from _tiny import synthetic_captions, tiny_vit_model

CALLS: dict[str, int] = {}
BOMB = {"armed": False}
SEEN: list[torch.Tensor] = []  # every output of _test_noise, in call order


def _count(name):
    CALLS[name] = CALLS.get(name, 0) + 1


if "_test_identity" not in PERTURBATIONS:

    @register_perturbation("_test_identity", family="_test", severities=None)
    def _identity(x, severity=1, *, generator=None):
        _count("_test_identity")
        return x.clone()

    @register_perturbation("_test_noise", family="_test", severities=(1, 2, 3))
    def _noise(x, severity=1, *, generator=None):
        _count(f"_test_noise@{severity}")
        n = torch.randn(x.shape, generator=generator, device=x.device) * 0.1 * severity
        out = (x + n).clamp(0, 1)
        SEEN.append(out.clone())
        return out

    @register_perturbation("_test_bomb", family="_test_other", severities=None)
    def _bomb(x, severity=1, *, generator=None):
        if BOMB["armed"]:
            raise RuntimeError("simulated crash in the middle of a grid")
        return 1 - x

    @register_perturbation("_test_oom", family="_test_other", severities=None)
    def _oom(x, severity=1, *, generator=None):
        if x.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("simulated CUDA out of memory")
        return x.flip(-1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_vit_model(tmp_path_factory.mktemp("cfg"))


@pytest.fixture(scope="module")
def captioned(tmp_path_factory):
    return synthetic_captions(tmp_path_factory.mktemp("caps"), 10)


def _value(df, label, metric):
    sel = df[(df["label"] == label) & (df["metric"] == metric)]
    assert len(sel) == 1, (label, metric, len(sel))
    return float(sel["value"].iloc[0])


def test_identity_cell_equals_clean_and_has_zero_drift(tiny, captioned, tmp_path):
    df = evaluate_grid(tiny, captioned, [Cell("perturbation", "_test_identity", 1)], out_dir=tmp_path,
                       batch_size=4, progress=False)
    assert _value(df, "_test_identity@1", "drift_mean") == pytest.approx(0, abs=1e-6)
    assert _value(df, "_test_identity@1", "IFR") == 0.0
    assert _value(df, "_test_identity@1", "i2t_R@1") == _value(df, "clean", "i2t_R@1")
    assert _value(df, "clean", "control_drift_mean") > 0
    assert set(df["kind"]) == {"clean", "perturbation", "family"}
    assert (tmp_path / "results.parquet").is_file() and (tmp_path / "results.csv").is_file()


def _stored(tmp_path, cell):
    return list((tmp_path / "cells").rglob(f"{cell.key}.parquet"))


def test_resume_after_crash_recomputes_nothing_and_has_no_duplicates(tiny, captioned, tmp_path):
    cells = perturbation_cells("_test_noise", [1, 2]) + [Cell("perturbation", "_test_bomb", 1)] + \
        perturbation_cells("_test_noise", [3])
    CALLS.clear()
    BOMB["armed"] = True
    with pytest.raises(RuntimeError, match="simulated crash"):
        evaluate_grid(tiny, captioned, cells, out_dir=tmp_path, batch_size=4, progress=False)
    assert CALLS == {"_test_noise@1": 10, "_test_noise@2": 10}  # 10 images, each with its own generator
    assert _stored(tmp_path, cells[0]) and not _stored(tmp_path, cells[2])
    # a writer killed inside the atomic write leaves a temporary file: the resumed run removes it
    stale = _stored(tmp_path, cells[0])[0].parent / f".{cells[2].key}.parquet.{_host()}.999999999.x.tmp"
    stale.write_text("partial")
    BOMB["armed"] = False
    CALLS.clear()
    df = evaluate_grid(tiny, captioned, cells, out_dir=tmp_path, batch_size=4, progress=False)
    assert not stale.exists()
    assert CALLS == {"_test_noise@3": 10}  # cells 1..2 not recomputed; the bomb cell recomputed once
    key = ["model", "dataset", "cell", "metric"]
    assert not df.duplicated(key).any()
    assert set(df[df.kind == "perturbation"]["label"]) == {"_test_noise@1", "_test_noise@2", "_test_noise@3",
                                                           "_test_bomb@1"}
    assert df["value"].notna().all()
    # a third run computes nothing at all
    CALLS.clear()
    df3 = evaluate_grid(tiny, captioned, cells, out_dir=tmp_path, batch_size=4, progress=False)
    assert CALLS == {} and len(df3) == len(df)


def _host():
    import socket

    return socket.gethostname().replace(".", "-")


def test_numbers_do_not_depend_on_the_batch_size(tiny, captioned, tmp_path):
    import vlmkit.attacks  # noqa: F401
    from vlmkit.evaluate import attack_cells

    cells = perturbation_cells("_test_noise", [2]) + perturbation_cells("gaussian_noise", [3]) + \
        attack_cells("pgd", eps=[4 / 255], steps=2)
    tables = {bs: evaluate_grid(tiny, captioned, cells, out_dir=tmp_path / str(bs), batch_size=bs, progress=False)
              for bs in (1, 3, 8, "auto")}
    # the images are bit-identical whatever the batch size (each draws from its own generator); the
    # float32 forward pass of a batch of 8 may round differently from one of 1 (BLAS blocking), so
    # continuous metrics agree to float32 rounding and counted ones (recall, flips) exactly
    counted = ("R@", "IFR", "IV", "top")
    cols = ["cell", "metric", "value"]
    ref = tables[1][cols].sort_values(["cell", "metric"], ignore_index=True)
    for bs, t in tables.items():
        got = t[cols].sort_values(["cell", "metric"], ignore_index=True)
        assert got[["cell", "metric"]].equals(ref[["cell", "metric"]])
        exact = got.metric.str.contains("|".join(counted))
        assert got.value[exact].tolist() == ref.value[exact].tolist(), bs
        np.testing.assert_allclose(got.value[~exact], ref.value[~exact], rtol=1e-4, atol=1e-5, err_msg=str(bs))
    # a batch of 8 vs 8 single images: the same perturbed pixels, bit for bit
    SEEN.clear()
    evaluate_grid(tiny, captioned, perturbation_cells("_test_noise", [3]), out_dir=tmp_path / "s1", batch_size=1,
                  progress=False)
    one = torch.cat(SEEN)
    SEEN.clear()
    evaluate_grid(tiny, captioned, perturbation_cells("_test_noise", [3]), out_dir=tmp_path / "s8", batch_size=8,
                  progress=False)
    assert torch.equal(torch.cat(SEEN), one)


def test_a_gallery_shows_the_image_the_engine_measured(tiny, captioned, tmp_path):
    from vlmkit.evaluate import cell_images

    cell = Cell("perturbation", "_test_noise", 2)
    SEEN.clear()
    evaluate_grid(tiny, captioned, [cell], out_dir=tmp_path, batch_size=4, progress=False, image_size=32)
    measured = torch.cat(SEEN)  # (10, 3, 32, 32): image i's perturbation, as the engine measured it
    assert measured.shape[0] == len(captioned)
    shown = cell_images(tiny, captioned, cell, [7, 2, 9], out_dir=tmp_path, image_size=32)
    assert torch.equal(shown, measured[[7, 2, 9]])
    assert not torch.equal(shown[0], shown[1])


def test_a_changed_input_recomputes_and_an_unchanged_one_is_skipped(tiny, captioned, tmp_path):
    cells = perturbation_cells("_test_noise", [1])
    base = dict(out_dir=tmp_path, batch_size=5, progress=False)

    def calls(ds=captioned, **kw):
        CALLS.clear()
        df = evaluate_grid(tiny, ds, cells, **{**base, **kw})
        return CALLS.get("_test_noise@1", 0), df

    assert calls()[0] == 10
    assert calls()[0] == 0  # unchanged: skipped
    assert calls(seed=1)[0] == 10
    assert calls(image_size=24)[0] == 10
    assert calls(token_layers=[0])[0] == 10
    assert calls(ds=captioned.subset(6, seed=0))[0] == 6  # a subset under the same dataset name
    n, df = calls(seed=1)
    assert n == 0 and set(df["seed"]) == {1}  # seed 1 again: skipped, and only its own rows come back
    merged = pd.read_parquet(tmp_path / "results.parquet")
    assert {0, 1} <= set(merged["seed"]) and merged["run"].nunique() >= 5


def test_changed_templates_and_weights_recompute(tiny, shared_data, tmp_path):
    root = shared_data / "imagenet-samples"
    ds = load_labelled_csv(root / "labels.csv", root / "images", vlmkit.data.imagenet_classnames(),
                           label_column="class_index").subset(8, seed=0)
    a = evaluate_grid(tiny, ds, [], out_dir=tmp_path, progress=False, image_size=32)
    b = evaluate_grid(tiny, ds, [], out_dir=tmp_path, progress=False, image_size=32,
                      templates=["a blurry photo of a {}.", "a sketch of a {}."])
    assert set(a["run"]) != set(b["run"])
    assert _value(a, "clean", "margin_mean") != _value(b, "clean", "margin_mean")
    with torch.no_grad():
        p = next(tiny.parameters())
        p.add_(0.5)
    try:
        c = evaluate_grid(tiny, ds, [], out_dir=tmp_path, progress=False, image_size=32)
    finally:
        with torch.no_grad():
            p.sub_(0.5)
    assert set(c["run"]) != set(a["run"]) and _value(c, "clean", "margin_mean") != _value(a, "clean", "margin_mean")


def test_two_runs_give_identical_tables(tiny, captioned, tmp_path):
    cells = perturbation_cells("_test_noise", [1, 3])
    a = evaluate_grid(tiny, captioned, cells, out_dir=tmp_path / "a", progress=False, seed=5)
    b = evaluate_grid(tiny, captioned, cells, out_dir=tmp_path / "b", progress=False, seed=5)
    cols = ["model", "dataset", "cell", "metric", "value"]
    pd.testing.assert_frame_equal(a[cols], b[cols])
    c = evaluate_grid(tiny, captioned, cells, out_dir=tmp_path / "c", progress=False, seed=6)
    assert not np.allclose(a[a.metric == "drift_mean"]["value"].to_numpy(),
                           c[c.metric == "drift_mean"]["value"].to_numpy())


def test_out_of_memory_halves_the_batch(tiny, captioned, tmp_path):
    df = evaluate_grid(tiny, captioned, [Cell("perturbation", "_test_oom", 1)], out_dir=tmp_path, batch_size=8,
                       progress=False)
    assert _value(df, "_test_oom@1", "drift_mean") > 0


def test_family_flip_rates_and_token_metrics(tiny, captioned, tmp_path):
    cells = perturbation_cells("_test_noise", [1, 3]) + [Cell("perturbation", "_test_identity", 1)]
    df = evaluate_grid(tiny, captioned, cells, out_dir=tmp_path, progress=False, token_layers=[0, -1])
    fam = df[(df.kind == "family") & (df.family == "_test")]
    ifr = {m: v for m, v in zip(fam.metric, fam.value)}
    cell_ifr = df[(df.kind == "perturbation") & (df.family == "_test") & (df.metric == "IFR")]["value"]
    assert ifr["IFR"] == pytest.approx(cell_ifr.mean())  # equal-size cells: family IFR = mean of cell IFRs
    assert ifr["IV"] >= ifr["IFR"]
    assert {"dirichlet_L0", "dirichlet_L1", "token_drift_L1"} <= set(df.metric)
    assert _value(df, "_test_identity@1", "token_drift_L1") == pytest.approx(0, abs=1e-6)


def test_zero_shot_task_on_real_photos(tiny, shared_data, tmp_path):
    root = shared_data / "imagenet-samples"
    ds = load_labelled_csv(root / "labels.csv", root / "images", vlmkit.data.imagenet_classnames(),
                           label_column="class_index").subset(12, seed=0)
    df = evaluate_grid(tiny, ds, perturbation_cells("_test_noise", [2]), out_dir=tmp_path, progress=False,
                       image_size=32)
    for metric in ("top1", "top5", "ece", "margin_mean", "drift_mean"):
        assert metric in set(df.metric)
    assert 0 <= _value(df, "clean", "top1") <= 1


def test_retrieval_on_real_coco(tiny, shared_data, tmp_path):
    root = shared_data / "coco-mini"
    ds = load_coco_captions(root / "captions.json", root / "images").subset(16, seed=0)
    df = evaluate_grid(tiny, ds, [], out_dir=tmp_path, progress=False, image_size=48)
    assert _value(df, "clean", "i2t_R@10") >= _value(df, "clean", "i2t_R@1")
    assert int(df["n"].iloc[0]) == 16


def test_bad_grid_inputs(tiny, captioned, tmp_path):
    with pytest.raises(vlmkit.RegistryError, match="unknown perturbation 'gausian_noise'"):
        Cell("perturbation", "gausian_noise", 1)
    with pytest.raises(vlmkit.InputError, match="cell kind 'perturb' is unknown"):
        Cell("perturb", "x")
    with pytest.raises(vlmkit.InputError, match="models is empty"):
        evaluate_grid([], captioned, [], out_dir=tmp_path)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(vlmkit.InputError, match="is a file, not a folder"):
        evaluate_grid(tiny, captioned, [], out_dir=tmp_path / "afile" / "grid")
    with pytest.raises(vlmkit.InputError, match="has no parameter"):
        Cell("perturbation", "gaussian_noise", 1, {"sigma": 2})
    with pytest.raises(vlmkit.InputError, match="eps"):
        Cell("attack", "pgd", 0, {"eps": 2})
    with pytest.raises(vlmkit.InputError, match="templates are for zero-shot"):
        evaluate_grid(tiny, captioned, [], out_dir=tmp_path / "t", templates=["a {}"])
    with pytest.raises(vlmkit.InputError, match="task 'zeroshot' needs a LabelledImages or TypographicImages, "
                                                "got CaptionedImages"):
        evaluate_grid(tiny, captioned, [], out_dir=tmp_path / "z", task="zeroshot")


def test_fourier_heatmap_shape_zero_eps_and_cache(tiny, captioned, tmp_path):
    from vlmkit.evaluate.spectral import fourier_heatmap

    h = fourier_heatmap(tiny, captioned, out_dir=tmp_path, size=3, eps=3.0, image_size=32)
    assert h.shape == (3, 3) and (h > 0).all()
    h0 = fourier_heatmap(tiny, captioned, out_dir=tmp_path / "zero", size=2, eps=0.0, image_size=32)
    assert torch.allclose(h0, torch.zeros(2, 2), atol=1e-6)  # a zero-norm basis moves nothing
    h_again = fourier_heatmap(tiny, captioned, out_dir=tmp_path, size=3, eps=3.0, image_size=32)
    assert torch.equal(h, h_again)


def test_attack_cells_lower_scores_within_budget(tiny, captioned, tmp_path):
    import vlmkit.attacks  # noqa: F401  (registers the attacks)
    from vlmkit.evaluate import attack_cells

    cells = attack_cells("pgd", eps=[8 / 255], steps=3) + attack_cells("feature_pgd", eps=[8 / 255], steps=3)
    df = evaluate_grid(tiny, captioned, cells, out_dir=tmp_path, progress=False)
    pgd = df[(df.perturbation == "pgd") & (df.metric == "i2t_R@1")]["value"].iloc[0]
    assert pgd <= _value(df, "clean", "i2t_R@1")  # the retrieval attack never helps
    assert df[(df.perturbation == "pgd") & (df.metric == "drift_mean")]["value"].iloc[0] > 0
    feat = df[(df.perturbation == "feature_pgd") & (df.metric == "drift_mean")]["value"].iloc[0]
    assert feat > 0
    again = evaluate_grid(tiny, captioned, cells, out_dir=tmp_path, progress=False)  # cached, deterministic
    assert again[again.kind == "attack"]["value"].tolist() == df[df.kind == "attack"]["value"].tolist()


def _evaluate_in_worker(cfg_dir, caps_dir, out_dir, records, batch_size):
    """One worker process of a grid: its share of the cells, into the shared folder."""
    from vlmkit.data import load_coco_captions
    from vlmkit.evaluate import cells_from_records

    tiny = tiny_vit_model(cfg_dir)
    ds = load_coco_captions(caps_dir / "captions.json", caps_dir / "images")
    evaluate_grid(tiny, ds, cells_from_records(records), out_dir=out_dir, batch_size=batch_size, progress=False)


def test_two_worker_processes_give_the_one_process_table(tiny, captioned, tmp_path):
    """Cells split over two processes writing into one folder give the rows of one process doing all of them
    (with another batch size): every image's randomness depends on (seed, cell, image) only."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    cells = perturbation_cells("gaussian_noise", [2, 4]) + [Cell("attack", "pgd", 0, {"eps": 4 / 255, "steps": 2}),
                                                           Cell("perturbation", "rotate", 3)]
    records = [{"kind": c.kind, "name": c.name, "severity": c.severity, "params": dict(c.params)} for c in cells]
    cfg_dir = tmp_path / "cfg"  # each worker registers the tiny architecture and builds it with the same seed
    caps_dir = captioned.paths[0].parent.parent
    one = evaluate_grid(tiny, captioned, cells, out_dir=tmp_path / "one", batch_size=3, progress=False)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        jobs = [pool.submit(_evaluate_in_worker, cfg_dir, caps_dir, tmp_path / "two", part, 4)
                for part in (records[::2], records[1::2])]
        for j in jobs:
            j.result()
    two = ResultsStore(tmp_path / "two").merge()
    cols = ["cell", "metric", "value"]
    a = one[one.kind != "family"][cols].sort_values(["cell", "metric"], ignore_index=True)
    b = two[two.kind != "family"][cols].sort_values(["cell", "metric"], ignore_index=True)
    assert a[["cell", "metric"]].equals(b[["cell", "metric"]]) and len(a) > 40
    counted = a.metric.str.contains("R@|IFR|top")
    assert a.value[counted].tolist() == b.value[counted].tolist()
    np.testing.assert_allclose(b.value[~counted], a.value[~counted], rtol=1e-4, atol=1e-5)
