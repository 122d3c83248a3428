"""ImageNet-C common corruptions, batched in torch (Hendrycks & Dietterich, ICLR 2019).

"Benchmarking Neural Network Robustness to Common Corruptions and Perturbations": 15 corruption types in
four families (noise, blur, weather, digital) plus 4 held-out ones (speckle_noise, gaussian_blur, spatter,
saturate), each at severities 1..5. Threat model: *common*, naturally occurring corruptions of a fixed
strength, drawn at random and independent of the model -- not adversarial perturbations.

The per-severity constants are those of the ``imagecorruptions`` 1.1.2 package (Michaelis et al.'s pip
release of the ImageNet-C code), and so is the behaviour for any image size. That package works on
uint8 HxWx3 arrays; here every function takes and returns float (B, 3, H, W) in [0, 1], batched. The
kernels are torch (CPU / CUDA), except the two corruptions that the reference delegates to a C library:
``jpeg_compression`` calls the same libjpeg (Pillow's encoder; torchvision's libjpeg-turbo decoder, or
Pillow's) on the 8-bit batch, and ``pixelate`` reproduces Pillow's fixed-point BOX resampler and its
NEAREST map exactly -- both equal the reference's output byte for byte.

Speed on CPU: large batches are worked a few images at a time (:data:`~vlmkit.perturb.kernels.common.CHUNK_ELEMS`)
so that temporaries stay in cache and are recycled rather than page-faulted in afresh, and results are
written into one output per call; random draws on CPU are taken chunk by chunk in the same order, i.e.
they are the values of the whole-batch draws.

Quantisation: the reference converts to/from 8 bit in several places. Here nothing is quantised except
where quantising *is* the corruption: ``jpeg_compression`` (8-bit JPEG round trip) and ``pixelate``
(Pillow's 8-bit resize passes). In particular glass_blur's intermediate ``np.uint8`` truncation and snow's
8-bit rounding of its snow layer are not reproduced (differences below 1/255).

Randomness: every random draw comes from the ``generator`` (torch ops on ``x.device``), per image. The
random corruptions follow the reference's *distributions* exactly (same fields, same shapes, same
deterministic processing), not its numpy stream. glass_blur reproduces the reference's sequential
pixel "swap" exactly (see :func:`~vlmkit.perturb.kernels.blur.glass_shuffle_index`), batched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from vlmkit.perturb.base import Generators, default_generator, draw, register_perturbation
from vlmkit.perturb.kernels import blur, common, digital, noise, weather

Tensor = torch.Tensor
REF = "imagecorruptions"

__all__ = [
    "brightness", "contrast", "defocus_blur", "elastic_transform", "fog", "frost", "gaussian_blur",
    "gaussian_noise", "glass_blur", "impulse_noise", "jpeg_compression", "motion_blur", "pixelate", "saturate",
    "shot_noise", "snow", "spatter", "speckle_noise", "zoom_blur",
]


def _randn(x: Tensor, shape: tuple[int, ...], g: torch.Generator) -> Tensor:
    return torch.randn(shape, generator=g, device=x.device, dtype=x.dtype)


def _noise_chunks(x: Tensor) -> list[tuple[int, int]]:
    """Image ranges for drawing ``torch.randn(x.shape)`` a few images at a time with the same values as one
    draw: on CPU the generator fills values in order and transforms them to normals in blocks of 16, so
    chunks whose sizes are multiples of 16 (all but the last, which keeps the whole draw's tail) give the
    same draws. One range (the whole batch) elsewhere or when the sizes do not allow it."""
    B, per = x.shape[0], x[0].numel() if x.shape[0] else 0
    step = common.image_chunk(x)
    if x.device.type != "cpu" or per < 16 or (step * per) % 16:
        step = max(B, 1)
    return [(b0, min(B, b0 + step)) for b0 in range(0, B, step)]


# ============================================================================================== noise


@register_perturbation("gaussian_noise", family="noise", reference=REF, item_generators=True)
def gaussian_noise(x: Tensor, severity: int = 1, *, generator: Generators = None) -> Tensor:
    """Additive i.i.d. Gaussian noise, sigma 0.08..0.38 (Hendrycks & Dietterich 2019).

    Args:
        x: (B, 3, H, W) images in [0, 1].
        severity: 1..5.
        generator: source of all randomness (None: seeded with 0), or one per image.

    Returns:
        (B, 3, H, W) in [0, 1].
    """
    c = [0.08, 0.12, 0.18, 0.26, 0.38][severity - 1]
    per_image = isinstance(generator, Sequence)
    g = generator if per_image else default_generator(x, generator)
    out = common.new_output(x)
    for b0, b1 in _noise_chunks(x):  # x + c * N(0, 1), clipped
        r = draw(x[b0:b1], g[b0:b1] if per_image else g, lambda gi, n: _randn(x, (n, *x.shape[1:]), gi)).mul_(c)
        torch.add(x[b0:b1], r, out=out[b0:b1]).clamp_(0, 1)
    return out


@register_perturbation("shot_noise", family="noise", reference=REF, item_generators=True)
def shot_noise(x: Tensor, severity: int = 1, *, generator: Generators = None) -> Tensor:
    """Poisson (photon) noise ``Poisson(x * c) / c``, c = 60..3 (Hendrycks & Dietterich 2019)."""
    c = [60, 25, 12, 5, 3][severity - 1]
    return noise.shot_apply(x, c, generator)


@register_perturbation("impulse_noise", family="noise", reference=REF)
def impulse_noise(x: Tensor, severity: int = 1, *, generator: torch.Generator | None = None) -> Tensor:
    """Salt-and-pepper noise on a fraction 0.03..0.27 of the values, half salt (skimage ``s&p``)."""
    c = [0.03, 0.06, 0.09, 0.17, 0.27][severity - 1]
    g = default_generator(x, generator)
    return noise.impulse_apply(x, c, g)


@register_perturbation("speckle_noise", family="noise", reference=REF)
def speckle_noise(x: Tensor, severity: int = 1, *, generator: torch.Generator | None = None) -> Tensor:
    """Multiplicative Gaussian noise ``x + x * N(0, c)``, c = 0.15..0.6 (held-out noise corruption)."""
    c = [0.15, 0.2, 0.35, 0.45, 0.6][severity - 1]
    g = default_generator(x, generator)
    out = common.new_output(x)
    for b0, b1 in _noise_chunks(x):  # x + (x * c) * N(0, 1), clipped
        xb = x[b0:b1]
        t = torch.mul(xb, c).mul_(_randn(x, tuple(xb.shape), g))
        torch.add(xb, t, out=out[b0:b1]).clamp_(0, 1)
    return out


# ============================================================================================== blur


@register_perturbation("gaussian_blur", family="blur", reference=REF)
def gaussian_blur(x: Tensor, severity: int = 1, *, generator: torch.Generator | None = None) -> Tensor:
    """Gaussian blur, sigma 1..6 px (truncate 4, edge-replicated borders, as skimage)."""
    c = [1, 2, 3, 4, 6][severity - 1]
    return blur.gaussian_blur_apply(x, float(c), "nearest")  # (B, 3, H, W)


@register_perturbation("defocus_blur", family="blur", reference=REF)
def defocus_blur(x: Tensor, severity: int = 1, *, generator: torch.Generator | None = None) -> Tensor:
    """Defocus: convolution with an anti-aliased disk of radius 3..10 px (OpenCV reflect-101 borders), by FFT
    one image at a time."""
    r, ab = [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)][severity - 1]
    k = blur.crop_kernel(blur.disk_kernel(r, ab, x.dtype, x.device))  # 7x7 .. 21x21 (the 17x17 grid's empty ring cut)
    return blur.defocus_apply(x, k)


@register_perturbation("glass_blur", family="blur", reference=REF)
def glass_blur(x: Tensor, severity: int = 1, *, generator: torch.Generator | None = None) -> Tensor:
    """Glass blur: Gaussian blur, local pixel shuffle (max shift 1..4 px, 1..3 rounds), Gaussian blur.

    The shuffle is the reference's sequential scan, evaluated exactly but in parallel (pointer jumping),
    with the displacements drawn from ``generator``. Not quantised to 8 bit in between (the reference
    truncates there).
    """
    sigma, d, iters = [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)][severity - 1]
    g = default_generator(x, generator)
    B, C, H, W = x.shape
    if B == 0:
        return x.clone()
    y = common.gaussian_filter(x, sigma, "nearest")  # (B, 3, H, W)
    src = blur.glass_shuffle_index(B, H, W, d, iters, g, x.device)  # (B, H*W)
    y = y.reshape(B, C, H * W).gather(2, src[:, None].expand(B, C, H * W)).reshape(B, C, H, W)
    return common.gaussian_filter(y, sigma, "nearest").clamp(0, 1)


@register_perturbation("motion_blur", family="blur", reference=REF, item_generators=True)
def motion_blur(x: Tensor, severity: int = 1, *, generator: Generators = None) -> Tensor:
    """Motion blur along a random angle in [-45, 45) deg per image (radius 10..20, sigma 3..15)."""
    radius, sigma = [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)][severity - 1]
    angle = draw(x, generator, lambda g, n: torch.rand(n, generator=g, device=x.device, dtype=torch.float64)) * 90 - 45
    return blur.motion_blur_apply(x, radius, sigma, angle).clamp_(0, 1)


_ZOOMS = [(1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.02), (1, 1.26, 0.02), (1, 1.31, 0.03)]


@register_perturbation("zoom_blur", family="blur", reference=REF)
def zoom_blur(x: Tensor, severity: int = 1, *, generator: torch.Generator | None = None) -> Tensor:
    """Zoom blur: mean of the image and its centre zooms by 1 .. 1.1-1.3 (scipy order-1 zoom)."""
    zooms = blur.np_arange(*_ZOOMS[severity - 1])
    out = common.new_output(x)
    step = common.image_chunk(x)
    for b0 in range(0, x.shape[0], step):  # a few images at a time: the zoomed copies stay in cache
        xb = x[b0:b0 + step]
        acc = torch.zeros_like(xb)
        for z in zooms:
            acc.add_(blur.clipped_zoom(xb, z))
        torch.add(xb, acc, out=out[b0:b0 + step]).div_(len(zooms) + 1).clamp_(0, 1)
    return out


# ============================================================================================== weather


_SNOW = [(0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7), (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
         (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65), (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)]


@register_perturbation("snow", family="weather", reference=REF)
def snow(x: Tensor, severity: int = 1, *, generator: torch.Generator | None = None) -> Tensor:
    """Snow: a zoomed, thresholded Gaussian field motion-blurred at a random angle in [-135, -45) deg,
    added twice (and rotated by 180 deg) over a brightened, greyed image."""
    c = _SNOW[severity - 1]
    g = default_generator(x, generator)
    B, _, H, W = x.shape
    field = c[0] + c[1] * _randn(x, (B, 1, H, W), g)
    angle = torch.rand(B, generator=g, device=x.device, dtype=torch.float64) * 90 - 135
    return weather.snow_apply(x, c, field, angle)


_FROST = [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)]


@register_perturbation("frost", family="weather", reference=REF)
def frost(x: Tensor, severity: int = 1, *, generator: torch.Generator | None = None) -> Tensor:
    """Frost: ``c0 * x + c1 * texture`` with a random crop of one of the 5 ImageNet-C frost textures
    (shipped in ``vlmkit/perturb/frost``; same rescaling as the reference)."""
    c = _FROST[severity - 1]
    g = default_generator(x, generator)
    B, _, H, W = x.shape
    if B == 0:
        return x.clone()
    u = torch.rand(B, 3, generator=g, device=x.device, dtype=torch.float64).cpu()
    idx = (u[:, 0] * 5).long().clamp(max=4).tolist()
    starts = []
    for b, i in enumerate(idx):
        th, tw = weather.frost_texture(i, H, W, x.device).shape[-2:]
        starts.append((min(int(u[b, 1] * (th - H)), th - H - 1), min(int(u[b, 2] * (tw - W)), tw - W - 1)))
    return weather.frost_apply(x, c, idx, starts)


_FOG = [(1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)]


@register_perturbation("fog", family="weather", reference=REF)
def fog(x: Tensor, severity: int = 1, *, generator: torch.Generator | None = None) -> Tensor:
    """Fog: a diamond-square plasma fractal (wibble decay 2..1.4) added with weight 1.5..3, then rescaled
    by ``max / (max + c0)`` per image."""
    c0, decay = _FOG[severity - 1]
    g = default_generator(x, generator)
    B, _, H, W = x.shape
    side = max(H, W, 3)
    mapsize = 1 << (side - 1).bit_length()
    plasma = weather.plasma_fractal(B, mapsize, decay, g, x.device)[:, None, :H, :W]  # (B, 1, H, W) float64
    return fog_apply(x, c0, plasma)


def fog_apply(x: Tensor, c0: float, plasma: Tensor) -> Tensor:
    """Deterministic part of :func:`fog` given the (B, 1, H, W) plasma map (any float dtype; used as
    ``x.dtype``): ``clip((x + c0 * plasma) * max / (max + c0))`` with ``max`` per image, a few images at a
    time."""
    out = common.new_output(x)
    step = common.image_chunk(x)
    for b0 in range(0, x.shape[0], step):
        xb, ob = x[b0:b0 + step], out[b0:b0 + step]
        mx = xb.amax((1, 2, 3), keepdim=True)
        torch.add(xb, plasma[b0:b0 + step].to(x.dtype).mul_(c0), out=ob).mul_(mx).div_(mx + c0).clamp_(0, 1)
    return out


def _hsv_edit(x: Tensor, edit: Callable[[Tensor], Tensor]) -> Tensor:
    """``hsv_to_rgb(edit(rgb_to_hsv(x)))`` clipped to [0, 1], a few images at a time."""
    out = common.new_output(x)
    step = common.image_chunk(x)
    for b0 in range(0, x.shape[0], step):
        torch.clamp(common.hsv_to_rgb(edit(common.rgb_to_hsv(x[b0:b0 + step]))), 0, 1, out=out[b0:b0 + step])
    return out


@register_perturbation("brightness", family="weather", reference=REF)
def brightness(x: Tensor, severity: int = 1, *, generator: torch.Generator | None = None) -> Tensor:
    """Brightness: HSV value + 0.1..0.5, clipped (Hendrycks & Dietterich 2019 list it under weather).

    The reference's ``hsv2rgb(h, s, min(v + c, 1))`` with ``h, s`` of the pixel is every channel scaled by
    ``v' / v`` (each channel is ``v (1 - s f_k(h))``), and grey ``v'`` where ``v = 0``: one pass without the
    colour-space round trip (checked against the reference to 2e-5 in the parity tests).
    """
    c = [0.1, 0.2, 0.3, 0.4, 0.5][severity - 1]
    out = common.new_output(x)
    step = common.image_chunk(x)
    for b0 in range(0, x.shape[0], step):
        xb = x[b0:b0 + step]
        v = xb.amax(1, keepdim=True)  # (b, 1, H, W)
        gain = (v + c).clamp_(max=1).div_(v)  # v' / v (inf where v = 0)
        o = torch.mul(xb, gain, out=out[b0:b0 + step])
        o.masked_fill_((v == 0).expand_as(o), c).clamp_(0, 1)  # black: grey v' = c
    return out


_SPATTER = [(0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0), (0.65, 0.3, 2, 0.68, 0.5, 0),
            (0.65, 0.3, 1, 0.65, 1.5, 1), (0.67, 0.4, 1, 0.65, 1.5, 1)]


@register_perturbation("spatter", family="weather", reference=REF)
def spatter(x: Tensor, severity: int = 1, *, generator: torch.Generator | None = None) -> Tensor:
    """Spatter (held-out weather corruption): water drops (severities 1-3: Canny edges, chamfer distance,
    histogram equalisation, embossing, pale-turquoise tint) or mud (4-5: brown blobs)."""
    c = _SPATTER[severity - 1]
    g = default_generator(x, generator)
    B, _, H, W = x.shape
    field = c[0] + c[1] * torch.randn((B, 1, H, W), generator=g, device=x.device, dtype=torch.float32)
    return weather.spatter_apply(x, c, field)


# ============================================================================================== digital


@register_perturbation("contrast", family="digital", reference=REF)
def contrast(x: Tensor, severity: int = 1, *, generator: torch.Generator | None = None) -> Tensor:
    """Contrast: ``(x - mean) * c + mean`` per image and channel, c = 0.4..0.05."""
    c = [0.4, 0.3, 0.2, 0.1, 0.05][severity - 1]
    out = common.new_output(x)
    step = common.image_chunk(x)
    for b0 in range(0, x.shape[0], step):
        xb = x[b0:b0 + step]
        m = xb.mean((2, 3), keepdim=True)  # (b, 3, 1, 1)
        torch.sub(xb, m, out=out[b0:b0 + step]).mul_(c).add_(m).clamp_(0, 1)
    return out


_ELASTIC = [250 * 0.05, 250 * 0.065, 250 * 0.085, 250 * 0.1, 250 * 0.12]


@register_perturbation("elastic_transform", family="digital", reference=REF)
def elastic_transform(x: Tensor, severity: int = 1, *, generator: torch.Generator | None = None) -> Tensor:
    """Elastic transform (imagecorruptions 1.1.2 variant): uniform displacement noise of +-H/200 px,
    Gaussian-smoothed with sigma (H, W)/100, scaled by alpha 12.5..30, bilinear resampling."""
    g = default_generator(x, generator)
    B, _, H, W = x.shape
    m = H * 0.005
    ux = (torch.rand((B, 1, H, W), generator=g, device=x.device, dtype=torch.float64) * 2 - 1) * m
    uy = (torch.rand((B, 1, H, W), generator=g, device=x.device, dtype=torch.float64) * 2 - 1) * m
    return digital.elastic_apply(x, _ELASTIC[severity - 1], ux, uy)


@register_perturbation("pixelate", family="digital", reference=REF)
def pixelate(x: Tensor, severity: int = 1, *, generator: torch.Generator | None = None) -> Tensor:
    """Pixelate: Pillow BOX downsampling by 0.6..0.25 and NEAREST upsampling of the 8-bit image -- Pillow's
    fixed-point arithmetic reproduced exactly (the reference's output, as k / 255)."""
    c = [0.6, 0.5, 0.4, 0.3, 0.25][severity - 1]
    return digital.pixelate_apply(x, c)


@register_perturbation("jpeg_compression", family="digital", reference=REF)
def jpeg_compression(x: Tensor, severity: int = 1, *, generator: torch.Generator | None = None) -> Tensor:
    """JPEG round trip at quality 25..7 through libjpeg, as the reference: Pillow's ``save(quality=q)`` of the
    8-bit batch (one mosaic stream cut at restart markers), libjpeg decoding -- its output exactly."""
    q = [25, 18, 15, 10, 7][severity - 1]
    return digital.jpeg_apply(x, q)


@register_perturbation("saturate", family="digital", reference=REF)
def saturate(x: Tensor, severity: int = 1, *, generator: torch.Generator | None = None) -> Tensor:
    """Saturation (held-out digital corruption): HSV saturation ``s * c0 + c1``, clipped."""
    a, b = [(0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)][severity - 1]

    def edit(hsv: Tensor) -> Tensor:
        return torch.stack([hsv[:, 0], (hsv[:, 1] * a + b).clamp(0, 1), hsv[:, 2]], 1)

    return _hsv_edit(x, edit)


CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
    "speckle_noise", "gaussian_blur", "spatter", "saturate",
)
"""The 19 names in imagecorruptions' order (15 ImageNet-C + 4 held-out)."""

