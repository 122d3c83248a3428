"""Frequency-domain perturbations: band masks, band-limited noise, Fourier basis, amplitude/phase noise."""

from __future__ import annotations

import math

import pytest
import torch

import vlmkit.perturb.frequency as Fq
from vlmkit.errors import InputError
from vlmkit.registry import PERTURBATIONS

NAMES = ["low_pass", "high_pass", "band_filter", "band_noise", "fourier_basis", "amplitude_noise", "phase_noise"]
RANDOM = ["band_noise", "fourier_basis", "amplitude_noise", "phase_noise"]


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(b: int = 2, h: int = 32, w: int = 24, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=_g(seed))


def _mid_grey(b: int = 2, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    """Images far from 0 and 1, so small additive perturbations are never clamped."""
    return 0.5 + 0.1 * (torch.rand(b, 3, h, w, generator=_g(seed)) * 2 - 1)


def test_all_registered_in_family():
    assert set(NAMES) <= set(PERTURBATIONS.list(family="frequency"))


@pytest.mark.parametrize("name", NAMES)
def test_invariants(name):
    fn = PERTURBATIONS.get(name)
    x = _images()
    x0 = x.clone()
    sevs = PERTURBATIONS.meta(name)["severities"] or (1,)
    for sev in sevs:
        y = fn(x, sev, generator=_g(1))
        assert y.shape == x.shape and y.dtype == x.dtype
        assert float(y.min()) >= 0 and float(y.max()) <= 1
        assert torch.equal(y, fn(x, sev, generator=_g(1)))  # same seed -> same output
    assert torch.equal(x, x0)  # input not modified
    if name in RANDOM:
        assert not torch.equal(fn(x, 2, generator=_g(1)), fn(x, 2, generator=_g(2)))
        assert torch.equal(fn(x, 2), fn(x, 2))  # no generator: seeded with 0, still reproducible
    if PERTURBATIONS.meta(name)["severities"]:
        with pytest.raises(InputError, match="severity"):
            fn(x, 6)


@pytest.mark.parametrize("band", [(-0.1, 0.2), (0.3, 0.3), (0.4, 0.1), (0.8, 0.9), (float("nan"), 0.2)])
def test_bad_band_is_named(band):
    with pytest.raises(InputError, match="band"):
        Fq.band_mask(8, 8, *band)
    with pytest.raises(InputError):
        Fq.band_filter(_images(), band=band)
    with pytest.raises(InputError, match="unknown frequency band"):
        Fq.resolve_band("ultra")


def test_named_bands_partition_the_spectrum():
    for h, w in ((32, 32), (17, 24)):
        total = sum(Fq.band_mask(h, w, *Fq.BANDS[b]) for b in ("low", "mid", "high"))
        assert torch.equal(total, torch.ones(h, w))
        assert torch.equal(Fq.band_mask(h, w, *Fq.BANDS["all"]), torch.ones(h, w))
    r = Fq.radial_frequency(32, 32)
    assert math.isclose(float(r.max()), Fq.R_MAX) and float(r[0, 0]) == 0.0


def test_project_to_band_is_a_real_idempotent_projection():
    d = torch.randn(2, 3, 32, 32, generator=_g(0))
    p = Fq.project_to_band(d, 0.1, 0.3)
    assert torch.allclose(Fq.project_to_band(p, 0.1, 0.3), p, atol=1e-5)
    assert float(Fq.out_of_band_energy(p, 0.1, 0.3).max()) < 1e-10
    assert float(Fq.out_of_band_energy(d, 0.1, 0.3).min()) > 0.5  # white noise is mostly outside [0.1, 0.3)
    # the band and its complement split the energy (orthogonal projections)
    q = Fq.project_to_band(d, 0.3, Fq.R_MAX) + Fq.project_to_band(d, 0.0, 0.1)
    assert torch.allclose(p + q, d, atol=1e-5)


def test_projection_equals_the_two_sided_fft_reference_on_odd_and_even_grids():
    """The one-sided transform computes ``real(IFFT(FFT(δ)·mask))`` with the full (H, W) mask, also where W
    is odd (no Nyquist column) or H is odd; a stop filter with the DC bin kept likewise."""
    for h, w in ((32, 32), (17, 24), (20, 15), (9, 9)):
        d = torch.randn(2, 3, h, w, generator=_g(h + w), dtype=torch.float64).float()
        for lo, hi in ((0.1, 0.3), (0.0, 0.12), (0.3, Fq.R_MAX)):
            ref = torch.fft.ifft2(torch.fft.fft2(d.double()) * Fq.band_mask(h, w, lo, hi).double()).real
            assert torch.allclose(Fq.project_to_band(d, lo, hi).double(), ref, atol=1e-5), (h, w, lo, hi)
        x = torch.rand(2, 3, h, w, generator=_g(1))
        m = 1 - Fq.band_mask(h, w, *Fq.BANDS["mid"]).double()
        m[0, 0] = 1.0
        ref = torch.fft.ifft2(torch.fft.fft2(x.double()) * m).real.clamp(0, 1)
        assert torch.allclose(Fq.band_filter(x, band="mid", mode="stop").double(), ref, atol=1e-5), (h, w)


@pytest.mark.parametrize("norm,eps", [("l2", 2.0), ("linf", 8 / 255)])
def test_band_noise_exact_norm_and_band(norm, eps):
    x = _mid_grey()
    y = Fq.band_noise(x, band="mid", norm=norm, eps=eps, generator=_g(3))
    d = (y - x).double()
    size = d.flatten(1).norm(dim=1) if norm == "l2" else d.flatten(1).abs().amax(1)
    assert torch.allclose(size, torch.full_like(size, eps), rtol=1e-4)
    assert float(Fq.out_of_band_energy(d, *Fq.BANDS["mid"]).max()) < 1e-8


def test_band_noise_clamping_only_reduces_the_norm():
    x = _images()  # values near 0 and 1 saturate
    y = Fq.band_noise(x, band="low", norm="l2", eps=8.0, generator=_g(0))
    assert float((y - x).flatten(1).norm(dim=1).max()) <= 8.0 + 1e-4
    with pytest.raises(InputError, match="norm"):
        Fq.band_noise(x, norm="l1")
    with pytest.raises(InputError, match="eps"):
        Fq.band_noise(x, eps=-1.0)


def test_low_pass_removes_high_frequencies_and_keeps_the_mean():
    x = _mid_grey(seed=1)
    y = Fq.low_pass(x, 3)  # f_hi = 0.1
    assert float(Fq.out_of_band_energy(y - y.mean((2, 3), keepdim=True), 0.0, 0.1).max()) < 1e-8
    assert torch.allclose(y.mean((2, 3)), x.mean((2, 3)), atol=1e-5)
    stop = Fq.band_filter(x, band="mid", mode="stop")
    passed = Fq.band_filter(x, band="mid", mode="pass")  # both keep the mean colour
    assert torch.allclose(stop + passed - x.mean((2, 3), keepdim=True), x, atol=1e-5)  # nothing clamped here
    hp = Fq.high_pass(x, f_lo=0.2)
    assert float(Fq.out_of_band_energy(hp - hp.mean((2, 3), keepdim=True), 0.2, Fq.R_MAX).max()) < 1e-8


def test_fourier_basis_is_unit_norm_with_random_signs():
    U = Fq.fourier_basis_image(16, 16, 2, -3)
    assert math.isclose(float(U.norm()), 1.0, rel_tol=1e-5)
    spec = torch.fft.fft2(U.double()).abs()
    nz = {tuple(i) for i in (spec > 1e-6).nonzero().tolist()}
    assert nz == {(2, 16 - 3), (16 - 2, 3)}  # bins (u, v) and (-u, -v) only
    x = _mid_grey(b=4, h=16, w=16)
    y = Fq.fourier_basis(x, u=2, v=-3, eps=2.0, generator=_g(5))
    r = ((y - x) * U).sum((2, 3)) / 2.0  # (B, 3): the sign per image and channel
    assert torch.allclose(r.abs(), torch.ones_like(r), atol=1e-4)
    assert torch.allclose(y - x, 2.0 * r.sign()[..., None, None] * U, atol=1e-5)
    assert len(r.sign().flatten().unique()) == 2
    with pytest.raises(InputError, match="outside the spectrum"):
        Fq.fourier_basis(x, u=20, v=0)


def test_amplitude_and_phase_noise_stay_in_band_and_zero_noise_is_identity():
    x = _mid_grey(h=32, w=32, seed=2)
    assert torch.allclose(Fq.phase_noise(x, sigma=0.0), x, atol=1e-5)
    assert torch.allclose(Fq.amplitude_noise(x, sigma=0.0), x, atol=1e-5)
    for fn in (Fq.amplitude_noise, Fq.phase_noise):
        y = fn(x, band="mid", sigma=0.05, generator=_g(0))
        d = y - x
        assert float(d.abs().max()) > 1e-3
        assert float(Fq.out_of_band_energy(d, *Fq.BANDS["mid"]).max()) < 1e-6
    # phase noise keeps |F| exactly before the real part: equal amplitude for a Hermitian-free check
    y = Fq.phase_noise(x, band="all", sigma=0.1, keep_dc=True)
    assert torch.allclose(y.mean((2, 3)), x.mean((2, 3)), atol=1e-4)  # DC untouched


# ---------------------------------------------------------------- budgets (the attacks' rule)
@pytest.mark.parametrize("norm", ["linf", "l_inf", "inf", "l∞"])
def test_linf_budget_above_one_is_refused_with_a_255_hint(norm):
    """eps=2 is 2 in [0, 1] pixel units: twice the whole range, almost surely meant as 2/255."""
    x = _images()
    with pytest.raises(InputError, match=r"band_noise: eps=2 .*L-inf.*expected 0 < eps <= 1.*eps=2/255"):
        Fq.band_noise(x, norm=norm, eps=2)
    with pytest.raises(InputError, match=r"band_limited_noise: eps=8.0 .*did you mean eps=8/255"):
        Fq.band_limited_noise(x.shape, "high", 8.0, norm, _g(0), "cpu")
    # the boundary itself is a valid budget: exact L∞ norm 1 before clamping
    d = Fq.band_limited_noise(x.shape, "high", 1.0, norm, _g(0), "cpu")
    torch.testing.assert_close(d.flatten(1).abs().amax(1), torch.ones(2))


@pytest.mark.parametrize("bad", [-1.0, -1e-9, float("nan"), float("inf"), True, "0.1"])
@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_negative_or_non_numeric_budgets_are_refused(bad, norm):
    with pytest.raises(InputError, match=r"band_noise: eps=.* must be a non-negative finite number"):
        Fq.band_noise(_images(), norm=norm, eps=bad)


def test_a_zero_budget_is_the_identity():
    """eps = 0 is the control of a severity sweep: the image comes back unchanged (attacks refuse it)."""
    x = _images()
    for norm in ("l2", "linf"):
        assert torch.equal(Fq.band_noise(x, norm=norm, eps=0.0, generator=_g(0)), x)
    assert torch.allclose(Fq.fourier_basis(_mid_grey(h=16, w=16), u=1, v=2, eps=0.0), _mid_grey(h=16, w=16))
    with pytest.raises(InputError, match="must be a positive"):
        Fq.check_budget("eps", 0.0, "l2")


@pytest.mark.parametrize("bad", [-2.0, float("nan"), False])
def test_fourier_basis_budget_is_checked(bad):
    with pytest.raises(InputError, match=r"fourier_basis: eps=.* must be a non-negative finite number"):
        Fq.fourier_basis(_mid_grey(h=16, w=16), u=1, v=2, eps=bad)


def test_l2_budgets_may_exceed_one_and_defaults_pass_the_check():
    """An L2 budget is over 3·H·W values, so eps > 1 is ordinary (e.g. 0.16 rms on 32x32 is 8.9)."""
    x = _mid_grey()
    y = Fq.band_noise(x, norm="l2", eps=5.0, generator=_g(0))
    assert float((y - x).flatten(1).norm(dim=1).max()) <= 5.0 + 1e-4
    assert Fq.fourier_basis(x, eps=16.0).shape == x.shape
    for sev in (1, 2, 3, 4, 5):  # every severity table entry is a valid budget
        for norm in ("l2", "linf"):
            assert Fq.band_noise(x, sev, norm=norm).shape == x.shape
        assert Fq.fourier_basis(x, sev).shape == x.shape


def test_check_budget_matches_the_attack_rule():
    """perturb/ does not import vlmkit.attacks; its rule is the same one PGD applies to eps."""
    from vlmkit.attacks import PGD

    cases = [(8 / 255, "linf"), (1.0, "linf"), (2.0, "linf"), (300, "linf"), (3.0, "l2"), (0.0, "l2"),
             (-0.5, "linf"), (float("nan"), "l2"), (True, "linf")]
    for eps, norm in cases:
        try:
            PGD(eps=eps, norm=norm)
            attack_ok = True
        except InputError:
            attack_ok = False
        try:
            Fq.check_budget("eps", eps, norm)
            perturb_ok = True
        except InputError:
            perturb_ok = False
        assert attack_ok == perturb_ok, (eps, norm)
    assert Fq.check_budget("eps", 3, "2") == 3.0 and isinstance(Fq.check_budget("eps", 3, "l2"), float)
    with pytest.raises(InputError, match="norm='l1' is unknown"):
        Fq.check_budget("eps", 0.1, "l1")
    with pytest.raises(InputError, match=r"^radius=4 .*0 < radius <= 1 \(did you mean radius=4/255"):
        Fq.check_budget("radius", 4, "linf")
