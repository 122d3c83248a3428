"""ImageNet-C corruptions (vlmkit.perturb.corruptions) against the reference ``imagecorruptions`` 1.1.2.

Three kinds of parity, on real photos (4 images, 64 px):

* deterministic corruptions: element-wise equality within float tolerance (JPEG / pixelate: 8-bit close);
* random corruptions, "injected": the reference runs on a seeded numpy stream; the same draws are replayed
  into vlmkit's ``*_apply`` kernels (motion/snow/frost/fog/glass/elastic/spatter) -> element-wise parity;
* random corruptions, statistical: vlmkit's own torch draws vs the reference's numpy draws, compared by
  the mean / std of ``out - in``, clipping fractions and mean |out - in|.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import vlmkit.perturb.corruptions as C
from vlmkit.perturb.kernels import blur, common, digital, native, weather
from vlmkit.registry import PERTURBATIONS

S = 64  # image side used throughout (real photos, resized)
SEV = (1, 2, 3, 4, 5)
RANDOM = {"gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "glass_blur", "motion_blur", "snow",
          "frost", "fog", "spatter", "elastic_transform"}
FAMILIES = {
    "noise": {"gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"},
    "blur": {"defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "gaussian_blur"},
    "weather": {"snow", "frost", "fog", "brightness", "spatter"},
    "digital": {"contrast", "elastic_transform", "pixelate", "jpeg_compression", "saturate"},
}


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest


@pytest.fixture(scope="module")
def ref():
    pytest.importorskip("imagecorruptions")
    from _imagecorruptions_shim import load_imagecorruptions

    return load_imagecorruptions()


@pytest.fixture(scope="module")
def photos(shared_data: Path) -> np.ndarray:
    """(4, S, S, 3) uint8 real photos."""
    from PIL import Image

    files = sorted((shared_data / "imagenet-samples" / "images").glob("*.jpg"))[::97][:4]
    if len(files) < 4:
        pytest.skip("need 4 ImageNet sample photos")
    return np.stack([np.asarray(Image.open(f).convert("RGB").resize((S, S), Image.BILINEAR)) for f in files])


@pytest.fixture(scope="module")
def x(photos: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(photos).permute(0, 3, 1, 2).double() / 255  # (B, 3, S, S)


def to_hwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(0, 2, 3, 1).double().numpy()


def run_ref(ref, name: str, photos: np.ndarray, severity: int, seed: int = 0) -> np.ndarray:
    from PIL import Image

    np.random.seed(seed)
    return np.stack([np.asarray(getattr(ref, name)(Image.fromarray(p), severity), dtype=np.float64) / 255
                     for p in photos])


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------- contract


def test_registry_names_and_families():
    assert len(C.CORRUPTIONS) == 19
    for fam, names in FAMILIES.items():
        for n in names:
            meta = PERTURBATIONS.meta(n)
            assert meta["family"] == fam, n
            assert meta["severities"] == SEV and meta["reference"] == "imagecorruptions"
    assert set().union(*FAMILIES.values()) == set(C.CORRUPTIONS)


@pytest.mark.parametrize("name", C.CORRUPTIONS)
def test_contract(name: str, x: torch.Tensor):
    xf = x.float()
    before = xf.clone()
    fn = PERTURBATIONS.get(name)
    for s in SEV:
        y = fn(xf, s, generator=gen(1))
        assert y.shape == xf.shape and y.dtype == xf.dtype and y.device == xf.device
        assert torch.isfinite(y).all() and float(y.min()) >= 0 and float(y.max()) <= 1
        assert torch.equal(y, fn(xf, s, generator=gen(1))), f"{name} s{s} not deterministic"
        assert torch.equal(fn(xf, s), fn(xf, s, generator=gen(0)))  # None means a generator seeded with 0
        if name in RANDOM:
            assert not torch.equal(y, fn(xf, s, generator=gen(2))), f"{name} s{s} ignores the generator"
        assert not torch.equal(y, xf)
    assert torch.equal(xf, before), "input modified in place"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", C.CORRUPTIONS)
def test_cuda_matches_cpu_shape_and_range(name: str, x: torch.Tensor):
    xc = x.float().cuda()
    for s in SEV:
        y = PERTURBATIONS.get(name)(xc, s, generator=torch.Generator(device="cuda").manual_seed(0))
        assert y.is_cuda and y.shape == xc.shape and float(y.min()) >= 0 and float(y.max()) <= 1
        if name not in RANDOM:
            cpu = PERTURBATIONS.get(name)(x.float(), s)
            assert (y.cpu() - cpu).abs().mean() < 1e-3, name


# ---------------------------------------------------------------------------------------------- parity, deterministic

EXACT = ["brightness", "contrast", "saturate", "gaussian_blur", "defocus_blur", "zoom_blur"]


@pytest.mark.parametrize("name", EXACT)
def test_parity_exact(name: str, ref, photos: np.ndarray, x: torch.Tensor):
    for s in SEV:
        r = run_ref(ref, name, photos, s)
        y = to_hwc(getattr(C, name)(x.float(), s))
        assert np.abs(y - r).max() < 2e-5, (name, s, np.abs(y - r).max())


def test_brightness_is_skimage_hsv_round_trip_on_black_grey_and_saturated_pixels():
    """The one-pass brightness (channels scaled by v'/v) against skimage's rgb2hsv, v + c clipped, hsv2rgb,
    on pixels the photos rarely hold: black (v = 0), grey (s = 0), pure primaries and values near 1."""
    from skimage import color

    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 16, 16, generator=g)
    x[0, :, :4] = 0  # black rows
    x[0, :, 4:8] = x[0, :1, 4:8]  # grey rows
    x[1, :, :4] = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)  # pure red
    x[1, :, 4:8] = 0.97 + 0.03 * x[1, :, 4:8]  # near white
    for s, c in zip(SEV, [0.1, 0.2, 0.3, 0.4, 0.5]):
        y = C.brightness(x, s)
        for b in range(2):
            hsv = color.rgb2hsv(x[b].permute(1, 2, 0).double().numpy())
            hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
            ref = np.clip(color.hsv2rgb(hsv), 0, 1)
            assert np.abs(y[b].permute(1, 2, 0).numpy() - ref).max() < 1e-6, (s, b)


def test_parity_pixelate(ref, photos, x):
    for s in SEV:
        r = run_ref(ref, "pixelate", photos, s)
        d = np.abs(to_hwc(C.pixelate(x.float(), s)) - r)
        # Pillow's fixed-point box filter vs float weights + rounding: off by at most 2 levels, rarely
        assert d.max() <= 2 / 255 + 1e-6 and d.mean() < 0.5 / 255, (s, d.max(), d.mean())


def test_parity_jpeg(ref, photos, x):
    for s in SEV:
        r = run_ref(ref, "jpeg_compression", photos, s)
        y = to_hwc(C.jpeg_compression(x.float(), s))
        d = np.abs(y - r)
        assert d.mean() < 1.5 / 255, (s, d.mean())  # float DCT vs libjpeg's integer DCT
        # a quantised coefficient landing on the other side of a .5 tie moves a whole 8x8 (16x16) block
        assert np.quantile(d, 0.99) <= 16 / 255, (s, np.quantile(d, 0.99))
        xin = photos / 255
        assert abs(np.abs(y - xin).mean() - np.abs(r - xin).mean()) < 0.1 * np.abs(r - xin).mean()


# ---------------------------------------------------------------------------------------------- parity, injected draws


def test_injected_motion_blur(ref, photos, x):
    for s in SEV:
        radius, sigma = [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)][s - 1]
        np.random.seed(s)
        angles = [np.random.uniform(-45, 45) for _ in photos]  # the reference draws one angle per call
        r = run_ref(ref, "motion_blur", photos, s, seed=s)
        y = blur.motion_blur_apply(x, radius, sigma, torch.tensor(angles, dtype=torch.float64)).clamp(0, 1)
        assert np.abs(to_hwc(y) - r).max() < 1e-6, s


def test_native_unpack_rgb_is_torch_division_and_transpose():
    """Decoded (H, W, 3) bytes -> (3, H, W) float32 k / 255: every byte value in every channel, against torch's
    own division and permute (an off-by-one channel, a swapped axis or a rounding change would show)."""
    g = torch.Generator().manual_seed(0)
    # (16, 16, 3): every byte value once per channel, in a different order in each
    hwc = torch.stack([torch.randperm(256, generator=g) for _ in range(3)], 1).to(torch.uint8).view(16, 16, 3)
    out = np.empty((3, 16, 16), np.float32)
    native.unpack_rgb(hwc.numpy(), out)
    assert torch.equal(torch.from_numpy(out), hwc.permute(2, 0, 1).float() / 255)
    assert np.array_equal(native.LUT_255, (torch.arange(256).float() / 255).numpy())
    with pytest.raises(ValueError, match="C-contiguous"):
        native.unpack_rgb(hwc.numpy(), np.empty((16, 16, 3), np.float32).transpose(2, 1, 0))


def test_motion_blur_native_equals_torch_path():
    """The compiled loop and the torch path sum the same taps in the same order: equal to float32 rounding,
    also for a top-left crop (snow blurs its larger layer, then crops) and a batch split over threads."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 3, 24, 53, generator=g)
    angles = torch.tensor([-44.0, -20.0, 0.0, 30.0, 44.5], dtype=torch.float64)
    for radius, sigma, hw in ((10, 3.0, None), (20, 15.0, None), (15, 8.0, (17, 41))):
        taps = blur.motion_taps(radius, sigma, angles, 24, 53)
        ref = blur.motion_blur_torch(x, taps, hw or (24, 53))
        old = torch.get_num_threads()
        try:
            torch.set_num_threads(2)
            y = blur.motion_blur_apply(x, radius, sigma, angles, out_hw=hw)
        finally:
            torch.set_num_threads(old)
        assert y.shape == ref.shape and torch.allclose(y, ref, atol=2e-7, rtol=0), (radius, hw)
    assert (taps[3] < 41).any()  # at radius 20 a steep angle stops at the border (24 rows)


def test_injected_frost(ref, photos, x):
    for s in SEV:
        np.random.seed(10 + s)
        idx, starts = [], []
        for _ in photos:
            i = np.random.randint(5)
            th, tw = weather.frost_texture(i, S, S, torch.device("cpu")).shape[-2:]
            starts.append((np.random.randint(0, th - S), np.random.randint(0, tw - S)))
            idx.append(i)
        r = run_ref(ref, "frost", photos, s, seed=10 + s)
        d = np.abs(to_hwc(weather.frost_apply(x, C._FROST[s - 1], idx, starts)) - r)
        # texture rescale: torch float bicubic vs cv2's fixed-point one, both rounded to 8 bit
        assert d.max() < 4 / 255 and d.mean() < 0.05 / 255, (s, d.max(), d.mean())


def test_injected_glass_blur(ref, photos, x):
    for s in (1, 3, 5):
        sigma, dd, iters = [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)][s - 1]
        n = len(range(S - dd, dd, -1))
        deltas = []
        np.random.seed(20 + s)
        for _ in photos:
            deltas.append(np.random.randint(-dd, dd, size=(iters, n, n, 2)))
        r = run_ref(ref, "glass_blur", photos, s, seed=20 + s)
        B = len(photos)
        y = common.gaussian_filter(x, sigma, "nearest")
        src = blur.glass_shuffle_index(B, S, S, dd, iters, None, x.device, torch.from_numpy(np.stack(deltas)))
        y = y.reshape(B, 3, -1).gather(2, src[:, None].expand(B, 3, S * S)).reshape(B, 3, S, S)
        y = common.gaussian_filter(y, sigma, "nearest").clamp(0, 1)
        d = np.abs(to_hwc(y) - r)
        # only the reference's intermediate uint8 truncation differs (mean bias 0.5 / 255)
        assert d.max() < 1.5 / 255 and d.mean() < 0.8 / 255, (s, d.max(), d.mean())


def test_injected_snow(ref, photos, x):
    for s in SEV:
        c = C._SNOW[s - 1]
        fields, angles = [], []
        np.random.seed(30 + s)
        for _ in photos:
            fields.append(np.random.normal(size=(S, S), loc=c[0], scale=c[1]))
            angles.append(np.random.uniform(-135, -45))
        r = run_ref(ref, "snow", photos, s, seed=30 + s)
        y = weather.snow_apply(x, c, torch.from_numpy(np.stack(fields))[:, None], torch.tensor(angles))
        d = np.abs(to_hwc(y) - r)
        assert d.max() < 1.6 / 255 and d.mean() < 0.5 / 255, (s, d.max(), d.mean())  # layer not rounded to 8 bit


def test_injected_fog(ref, photos, x):
    for s in SEV:
        c0, decay = C._FOG[s - 1]
        np.random.seed(40 + s)
        maps = [weather.plasma_fractal(1, S, decay, None, torch.device("cpu"),
                                 sampler=lambda shape: torch.from_numpy(np.random.uniform(-1, 1, shape)))
                for _ in photos]
        r = run_ref(ref, "fog", photos, s, seed=40 + s)
        y = C.fog_apply(x, c0, torch.cat(maps)[:, None])
        assert np.abs(to_hwc(y) - r).max() < 1e-6, s


def test_injected_elastic(ref, photos, x):
    for s in SEV:
        m = S * 0.005
        ux, uy = [], []
        np.random.seed(50 + s)
        for _ in photos:
            ux.append(np.random.uniform(-m, m, size=(S, S)))
            uy.append(np.random.uniform(-m, m, size=(S, S)))
        r = run_ref(ref, "elastic_transform", photos, s, seed=50 + s)
        y = digital.elastic_apply(x.float(), C._ELASTIC[s - 1], torch.from_numpy(np.stack(ux))[:, None],
                            torch.from_numpy(np.stack(uy))[:, None])
        d = np.abs(to_hwc(y) - r)
        assert d.max() < 1e-3 and d.mean() < 1e-5, (s, d.max(), d.mean())


def test_injected_spatter(ref, photos, x):
    for s in SEV:
        c = C._SPATTER[s - 1]
        np.random.seed(60 + s)
        fields = [np.random.normal(size=(S, S), loc=c[0], scale=c[1]) for _ in photos]
        r = run_ref(ref, "spatter", photos, s, seed=60 + s)
        y = weather.spatter_apply(x.float(), c, torch.from_numpy(np.stack(fields))[:, None].float())
        d = np.abs(to_hwc(y) - r)
        # float32 vs float64 near the thresholds can move a few edge / blob pixels
        assert d.mean() < 1.0 / 255 and (d > 4 / 255).mean() < 0.02, (s, d.mean(), (d > 4 / 255).mean())


# ---------------------------------------------------------------------------------------------- statistical


def _stats(out: np.ndarray, xin: np.ndarray) -> dict[str, float]:
    diff = out - xin
    return {"mean": diff.mean(), "std": diff.std(), "mad": np.abs(diff).mean(), "lo": (out <= 1e-6).mean(),
            "hi": (out >= 1 - 1e-6).mean(), "ostd": out.std()}


@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"])
def test_statistical_noise(name: str, ref, photos, x):
    xin = photos / 255
    # impulse noise hits only 3..27 % of 49k values: its sample statistics scatter ~3x more (~3 sigma here)
    tol = 0.12 if name == "impulse_noise" else 0.04
    for s in SEV:
        a = _stats(to_hwc(getattr(C, name)(x.float(), s, generator=gen(s))), xin)
        b = _stats(run_ref(ref, name, photos, s, seed=s), xin)
        assert abs(a["std"] - b["std"]) < tol * b["std"], (name, s, a, b)
        assert abs(a["mad"] - b["mad"]) < tol * b["mad"], (name, s, a, b)
        assert abs(a["mean"] - b["mean"]) < 0.1 * b["std"], (name, s, a, b)
        for k in ("lo", "hi"):
            assert abs(a[k] - b[k]) < 0.01 + 0.1 * b[k], (name, s, k, a, b)


@pytest.mark.parametrize("name", ["glass_blur", "motion_blur", "snow", "frost", "fog", "spatter", "elastic_transform"])
def test_statistical_random(name: str, ref, photos, x):
    """Own draws vs reference draws: pooled over 2 seeds x 4 photos, mean |out - in|, the mean shift and the
    output std agree within a tolerance sized for the draw-to-draw spread of each corruption."""
    xin = photos / 255
    tol = {"glass_blur": 0.06, "motion_blur": 0.2, "snow": 0.2, "frost": 0.25, "fog": 0.25, "spatter": 0.35,
           "elastic_transform": 0.15}[name]
    for s in SEV:
        ours = np.concatenate([to_hwc(getattr(C, name)(x.float(), s, generator=gen(k))) for k in (0, 1)])
        theirs = np.concatenate([run_ref(ref, name, photos, s, seed=k) for k in (0, 1)])
        a, b = _stats(ours, np.concatenate([xin] * 2)), _stats(theirs, np.concatenate([xin] * 2))
        assert abs(a["mad"] - b["mad"]) < tol * b["mad"], (name, s, a["mad"], b["mad"])
        assert abs(a["mean"] - b["mean"]) < tol * b["mad"] + 0.005, (name, s, a["mean"], b["mean"])
        assert abs(a["ostd"] - b["ostd"]) < tol * b["ostd"], (name, s, a["ostd"], b["ostd"])


def test_glass_shuffle_displacement_statistics():
    """The batched shuffle has the displacement law of the sequential reference loop (simulated here)."""
    H, d, iters = 40, 2, 1
    rng = np.random.RandomState(0)
    ref_disp = []
    for _ in range(3):
        idx = np.stack(np.meshgrid(np.arange(H), np.arange(H), indexing="ij"), -1)
        for _ in range(iters):
            for h in range(H - d, d, -1):
                for w in range(H - d, d, -1):
                    dx, dy = rng.randint(-d, d, size=(2,))
                    idx[h, w], idx[h + dy, w + dx] = idx[h + dy, w + dx], idx[h, w]  # views: a copy
        ref_disp.append((idx - np.stack(np.meshgrid(np.arange(H), np.arange(H), indexing="ij"), -1))[8:-8, 8:-8])
    ref_disp = np.concatenate(ref_disp).reshape(-1, 2)
    src = blur.glass_shuffle_index(3, H, H, d, iters, gen(0), torch.device("cpu"))
    sy, sx = src // H, src % H
    grid = torch.arange(H * H)
    ours = torch.stack([sy - grid // H, sx - grid % H], -1).reshape(3, H, H, 2)[:, 8:-8, 8:-8].reshape(-1, 2).numpy()
    assert np.abs(ours.std(0) - ref_disp.std(0)).max() < 0.15 * ref_disp.std(0).min()
    assert np.abs((ours == 0).all(1).mean() - (ref_disp == 0).all(1).mean()) < 0.03
    far = lambda v: (np.abs(v).max(1) > d).mean()  # noqa: E731  (chained copies travel beyond d)
    assert far(ref_disp) > 0.05 and abs(far(ours) - far(ref_disp)) < 0.2 * far(ref_disp)


def test_plasma_fractal_statistics():
    """Own-draw plasma maps vs the reference's: range [0, 1], similar mean and spread, smooth (neighbour corr)."""
    from _imagecorruptions_shim import load_imagecorruptions

    ref = load_imagecorruptions()
    np.random.seed(0)
    theirs = np.stack([ref.plasma_fractal(64, 1.7) for _ in range(8)])
    ours = weather.plasma_fractal(8, 64, 1.7, gen(0), torch.device("cpu")).numpy()
    assert ours.min() == 0 and ours.max() == 1
    for f in (np.mean, np.std):
        assert abs(f(ours) - f(theirs)) < 0.25 * f(theirs)
    corr = lambda m: np.corrcoef(m[:, :, :-1].ravel(), m[:, :, 1:].ravel())[0, 1]  # noqa: E731
    assert abs(corr(ours) - corr(theirs)) < 0.1


def test_monotone_in_severity(ref, photos, x):
    """mean |out - in| grows from severity s to s+1 wherever it grows for the reference by > 5 % (> 15 % for
    random corruptions, whose single draws on 4 photos scatter by several per cent)."""
    xin = photos / 255
    checked = 0
    for name in C.CORRUPTIONS:
        r = [np.abs(run_ref(ref, name, photos, s, seed=0) - xin).mean() for s in SEV]
        o = [np.abs(to_hwc(getattr(C, name)(x.float(), s, generator=gen(0))) - xin).mean() for s in SEV]
        for k in range(4):
            if r[k + 1] > (1.15 if name in RANDOM else 1.05) * r[k]:
                assert o[k + 1] > o[k], (name, k + 1, o, r)
                checked += 1
    assert checked >= 35


def test_np_arange_matches_numpy():
    for args in C._ZOOMS:
        assert np.array_equal(np.array(blur.np_arange(*args)), np.arange(*args))


def test_invalid_severity_rejected(x):
    from vlmkit.errors import InputError

    with pytest.raises(InputError):
        C.fog(x.float(), 6)


def test_odd_sizes(x):
    xs = torch.nn.functional.interpolate(x.float(), size=(48, 40), mode="bilinear")
    for name in C.CORRUPTIONS:
        y = PERTURBATIONS.get(name)(xs, 3, generator=gen(0))
        assert y.shape == xs.shape and float(y.min()) >= 0 and float(y.max()) <= 1, name
    assert math.isfinite(float(C.jpeg_compression(xs, 5).mean()))


# ---------------------------------------------------------------------------------------------- C-library kernels, exact
# pixelate and jpeg_compression run the reference's own arithmetic (Pillow's fixed-point BOX resampler and its
# NEAREST map; libjpeg through Pillow): equal to the reference byte for byte, not just close.

ODD_SIZES = [(48, 40), (37, 53), (5, 9), (16, 300), (32, 50)]


def _u8(t: torch.Tensor) -> np.ndarray:
    return np.round(to_hwc(t) * 255).astype(np.uint8)


def _random_u8(n: int, hw: tuple[int, int], seed: int) -> np.ndarray:
    """(n, H, W, 3) uint8 images with smooth structure and noise (what codecs and resamplers see)."""
    rng = np.random.RandomState(seed)
    H, W = hw
    yy, xx = np.mgrid[:H, :W]
    base = 127 + 100 * np.sin(xx[None, :, :, None] / 5.0 + yy[None, :, :, None] / 7.0 + np.arange(3) + rng.rand(n, 1, 1, 1))
    return np.clip(base + rng.randint(-40, 41, (n, H, W, 3)), 0, 255).astype(np.uint8)


def _ref_u8(ref, name: str, imgs: np.ndarray, s: int) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(getattr(ref, name)(Image.fromarray(p), s)) for p in imgs])


def _pixelate_torch(x: torch.Tensor, s: int) -> torch.Tensor:
    """The whole-tensor torch path (what CUDA batches run), here on CPU."""
    return digital.pixelate_torch(x, [0.6, 0.5, 0.4, 0.3, 0.25][s - 1])


@pytest.mark.parametrize("name,fn", [("pixelate", C.pixelate), ("pixelate", _pixelate_torch),
                                     ("jpeg_compression", C.jpeg_compression)],
                         ids=["pixelate-native", "pixelate-torch", "jpeg-native"])
def test_pil_kernels_equal_reference_exactly(name: str, fn, ref, photos, x):
    """Real photos (64 px: the mosaic JPEG path) and odd sizes (uneven box runs, per-image JPEG streams,
    non-multiple-of-16 heights, a single image) give the reference's 8-bit output exactly, as k / 255 --
    through the compiled CPU loops (vlmkit.perturb.kernels.native) and through the torch path CUDA runs."""
    for s in SEV:
        y = fn(x.float(), s)
        assert torch.equal(y * 255, torch.round(y * 255)), (name, s)  # on the 8-bit grid
        assert np.array_equal(_u8(y), _ref_u8(ref, name, photos, s)), (name, s)
    for i, hw in enumerate(ODD_SIZES):
        imgs = _random_u8(1 if i == 2 else 3, hw, i)
        xi = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255  # channels-last memory, as it comes
        for s in SEV:
            c = [0.6, 0.5, 0.4, 0.3, 0.25][s - 1]
            if name == "pixelate" and min(int(hw[0] * c), int(hw[1] * c)) == 0:
                continue  # Pillow refuses a 0-px resize
            assert np.array_equal(_u8(fn(xi, s)), _ref_u8(ref, name, imgs, s)), (name, hw, s)


def test_native_kernels_split_over_threads_and_keep_dtype(x):
    """The batch split over torch threads gives the single-thread bytes; float64 input comes back float64 with
    the float32 result's values; an empty batch is an empty result."""
    xs = x.float()[:5]
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = [C.pixelate(xs, 2), C.jpeg_compression(xs, 3)]
        torch.set_num_threads(3)
        three = [C.pixelate(xs, 2), C.jpeg_compression(xs, 3)]
    finally:
        torch.set_num_threads(old)
    assert all(torch.equal(a, b) for a, b in zip(one, three))
    y = C.pixelate(xs.double(), 2)
    assert y.dtype == torch.float64 and torch.equal(y, one[0].double())
    assert C.jpeg_compression(xs[:0], 1).shape == (0, *xs.shape[1:])


def test_pil_box_runs_and_nearest_map():
    """Box runs partition the input, lengths differ by at most one, and the nearest map is Pillow's."""
    from PIL import Image

    for n_in, n_out in [(224, 134), (224, 112), (224, 89), (224, 67), (53, 13), (9, 2)]:
        starts, counts = digital.pil_box_runs(n_in, n_out)
        assert starts[0] == 0 and all(a + n == b for a, n, b in zip(starts, counts, starts[1:]))
        assert starts[-1] + counts[-1] == n_in and max(counts) - min(counts) <= 1
        idx = digital.pil_nearest_index(n_out, n_in)
        row = Image.fromarray(np.arange(n_out, dtype=np.uint8)[None]).resize((n_in, 1), Image.NEAREST)  # n_out < 256
        assert list(idx) == np.asarray(row)[0].tolist()


def test_split_jpeg_mosaic_streams_decode_as_standalone():
    """One restart interval per stacked image: each cut stream decodes to the image encoded alone."""
    import io

    from PIL import Image

    imgs = _random_u8(3, (32, 40), 7)
    buf = io.BytesIO()
    Image.fromarray(imgs.reshape(-1, 40, 3)).save(buf, "JPEG", quality=15, restart_marker_blocks=3 * 2)
    streams = digital.split_jpeg_mosaic(buf.getvalue(), 3, 32)
    assert streams is not None and len(streams) == 3
    for img, st in zip(imgs, streams):
        alone = io.BytesIO()
        Image.fromarray(img).save(alone, "JPEG", quality=15)
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(st))), np.asarray(Image.open(alone)))
    assert digital.split_jpeg_mosaic(buf.getvalue(), 4, 32) is None  # not 4 images
    assert digital.split_jpeg_mosaic(b"not a jpeg", 1, 32) is None


# ---------------------------------------------------------------------------------------------- chunked draws
# The kernels walk big batches a few images at a time; on CPU the draws must stay those of whole-batch calls
# (so results are bit-identical to before and independent of the chunk size).


def _big(x: torch.Tensor) -> torch.Tensor:
    xb = x.float().repeat(13, 1, 1, 1)  # 52 images of 64 px: more than one working chunk
    assert xb.shape[0] > common.image_chunk(xb)
    return xb


def test_impulse_noise_draws_are_two_whole_batch_rands(x):
    xb = _big(x)
    for s, c in zip(SEV, [0.03, 0.06, 0.09, 0.17, 0.27]):
        g1, g2 = gen(s), gen(s)
        flipped = torch.rand(xb.shape, generator=g2) < c
        salted = torch.rand(xb.shape, generator=g2) < 0.5
        assert torch.equal(C.impulse_noise(xb, s, generator=g1), torch.where(flipped, salted.float(), xb))
        assert torch.equal(torch.rand(4, generator=g1), torch.rand(4, generator=g2))  # same generator state after


def _fits_poisson(k: np.ndarray, rate: float) -> None:
    """``k`` (integer draws) against scipy's Poisson pmf at ``rate``: the mean and variance, and a chi-square
    test with bins pooled to >= 20 expected draws."""
    from scipy import stats

    assert abs(k.mean() - rate) < 5 * math.sqrt(max(rate, 1e-12) / k.size) and (rate == 0 or abs(k.var() / rate - 1) < 0.03)
    if rate == 0:
        assert not k.any()
        return
    edges = [0]  # pool the support into bins of >= 20 expected draws
    hi = int(stats.poisson.ppf(1 - 1e-9, rate)) + 1
    for v in range(1, hi):
        if stats.poisson.cdf(v - 1, rate) - stats.poisson.cdf(edges[-1] - 1, rate) >= 20 / k.size:
            edges.append(v)
    edges[-1:] = [hi * 10]  # the last bin takes the upper tail
    expect = np.diff([stats.poisson.cdf(e - 1, rate) for e in edges])
    expect = np.append(expect[:-1], 1 - expect[:-1].sum()) * k.size
    seen = np.histogram(k, bins=edges)[0]
    if len(seen) > 1:
        assert stats.chisquare(seen, expect).pvalue > 1e-4, (rate, seen, expect)


@pytest.mark.parametrize("lam", [0.05, 0.7, 3.0, 9.9, 10.0, 17.5, 60.0, 300.0, 1500.0])
def test_native_poisson_sampler_fits_the_poisson_law(lam):
    """Both of the sampler's methods for values off the 8-bit grid (multiplication below a mean of 10, PTRS
    above, log k! from the table and from lgamma beyond k = 1023) against scipy's Poisson pmf: a chi-square
    test on 100k draws, and the mean and variance."""
    from vlmkit.perturb.kernels import native

    c = 4096.0  # the rate x * c with x = lam / c; the output k / c stays below the clamp at 1
    x = np.full((2, 50_000), lam / c, np.float32)
    out = np.empty_like(x)
    native.poisson_planes(x, out, c, np.array([7, 2 ** 61 + 3], np.uint64))
    _fits_poisson(np.rint(out.astype(np.float64) * c).astype(np.int64).ravel(),
                  float(np.float32(np.float32(lam / c) * np.float32(c))))


@pytest.mark.parametrize(("q", "c"), [(0, 60.0), (1, 60.0), (40, 60.0), (128, 60.0), (255, 60.0), (200, 3.0),
                                      (255, 256.0), (None, 60.0)])
def test_native_poisson_table_inversion_fits_the_poisson_law(q, c):
    """8-bit values (``k / 255``, every decoded image's) are drawn by inversion through the per-``c`` CDF and
    guide tables: the draws fit scipy's Poisson pmf at the level's rate, from 0 to 256; a value off the grid
    (``None``: 0.3) at the same ``c`` takes the multiplication/PTRS path and fits too. The clamp at 1 is
    undone by drawing at ``c`` and reading ``k`` below it (q = 255 reaches it, so it is tested on the
    unclamped part: P(k >= c) is compared separately)."""
    from scipy import stats

    from vlmkit.perturb.kernels import native

    x0 = np.float32(0.3) if q is None else native.LUT_255[q]
    x = np.full((2, 50_000), x0, np.float32)
    out = np.empty_like(x)
    native.poisson_planes(x, out, c, np.array([11, 2 ** 60 + 5], np.uint64))
    k = np.rint(out.astype(np.float64) * c).astype(np.int64).ravel()
    rate = float(np.float32(x0 * np.float32(c)))
    if x0 * c * 1.0 < c - 3 * math.sqrt(c) - 5:  # the clamp is never reached
        _fits_poisson(k, rate)
    else:  # clamped at k = c: below it the pmf, at it the upper tail
        below = np.array([np.mean(k == j) for j in range(int(c))])
        tail = stats.poisson.sf(int(c) - 1, rate)
        assert abs(np.mean(k == int(c)) - tail) < 5 * math.sqrt(tail * (1 - tail) / k.size)
        ref = stats.poisson.pmf(np.arange(int(c)), rate)
        assert np.all(np.abs(below - ref) < 5 * np.sqrt(ref * (1 - ref) / k.size) + 1e-4)


def test_poisson_tables_are_the_poisson_cdf():
    """The inversion tables against scipy: every level's CDF to 1e-12, ending at 1, and each guide entry the
    first index whose CDF exceeds its cut."""
    from scipy import stats

    from vlmkit.perturb.kernels import native

    for c in (3.0, 60.0, 256.0):
        cdf, guide = native.poisson_tables(c)
        rates = (native.LUT_255 * np.float32(c)).astype(np.float64)
        ref = stats.poisson.cdf(np.arange(cdf.shape[1])[None], rates[:, None])  # (256, K)
        assert np.abs(cdf - ref).max() < 1e-12 and np.all(cdf[:, -1] == 1) and np.all(np.diff(cdf, axis=1) >= 0)
        assert ref[:, -2].min() > 1 - 1e-15  # the table ends where the tail is negligible
        cuts = np.arange(guide.shape[1]) / guide.shape[1]
        for q in (0, 7, 100, 255):
            for i, j in enumerate(guide[q]):
                assert cdf[q, j] > cuts[i] and (j == 0 or cdf[q, j - 1] <= cuts[i])


def test_shot_noise_draws_one_stream_per_image(x):
    """Each image's noise depends on its own seed (one ``torch.randint`` draw per image, in batch order):
    the same generator state gives the same batch, an image's noise is the same alone as in its batch
    (given the same seed), and distinct images' streams differ."""
    from vlmkit.perturb.kernels import native

    xb = x.float()[:3]
    for s in (1, 5):
        y1, y2 = C.shot_noise(xb, s, generator=gen(s)), C.shot_noise(xb, s, generator=gen(s))
        assert torch.equal(y1, y2)
        seeds = torch.randint(0, 2 ** 62, (3,), generator=gen(s)).numpy().astype(np.uint64)
        c = [60, 25, 12, 5, 3][s - 1]
        one = np.empty((1, xb[1].numel()), np.float32)
        native.poisson_planes(xb[1].reshape(1, -1).numpy(), one, c, seeds[1:2])
        assert np.array_equal(one.reshape(xb[1].shape), y1[1].numpy())
        same = xb[:1].expand(2, -1, -1, -1).contiguous()  # one image twice: two seeds, two noise fields
        z = C.shot_noise(same, s, generator=gen(s))
        assert not torch.equal(z[0], z[1])


def test_plasma_chunked_draws_equal_whole_batch_draws():
    """The generator path (fills drawn a few images at a time) equals one whole-batch draw per fill."""
    g1, g2 = gen(3), gen(3)
    a = weather.plasma_fractal(20, 256, 1.7, g1, torch.device("cpu"))  # finest fills: 8 images per chunk
    b = weather.plasma_fractal(20, 256, 1.7, None, torch.device("cpu"),
                         sampler=lambda shape: torch.rand(shape, generator=g2, dtype=torch.float64) * 2 - 1)
    assert torch.equal(a, b) and float(a.amin()) == 0 and float(a.amax()) == 1


# ---------------------------------------------------------------------------------------------- spatter building blocks vs OpenCV


def test_spatter_blocks_match_opencv():
    """Canny, the 3x3 box blurs (float -> uint8 truncation, uint8 rounding) and the emboss filter equal OpenCV's
    exactly; the chamfer distance equals it up to float32 accumulation order."""
    cv2 = pytest.importorskip("cv2")
    import skimage.filters

    rng = np.random.RandomState(0)
    for s in (1, 2, 3):
        c = C._SPATTER[s - 1]
        liq = skimage.filters.gaussian(rng.normal(size=(64, 72), loc=c[0], scale=c[1]), sigma=c[2])
        liq[liq < c[3]] = 0
        l8 = (liq * 255).astype(np.uint8)
        edges = cv2.Canny(l8, 50, 150)
        ours = weather.canny(torch.from_numpy(l8).float()[None, None], 50.0, 150.0)[0, 0].numpy()
        assert edges.any() and np.array_equal(edges > 0, ours), s
        dist = np.minimum(cv2.distanceTransform(255 - edges, cv2.DIST_L2, 5), 20)
        d = weather.chamfer_distance(torch.from_numpy(edges > 0)[None, None], 20.0)[0, 0].numpy()
        assert np.abs(d - dist).max() < 2e-5 and np.abs(d - dist).mean() < 1e-6, s  # float32 ulps
        blurred = weather.box3(torch.from_numpy(dist)[None, None], "floor")[0, 0].numpy()
        assert np.array_equal(blurred.astype(np.uint8), cv2.blur(dist, (3, 3)).astype(np.uint8))
    u8 = rng.randint(0, 256, (30, 41)).astype(np.uint8)
    t8 = torch.from_numpy(u8).float()[None, None]
    assert np.array_equal(weather.box3(t8, "round", exact=torch.float32)[0, 0].numpy().astype(np.uint8),
                          cv2.blur(u8, (3, 3)))
    ker = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])
    assert np.array_equal(weather.emboss(t8)[0, 0].numpy().astype(np.uint8), cv2.filter2D(u8, cv2.CV_8U, ker))


def test_chamfer_strips_equal_whole_image():
    """A small batch is worked in horizontal strips with halos: the truncated distances are unchanged."""
    z = torch.rand(2, 1, 150, 90, generator=gen(0)) < 0.003
    assert weather.chamfer_distance(z, 20.0).shape == (2, 1, 150, 90)
    whole = torch.cat([weather.chamfer_distance(z[i:i + 1].expand(40, -1, -1, -1), 20.0)[:1] for i in range(2)])
    assert torch.equal(weather.chamfer_distance(z, 20.0), whole)
    assert float(whole.amax()) == 20.0 and float(whole.amin()) == 0.0


# ---------------------------------------------------------------------------------------------- layout, helpers


def test_memory_layout_does_not_change_results(x):
    """Channels-last input (a permuted HWC batch) gives the same result as the contiguous one."""
    xc = x.float()
    xl = xc.contiguous(memory_format=torch.channels_last)
    for name in C.CORRUPTIONS:
        a = PERTURBATIONS.get(name)(xc, 3, generator=gen(4))
        b = PERTURBATIONS.get(name)(xl, 3, generator=gen(4))
        assert torch.allclose(a, b, atol=1e-6, rtol=0), name


def test_defocus_kernel_crop_and_fft_length(x):
    """The cropped disk kernels drop only negligible weights, and FFT lengths are the smallest 2^a {1,3,5,15}."""
    xf = x.float()
    for r, ab in [(3, 0.1), (10, 0.5)]:
        full = blur.disk_kernel(r, ab, torch.float32, xf.device)
        crop = blur.crop_kernel(full)
        assert crop.shape[0] < full.shape[0] or r == 10
        assert (blur.defocus_apply(xf, crop) - blur.defocus_apply(xf, full)).abs().max() < 1e-6
    fast = sorted({f << a for f in (1, 3, 5, 15) for a in range(12)})
    for n in range(1, 700):
        assert common.fft_length(n) == min(v for v in fast if v >= n)


def test_new_output_is_an_ordinary_tensor():
    big = torch.zeros(2, 3, 1024, 1024)  # 24 MiB
    out = common.new_output(big)
    assert out.shape == big.shape and out.dtype == big.dtype and out.is_contiguous()
    out.fill_(0.5)
    assert float(out.sum()) == 0.5 * big.numel()
    small = common.new_output(big, (3, 2), torch.int32)
    assert small.shape == (3, 2) and small.dtype == torch.int32


def test_empty_batch():
    x0 = torch.rand(0, 3, 32, 32)
    for name in C.CORRUPTIONS:
        y = PERTURBATIONS.get(name)(x0, 3, generator=gen(0))
        assert y.shape == x0.shape and y.dtype == x0.dtype, name
