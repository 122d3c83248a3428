"""Sparse autoencoders, activation stores, Monosemanticity Score and latent statistics."""

from __future__ import annotations

import json
import math

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _tiny import register_tiny_open_clip

import vlmkit
from vlmkit.errors import InputError
from vlmkit.interpret import latents as LS
from vlmkit.interpret.monosemanticity import monosemanticity_score, monosemanticity_score_loop
from vlmkit.interpret.plotting import plot_latent_stats
from vlmkit.interpret.sae import SAEConfig, SparseAutoencoder, evaluate_sae, fit_normaliser, sae_latents, train_sae
from vlmkit.interpret.store import ActivationStore, collect_activations, image_activations


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest


def synthetic_sparse(n=4000, d=16, m=24, k=3, seed=0):
    """x = sparse non-negative code over a random unit dictionary (m atoms in d dims) + offset."""
    g = torch.Generator().manual_seed(seed)
    D = F.normalize(torch.randn(m, d, generator=g), dim=1)  # (m, d)
    idx = torch.stack([torch.randperm(m, generator=g)[:k] for _ in range(n)])
    Z = torch.zeros(n, m).scatter_(1, idx, 0.5 + torch.rand(n, k, generator=g))
    return Z @ D + 0.3, D


def _recovered(sae, D, thr=0.9):
    """Share of true atoms that some decoder column matches with cosine > thr."""
    return float(((D @ F.normalize(sae.W_dec.detach(), dim=0)).amax(1) > thr).float().mean())


@pytest.fixture(scope="module")
def synth():
    return synthetic_sparse()


@pytest.mark.parametrize("kind,kw", [("topk", dict(k=3)), ("relu", dict(l1=1.0))])
def test_sae_recovers_a_planted_dictionary(synth, kind, kw):
    X, D = synth
    cfg = SAEConfig(n_latents=32, kind=kind, steps=800, batch_size=256, lr=3e-3, resample_every=250, dead_after=100,
                    **kw)
    sae, log = train_sae(X, cfg, progress=False)
    ev = evaluate_sae(sae, X)
    assert ev["explained_variance"] > 0.85, ev
    assert _recovered(sae, D) >= 0.9, _recovered(sae, D)
    if kind == "topk":
        assert ev["l0"] == pytest.approx(3.0, abs=0.05)  # TopK keeps at most k latents (ReLU may zero some)
    else:
        assert ev["l0"] < 10  # the L1 penalty makes codes sparse (24 atoms, 3 active per input)
    torch.testing.assert_close(sae.W_dec.detach().norm(dim=0), torch.ones(32))  # unit decoder columns
    assert log.mse[-1] < log.mse[0]
    # the reported numbers are what they say
    Z = sae_latents(sae, X)
    Xh = sae.decode(Z).detach()
    assert ev["mse"] == pytest.approx(float((Xh - X).pow(2).mean()), rel=1e-4)
    assert ev["explained_variance"] == pytest.approx(
        1 - float((Xh - X).pow(2).sum() / (X - X.mean(0)).pow(2).sum()), rel=1e-4)
    assert ev["l0"] == pytest.approx(float((Z > 0).sum(1).float().mean()))


def test_dead_latent_resampling_revives_latents(synth):
    X, D = synth
    torch.manual_seed(0)
    init = fit_normaliser(SparseAutoencoder(16, 32, "relu"), X)
    with torch.no_grad():
        init.b_enc[:16] = -50.0  # half the latents can never fire
    cfg = dict(n_latents=32, kind="relu", l1=1.0, steps=600, batch_size=256, lr=3e-3, dead_after=50, seed=1)
    off, log_off = train_sae(X, SAEConfig(resample_every=0, **cfg), progress=False, init=init)
    on, log_on = train_sae(X, SAEConfig(resample_every=100, **cfg), progress=False, init=init)
    ev_off, ev_on = evaluate_sae(off, X), evaluate_sae(on, X)
    assert ev_off["dead_fraction"] == 0.5 and not log_off.resampled
    assert log_on.resampled and log_on.resampled[0] == (100, 16)
    assert ev_on["dead_fraction"] < 0.1
    assert ev_on["explained_variance"] > ev_off["explained_variance"] + 0.05
    assert _recovered(on, D) > _recovered(off, D)
    assert float(init.b_enc[0].detach()) == -50.0  # init was copied, not trained in place


def test_activation_store_roundtrip(tmp_path):
    register_tiny_open_clip(tmp_path / "cfgs")
    torch.manual_seed(0)
    vlm = vlmkit.load_model("open_clip:vlmkit-tiny-vit", device="cpu")
    imgs = (torch.rand(7, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    x = imgs.float() / 255
    vt = vlm.vision_tokens(x, 1)
    expected = {"cls": vt.cls, "mean": vt.patches.mean(1), "patches": vt.patches.reshape(-1, vt.patches.shape[-1]),
                "embedding": vlm.encode_image(x)}
    for token, ref in expected.items():
        store = collect_activations(vlm, imgs, tmp_path / token, layer=1, token=token, batch_size=3, progress=False,
                                    meta={"dataset": "noise"})
        assert isinstance(store.data, np.memmap)
        torch.testing.assert_close(store.tensor(), ref.detach().float(), atol=1e-5, rtol=1e-5)
        header = json.loads((tmp_path / token / "header.json").read_text())
        assert header["rows"] == ref.shape[0] and header["dim"] == ref.shape[1] and header["dataset"] == "noise"
        reopened = ActivationStore.open(tmp_path / token)
        assert reopened.data.shape == tuple(ref.shape)
        torch.testing.assert_close(image_activations(vlm, imgs, 1, token, batch_size=4), reopened.tensor())
    patches = ActivationStore.open(tmp_path / "patches")
    assert patches.header["tokens_per_image"] == 16
    assert list(patches.image_index()[:18]) == [0] * 16 + [1] * 2
    # an SAE trains straight from the memmap store
    sae, _ = train_sae(patches, SAEConfig(n_latents=16, k=4, steps=20, batch_size=32), progress=False)
    assert sae_latents(sae, patches).shape == (7 * 16, 16)
    with pytest.raises(InputError, match="token="):
        collect_activations(vlm, imgs, tmp_path / "bad", token="everything", progress=False)


def test_monosemanticity_blockwise_equals_the_double_loop():
    g = torch.Generator().manual_seed(0)
    N, K = 37, 6
    A = torch.relu(torch.randn(N, K, generator=g))
    A[:, 3] = 0.0  # a dead latent: constant over images -> NaN
    E = torch.randn(N, 5, generator=g)
    ref = monosemanticity_score_loop(A.numpy(), E.numpy())
    assert np.isnan(ref[3]) and np.isfinite(np.delete(ref, 3)).all()
    for bs in (1, 8, 37, 100):
        ms = monosemanticity_score(A, E, block_size=bs).numpy()
        np.testing.assert_allclose(ms, ref, rtol=1e-5, atol=1e-7, equal_nan=True)
    # the score only sees min-max normalised activations
    np.testing.assert_allclose(monosemanticity_score(3 * A + 1, E).numpy(), ref, rtol=1e-5, atol=1e-7, equal_nan=True)
    assert "monosemanticity" in vlmkit.METRICS


def test_monosemanticity_known_answer():
    """A latent firing on one tight cluster of images scores the cluster's self-similarity; a latent
    firing at random scores the data set's mean similarity."""
    g = torch.Generator().manual_seed(1)
    N = 200
    centres = F.normalize(torch.randn(4, 32, generator=g), dim=1)
    cluster = torch.arange(N) % 4
    E = F.normalize(centres[cluster] + 0.05 * torch.randn(N, 32, generator=g), dim=1)
    A = torch.stack([(cluster == 0).float() * (1 + torch.rand(N, generator=g)),  # cluster 0 only
                     torch.rand(N, generator=g)], 1)  # everywhere
    ms = monosemanticity_score(A, E, block_size=64)
    S = E @ E.T
    within = S[cluster == 0][:, cluster == 0]
    n0 = int((cluster == 0).sum())
    assert float(ms[0]) > 0.9 and float(ms[0]) == pytest.approx(
        float((within.sum() - within.diag().sum()) / (n0 * (n0 - 1))), abs=0.02)
    mean_sim = float((S.sum() - S.diag().sum()) / (N * (N - 1)))
    assert abs(float(ms[1]) - mean_sim) < 0.1 and float(ms[0]) > float(ms[1]) + 0.5


def test_latent_statistics_by_hand():
    acts = np.array([[0.0, 2.0, 0.0], [1.0, 0.0, 0.0], [3.0, 4.0, 0.0], [0.0, 0.0, 0.0]])
    labels = ["a", "b", "b", "a"]
    t = LS.latent_statistics(acts, labels, condition="clean")
    assert list(t["frequency"]) == [0.5, 0.5, 0.0]
    assert list(t["mean_active"][:2]) == [2.0, 3.0] and math.isnan(t["mean_active"][2])
    assert t["label_entropy"][0] == pytest.approx(0.0)  # fires on b, b
    assert t["label_entropy"][1] == pytest.approx(1.0)  # fires on a, b
    assert math.isnan(t["label_entropy"][2])
    both = LS.latent_statistics_by_condition({"clean": (acts, labels), "noisy": (acts * 0, labels)})
    assert list(both["condition"].unique()) == ["clean", "noisy"] and both["frequency"][3:].sum() == 0
    fig = plot_latent_stats(both.assign(frequency=both["frequency"] + 0.01), y="mean_active")
    assert fig.axes[0].get_xlabel() == "frequency"


def test_factor_auroc_matches_sklearn_and_finds_a_planted_latent():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    N = 300
    colour = rng.choice(["red", "blue", "green"], size=N)
    acts = np.maximum(rng.normal(size=(N, 8)), 0)  # ties at 0, like real ReLU latents
    acts[:, 5] = (colour == "blue") * rng.uniform(1, 2, size=N)
    for k in range(8):
        ours = LS.auroc_per_latent(acts, colour == "red")[k]
        assert ours == pytest.approx(roc_auc_score(colour == "red", acts[:, k]))
    t = LS.factor_auroc(acts, {"colour": colour}).set_index("value")
    assert t.loc["blue", "best_latent"] == 5 and t.loc["blue", "auroc"] == 1.0
    assert t.loc["red", "auroc"] < 0.7  # no latent is planted for red


def _ms_by_definition(acts: np.ndarray, emb: np.ndarray) -> np.ndarray:
    """Monosemanticity Score from its definition (Pach et al. 2025, arXiv:2504.02821, §3), by loops.

    ``MS_k = Σ_{n≠m} ã_n ã_m s_nm / Σ_{n≠m} ã_n ã_m`` with ``ã`` latent k's activations min-max normalised
    over the N images and ``s_nm`` the cosine similarity of images n and m; NaN when undefined.
    Independent of :mod:`vlmkit.interpret.monosemanticity` (ordered pairs, cosines computed per pair).
    """
    N, K = acts.shape
    out = np.full(K, np.nan)
    for k in range(K):
        col = [float(v) for v in acts[:, k]]
        lo, hi = min(col), max(col)
        if hi <= lo:
            continue
        a = [(v - lo) / (hi - lo) for v in col]
        num = den = 0.0
        for n in range(N):
            for m in range(N):
                if n != m:
                    s = float(emb[n] @ emb[m]) / float(np.linalg.norm(emb[n]) * np.linalg.norm(emb[m]))
                    num += a[n] * a[m] * s
                    den += a[n] * a[m]
        if den > 0:
            out[k] = num / den
    return out


def test_sae_study_rows_latents_and_ms(tmp_path):
    from _tiny import tiny_vit_model

    from vlmkit.interpret import sae_study
    from vlmkit.evaluate import Cell

    vlm = tiny_vit_model(tmp_path / "cfgs")
    x = torch.rand(12, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    classes = ["circle", "star", "moon"]
    y = torch.arange(12) % 3
    xp = Cell("perturbation", "typographic", 3).apply(x, range(12), seed=0, context={"classnames": classes, "labels": y})
    assert not torch.equal(xp, x)
    labels = [classes[int(i)] for i in y]
    cfg = SAEConfig(n_latents=16, k=4, steps=30, batch_size=16)
    a = sae_study(vlm, {"clean": x, "typographic": xp}, labels, reference=vlm, config=cfg, dataset="rand", seed=1)
    b = sae_study(vlm, {"clean": x, "typographic": xp}, labels, reference=vlm, config=cfg, dataset="rand", seed=1)
    assert a.ms is not None and torch.allclose(a.ms, b.ms, rtol=0, atol=0, equal_nan=True)
    assert [r["value"] for r in a.rows] == [r["value"] for r in b.rows]
    assert set(a.latents.condition) == {"clean", "typographic"} and len(a.latents) == 32
    # the study's MS is the score of its clean latents against the reference's embeddings, checked against
    # the definition written out here (not the library's metric): latents from the SAE applied to the
    # mean last-layer patch token, embeddings from encode_image
    with torch.no_grad():
        z = a.sae.encode(vlm.vision_tokens(x, -1).patches.mean(1)).double().numpy()  # (12, 16)
        emb = vlm.encode_image(x).double().numpy()  # (12, D)
    ref = _ms_by_definition(z, emb)  # (16,)
    assert np.isfinite(ref).sum() >= 4, ref  # enough live latents for the comparison to mean something
    np.testing.assert_allclose(a.ms.numpy(), ref, rtol=1e-4, atol=1e-5, equal_nan=True)
    clean = a.latents[a.latents.condition == "clean"]
    np.testing.assert_allclose(clean["ms"].to_numpy(), ref[clean["latent"].to_numpy()], rtol=1e-4, atol=1e-5,
                               equal_nan=True)
    # closed forms, whatever the latents: identical reference embeddings -> MS 1 for every scorable latent,
    # mutually orthogonal ones -> MS 0; NaN for the others (no pair of images with ã_n ã_m > 0: the latent is
    # constant, or only one image is above its minimum)
    same = sae_study(vlm, {"clean": x}, reference=np.tile([[0.3, -1.0, 2.0]], (12, 1)), config=cfg, seed=2)
    orth = sae_study(vlm, {"clean": x}, reference=np.eye(12), config=cfg, seed=2)
    with torch.no_grad():
        zs = same.sae.encode(vlm.vision_tokens(x, -1).patches.mean(1))  # (12, 16)
    live = ((zs > zs.min(0).values).sum(0) >= 2).numpy()  # (16,) at least 2 images above the minimum
    assert live.sum() >= 4 and np.array_equal(np.isfinite(same.ms.numpy()), live)
    np.testing.assert_allclose(same.ms.numpy()[live], 1.0, atol=1e-5)
    np.testing.assert_allclose(orth.ms.numpy()[live], 0.0, atol=1e-6)
    assert np.isnan(orth.ms.numpy()[~live]).all()
    metrics = {(r["metric"], r["perturbation"]) for r in a.rows}
    assert {("sae_explained_variance", "none"), ("sae_ms_median", "none"),
            ("sae_explained_variance", "typographic")} <= metrics
    assert all(r["model"] == vlm.name and r["dataset"] == "rand" and r["n"] == 12 for r in a.rows)
    # no reference skips the MS
    d = sae_study(vlm, {"clean": x}, config=cfg)
    assert d.ms is None and "ms" not in d.latents and not any(r["metric"].startswith("sae_ms_") for r in d.rows)
    with pytest.raises(InputError, match="same non-zero number"):
        sae_study(vlm, {"clean": x, "other": x[:5]}, config=cfg)
    with pytest.raises(InputError, match="conditions is empty"):
        sae_study(vlm, {}, config=cfg)
