"""Metrics: closed-form cases and parity with reference implementations (open_clip, scikit-learn, loops)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import vlmkit
from vlmkit.errors import InputError
from vlmkit.metrics import (
    auroc,
    build_zero_shot_classifier,
    control_drift,
    control_pairs,
    cosine_drift,
    dirichlet_energy,
    drift_summary,
    energy_score,
    expected_calibration_error,
    flip_rates,
    grid_laplacian,
    margin,
    max_softmax_score,
    prior_shift,
    token_drift,
    topk_accuracy,
    zero_shot_logits,
)

from _tiny import register_tiny_open_clip


def _emb(n, d=8, seed=0):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


# ---------------------------------------------------------------- zero-shot
def test_zero_shot_classifier_equals_open_clip(tmp_path):
    import open_clip
    from open_clip.zero_shot_classifier import build_zero_shot_classifier as oc_build

    register_tiny_open_clip(tmp_path)
    torch.manual_seed(0)
    vlm = vlmkit.load_model("open_clip:vlmkit-tiny-vit", device="cpu")
    classnames = ["cat", "dog", "red square", "boat"]
    templates = ["a photo of a {}.", "a drawing of a {}.", "{}"]
    ours = build_zero_shot_classifier(vlm, classnames, templates)
    with torch.no_grad():
        ref = oc_build(vlm.model, open_clip.get_tokenizer("vlmkit-tiny-vit"), classnames,
                       [lambda c, t=t: t.format(c) for t in templates], device="cpu", use_tqdm=False)  # (D, C)
    torch.testing.assert_close(ours, ref.T, atol=1e-5, rtol=1e-4)
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = zero_shot_logits(vlm, vlm.encode_image(x), ours)
        ref_logits = vlm.model.logit_scale.exp() * F.normalize(
            vlm.model.encode_image((x - torch.tensor(vlm.mean).view(1, 3, 1, 1)) / torch.tensor(vlm.std).view(1, 3, 1, 1)),
            dim=-1) @ ref
    torch.testing.assert_close(logits, ref_logits, atol=1e-4, rtol=1e-4)


def test_topk_accuracy_and_margin_closed_form():
    logits = torch.tensor([[3.0, 2.0, 1.0], [0.0, 1.0, 5.0], [2.0, 4.0, 3.0]])
    labels = torch.tensor([0, 1, 0])  # row 0 top-1 hit; row 1 a top-2 hit; row 2 misses both
    acc = topk_accuracy(logits, labels, ks=(1, 2))
    assert acc["top1"] == pytest.approx(1 / 3) and acc["top2"] == pytest.approx(2 / 3)
    torch.testing.assert_close(margin(logits), torch.tensor([1.0, 4.0, 1.0]))
    with pytest.raises(InputError, match=r"expected logits \(B, C\)"):
        topk_accuracy(logits, labels[:2])


# ---------------------------------------------------------------- drift
def test_identical_embeddings_have_zero_drift_and_control_is_positive():
    e = _emb(10)
    assert torch.allclose(cosine_drift(e, e), torch.zeros(10), atol=1e-6)
    g = torch.Generator().manual_seed(0)
    c = control_drift(e, g)
    assert (c > 0).all()
    s = drift_summary(e, e, torch.Generator().manual_seed(0))
    assert s["drift_mean"] == pytest.approx(0, abs=1e-6) and s["drift_ratio"] == pytest.approx(0, abs=1e-5)
    assert s["prior_shift_mean"] == pytest.approx(0, abs=1e-6)


def test_control_pairs_never_pair_an_image_with_itself_and_are_seeded():
    j1 = control_pairs(50, torch.Generator().manual_seed(3))
    j2 = control_pairs(50, torch.Generator().manual_seed(3))
    assert torch.equal(j1, j2) and not (j1 == torch.arange(50)).any()
    with pytest.raises(InputError, match="at least 2 images"):
        control_pairs(1, torch.Generator())


def test_drift_of_swapped_images_equals_control_scale():
    """Replacing every image by its control partner gives drift == control drift exactly."""
    e = _emb(20, seed=2)
    j = control_pairs(20, torch.Generator().manual_seed(5))
    d = cosine_drift(e, e[j])
    c = control_drift(e, torch.Generator().manual_seed(5))
    torch.testing.assert_close(d, c)


def test_prior_shift_sign():
    e = _emb(30, seed=4)
    mu = F.normalize(e.mean(0), dim=0)
    towards = F.normalize(e + 2 * mu, dim=-1)
    assert (prior_shift(e, towards) > 0).all()
    assert token_drift(e[None].expand(2, -1, -1), e[None].expand(2, -1, -1)).abs().max() < 1e-6


# ---------------------------------------------------------------- flips
def test_flip_rates_closed_form():
    clean = torch.tensor([0, 1, 2, 3])
    pert = torch.tensor([[0, 1, 2, 0],    # one flip (image 3)
                         [1, 1, 2, 3],    # one flip (image 0)
                         [0, 1, 2, 3]])   # none
    r = flip_rates(clean, pert)
    assert r["IFR"] == pytest.approx(2 / 12) and r["IV"] == pytest.approx(2 / 4) and r["n_pairs"] == 12
    assert flip_rates(clean, clean)["IFR"] == 0.0


# ---------------------------------------------------------------- Dirichlet energy
def test_dirichlet_energy_equals_laplacian_quadratic_form():
    gh, gw, C = 3, 4, 5
    x = torch.randn(2, gh * gw, C, generator=torch.Generator().manual_seed(0))
    L = grid_laplacian(gh, gw)
    ref = torch.stack([torch.trace(xi.T @ L @ xi) for xi in x])
    torch.testing.assert_close(dirichlet_energy(x, (gh, gw), normalize="none"), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dirichlet_energy(x, (gh, gw), normalize="fro"), ref / x.pow(2).sum((1, 2)))


def test_dirichlet_energy_closed_forms():
    const = torch.ones(1, 16, 3)
    assert dirichlet_energy(const, (4, 4)).item() == 0.0
    # checkerboard of ±1 on a 4x4 grid: every one of the 24 edges has ||diff||^2 = 4 (C=1)
    sign = torch.tensor([[(-1.0) ** (r + c) for c in range(4)] for r in range(4)]).view(1, 16, 1)
    assert dirichlet_energy(sign, (4, 4), normalize="none").item() == pytest.approx(96.0)
    assert dirichlet_energy(sign, (4, 4), normalize="edges").item() == pytest.approx(4.0)
    with pytest.raises(InputError, match="holds 9 patches but tokens have N=16"):
        dirichlet_energy(sign, (3, 3))


# ---------------------------------------------------------------- calibration / OOD
def test_ece_matches_direct_loop():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 5, generator=g) * 2
    labels = torch.randint(0, 5, (200,), generator=g)
    probs = logits.softmax(-1)
    conf, pred = probs.max(1)
    conf_np, correct_np = conf.numpy(), (pred == labels).numpy().astype(float)
    ref = 0.0
    for lo, hi in zip(np.linspace(0, 1, 16)[:-1], np.linspace(0, 1, 16)[1:]):
        sel = (conf_np > lo) & (conf_np <= hi)
        if sel.any():
            ref += sel.mean() * abs(correct_np[sel].mean() - conf_np[sel].mean())
    assert expected_calibration_error(probs, labels) == pytest.approx(ref, abs=1e-6)
    # perfectly confident and correct → 0
    assert expected_calibration_error(F.one_hot(labels, 5).float(), labels) == pytest.approx(0.0)


def test_auroc_matches_sklearn_with_ties():
    sk = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(1)
    s_in = torch.randint(0, 6, (40,), generator=g).float()
    s_out = torch.randint(0, 4, (30,), generator=g).float()
    y = np.r_[np.ones(40), np.zeros(30)]
    ref = sk.roc_auc_score(y, np.r_[s_in.numpy(), s_out.numpy()])
    assert auroc(s_in, s_out) == pytest.approx(ref)
    logits = torch.randn(5, 3, generator=g)
    torch.testing.assert_close(energy_score(logits), torch.logsumexp(logits, -1))
    assert (max_softmax_score(logits) <= 1).all()
