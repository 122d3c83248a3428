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
