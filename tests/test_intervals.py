"""Every row the engine writes for a per-item metric carries its interval, from the outcomes it already
computed: checked against independent references (scikit-learn's AUROC, statsmodels' Wilson interval,
the retrieval bootstrap of vlmkit.stats, which resamples images with their captions) and known answers
(a model against itself, a zero-budget perturbation against clean, two toy models whose retrieval differs)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import vlmkit
from vlmkit.data import load_datasets
from vlmkit.errors import InputError
from vlmkit.evaluate import Cell, evaluate_grid, grid_cells
from vlmkit.evaluate.intervals import Items, interval
from vlmkit.stats import compare, retrieval_bootstrap, retrieval_items


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return load_datasets({"retrieval": "toy", "classification": "toy"}, n_images=48, seed=0,
                         root=tmp_path_factory.mktemp("toy"))


def test_statistics_of_items_equal_independent_references():
    from sklearn.metrics import roc_auc_score
    from statsmodels.stats.proportion import proportion_confint

    rng = np.random.default_rng(0)
    a, b = rng.normal(1, 1, 200), rng.normal(0, 1, 200)
    auc = Items(np.stack([a, b], 1), statistic="auroc").point()
    assert auc == pytest.approx(roc_auc_score(np.r_[np.ones(200), np.zeros(200)], np.r_[a, b]))
    hits = rng.random(120) < 0.3
    _, lo, hi, how = interval(Items(hits, binary=True), seed=0)
    assert how == "wilson" and (lo, hi) == pytest.approx(proportion_confint(hits.sum(), 120, method="wilson"))
    # ECE from (confidence, correct): the engine's metric on the same probabilities
    probs = torch.softmax(torch.as_tensor(rng.normal(0, 2, (300, 5))), 1).float()
    labels = torch.as_tensor(rng.integers(0, 5, 300))
    conf, pred = probs.max(1)
    ece = Items(torch.stack([conf, (pred == labels).float()], 1), statistic="ece").point()
    assert ece == pytest.approx(vlmkit.metrics.expected_calibration_error(probs, labels), abs=1e-6)
    with pytest.raises(InputError, match="need shape"):
        Items(np.zeros(3), statistic="ratio")


def test_mean_interval_reads_the_same_resamples_as_the_stats_bootstrap():
    """The engine's percentile interval of a mean (the cell's draw as counts, one product) equals
    ``vlmkit.stats.bootstrap_ci`` on the same seed (which gathers the resampled items and averages them),
    and the ``numpy`` percentile bootstrap written out by hand; BCa still goes through ``bootstrap_ci``."""
    from vlmkit.stats import bootstrap_ci

    rng = np.random.default_rng(2)
    v = rng.gamma(2.0, 1.0, 300)
    value, lo, hi, how = interval(Items(v), n_boot=800, seed=11)
    ref = bootstrap_ci(v, "mean", n_boot=800, seed=11)
    assert how == "percentile" and value == pytest.approx(v.mean())
    assert (lo, hi) == pytest.approx((ref.low, ref.high), rel=1e-12)
    idx = np.random.default_rng(11).integers(0, 300, (800, 300))  # stats.resample_indices' documented draw
    assert (lo, hi) == pytest.approx(tuple(np.quantile(v[idx].mean(1), [0.025, 0.975])), rel=1e-12)
    bca = interval(Items(v), n_boot=800, seed=11, method="bca")
    assert bca[3] == "bca" and bca[1:3] == pytest.approx(
        (bootstrap_ci(v, "mean", n_boot=800, seed=11, method="bca").low,
         bootstrap_ci(v, "mean", n_boot=800, seed=11, method="bca").high))


def test_ratio_interval_reads_the_same_resamples_as_the_hand_written_bootstrap():
    """The ratio of means' percentile interval (two products with the draw's counts) equals the ratio of the
    gathered resamples' means written out by hand, to 1e-12, and ``bootstrap_ci`` on the same statistic."""
    from vlmkit.stats import bootstrap_ci

    rng = np.random.default_rng(4)
    v = np.stack([rng.gamma(2.0, 1.0, 250), rng.gamma(5.0, 1.0, 250)], 1)  # (n, 2) numerator, denominator
    value, lo, hi, how = interval(Items(v, statistic="ratio"), n_boot=600, seed=9)
    idx = np.random.default_rng(9).integers(0, 250, (600, 250))  # stats.resample_indices' documented draw
    ref = np.quantile(v[idx, 0].mean(1) / v[idx, 1].mean(1), [0.025, 0.975])
    assert how == "percentile" and value == pytest.approx(v[:, 0].mean() / v[:, 1].mean(), rel=1e-12)
    assert (lo, hi) == pytest.approx(tuple(ref), rel=1e-12)
    r = bootstrap_ci(v, lambda b: b[..., 0].mean(1) / b[..., 1].mean(1), n_boot=600, seed=9)
    assert (lo, hi) == pytest.approx((r.low, r.high), rel=1e-12)


@pytest.mark.parametrize("n", [1, 2, 7, 300, 301])
def test_median_interval_reads_the_same_resamples_as_the_hand_written_bootstrap(n):
    """The median's percentile interval (medians read from the draw's counts, without gathering) equals
    ``np.median`` of the gathered resamples written out by hand, on odd and even ``n``, on heavily tied
    integer outcomes (ranks) and on continuous ones; a value that is not finite is refused as by ``bootstrap_ci``."""
    from vlmkit.stats import bootstrap_ci

    rng = np.random.default_rng(n)
    idx = np.random.default_rng(5).integers(0, n, (700, n))  # stats.resample_indices' documented draw
    for v in (rng.gamma(2.0, 1.0, n), rng.integers(1, 6, n).astype(float)):
        value, lo, hi, how = interval(Items(v, statistic="median"), n_boot=700, seed=5)
        if n < 2:
            assert how == "none"
            continue
        ref = np.quantile(np.median(v[idx], axis=1), [0.025, 0.975])
        assert how == "percentile" and value == np.median(v) and (lo, hi) == tuple(ref)
    if n > 2:
        v[0] = np.inf
        with pytest.raises(InputError, match="non-finite"):
            bootstrap_ci(v, "median", n_boot=700, seed=5)
        with pytest.raises(InputError, match="non-finite"):
            interval(Items(v, statistic="median"), n_boot=700, seed=5)


def test_t2i_interval_resamples_images_with_their_captions():
    """The cluster bootstrap of per-caption hits equals vlmkit.stats' retrieval bootstrap (the same images
    drawn: the same index matrix), whose loop reference is tested in test_stats."""
    rng = np.random.default_rng(1)
    n_img, per = 40, 5
    sims = torch.as_tensor(rng.normal(size=(n_img, n_img * per)))
    owner = torch.arange(n_img).repeat_interleave(per)
    sims[owner, torch.arange(n_img * per)] += 1.0  # positives score higher
    items = retrieval_items(sims, owner, ks=(1,))
    boot = retrieval_bootstrap(items, n_boot=500, seed=7)["t2i_R@1"]
    ranks = (sims > sims[owner, torch.arange(n_img * per)][None]).sum(0) + 1  # (T,) rank of each caption's image
    hits = (ranks <= 1).numpy()
    _, lo, hi, how = interval(Items(hits, binary=True, groups=owner), n_boot=500, seed=7)
    assert how == "cluster-percentile"
    assert (lo, hi) == pytest.approx(tuple(np.quantile(boot, [0.025, 0.975])))


def test_every_per_item_row_has_its_interval(toy, tmp_path):
    cells = grid_cells(["gaussian_noise", "rotate"], [3])
    rows = pd.concat([evaluate_grid("toy:vit", toy[role][0], cells, out_dir=tmp_path, progress=False, device="cpu",
                                    n_boot=300) for role in ("retrieval", "classification")])
    without = rows[rows.ci_method == "none"]
    assert set(without.metric) == {"t2i_medr"}  # a median over captions grouped by image: no interval
    with_ci = rows[rows.ci_method != "none"]
    assert (with_ci.ci_low <= with_ci.ci_high + 1e-12).all() and with_ci.ci_low.notna().all()
    inside = (with_ci.ci_low - 1e-9 <= with_ci.value) & (with_ci.value <= with_ci.ci_high + 1e-9)
    assert inside.mean() > 0.95, with_ci[~inside][["label", "metric", "value", "ci_low", "ci_high"]]
    top1 = with_ci[(with_ci.metric == "top1") & (with_ci.kind == "clean")].iloc[0]
    assert top1.ci_method == "wilson" and len(top1.outcomes) == 48 and np.mean(top1.outcomes) == pytest.approx(top1.value)
    assert set(with_ci[with_ci.metric == "t2i_R@1"].ci_method) == {"cluster-percentile"}
    assert set(with_ci[with_ci.metric == "drift_mean"].n_boot) == {300}
    # the interval is part of the stored row: another n_boot is another set of rows, the outputs are reused
    again = evaluate_grid("toy:vit", toy["classification"][0], cells, out_dir=tmp_path, progress=False, device="cpu",
                          n_boot=200)
    assert set(again[again.metric == "drift_mean"].n_boot) == {200}
    with pytest.raises(InputError, match="ci_method='student'"):
        evaluate_grid("toy:vit", toy["classification"][0], cells, out_dir=tmp_path, progress=False, ci_method="student")


@pytest.mark.slow
def test_known_answers_of_paired_comparisons(toy, tmp_path):
    """A zero-budget perturbation against clean: difference exactly 0, p = 1. The same model against itself
    likewise. toy:rn vs toy:vit on held-out scenes where their retrieval differs by more than 5 points:
    significant after Holm."""
    ds = load_datasets({"retrieval": "toy"}, n_images=1000, seed=11, root=tmp_path / "held-out")["retrieval"][0]
    zero = Cell("perturbation", "band_noise", 1, {"eps": 0.0, "norm": "linf", "band": "high"})
    rows = evaluate_grid(["toy:rn", "toy:vit"], ds, [zero], out_dir=tmp_path / "g", progress=False, device="cpu",
                         n_boot=500)
    r1 = rows[rows.metric == "i2t_R@1"]
    same = compare(r1[r1.model == "toy:rn"], a={"kind": "clean"}, b={"kind": "perturbation"}, metric="i2t_R@1",
                   by=["model", "dataset", "metric"])
    assert same.iloc[0]["diff"] == 0 and same.iloc[0]["p_value"] == 1
    rn = r1[r1.model == "toy:rn"]
    itself = compare(pd.concat([rn, rn.assign(model="copy")]), a="toy:rn", b="copy", metric="i2t_R@1")
    assert (itself["diff"] == 0).all() and (itself["p_value"] == 1).all()
    clean = r1[r1.kind == "clean"].set_index("model")["value"]
    assert abs(clean["toy:rn"] - clean["toy:vit"]) > 0.05, clean
    diff = compare(rows[rows.kind == "clean"], a="toy:rn", b="toy:vit", metric="i2t_R@1")
    assert diff.iloc[0]["significant"] and diff.iloc[0]["test"].startswith("mcnemar"), diff.T


def test_report_comparisons_pair_models_once_per_cell_and_correct_across_the_grid(toy, tmp_path):
    from vlmkit.report.section import comparisons

    cells = grid_cells(["gaussian_noise"], [3])
    rows = evaluate_grid(["toy:rn", "toy:vit"], toy["classification"][0], cells, out_dir=tmp_path, progress=False,
                         device="cpu", n_boot=200)
    twice = pd.concat([rows, rows.assign(run="another-notebook")])  # the same cells stored by two notebooks
    comp = comparisons(twice, metrics=("top1", "drift_mean"))
    assert len(comp) == 4 and set(comp["a"]) == {"toy:rn"} and set(comp["b"]) == {"toy:vit"}
    from statsmodels.stats.multitest import multipletests

    assert comp["p_adjusted"].to_numpy() == pytest.approx(multipletests(comp["p_value"], method="holm")[1])


def test_cluster_ratio_resamples_numerators_and_denominators_by_unit() -> None:
    """CHAIR-i style: hallucinated / mentioned, several captions per image, images resampled."""
    from vlmkit.evaluate.intervals import Items, interval

    # every image has hallucinated/mentioned = 1/4 in total (split unevenly over its two captions):
    # any resample of images gives exactly 0.25, so the interval collapses on it
    v = np.array([[1, 1], [0, 3], [2, 5], [0, 3], [1, 4], [0, 0]], dtype=float)
    groups = np.array([0, 0, 1, 1, 2, 2])
    value, lo, hi, how = interval(Items(v, statistic="ratio", groups=groups), n_boot=200, seed=0)
    assert how == "cluster-percentile" and value == pytest.approx(0.25) and lo == pytest.approx(0.25) == hi
    # images that differ: the interval is wide and holds the pooled ratio 5/16
    v2 = np.array([[3, 4], [1, 4], [0, 4], [1, 4]], dtype=float)
    value, lo, hi, _ = interval(Items(v2, statistic="ratio", groups=[0, 0, 1, 1]), n_boot=400, seed=0)
    assert value == pytest.approx(5 / 16) and lo < value < hi and lo == pytest.approx(1 / 8) and hi == pytest.approx(1 / 2)
