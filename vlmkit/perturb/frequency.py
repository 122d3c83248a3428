"""Frequency-domain perturbations (family ``"frequency"``) and the band helpers attacks reuse.

Frequencies are **radial, in cycles per pixel**: a pixel grid ``(H, W)`` has 2-D frequencies
``(f_y, f_x) = (fftfreq(H), fftfreq(W))`` and radius ``r = sqrt(f_y² + f_x²)`` in ``[0, 0.5·√2]``
(``0.5`` is the Nyquist frequency along one axis, ``0.5·√2`` the corner of the spectrum). A band
``[f_lo, f_hi]`` keeps the frequencies with ``f_lo <= r < f_hi`` (``r <= f_hi`` when ``f_hi`` reaches
the corner, so the full band ``[0, 0.5·√2]`` keeps everything). Radial masks are symmetric under
``f -> -f``, so filtering a real image with them gives a real image (up to float rounding).

Named bands (:data:`BANDS`): ``"low"`` = [0, 0.1), ``"mid"`` = [0.1, 0.3), ``"high"`` = [0.3, 0.5·√2],
``"all"`` = [0, 0.5·√2].

Perturbations registered here:

* ``low_pass`` / ``high_pass`` / ``band_filter`` — keep (or remove) a radial band of the image;
* ``band_noise`` — Gaussian noise filtered to a band and scaled to an exact L2 or L∞ norm per image;
* ``fourier_basis`` — one real Fourier basis image ``U_{u,v}`` (Yin et al., 2019, "A Fourier
  Perspective on Model Robustness in Computer Vision", NeurIPS): ``x + r·ε·U_{u,v}``;
* ``amplitude_noise`` / ``phase_noise`` — perturb ``|F|`` or ``angle(F)`` in a band, keep the other.

Budgets (``eps`` of ``band_noise``, ``band_limited_noise`` and ``fourier_basis``) follow the attacks'
rule, :func:`check_budget`: ``0 < eps`` finite, and ``eps <= 1`` for L∞ on [0, 1] pixels (``eps=8``
is refused with a hint to write ``8/255``).

Every output is clamped to ``[0, 1]``; clamping can lower the effective norm of an additive
perturbation and put a little energy outside its band (near saturated pixels).
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Sequence

import torch

from vlmkit.errors import InputError
from vlmkit.perturb.base import Generators, default_generator, draw, register_perturbation

#: Largest radial frequency on a pixel grid (cycles per pixel): the corner of the spectrum.
R_MAX: float = 0.5 * math.sqrt(2.0)

#: Named radial bands in cycles per pixel.
BANDS: dict[str, tuple[float, float]] = {
    "low": (0.0, 0.1),
    "mid": (0.1, 0.3),
    "high": (0.3, R_MAX),
    "all": (0.0, R_MAX),
}

Band = str | Sequence[float]

# severity -> default parameter tables (index severity - 1)
LOW_PASS_CUTOFF = (0.25, 0.15, 0.1, 0.06, 0.03)  # f_hi kept, cycles/pixel
HIGH_PASS_CUTOFF = (0.01, 0.02, 0.04, 0.08, 0.16)  # f_lo kept (DC kept by default)
BAND_NOISE_LINF = (4 / 255, 8 / 255, 16 / 255, 32 / 255, 64 / 255)  # exact ‖δ‖∞ per image
BAND_NOISE_RMS = (0.01, 0.02, 0.04, 0.08, 0.16)  # L2: ‖δ‖₂ = rms · sqrt(3·H·W)
FOURIER_EPS = (1.0, 2.0, 4.0, 8.0, 16.0)  # ε: L2 norm of the basis image per channel
AMPLITUDE_SIGMA = (0.1, 0.2, 0.4, 0.6, 0.8)  # relative std of |F| noise
PHASE_SIGMA = (0.05, 0.1, 0.2, 0.4, 0.8)  # std of angle noise, in units of π


def _sev(table: Sequence[float], severity: int | float) -> float:
    return float(table[int(severity) - 1])


def resolve_band(band: Band) -> tuple[float, float]:
    """A band name or ``(f_lo, f_hi)`` → validated ``(f_lo, f_hi)`` in cycles per pixel.

    Raises:
        InputError: Unknown name, or not ``0 <= f_lo < f_hi`` (the message names the band).
    """
    if isinstance(band, str):
        if band not in BANDS:
            raise InputError(f"unknown frequency band {band!r}; expected one of {sorted(BANDS)} or (f_lo, f_hi)")
        return BANDS[band]
    try:
        f_lo, f_hi = (float(b) for b in band)
    except (TypeError, ValueError):
        raise InputError(f"band={band!r} must be a name {sorted(BANDS)} or a pair (f_lo, f_hi)") from None
    check_band(f_lo, f_hi)
    return f_lo, f_hi


def check_band(f_lo: float, f_hi: float) -> None:
    """Raise :class:`InputError` unless ``0 <= f_lo < f_hi`` and ``f_lo < 0.5·√2`` (finite)."""
    if not (math.isfinite(f_lo) and math.isfinite(f_hi)) or not (0.0 <= f_lo < f_hi):
        raise InputError(f"frequency band [f_lo={f_lo!r}, f_hi={f_hi!r}] is invalid: expected 0 <= f_lo < f_hi "
                         f"(cycles per pixel, radial, up to 0.5*sqrt(2) = {R_MAX:.4f})")
    if f_lo >= R_MAX:
        raise InputError(f"frequency band [f_lo={f_lo!r}, f_hi={f_hi!r}] is empty: f_lo must be below the "
                         f"largest radial frequency 0.5*sqrt(2) = {R_MAX:.4f}")


def radial_frequency(h: int, w: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Radial frequency ``sqrt(f_y² + f_x²)`` in cycles per pixel of each FFT bin, ``(H, W)``."""
    fy = torch.fft.fftfreq(h, device=device, dtype=torch.float64)  # (H,)
    fx = torch.fft.fftfreq(w, device=device, dtype=torch.float64)  # (W,)
    return torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)  # (H, W)


def band_mask(h: int, w: int, f_lo: float, f_hi: float, device: torch.device | str | None = None) -> torch.Tensor:
    """Float 0/1 mask ``(H, W)`` over FFT bins (unshifted layout) with ``f_lo <= r < f_hi``.

    The upper edge is inclusive when ``f_hi >= 0.5·√2`` so the full band keeps every bin.
    """
    check_band(f_lo, f_hi)
    return _mask(h, w, float(f_lo), float(f_hi), str(torch.device(device or "cpu"))).clone()


@functools.lru_cache(maxsize=32)
def _mask(h: int, w: int, f_lo: float, f_hi: float, device: str) -> torch.Tensor:
    """:func:`band_mask`, cached: never written to (callers copy it or read its one-sided columns)."""
    r = radial_frequency(h, w, device)  # (H, W)
    upper = r <= f_hi if f_hi >= R_MAX - 1e-12 else r < f_hi
    return ((r >= f_lo) & upper).float()


def _one_sided(h: int, w: int, f_lo: float, f_hi: float, device: torch.device) -> torch.Tensor:
    """The mask's columns ``0..W/2`` ``(H, W // 2 + 1)``, the ``rfft2`` layout (the mask is even: bin ``-k`` is
    bin ``k``'s twin, and ``|fftfreq|`` of those columns is ``rfftfreq``)."""
    return _mask(h, w, float(f_lo), float(f_hi), str(device))[:, : w // 2 + 1]


def _band_project(x: torch.Tensor, mask_half: torch.Tensor) -> torch.Tensor:
    """``real(IFFT(FFT(x) · M))`` for an even real mask ``M`` given by its one-sided columns ``(H, W // 2 + 1)``:
    computed as ``irfft2(rfft2(x) · M)`` (the same linear map, half the transform), float32 ``(..., H, W)``."""
    h, w = x.shape[-2:]
    return torch.fft.irfft2(torch.fft.rfft2(x.float()) * mask_half, s=(h, w))


def project_to_band(delta: torch.Tensor, f_lo: float, f_hi: float) -> torch.Tensor:
    """Orthogonal projection of ``delta (..., H, W)`` onto the radial band: ``real(IFFT(FFT(δ)·mask))``
    (as ``irfft2(rfft2(δ)·mask)``, half the transform).

    Keeps dtype and shape. Differentiable (a linear map).
    """
    check_band(f_lo, f_hi)
    h, w = delta.shape[-2:]
    mask = _one_sided(h, w, f_lo, f_hi, delta.device)  # (H, W // 2 + 1)
    return _band_project(delta, mask).to(delta.dtype)


def out_of_band_energy(delta: torch.Tensor, f_lo: float, f_hi: float) -> torch.Tensor:
    """Fraction of spectral energy ``Σ|F|²`` of each item of ``delta (B, ..., H, W)`` outside the band, ``(B,)``."""
    h, w = delta.shape[-2:]
    mask = band_mask(h, w, f_lo, f_hi, delta.device)  # (H, W)
    power = torch.fft.fft2(delta.double()).abs() ** 2  # (B, ..., H, W)
    outside = (power * (1 - mask.double())).flatten(1).sum(1)
    total = power.flatten(1).sum(1).clamp_min(1e-300)
    return (outside / total).to(delta.dtype)


def fourier_basis_image(h: int, w: int, u: int, v: int, device: torch.device | str | None = None,
                        dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Real Fourier basis image ``U_{u,v} (H, W)`` with unit L2 norm.

    ``U ∝ cos(2π(u·y/H + v·x/W))``: the real part of the inverse FFT of a spectrum with equal weight
    at bins ``(u, v)`` and ``(-u, -v)`` (Yin et al., 2019). ``u`` indexes vertical and ``v`` horizontal
    frequency, as FFT bin offsets (negative values allowed; ``(u, v)`` and ``(-u, -v)`` give the same image).
    """
    if not (isinstance(u, int) and isinstance(v, int)):
        raise InputError(f"Fourier basis indices must be ints, got u={u!r}, v={v!r}")
    if not (-h // 2 <= u <= h // 2 and -w // 2 <= v <= w // 2):
        raise InputError(f"Fourier basis (u={u}, v={v}) is outside the spectrum of a {h}x{w} image "
                         f"(|u| <= {h // 2}, |v| <= {w // 2})")
    y = torch.arange(h, device=device, dtype=torch.float64)[:, None]
    x = torch.arange(w, device=device, dtype=torch.float64)[None, :]
    img = torch.cos(2 * math.pi * (u * y / h + v * x / w))  # (H, W)
    norm = img.norm()
    if float(norm) < 1e-9:  # cannot happen on an integer grid, kept for odd sizes at exact nulls
        raise InputError(f"Fourier basis (u={u}, v={v}) vanishes on a {h}x{w} grid")
    return (img / norm).to(dtype)


def _check_unit_param(name: str, value: float, lo: float = 0.0) -> float:
    value = float(value)
    if not math.isfinite(value) or value < lo:
        raise InputError(f"{name}={value!r} must be a finite number >= {lo}")
    return value


def check_norm(norm: str) -> str:
    """Canonical norm name: ``"linf"`` (aliases "inf", "l_inf", "l∞") or ``"l2"`` (alias "2").

    Raises:
        InputError: Any other name.
    """
    low = str(norm).lower().replace("∞", "inf")
    if low in ("l2", "2"):
        return "l2"
    if low in ("linf", "inf", "l_inf"):
        return "linf"
    raise InputError(f"norm={norm!r} is unknown; expected 'l2' or 'linf'")


def check_budget(name: str, eps: float, norm: str, where: str = "", allow_zero: bool = False) -> float:
    """Validate a perturbation budget on ``[0, 1]`` pixels, the rule every bounded perturbation shares.

    The same rule as the attacks' budget (Madry et al., 2018: ``‖δ‖_p <= ε`` on pixels in [0, 1]):

    * ``eps`` is a real number (not a bool), finite and ``> 0`` (``>= 0`` with ``allow_zero``: a zero
      budget is the identity, the control of a severity sweep; attacks refuse it);
    * L∞: ``eps <= 1`` — a larger L∞ budget exceeds the whole pixel range and is almost always a
      budget given in 0-255 units (the message suggests ``eps/255``);
    * L2: no upper bound (``‖δ‖₂`` over ``3·H·W`` values may exceed 1).

    Args:
        name: The parameter's name, for the message (e.g. ``"eps"``).
        eps: The budget.
        norm: "linf" or "l2" (aliases as in :func:`check_norm`).
        where: Optional prefix naming the caller (e.g. ``"band_noise"``).
        allow_zero: Accept ``eps == 0``.

    Returns:
        ``eps`` as a float.

    Raises:
        InputError: The message names ``name`` (and ``where``) and the expected range.
    """
    norm = check_norm(norm)
    pre = f"{where}: " if where else ""
    if (isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not math.isfinite(float(eps)) or eps < 0
            or (eps == 0 and not allow_zero)):
        what = "a non-negative" if allow_zero else "a positive"
        raise InputError(f"{pre}{name}={eps!r} must be {what} finite number (the {norm} perturbation budget "
                         f"on [0, 1] pixels)")
    if norm == "linf" and eps > 1:
        raise InputError(f"{pre}{name}={eps!r} is out of range for an L-inf budget on [0, 1] pixels: expected "
                         f"0 < {name} <= 1 (did you mean {name}={eps:g}/255 = {eps / 255:.5f}?)")
    return float(eps)


def _filter(x: torch.Tensor, band: Band, mode: str, keep_dc: bool) -> torch.Tensor:
    if mode not in ("pass", "stop"):
        raise InputError(f"mode={mode!r} must be 'pass' (keep the band) or 'stop' (remove it)")
    f_lo, f_hi = resolve_band(band)
    h, w = x.shape[-2:]
    mask = _one_sided(h, w, f_lo, f_hi, x.device)  # (H, W // 2 + 1)
    if mode == "stop" or keep_dc:
        mask = 1 - mask if mode == "stop" else mask.clone()
        if keep_dc:
            mask[0, 0] = 1.0
    return _band_project(x, mask).clamp(0, 1).to(x.dtype)  # (B, 3, H, W)


@register_perturbation("low_pass", "frequency")
def low_pass(x: torch.Tensor, severity: int = 1, *, generator: torch.Generator | None = None,
             f_hi: float | None = None) -> torch.Tensor:
    """Ideal radial low-pass filter: keep ``r < f_hi`` (severity 1..5 → f_hi in :data:`LOW_PASS_CUTOFF`).

    Args:
        x: Images ``(B, 3, H, W)`` in [0, 1].
        severity: 1..5, picks the cutoff when ``f_hi`` is not given.
        generator: Unused (deterministic).
        f_hi: Explicit cutoff in cycles per pixel (overrides severity).
    """
    cut = _sev(LOW_PASS_CUTOFF, severity) if f_hi is None else float(f_hi)
    return _filter(x, (0.0, cut), "pass", keep_dc=True)


@register_perturbation("high_pass", "frequency")
def high_pass(x: torch.Tensor, severity: int = 1, *, generator: torch.Generator | None = None,
              f_lo: float | None = None, keep_dc: bool = True) -> torch.Tensor:
    """Ideal radial high-pass filter: keep ``r >= f_lo`` (severity 1..5 → f_lo in :data:`HIGH_PASS_CUTOFF`).

    Args:
        x: Images ``(B, 3, H, W)`` in [0, 1].
        severity: 1..5, picks the cutoff when ``f_lo`` is not given.
        generator: Unused (deterministic).
        f_lo: Explicit cutoff in cycles per pixel (overrides severity).
        keep_dc: Keep the mean colour (otherwise the image is centred on 0 and clamped, mostly black).
    """
    cut = _sev(HIGH_PASS_CUTOFF, severity) if f_lo is None else float(f_lo)
    return _filter(x, (cut, R_MAX), "pass", keep_dc=keep_dc)


@register_perturbation("band_filter", "frequency", severities=None)
def band_filter(x: torch.Tensor, severity: int | float = 1, *, generator: torch.Generator | None = None,
                band: Band = "mid", mode: str = "pass", keep_dc: bool = True) -> torch.Tensor:
    """Keep (``mode="pass"``) or remove (``mode="stop"``) a radial frequency band of each image.

    Args:
        x: Images ``(B, 3, H, W)`` in [0, 1].
        severity: Ignored (the band is the parameter).
        generator: Unused (deterministic).
        band: A name in :data:`BANDS` or ``(f_lo, f_hi)`` in cycles per pixel.
        mode: "pass" or "stop".
        keep_dc: Always keep the mean colour (the DC bin).
    """
    return _filter(x, band, mode, keep_dc)


def band_limited_noise(shape: Sequence[int], band: Band, eps: float, norm: str, generator: Generators,
                       device: torch.device | str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """White Gaussian noise filtered to ``band`` and scaled to ``‖δ_b‖ = eps`` per item, ``shape``.

    Args:
        shape: ``(B, 3, H, W)``.
        band: Band name or ``(f_lo, f_hi)``.
        eps: Exact norm of each item's noise (:func:`check_budget`: ``0 < eps``, and ``eps <= 1`` for L∞).
        norm: "l2" or "linf".
        generator: Source of randomness, or one per item (item ``i`` draws ``torch.randn(1, *shape[1:])`` from it).
        device: Where to build the noise (must match the generator's device).
        dtype: Output dtype.

    Raises:
        InputError: Bad band, norm or budget.
    """
    f_lo, f_hi = resolve_band(band)
    norm = check_norm(norm)
    eps = check_budget("eps", eps, norm, where="band_limited_noise", allow_zero=True)
    probe = torch.empty((shape[0], 0), device=device)  # the batch size and device, for draw()
    noise = draw(probe, generator, lambda g, n: torch.randn((n, *shape[1:]), generator=g, device=device,
                                                            dtype=torch.float32))
    noise = project_to_band(noise, f_lo, f_hi)  # (B, 3, H, W)
    flat = noise.flatten(1)
    size = flat.norm(dim=1) if norm == "l2" else flat.abs().amax(dim=1)  # (B,)
    scale = eps / size.clamp_min(1e-12)
    return (noise * scale.view(-1, *([1] * (noise.ndim - 1)))).to(dtype)


@register_perturbation("band_noise", "frequency", item_generators=True)
def band_noise(x: torch.Tensor, severity: int = 1, *, generator: Generators = None,
               band: Band = "high", norm: str = "l2", eps: float | None = None) -> torch.Tensor:
    """Add band-limited Gaussian noise of an exact L2 or L∞ norm per image, then clamp to [0, 1].

    Noise is drawn white from ``generator``, projected onto the band in Fourier space
    (:func:`project_to_band`) and scaled so each image's noise has norm exactly ``eps``. Clamping to
    [0, 1] after adding can *reduce* the effective norm (and add a little out-of-band energy) where
    pixels saturate.

    Args:
        x: Images ``(B, 3, H, W)`` in [0, 1].
        severity: 1..5; L∞: eps from :data:`BAND_NOISE_LINF`; L2: eps = :data:`BAND_NOISE_RMS` · sqrt(3·H·W).
        generator: Source of randomness (default: seeded with 0), or one generator per image.
        band: Band name or ``(f_lo, f_hi)`` in cycles per pixel.
        norm: "l2" or "linf".
        eps: Explicit norm per image (overrides severity); validated like an attack budget
            (:func:`check_budget`): ``0 < eps <= 1`` for L∞ (not in 0-255 units), ``0 < eps`` for L2.

    Raises:
        InputError: Bad band, norm or budget (e.g. ``norm="linf", eps=2``: did you mean ``2/255``?).
    """
    norm = check_norm(norm)
    if eps is None:
        eps = (_sev(BAND_NOISE_LINF, severity) if norm == "linf"
               else _sev(BAND_NOISE_RMS, severity) * math.sqrt(x[0].numel()))
    eps = check_budget("eps", eps, norm, where="band_noise", allow_zero=True)
    delta = band_limited_noise(x.shape, band, eps, norm, generator, x.device)  # (B, 3, H, W)
    return (x.float() + delta).clamp(0, 1).to(x.dtype)


@register_perturbation("fourier_basis", "frequency")
def fourier_basis(x: torch.Tensor, severity: int = 1, *, generator: torch.Generator | None = None,
                  u: int | None = None, v: int | None = None, eps: float | None = None) -> torch.Tensor:
    """Add one Fourier basis image: ``x + r·ε·U_{u,v}`` (Yin et al., 2019, Fourier heat maps).

    ``U_{u,v}`` has unit L2 norm over ``(H, W)`` (:func:`fourier_basis_image`); ``r ∈ {-1, +1}`` is drawn
    per image and channel from ``generator``. Sweeping ``(u, v)`` over the spectrum at a fixed ε and
    recording the error gives the Fourier heat map. The result is clamped to [0, 1].

    Args:
        x: Images ``(B, 3, H, W)`` in [0, 1].
        severity: 1..5 → ε in :data:`FOURIER_EPS` (L2 norm per channel).
        generator: Source of the signs (default: seeded with 0).
        u: Vertical frequency index (FFT bin offset); default ``round(H / 8)``.
        v: Horizontal frequency index; default ``round(W / 8)``.
        eps: Explicit ε (overrides severity): an L2 budget per channel, ``0 < eps`` finite
            (:func:`check_budget`).

    Raises:
        InputError: ``(u, v)`` outside the spectrum, or a bad budget.
    """
    B, C, H, W = x.shape
    u = round(H / 8) if u is None else u
    v = round(W / 8) if v is None else v
    eps = check_budget("eps", _sev(FOURIER_EPS, severity) if eps is None else eps, "l2", where="fourier_basis",
                       allow_zero=True)
    basis = fourier_basis_image(H, W, u, v, x.device)  # (H, W)
    g = default_generator(x, generator)
    r = torch.randint(0, 2, (B, C, 1, 1), generator=g, device=x.device).float() * 2 - 1  # (B, 3, 1, 1)
    return (x.float() + r * eps * basis).clamp(0, 1).to(x.dtype)


def _spectral_noise(x: torch.Tensor, band: Band, keep_dc: bool, generator: torch.Generator | None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    f_lo, f_hi = resolve_band(band)
    H, W = x.shape[-2:]
    mask = band_mask(H, W, f_lo, f_hi, x.device)  # (H, W)
    if keep_dc:
        mask[0, 0] = 0.0
    g = default_generator(x, generator)
    noise = torch.randn(x.shape, generator=g, device=x.device, dtype=torch.float32)  # (B, 3, H, W)
    spec = torch.fft.fft2(x.float())  # (B, 3, H, W) complex
    return spec, noise * mask, mask


@register_perturbation("amplitude_noise", "frequency")
def amplitude_noise(x: torch.Tensor, severity: int = 1, *, generator: torch.Generator | None = None,
                    band: Band = "all", sigma: float | None = None, keep_dc: bool = True) -> torch.Tensor:
    """Multiplicative Gaussian noise on the Fourier amplitude in a band; the phase is kept.

    ``|F'| = |F|·max(0, 1 + σ·n)`` for bins in the band (``n ~ N(0, 1)`` per bin, image and channel),
    ``F' = |F'|·exp(i·angle(F))``, output ``real(IFFT(F'))`` clamped to [0, 1]. The noise is not
    Hermitian-symmetric, so taking the real part halves the antisymmetric part of the change.

    Args:
        x: Images ``(B, 3, H, W)`` in [0, 1].
        severity: 1..5 → σ in :data:`AMPLITUDE_SIGMA`.
        generator: Source of randomness (default: seeded with 0).
        band: Band name or ``(f_lo, f_hi)``.
        sigma: Explicit relative std (overrides severity).
        keep_dc: Leave the DC bin (mean colour) unchanged.
    """
    sigma = _check_unit_param("sigma", _sev(AMPLITUDE_SIGMA, severity) if sigma is None else sigma)
    spec, noise, _ = _spectral_noise(x, band, keep_dc, generator)
    amp = spec.abs() * (1 + sigma * noise).clamp_min(0)
    out = torch.fft.ifft2(torch.polar(amp, spec.angle())).real
    return out.clamp(0, 1).to(x.dtype)


@register_perturbation("phase_noise", "frequency")
def phase_noise(x: torch.Tensor, severity: int = 1, *, generator: torch.Generator | None = None,
                band: Band = "all", sigma: float | None = None, keep_dc: bool = True) -> torch.Tensor:
    """Additive Gaussian noise on the Fourier phase in a band; the amplitude is kept.

    ``angle(F') = angle(F) + π·σ·n`` for bins in the band, ``|F'| = |F|``, output ``real(IFFT(F'))``
    clamped to [0, 1].

    Args:
        x: Images ``(B, 3, H, W)`` in [0, 1].
        severity: 1..5 → σ (in units of π) in :data:`PHASE_SIGMA`.
        generator: Source of randomness (default: seeded with 0).
        band: Band name or ``(f_lo, f_hi)``.
        sigma: Explicit std in units of π (overrides severity).
        keep_dc: Leave the DC bin (mean colour) unchanged.
    """
    sigma = _check_unit_param("sigma", _sev(PHASE_SIGMA, severity) if sigma is None else sigma)
    spec, noise, _ = _spectral_noise(x, band, keep_dc, generator)
    out = torch.fft.ifft2(torch.polar(spec.abs(), spec.angle() + math.pi * sigma * noise)).real
    return out.clamp(0, 1).to(x.dtype)


__all__ = ["BANDS", "R_MAX", "amplitude_noise", "band_filter", "band_limited_noise", "band_mask", "band_noise",
           "check_band", "check_budget", "check_norm", "fourier_basis", "fourier_basis_image", "high_pass", "low_pass",
           "out_of_band_energy", "phase_noise", "project_to_band", "radial_frequency", "resolve_band"]
