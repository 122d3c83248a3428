"""Geometric and typographic perturbations: closed-form geometry, fills, rendering and composition."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import vlmkit.perturb.frequency  # noqa: F401  (registers band_noise for the compose example)
import vlmkit.perturb.geometric as G
import vlmkit.perturb.typographic as T
from vlmkit.errors import InputError
from vlmkit.perturb.base import compose
from vlmkit.registry import PERTURBATIONS

GEOMETRIC = ["translate", "pad_crop", "scale", "scale_pad", "rotate", "crop"]


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(b: int = 2, h: int = 20, w: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=_g(seed))


@pytest.mark.parametrize("name", GEOMETRIC + ["typographic"])
def test_invariants(name):
    fn = PERTURBATIONS.get(name)
    assert PERTURBATIONS.meta(name)["family"] == ("typographic" if name == "typographic" else "geometric")
    x = _images(h=32, w=32)
    x0 = x.clone()
    for sev in PERTURBATIONS.meta(name)["severities"]:
        y = fn(x, sev, generator=_g(1))
        assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
        assert torch.equal(y, fn(x, sev, generator=_g(1)))
        assert not torch.equal(y, x)
    assert torch.equal(x, x0)
    with pytest.raises(InputError, match="severity"):
        fn(x, 0)


def test_translate_integer_is_exact_with_fill():
    x = _images()
    y = G.translate(x, dx=3, dy=-2, fill=0.25)
    assert torch.equal(y[:, :, :-2, 3:], x[:, :, 2:, :-3])  # content moved right 3, up 2
    assert torch.all(y[:, :, :, :3] == 0.25) and torch.all(y[:, :, -2:, :] == 0.25)
    assert torch.equal(G.translate(x, dx=0, dy=0), x)
    assert torch.all(G.translate(x, dx=100) == 0)
    half = G.translate(x, dx=0.5)  # sub-pixel: bilinear average of neighbours
    assert torch.allclose(half[..., 1:], (x[..., 1:] + x[..., :-1]) / 2, atol=1e-5)


def test_per_channel_fill_and_bad_fill():
    x = _images()
    y = G.translate(x, dy=4, fill=(1.0, 0.5, 0.0))
    assert torch.equal(y[0, :, 0, 0], torch.tensor([1.0, 0.5, 0.0]))
    for bad in (1.5, (0.1, 0.2), -0.1):
        with pytest.raises(InputError, match="fill"):
            G.rotate(x, fill=bad)


def test_rotate_90_equals_rot90_and_0_is_identity():
    x = _images(h=16, w=16)
    assert torch.allclose(G.rotate(x, degrees=90.0), torch.rot90(x, 1, dims=(2, 3)), atol=1e-5)
    assert torch.allclose(G.rotate(x, degrees=-90.0), torch.rot90(x, -1, dims=(2, 3)), atol=1e-5)
    assert torch.allclose(G.rotate(x, degrees=0.0), x, atol=1e-6)
    y = G.rotate(x, degrees=45.0, fill=0.75)
    assert torch.allclose(y[:, :, 0, 0], torch.full((2, 3), 0.75))  # corners uncovered


def test_scale_and_scale_pad():
    x = _images(h=16, w=16)
    assert torch.allclose(G.scale(x, factor=1.0), x, atol=1e-6)
    zoom_out = G.scale(x, factor=0.5, fill=0.3)
    assert torch.allclose(zoom_out[..., :3, :], torch.full_like(zoom_out[..., :3, :], 0.3))
    sp = G.scale_pad(x, factor=0.5, fill=1.0)  # 8x8 image centred on a 16x16 white canvas
    assert torch.all(sp[..., :4, :] == 1.0) and torch.all(sp[..., :, 12:] == 1.0)
    ref = F.interpolate(x, size=(8, 8), mode="bilinear", align_corners=False, antialias=True)
    assert torch.allclose(sp[..., 4:12, 4:12], ref, atol=1e-6)
    with pytest.raises(InputError, match="factor"):
        G.scale_pad(x, factor=1.5)
    with pytest.raises(InputError, match="factor"):
        G.scale(x, factor=0.0)


def test_pad_crop_is_a_random_shift_with_fill():
    x = _images(b=6, h=12, w=12)
    p = 2
    y = G.pad_crop(x, pad=p, fill=0.5, generator=_g(0))
    assert torch.equal(G.pad_crop(x, pad=p, mode="center"), x)
    shifts = set()
    for i in range(6):  # each image is x shifted by some (dx, dy) in [-p, p]
        match = [(dx, dy) for dx in range(-p, p + 1) for dy in range(-p, p + 1)
                 if torch.equal(y[i], G.translate(x[i:i + 1], dx=dx, dy=dy, fill=0.5)[0])]
        assert match, f"image {i} is not a shifted copy"
        shifts.add(match[0])
    assert len(shifts) > 1
    assert not torch.equal(y, G.pad_crop(x, pad=p, fill=0.5, generator=_g(1)))
    with pytest.raises(InputError, match="pad"):
        G.pad_crop(x, pad=-1)


def test_crop_resizes_the_centre_back():
    x = _images(h=16, w=16)
    assert torch.allclose(G.crop(x, fraction=1.0), x, atol=1e-6)
    y = G.crop(x, fraction=0.5)
    ref = F.interpolate(x[..., 4:12, 4:12], size=(16, 16), mode="bilinear", align_corners=False)
    assert torch.allclose(y[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], atol=1e-5)  # borders: clamp vs neighbour
    r1, r2 = G.crop(x, fraction=0.5, position="random", generator=_g(0)), G.crop(x, fraction=0.5, position="random",
                                                                               generator=_g(1))
    assert not torch.equal(r1, r2)


# ---------------------------------------------------------------- typographic
def test_glyph_mask_cached_and_font_fallback():
    T.glyph_mask.cache_clear()
    m = T.glyph_mask("dog", "DejaVuSans-Bold", 14)
    assert T.glyph_mask("dog", "DejaVuSans-Bold", 14) is m and T.glyph_mask.cache_info().hits == 1
    assert m.ndim == 2 and float(m.max()) > 0.9 and float(m.min()) == 0.0
    fallback = T.glyph_mask("dog", "no-such-font-xyz", 14)  # PIL's built-in font
    assert float(fallback.max()) > 0.5


def test_semantic_mode_never_names_the_true_class():
    x = _images(b=4, h=48, w=64)
    labels = torch.tensor([0, 1, 0, 1])
    y = T.typographic(x, classnames=["cat", "dog"], labels=labels, position="center", generator=_g(3))
    other = ["dog", "cat", "dog", "cat"]
    assert torch.equal(y, T.typographic(x, text=other, position="center"))
    with pytest.raises(InputError, match="semantic"):
        T.typographic(x, mode="semantic")
    with pytest.raises(InputError, match="entries"):
        T.typographic(x, text=["a", "b"])


def test_colours_box_and_opacity():
    x = torch.full((1, 3, 40, 60), 0.5)
    y = T.typographic(x, text="HI", size=16, color=(1.0, 0.0, 0.0), box=(0.0, 0.0, 1.0), position="top-left")
    changed = (y != x).any(1)[0]
    rows, cols = changed.nonzero().T
    assert int(rows.min()) == 0 and int(cols.min()) == 0  # box in the top-left corner
    red = (y[0] == torch.tensor([1.0, 0.0, 0.0])[:, None, None]).all(0)
    blue = (y[0] == torch.tensor([0.0, 0.0, 1.0])[:, None, None]).all(0)
    assert red.sum() > 10 and blue.sum() > red.sum()
    assert torch.equal(T.typographic(x, text="HI", opacity=0.0), x)
    half = T.typographic(x, mode="empty", box=1.0, opacity=0.5, position="center")
    assert set(half.unique().tolist()) == {0.5, 0.75}  # box blended half-way to white, no text
    with pytest.raises(InputError, match="opacity"):
        T.typographic(x, opacity=2.0)


def test_empty_and_random_modes():
    x = _images(b=3, h=48, w=48)
    e = T.typographic(x, mode="empty", box=(0.2, 0.4, 0.6), position="bottom-right")
    diff = (e != x).any(1)
    assert diff.any()
    assert torch.allclose(e.permute(0, 2, 3, 1)[diff], torch.tensor([0.2, 0.4, 0.6]).expand(int(diff.sum()), 3))
    r1, r2 = T.typographic(x, mode="random", generator=_g(0)), T.typographic(x, mode="random", generator=_g(1))
    assert not torch.equal(r1, r2)
    with pytest.raises(InputError, match="mode"):
        T.typographic(x, mode="poster")


def test_compose_example():
    chain = compose(("translate", 1, {"dx": 2, "dy": 0}), ("band_noise", 2, {"band": "high"}),
                    ("typographic", 1, {"text": "dog", "position": "center"}))
    x = _images(b=2, h=32, w=32)
    y = chain(x, generator=_g(7))
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    assert torch.equal(y, chain(x, generator=_g(7)))
    assert not torch.equal(y, chain(x, generator=_g(8)))
    manual = G.translate(x, dx=2, dy=0)
    g = _g(7)
    manual = T.typographic(PERTURBATIONS.get("band_noise")(manual, 2, generator=g, band="high"), text="dog",
                           position="center", generator=g)
    assert torch.equal(y, manual)
