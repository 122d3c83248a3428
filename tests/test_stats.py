"""vlmkit.stats against independent references: scipy.stats.bootstrap, textbook formulas, statsmodels, loops."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch
import torch.nn.functional as F
from scipy.stats import norm
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from vlmkit.errors import InputError
from vlmkit.metrics import retrieval_metrics
from vlmkit.stats import (
    CI,
    across_seeds,
    bootstrap_ci,
    compare,
    holm,
    mcnemar_exact,
    paired_bootstrap,
    resample_indices,
    retrieval_bootstrap,
    retrieval_items,
    retrieval_recall_ci,
    wilson_ci,
)


# ---------------------------------------------------------------- textbook references (not the code under test)
def ref_percentile(boot, ci):
    alpha = (1 - ci) / 2
    return tuple(np.percentile(boot, [100 * alpha, 100 * (1 - alpha)]))


def ref_bca(x, stat, idx, ci):
    """Efron & Tibshirani 1993 §14.3 with an explicit jackknife loop (ties in z0 counted half, as scipy)."""
    theta = stat(x)
    boot = np.array([stat(x[row]) for row in idx])
    z0 = norm.ppf((np.sum(boot < theta) + np.sum(boot <= theta)) / (2 * len(boot)))
    jack = np.array([stat(np.delete(x, i, axis=0)) for i in range(len(x))])
    d = jack.mean() - jack
    a = np.sum(d ** 3) / (6 * np.sum(d ** 2) ** 1.5)
    alpha = (1 - ci) / 2
    lv = [norm.cdf(z0 + (z0 + z) / (1 - a * (z0 + z))) for z in norm.ppf([alpha, 1 - alpha])]
    return tuple(np.percentile(boot, [100 * lv[0], 100 * lv[1]]))


# ---------------------------------------------------------------- bootstrap_ci
def test_resample_indices_seeded_and_shaped():
    idx = resample_indices(7, 5, seed=3)
    assert idx.shape == (5, 7) and idx.min() >= 0 and idx.max() < 7
    np.testing.assert_array_equal(idx, resample_indices(7, 5, seed=3))
    assert not np.array_equal(idx, resample_indices(7, 5, seed=4))
    np.testing.assert_array_equal(idx, np.random.default_rng(3).integers(0, 7, (5, 7)))  # numpy's own draw
    with pytest.raises(ValueError):  # the kept matrix cannot be changed under a later caller
        idx[0, 0] = 1


@pytest.mark.parametrize("shape", [(9,), (9, 3), (9, 2, 2), (9, 6)])  # einsum, and BLAS past 3 columns
def test_resampled_sums_equal_the_sums_of_the_drawn_items(shape):
    """``resampled_sums(counts, v)``: resample b's sum of v over the items it drew, summed item by item."""
    from vlmkit.stats.bootstrap import resample_counts, resampled_sums

    v = np.random.default_rng(0).normal(size=shape)
    idx = resample_indices(9, 6, seed=2)  # (6, 9)
    got = resampled_sums(resample_counts(idx, 9), v)
    want = np.stack([sum(v[i] for i in row) for row in idx])  # loop reference over the drawn items
    assert got.shape == (6, *shape[1:])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["percentile", "bca"])
@pytest.mark.parametrize("statistic", ["mean", "median"])
def test_bootstrap_ci_equals_textbook_on_the_same_resamples(method, statistic):
    """Exact arithmetic check: the same index matrix through a loop-and-formula reference."""
    x = np.random.default_rng(0).normal(size=40)
    n_boot, ci = 300, 0.9
    stat = np.mean if statistic == "mean" else np.median
    idx = resample_indices(len(x), n_boot, seed=5)
    ours = bootstrap_ci(x, statistic, n_boot=n_boot, ci=ci, method=method, seed=5)
    boot = np.array([stat(x[row]) for row in idx])
    ref = ref_percentile(boot, ci) if method == "percentile" else ref_bca(x, stat, idx, ci)
    assert ours.estimate == pytest.approx(stat(x), abs=1e-12)
    assert (ours.low, ours.high) == pytest.approx(ref, abs=1e-12)
    assert (ours.n, ours.n_boot, ours.ci, ours.method) == (40, n_boot, ci, method)


def test_bootstrap_ci_callable_statistic_over_columns():
    """A ratio of sums over (n, 2) outcomes, checked against the loop reference (BCa, exact)."""
    rng = np.random.default_rng(1)
    x = np.stack([rng.poisson(3, 50), rng.poisson(5, 50) + 1], axis=1).astype(float)  # (n, 2)

    def ratio(batch):  # (B, n, 2) -> (B,)
        return batch[..., 0].sum(axis=1) / batch[..., 1].sum(axis=1)

    def ratio1(s):
        return s[:, 0].sum() / s[:, 1].sum()

    idx = resample_indices(50, 200, seed=2)
    ours = bootstrap_ci(x, ratio, n_boot=200, method="bca", seed=2)
    assert ours.estimate == pytest.approx(ratio1(x))
    assert (ours.low, ours.high) == pytest.approx(ref_bca(x, ratio1, idx, 0.95), abs=1e-12)


@pytest.mark.parametrize("method", ["percentile", "BCa"])
def test_bootstrap_ci_equals_scipy_same_draws(method):
    """scipy.stats.bootstrap draws ``rng.integers(0, n, (n_resamples, n))`` (scipy 1.17): the same resamples."""
    x = np.random.default_rng(2).normal(size=200)
    res = scipy.stats.bootstrap((x,), np.mean, n_resamples=2000, method=method, rng=np.random.default_rng(7))
    if not np.allclose(res.bootstrap_distribution, x[resample_indices(200, 2000, 7)].mean(axis=1)):
        pytest.skip("this scipy draws its resamples differently; the Monte-Carlo test below still runs")
    ours = bootstrap_ci(x, n_boot=2000, method=method, seed=7)
    assert (ours.low, ours.high) == pytest.approx(tuple(res.confidence_interval), abs=1e-12)


@pytest.mark.parametrize("method", ["percentile", "BCa"])
def test_bootstrap_ci_agrees_with_scipy_other_draws(method):
    """Independent resamples: the endpoints of two 20000-resample intervals differ by Monte-Carlo error only.

    Mean of 200 N(0, 1) draws: interval width ~0.28 (2 · 1.96 / √200); an endpoint is a 2.5% quantile
    of the bootstrap distribution (sd σ = 1/√200 ≈ 0.071), whose Monte-Carlo sd with B = 20000 is
    ≈ √(q(1−q)/B) / φ(z_q) · σ ≈ 0.0011 / 0.058 · 0.071 ≈ 0.0014; the difference of two such has sd
    ≈ 0.002, so |Δ| < 0.01 is a 5-sd bound.
    """
    x = np.random.default_rng(3).normal(size=200)
    res = scipy.stats.bootstrap((x,), np.mean, n_resamples=20000, method=method, rng=np.random.default_rng(123))
    ours = bootstrap_ci(x, n_boot=20000, method=method, seed=0)
    assert abs(ours.low - res.confidence_interval.low) < 0.01
    assert abs(ours.high - res.confidence_interval.high) < 0.01


def test_bootstrap_ci_deterministic_and_errors():
    x = np.random.default_rng(4).random(30)
    assert bootstrap_ci(x, seed=1) == bootstrap_ci(x, seed=1)
    const = bootstrap_ci(np.full(10, 0.5), method="bca")
    assert (const.estimate, const.low, const.high) == (0.5, 0.5, 0.5)
    with pytest.raises(InputError, match="method"):
        bootstrap_ci(x, method="basic")
    with pytest.raises(InputError, match="outcomes"):
        bootstrap_ci(np.ones((3, 2)))
    with pytest.raises(InputError, match="non-finite"):
        bootstrap_ci([1.0, np.nan, 0.0])
    with pytest.raises(InputError, match="statistic"):
        bootstrap_ci(x, "mode")
    with pytest.raises(InputError, match="one value per sample"):
        bootstrap_ci(x, lambda b: b)


# ---------------------------------------------------------------- Wilson, coverage
@pytest.mark.parametrize("k,n", [(0, 10), (1, 10), (5, 10), (10, 10), (30, 200), (199, 200), (3, 7)])
@pytest.mark.parametrize("ci", [0.9, 0.95])
def test_wilson_equals_statsmodels(k, n, ci):
    ours = wilson_ci(k, n, ci)
    low, high = proportion_confint(k, n, alpha=1 - ci, method="wilson")
    assert (ours.low, ours.high) == pytest.approx((low, high), abs=1e-12)
    assert ours.estimate == k / n and ours.method == "wilson"


def test_wilson_errors():
    with pytest.raises(InputError, match="successes"):
        wilson_ci(11, 10)
    with pytest.raises(InputError, match="n must"):
        wilson_ci(0, 0)


def test_coverage_of_95_percent_intervals():
    """Bernoulli(0.3), n = 200, 1000 repetitions: each 95% interval covers 0.3 in 93–97% of them.

    With 1000 repetitions the Monte-Carlo sd of a coverage near 0.95 is ≈ 0.007, so [0.93, 0.97] is
    a ±3-sd band around the nominal level.
    """
    p, n, reps, n_boot = 0.3, 200, 1000, 500
    data = np.random.default_rng(2024).random((reps, n)) < p  # (reps, n)
    hit = {"wilson": 0, "percentile": 0, "bca": 0}
    for r in range(reps):
        w = wilson_ci(int(data[r].sum()), n)
        hit["wilson"] += w.low <= p <= w.high
        for m in ("percentile", "bca"):
            c = bootstrap_ci(data[r].astype(float), n_boot=n_boot, method=m, seed=r)
            hit[m] += c.low <= p <= c.high
    cov = {k: v / reps for k, v in hit.items()}
    print(f"coverage: wilson {cov['wilson']:.3f}, percentile {cov['percentile']:.3f}, bca {cov['bca']:.3f} "
          f"({reps} reps, n={n}, p={p})")
    for k, v in cov.items():
        assert 0.93 <= v <= 0.97, f"{k} coverage {v}"


# ---------------------------------------------------------------- paired tests
def test_paired_bootstrap_self_is_zero_and_p_one():
    x = np.random.default_rng(5).random(50)
    for m in ("percentile", "bca"):
        c = paired_bootstrap(x, x, method=m)
        assert (c.diff, c.low, c.high, c.p_value, c.effect_size) == (0.0, 0.0, 0.0, 1.0, 0.0)
    c = mcnemar_exact(x > 0.5, x > 0.5)
    assert (c.diff, c.p_value) == (0.0, 1.0)


def test_paired_bootstrap_matches_loop_reference():
    rng = np.random.default_rng(6)
    a = rng.normal(0.5, 1, 80)
    b = a - 0.2 + rng.normal(0, 0.3, 80)
    c = paired_bootstrap(a, b, n_boot=400, seed=9)
    idx = resample_indices(80, 400, 9)
    boot = np.array([a[r].mean() - b[r].mean() for r in idx])
    assert c.diff == pytest.approx(a.mean() - b.mean())
    assert (c.low, c.high) == pytest.approx(ref_percentile(boot, 0.95), abs=1e-12)
    p = min(1.0, 2 * (1 + min((boot <= 0).sum(), (boot >= 0).sum())) / 401)
    assert c.p_value == pytest.approx(p)
    d = a - b
    assert c.effect_size == pytest.approx(d.mean() / d.std(ddof=1))
    assert c.low > 0 and c.p_value < 0.01  # a is clearly better
    cb = paired_bootstrap(a, b, n_boot=400, seed=9, method="bca")
    assert (cb.low, cb.high) == pytest.approx(ref_bca(d, np.mean, idx, 0.95), abs=1e-12)
    cm = paired_bootstrap(a, b, statistic="median", n_boot=100, seed=1)
    idx = resample_indices(80, 100, 1)
    boot = np.array([np.median(a[r]) - np.median(b[r]) for r in idx])
    assert (cm.low, cm.high) == pytest.approx(ref_percentile(boot, 0.95), abs=1e-12)
    with pytest.raises(InputError, match="same items"):
        paired_bootstrap(a, b[:-1])


@pytest.mark.parametrize("table", [
    [[10, 0], [0, 5]],  # no discordant pairs
    [[10, 3], [1, 5]],
    [[0, 1], [0, 0]],
    [[20, 7], [7, 20]],  # balanced
    [[400, 60], [35, 505]],  # large
    [[50, 0], [9, 41]],
])
def test_mcnemar_equals_statsmodels(table):
    (both, a_only), (b_only, neither) = table
    a = np.array([1] * both + [1] * a_only + [0] * b_only + [0] * neither, dtype=bool)
    b = np.array([1] * both + [0] * a_only + [1] * b_only + [0] * neither, dtype=bool)
    c = mcnemar_exact(a, b)
    assert c.p_value == pytest.approx(sm_mcnemar(np.array(table), exact=True).pvalue, rel=1e-12, abs=1e-15)
    assert (c.extra["a_only"], c.extra["b_only"]) == (a_only, b_only)
    assert c.diff == pytest.approx(a.mean() - b.mean())
    assert c.low <= c.diff <= c.high


def test_mcnemar_errors():
    with pytest.raises(InputError, match="binary"):
        mcnemar_exact([0, 1, 2], [0, 1, 1])
    with pytest.raises(InputError, match="same items"):
        mcnemar_exact([0, 1, 1], [0, 1])


def test_holm_equals_statsmodels():
    rng = np.random.default_rng(7)
    for p in (rng.random(12) ** 3, np.array([0.01, 0.04, 0.03, 0.005]), np.array([0.5]), np.array([0.2, 0.2, 0.01])):
        np.testing.assert_allclose(holm(p), multipletests(p, method="holm")[1], rtol=1e-12)
    p = np.array([0.01, np.nan, 0.04, 0.03])
    got = holm(p)
    assert np.isnan(got[1])
    np.testing.assert_allclose(got[[0, 2, 3]], multipletests(p[[0, 2, 3]], method="holm")[1])
    assert holm([]).shape == (0,)


# ---------------------------------------------------------------- retrieval
def _retrieval_setup(n_img=40, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    caps = torch.randint(1, 6, (n_img,), generator=g)
    caps[3] = 0  # one image without captions
    t2i = torch.repeat_interleave(torch.arange(n_img), caps)  # (T,)
    img = F.normalize(torch.randn(n_img, d, generator=g), dim=-1)
    txt = F.normalize(img[t2i] + 0.9 * torch.randn(len(t2i), d, generator=g), dim=-1)
    return img, txt, t2i


def _ref_rank(scores_row, positives):
    """1-based rank of the first positive by a stable descending argsort (the metrics module's definition)."""
    order = np.argsort(-scores_row, kind="stable")
    hits = np.flatnonzero(np.isin(order, positives))
    return hits[0] + 1 if len(hits) else len(scores_row) + 1


def test_retrieval_point_estimates_equal_retrieval_metrics():
    img, txt, t2i = _retrieval_setup()
    ref = retrieval_metrics(img, txt, t2i, ks=(1, 5, 10))
    for sims in (img @ txt.T, (img @ txt.T).numpy()):
        got = retrieval_recall_ci(sims, t2i, (1, 5, 10), n_boot=50)
        assert list(got) == ["i2t_R@1", "t2i_R@1", "i2t_R@5", "t2i_R@5", "i2t_R@10", "t2i_R@10"]
        for k, c in got.items():
            assert c.estimate == pytest.approx(ref[k], abs=1e-6), k
            assert c.low <= c.estimate <= c.high and c.n == 40


def test_retrieval_bootstrap_equals_loop_reference():
    img, txt, t2i = _retrieval_setup(seed=1)
    sims = (img @ txt.T).numpy()  # (N, T)
    t2i_np = t2i.numpy()
    ks, n_boot, seed = (1, 5), 20, 11
    boot = retrieval_bootstrap(retrieval_items(sims, t2i, ks), n_boot=n_boot, seed=seed)
    idx = resample_indices(sims.shape[0], n_boot, seed)
    for r, sel in enumerate(idx):
        i2t_rank = np.array([_ref_rank(sims[i], np.flatnonzero(t2i_np == i)) for i in sel])
        caps = np.concatenate([np.flatnonzero(t2i_np == i) for i in sel])  # captions of the drawn images
        t2i_rank = np.array([_ref_rank(sims[:, c], [t2i_np[c]]) for c in caps])
        for k in ks:
            assert boot[f"i2t_R@{k}"][r] == (i2t_rank <= k).sum() / len(sel)
            assert boot[f"t2i_R@{k}"][r] == (t2i_rank <= k).sum() / len(caps)
    ci = retrieval_recall_ci(sims, t2i, ks, n_boot=n_boot, seed=seed)
    for name, c in ci.items():
        assert (c.low, c.high) == pytest.approx(ref_percentile(boot[name], 0.95), abs=1e-12)


def test_retrieval_bca_and_errors():
    img, txt, t2i = _retrieval_setup(seed=2)
    sims = img @ txt.T
    got = retrieval_recall_ci(sims, t2i, (5,), n_boot=200, method="bca", seed=0)
    for c in got.values():
        assert 0 <= c.low <= c.high <= 1
    with pytest.raises(InputError, match="text_to_image"):
        retrieval_recall_ci(sims, t2i[:-1])
    with pytest.raises(InputError, match="outside"):
        retrieval_recall_ci(sims, t2i + 100)
    with pytest.raises(InputError, match="ks"):
        retrieval_recall_ci(sims, t2i, ks=(0,))


# ---------------------------------------------------------------- tables
def _table():
    rng = np.random.default_rng(8)
    rows = []
    truth = {"toy:rn": 0.8, "toy:vit": 0.6}
    for label in ("clean", "blur-3", "noise-2"):
        base = rng.random(120)
        for model, acc in truth.items():
            correct = (base < (acc if label == "clean" else acc - 0.1)).astype(int)
            rows.append({"model": model, "dataset": "toy-shapes", "label": label, "metric": "acc",
                         "value": correct.mean(), "n": 120, "seed": 0, "outcomes": correct.tolist()})
            drift = rng.normal(0.1 if model == "toy:rn" else 0.15, 0.05, 120)
            rows.append({"model": model, "dataset": "toy-shapes", "label": label, "metric": "drift",
                         "value": drift.mean(), "n": 120, "seed": 0, "outcomes": list(drift)})
    return pd.DataFrame(rows)


def test_compare_pairs_tests_and_holm():
    table = _table()
    out = compare(table, a="toy:rn", b={"model": "toy:vit"}, metric="acc", n_boot=300)
    assert list(out.columns) == ["dataset", "label", "metric", "a", "b", "value_a", "value_b", "diff", "ci_low",
                                 "ci_high", "p_value", "p_adjusted", "significant", "test", "n", "effect_size"]
    assert list(out["label"]) == ["clean", "blur-3", "noise-2"] and (out["test"] == "mcnemar_exact").all()
    for _, row in out.iterrows():
        sel = table[(table.metric == "acc") & (table.label == row["label"])]
        xa = np.array(sel[sel.model == "toy:rn"].outcomes.iloc[0])
        xb = np.array(sel[sel.model == "toy:vit"].outcomes.iloc[0])
        ref = mcnemar_exact(xa, xb)
        assert row["p_value"] == ref.p_value and row["diff"] == pytest.approx(xa.mean() - xb.mean())
        boot = paired_bootstrap(xa, xb, n_boot=300)
        assert (row["ci_low"], row["ci_high"]) == (boot.low, boot.high)
        assert row["value_a"] == pytest.approx(xa.mean()) and row["n"] == 120
    np.testing.assert_allclose(out["p_adjusted"], multipletests(out["p_value"], method="holm")[1])
    assert (out["significant"] == (out["p_adjusted"] < 0.05)).all()

    cont = compare(table, a="toy:rn", b="toy:vit", metric="drift", n_boot=300, correction=None)
    assert (cont["test"] == "paired_bootstrap").all() and (cont["p_adjusted"] == cont["p_value"]).all()
    assert (cont["diff"] < 0).all() and cont["significant"].all()
    same = compare(table, a="toy:rn", b="toy:rn", metric="drift", n_boot=50)
    assert (same["diff"] == 0).all() and (same["p_value"] == 1).all()


def test_compare_errors():
    table = _table()
    with pytest.raises(InputError, match="matches no row"):
        compare(table, a="toy:rm", b="toy:vit", metric="acc")
    with pytest.raises(InputError, match="no row"):
        compare(table, a="toy:rn", b="toy:vit", metric="accuracy")
    with pytest.raises(InputError, match="does not have"):
        compare(table, a={"family": "x"}, b="toy:vit", metric="acc")
    short = table.copy()
    short.at[1, "outcomes"] = short.at[1, "outcomes"][:-1]  # toy:rn, clean, drift
    with pytest.raises(InputError, match="differ in length"):
        compare(short, a="toy:rn", b="toy:vit", metric="drift")
    twice = pd.concat([table, table.assign(seed=1)], ignore_index=True)
    with pytest.raises(InputError, match="more than one row"):
        compare(twice, a="toy:rn", b="toy:vit", metric="acc")
    out = compare(twice, a={"model": "toy:rn", "seed": 1}, b={"model": "toy:vit", "seed": 1}, metric="acc", n_boot=20)
    assert len(out) == 3


def test_across_seeds_equals_numpy_and_scipy_t():
    rng = np.random.default_rng(9)
    rows = [{"model": m, "dataset": "toy-shapes", "metric": "acc", "seed": s, "value": rng.random(),
             "time": f"t{s}", "outcomes": [1, 0]}
            for m in ("toy:rn", "toy:vit") for s in (0, 1, 2)]
    table = pd.DataFrame(rows)
    out = across_seeds(table, ci=0.9)
    assert list(out.columns) == ["model", "dataset", "metric", "seed_mean", "seed_sd", "n_seeds", "seed_ci_low",
                                 "seed_ci_high"]
    assert len(out) == 2
    for _, row in out.iterrows():
        v = table[table.model == row["model"]]["value"].to_numpy()
        assert row["seed_mean"] == pytest.approx(v.mean()) and row["seed_sd"] == pytest.approx(v.std(ddof=1))
        lo, hi = scipy.stats.t.interval(0.9, df=2, loc=v.mean(), scale=v.std(ddof=1) / np.sqrt(3))
        assert (row["seed_ci_low"], row["seed_ci_high"]) == pytest.approx((lo, hi)) and row["n_seeds"] == 3
    with pytest.raises(InputError, match="several rows per seed"):
        across_seeds(pd.concat([table, table]), by=["model"])
    one = across_seeds(table[table.seed == 0])
    assert one["n_seeds"].eq(1).all() and one["seed_sd"].isna().all()


def test_ci_is_frozen():
    c = CI(0.5, 0.4, 0.6, 10, 100, 0.95, "percentile")
    with pytest.raises(AttributeError):
        c.low = 0.0  # type: ignore[misc]
