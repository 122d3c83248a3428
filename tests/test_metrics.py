"""Metrics: closed-form cases and parity with reference implementations (open_clip, scikit-learn, loops)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import vlmkit
from vlmkit.errors import InputError
from vlmkit.models.zeroshot import zero_shot_classifier
from vlmkit.metrics import (
    auroc,
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
    ours = zero_shot_classifier(vlm, classnames, templates)
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


def test_control_drift_known_answers():
    """Control drift pairs each image with a *different* one: 1 for orthogonal embeddings, 0 for identical ones."""
    n = 12
    scales = torch.linspace(0.5, 3.0, n)[:, None]  # cosine ignores the norm
    for seed in range(20):
        # standard basis: cos = 0 exactly between different images (a self-pair would give drift 0)
        assert torch.equal(control_drift(torch.eye(n) * scales, torch.Generator().manual_seed(seed)), torch.ones(n))
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=torch.Generator().manual_seed(0)))
    rotated = q[:n] * scales  # (n, 16) orthogonal rows
    torch.testing.assert_close(control_drift(rotated, torch.Generator().manual_seed(1)), torch.ones(n))
    same = torch.randn(1, 8, generator=torch.Generator().manual_seed(2)) * scales  # (n, 8) one direction
    torch.testing.assert_close(control_drift(same, torch.Generator().manual_seed(1)), torch.zeros(n),
                               atol=1e-6, rtol=0)


def test_control_partners_are_other_images_drawn_uniformly_and_seeded():
    """Unit vectors at angles whose pairwise gaps are all distinct (and < π): the drift value
    1 − cos(θ_i − θ_j) identifies the partner j, read off without calling control_pairs."""
    theta = torch.tensor([0.0, 0.3, 0.7, 1.5, 2.6], dtype=torch.float64)
    e = torch.stack([theta.cos(), theta.sin()], 1)  # (5, 2)
    table = 1 - torch.cos(theta[:, None] - theta[None, :])  # (i, j) -> drift if i is paired with j
    counts = torch.zeros(5, 5)
    for seed in range(400):
        c = control_drift(e, torch.Generator().manual_seed(seed)).double()  # (5,)
        partner = (table - c[:, None]).abs().argmin(1)  # (5,)
        assert float((table[torch.arange(5), partner] - c).abs().max()) < 1e-6
        counts[torch.arange(5), partner] += 1
    assert counts.diag().sum() == 0  # never paired with itself
    off = counts[~torch.eye(5, dtype=torch.bool)]  # 400 draws over 4 partners: 100 ± 8.7 each
    assert float(off.min()) > 60 and float(off.max()) < 140, counts
    a = control_drift(e, torch.Generator().manual_seed(7))
    assert torch.equal(a, control_drift(e, torch.Generator().manual_seed(7)))  # deterministic for a seed
    assert any(not torch.equal(a, control_drift(e, torch.Generator().manual_seed(s))) for s in range(8, 12))


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
    # default: per edge (17 edges on 3x4, counted from the Laplacian's degrees) and per token (N = 12)
    n_edges = int(torch.diag(L).sum()) // 2
    assert n_edges == 17
    torch.testing.assert_close(dirichlet_energy(x, (gh, gw)), (ref / n_edges) / (x.pow(2).sum((1, 2)) / 12))


def test_dirichlet_energy_closed_forms():
    const = torch.ones(1, 16, 3)
    for norm in ("mean", "fro", "edges", "none"):
        assert dirichlet_energy(const, (4, 4), normalize=norm).item() == 0.0  # constant map: exactly 0
    assert dirichlet_energy(torch.zeros(1, 16, 3), (4, 4)).item() == 0.0  # all-zero tokens: 0, not NaN
    # checkerboard of ±1 on a 4x4 grid: every one of the 24 edges has ||diff||^2 = 4 (C=1)
    sign = torch.tensor([[(-1.0) ** (r + c) for c in range(4)] for r in range(4)]).view(1, 16, 1)
    assert dirichlet_energy(sign, (4, 4), normalize="none").item() == pytest.approx(96.0)
    assert dirichlet_energy(sign, (4, 4), normalize="edges").item() == pytest.approx(4.0)
    assert dirichlet_energy(sign, (4, 4)).item() == pytest.approx(4.0)  # mean edge 4 / mean token 1
    with pytest.raises(InputError, match="holds 9 patches but tokens have N=16"):
        dirichlet_energy(sign, (3, 3))
    with pytest.raises(InputError, match="normalize='l2'"):
        dirichlet_energy(sign, (4, 4), normalize="l2")


def test_dirichlet_energy_by_hand_on_2x2():
    """Grid [[0, 1], [2, 4]] (C = 1): edges 0-1, 2-4 (horizontal), 0-2, 1-4 (vertical)."""
    t = torch.tensor([0.0, 1.0, 2.0, 4.0]).view(1, 4, 1)
    # squared differences 1, 4, 4, 9: sum 18, mean over the 4 edges 4.5; mean token² (0+1+4+16)/4 = 5.25
    assert dirichlet_energy(t, (2, 2), normalize="none").item() == pytest.approx(18.0)
    assert dirichlet_energy(t, (2, 2), normalize="edges").item() == pytest.approx(4.5)
    assert dirichlet_energy(t, (2, 2)).item() == pytest.approx(4.5 / 5.25)  # = 6/7
    # two channels, the second a copy of the first times 2: edges and tokens both scale by 1 + 4
    t2 = torch.cat([t, 2 * t], dim=-1)  # (1, 4, 2)
    assert dirichlet_energy(t2, (2, 2)).item() == pytest.approx(6 / 7)
    assert dirichlet_energy(t2, (2, 2), normalize="none").item() == pytest.approx(5 * 18.0)


def test_dirichlet_energy_of_a_ramp_closed_form():
    """Ramp t_(r, c) = r on a gh x gw grid: vertical edges differ by 1, horizontal edges by 0."""
    for gh, gw in ((7, 7), (8, 5), (14, 14)):
        t = torch.arange(gh, dtype=torch.float32).repeat_interleave(gw).view(1, gh * gw, 1)
        vertical, horizontal = (gh - 1) * gw, gh * (gw - 1)
        mean_edge = vertical / (vertical + horizontal)
        mean_token = sum(r * r for r in range(gh)) / gh  # (1/gh) Σ r² over rows
        assert dirichlet_energy(t, (gh, gw)).item() == pytest.approx(mean_edge / mean_token, rel=1e-5)


@pytest.mark.parametrize("C", [1, 64])
def test_dirichlet_energy_of_iid_tokens_is_2_on_every_grid(C):
    """Zero-mean i.i.d. tokens: E||t_i - t_j||² = 2 E||t||², so the default energy is ≈ 2 on any grid.

    Monte-Carlo tolerance: each value is the mean over B images of a ratio of two averages. Its standard
    deviation over 40 seeds was at most 0.013 for C = 1, B = 256 (largest on 8x8) and 0.005 for C = 64,
    B = 32, so the bar |value - 2| < 0.08 is more than 6 standard deviations wide. The old
    normalisation E / ||X||_F² gives 2·|edges|/N instead: 3.41-3.43 on 7x7, 3.88 on 32x32.
    """
    g = torch.Generator().manual_seed(0)
    B = 256 if C == 1 else 32
    values = {}
    for gh, gw in ((7, 7), (8, 8), (14, 14), (32, 32)):
        x = torch.randn(B, gh * gw, C, generator=g)
        values[(gh, gw)] = float(dirichlet_energy(x, (gh, gw)).mean())
    for grid, v in values.items():
        assert v == pytest.approx(2.0, abs=0.08), (grid, values)
    assert max(values.values()) - min(values.values()) < 0.1, values  # agree across grid sizes
    # a smooth map (a linear ramp in both directions, zero-mean) is far below a random one
    gh = gw = 14
    rr, cc = torch.meshgrid(torch.linspace(-1, 1, gh), torch.linspace(-1, 1, gw), indexing="ij")
    ramp = torch.stack([rr, cc], -1).view(1, gh * gw, 2)
    smooth = dirichlet_energy(ramp, (gh, gw)).item()
    rand = dirichlet_energy(torch.randn(1, gh * gw, 2, generator=g), (gh, gw)).item()
    assert smooth < 0.05 < 1.0 < rand, (smooth, rand)


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
