"""Weather kernels of ImageNet-C (Hendrycks & Dietterich 2019): snow, frost, fog and spatter.

Fog's diamond-square height maps (:func:`plasma_fractal`), frost's rescaled textures (shipped in
``vlmkit/perturb/frost``), snow's zoomed and motion-blurred flake layer, and spatter's water / mud
layers -- the water branch with OpenCV-exact building blocks: Canny edges (:func:`canny`), the 5x5
chamfer distance transform (:func:`chamfer_distance`), 3x3 box blur, emboss and histogram equalisation.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from vlmkit.perturb.kernels.blur import clipped_zoom, motion_blur_apply
from vlmkit.perturb.kernels.common import gaussian_kernel1d, image_chunk, new_output, pad2d, rgb_to_gray, taps_filter

Tensor = torch.Tensor

# ----------------------------------------------------------------------------------------- fog


def plasma_fractal(batch: int, mapsize: int, wibbledecay: float, generator: torch.Generator | None,
                   device: torch.device, dtype: torch.dtype = torch.float64,
                   sampler: Callable[[tuple[int, ...]], Tensor] | None = None) -> Tensor:
    """Diamond-square height maps (B, mapsize, mapsize) in [0, 1], as ImageNet-C's ``plasma_fractal``.

    ``sampler(shape)`` returns U(-1, 1) draws (tests pass the reference's numpy stream); by default they
    come from ``generator``. Each level fills the square centres, then the two kinds of edge midpoints; each
    fill is worked a few images at a time (its draws taken in the same order, so on CPU -- whose generator
    fills values in sequence -- they are the values of one whole-batch draw); elsewhere a fill is one draw.
    """
    chunked = sampler is None and torch.device(device).type == "cpu"
    if sampler is None:
        def sampler(shape: tuple[int, ...]) -> Tensor:
            return torch.rand(shape, generator=generator, device=device, dtype=dtype).mul_(2).sub_(1)
    m = new_output(torch.empty(0, device=device, dtype=dtype), (batch, mapsize, mapsize)).zero_()
    step, wibble = mapsize, 100.0
    while step >= 2:
        h, n = step // 2, mapsize // step
        e, o = slice(0, None, step), slice(h, None, step)
        k = max(1, (1 << 17) // (n * n)) if chunked else batch
        parts = range(0, batch, k)
        ul = [m[b0:b0 + k, e, e].contiguous() for b0 in parts]  # corners, (k, n, n) each
        w2 = wibble * wibble

        def wibbled(a: Tensor, w2: float = w2) -> Tensor:  # a / 4 + wibble^2 * U(-1, 1), in this order
            return a.div_(4).add_(sampler(tuple(a.shape)).to(device=device, dtype=dtype).mul_(w2))

        dr = []
        for b0, u in zip(parts, ul):  # square centres
            sq = u + torch.roll(u, -1, 1)
            dr.append(wibbled(sq + torch.roll(sq, -1, 2)))
            m[b0:b0 + k, o, o] = dr[-1]
        for b0, u, d in zip(parts, ul, dr):  # midpoints of the left edges
            m[b0:b0 + k, e, o] = wibbled(d + torch.roll(d, 1, 1) + u + torch.roll(u, -1, 2))
        for b0, u, d in zip(parts, ul, dr):  # midpoints of the top edges
            m[b0:b0 + k, o, e] = wibbled(d + torch.roll(d, 1, 2) + u + torch.roll(u, -1, 1))
        step //= 2
        wibble /= wibbledecay
    k = max(1, (1 << 17) // (mapsize * mapsize))
    for b0 in range(0, batch, k):  # m - min, then / max, per image (in place)
        mb = m[b0:b0 + k]
        mb.sub_(mb.amin((1, 2), keepdim=True))
        mb.div_(mb.amax((1, 2), keepdim=True))
    return m


# ----------------------------------------------------------------------------------------- frost
FROST_DIR = Path(__file__).resolve().parent.parent / "frost"
# The reference draws np.random.randint(5) over frost1..frost5; frost3 == frost2 pixel for pixel.
FROST_FILES = ("frost1.png", "frost2.png", "frost2.png", "frost4.jpg", "frost5.jpg")
_FROST_CACHE: dict[tuple[int, int, int, str], Tensor] = {}


def frost_texture(idx: int, H: int, W: int, device: torch.device) -> Tensor:
    """Texture ``idx`` (3, h, w) uint8-valued float32, rescaled as the reference does for an H x W image
    (x1.1 at least, more if the texture is smaller than the image; bicubic, rounded to 8 bit). Cached."""
    key = (idx, H, W, str(device))
    if key not in _FROST_CACHE:
        from PIL import Image  # file decoding only; the kernels below are torch

        with Image.open(FROST_DIR / FROST_FILES[idx]) as im:
            im = im.convert("RGB")
            raw = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
            tex = raw.view(im.height, im.width, 3).permute(2, 0, 1).float()  # (3, h, w)
        th, tw = tex.shape[-2:]
        if th >= H and tw >= W:
            s = 1.0
        elif th < H and tw >= W:
            s = H / th
        elif th >= H and tw < W:
            s = W / tw
        else:
            s = max(H / th, W / tw)
        s *= 1.1
        nh, nw = math.ceil(th * s), math.ceil(tw * s)
        big = F.interpolate(tex[None], size=(nh, nw), mode="bicubic", align_corners=False)[0]
        _FROST_CACHE[key] = big.round().clamp(0, 255).to(device)
    return _FROST_CACHE[key]


def frost_apply(x: Tensor, c: tuple[float, float], idx: Sequence[int], starts: Sequence[tuple[int, int]]) -> Tensor:
    """``clip(c0 * x + c1 * crop / 255)`` with texture ``idx[b]`` cropped at ``starts[b]`` (row, col)."""
    H, W = x.shape[-2:]
    crops = torch.stack([frost_texture(int(i), H, W, x.device)[:, r:r + H, q:q + W]
                         for i, (r, q) in zip(idx, starts)]).to(x.dtype)  # (B, 3, H, W)
    return (c[0] * x + c[1] * crops / 255).clamp(0, 1)


# ----------------------------------------------------------------------------------------- snow


def snow_apply(x: Tensor, c: tuple[float, ...], field: Tensor, angle_deg: Tensor) -> Tensor:
    """ImageNet-C snow given the (B, 1, H, W) normal field ``N(c0, c1)`` and the (B,) blur angles."""
    H, W = x.shape[-2:]
    layer = clipped_zoom(field.to(x.dtype), c[2], crop=False)  # (B, 1, >= H, >= W)
    layer = torch.where(layer < c[3], torch.zeros_like(layer), layer).clamp(0, 1)
    # blurred before the crop, as the reference (the clamped border is the zoomed layer's)
    layer = motion_blur_apply(layer, int(c[4]), float(c[5]), angle_deg, out_hw=(H, W))  # (B, 1, H, W)
    gray = rgb_to_gray(x)
    x = c[6] * x + (1 - c[6]) * torch.maximum(x, gray * 1.5 + 0.5)
    return (x + layer + torch.flip(layer, (-2, -1))).clamp(0, 1)


# ----------------------------------------------------------------------------------------- spatter


def dilate3(m: Tensor) -> Tensor:
    """3x3 binary dilation of a (..., H, W) bool map (separable max of shifted slices, zero border)."""
    p = F.pad(m.to(torch.uint8), (1, 1, 1, 1))
    h = torch.maximum(torch.maximum(p[..., :-2], p[..., 1:-1]), p[..., 2:])  # (..., H + 2, W)
    return torch.maximum(torch.maximum(h[..., :-2, :], h[..., 1:-1, :]), h[..., 2:, :]).bool()


def canny(img: Tensor, low: float, high: float) -> Tensor:
    """OpenCV ``Canny(img, low, high)`` (3x3 Sobel, L1 gradient) on (B, 1, H, W) 8-bit valued floats.

    Returns a bool edge map. The Sobel filters are separable sums of shifted slices (edge-replicated
    borders). Non-maximum suppression is OpenCV's: the integer sector test (``|gy| << 15`` against
    ``|gx| * 13573``, as exact float32 comparisons: ``13573 / 2^15`` is a 15-bit fraction and
    ``|gx| <= 1020``), then ``m > a and m >= b`` (horizontal, vertical) or ``m > a and m > b`` (diagonal)
    against the two neighbours across the edge of the zero-bordered magnitude map. As magnitudes are
    integers, ``m >= b`` is ``m > b - 1/2``: each test is ``m > max(a, b')``, and the sector's threshold is
    blended in with 0/1 masks (exact) instead of boolean logic. Hysteresis grows the strong edges through
    8-connected weak pixels until nothing changes.
    """
    H, W = img.shape[-2:]
    p = pad2d(img.to(torch.float32), (1, 1), (1, 1), "nearest")  # (B, 1, H + 2, W + 2)
    d = p[..., 2:] - p[..., :-2]  # (B, 1, H + 2, W): [-1 0 1] along x
    gx = torch.add(d[..., :-2, :], d[..., 1:-1, :], alpha=2).add_(d[..., 2:, :])  # x [1 2 1]^T
    sm = torch.add(p[..., :-2], p[..., 1:-1], alpha=2).add_(p[..., 2:])  # [1 2 1] along x
    gy = sm[..., 2:, :] - sm[..., :-2, :]  # x [-1 0 1]^T
    ax, ay = gx.abs(), gy.abs()
    mag = ax + ay
    mp = F.pad(mag, (1, 1, 1, 1))  # zero border, as OpenCV's magnitude buffer

    def nb(dy: int, dx: int) -> Tensor:
        return mp[..., 1 + dy:1 + dy + H, 1 + dx:1 + dx + W]

    t22 = ax * (13573 / 32768)
    horiz = torch.lt(ay, t22, out=torch.empty_like(ay))  # (|gy| << 15) < |gx| * 13573, as 0/1
    vert = torch.gt(torch.sub(ay, ax, alpha=2), t22, out=t22)  # (|gy| << 15) > |gx| * 13573 + (|gx| << 16)
    s_neg = torch.lt(gx.mul_(gy), 0, out=gx)  # (dx ^ dy) < 0  ->  s = -1, as 0/1
    th = torch.maximum(nb(0, -1), nb(0, 1) - 0.5)  # m > left and m >= right
    tv = torch.maximum(nb(-1, 0), nb(1, 0) - 0.5)  # m > up and m >= down
    td = torch.maximum(nb(-1, -1), nb(1, 1))  # s = 1
    td.add_(torch.maximum(nb(-1, 1), nb(1, -1)).sub_(td).mul_(s_neg))  # s = -1
    thr = td.add_(th.sub_(td).mul_(horiz)).add_(tv.sub_(td).mul_(vert)).clamp_(min=low)
    cand = mag > thr
    edges = cand & (mag > high)
    while True:
        grown = cand & dilate3(edges)
        if torch.equal(grown, edges):
            return edges
        edges = grown


_CHAMFER_5X5 = tuple(float(torch.tensor(v, dtype=torch.float32)) for v in (1.0, 1.4, 2.1969))
"""OpenCV's ``DIST_L2`` 5x5 chamfer weights (horizontal/vertical, diagonal, knight's move) as float32."""


def _chamfer_pass(t: Tensor, zero: Tensor | None, block: Tensor | None, backward: bool) -> None:
    """One raster pass of OpenCV's 5x5 chamfer transform, in place on ``t`` (R + 4, N, W + 4) (rows first, a
    2-cell border of ``inf``). Forward: rows top to bottom, each from the two rows above and its left
    neighbour; backward: bottom to top, from the two rows below and its right neighbour (the mask is
    symmetric in x). ``zero`` (R, N, W) bool: the zero pixels, set to 0 (forward pass; None: start from
    ``t``'s own values); ``block`` (R, N, 1): ``inf`` on rows outside the image (strip halos), 0 elsewhere.

    A finished row's neighbour minima are kept for the rows after it: ``min(t[x - 1], t[x + 1])`` (the
    next row's diagonals, the row after's knight's moves) and ``min(t[x - 2], t[x + 2])`` (the next row's
    knight's moves)."""
    R4, N, W4 = t.shape
    R, W = R4 - 4, W4 - 4
    hv, dg, lg = _CHAMFER_5X5
    ramp = torch.arange(W, dtype=t.dtype, device=t.device) * hv
    new = functools.partial(torch.full, (N, W), math.inf, dtype=t.dtype, device=t.device)
    m1, m2, vals = new(), new(), new()
    idx = torch.empty(N, W, dtype=torch.long, device=t.device)
    odd2, odd1, even1 = new(), new(), new()  # min(t[x +- 1]) two rows back, one row back; min(t[x +- 2]) one back
    spare = new()
    prev = t[R + 2, :, 2:W + 2] if backward else t[1, :, 2:W + 2]  # the row just before the first: inf
    for i in (range(R - 1, -1, -1) if backward else range(R)):
        r = i + 2
        torch.minimum(odd2, even1, out=m1).add_(lg)  # knight's moves
        torch.minimum(m1, torch.add(odd1, dg, out=m2), out=m1)  # diagonals
        torch.minimum(m1, torch.add(prev, hv, out=m2), out=m1)  # vertical
        if zero is not None:
            m1.masked_fill_(zero[i], 0.0)
        else:
            torch.minimum(m1, t[r, :, 2:W + 2], out=m1)
        row = t[r, :, 2:W + 2]
        if backward:  # r[x] = min(c[x], r[x + 1] + 1) = min_{s >= x} (c[s] + s) - x
            torch.cummin(m1.add_(ramp).flip(1), 1, out=(vals, idx))
            torch.sub(vals.flip(1), ramp, out=row)
        else:  # r[x] = min(c[x], r[x - 1] + 1) = min_{s <= x} (c[s] - s) + x
            torch.cummin(m1.sub_(ramp), 1, out=(vals, idx))
            torch.add(vals, ramp, out=row)
        if block is not None:
            torch.maximum(row, block[i], out=row)
        full = t[r]
        odd2, odd1, spare = odd1, spare, odd2
        torch.minimum(full[:, 1:W + 1], full[:, 3:W + 3], out=odd1)
        torch.minimum(full[:, :W], full[:, 4:W + 4], out=even1)
        prev = row


def chamfer_distance(zero: Tensor, cap: float) -> Tensor:
    """OpenCV ``distanceTransform(DIST_L2, 5)`` to the ``zero`` pixels, truncated at ``cap``.

    (B, 1, H, W) bool -> float32. OpenCV's algorithm: the 5x5 chamfer mask (weights 1, 1.4, 2.1969 as
    float32), a forward raster pass and a backward one over a buffer with a 2-pixel border of "infinity". A
    row depends on the two rows before it (vectorised over the row and the batch, rows stored first) and,
    through the horizontal step, on its own left (right) neighbour: that recursion
    ``r[x] = min(c[x], r[x-1] + 1)`` is ``x + cummin(c - x)`` (a suffix minimum going right to left). Path
    costs are summed in float64 and rounded to float32 once (OpenCV 5 rounds after every step: the two
    differ by float32 ulps).

    Small batches are cut into horizontal strips with ``cap + 1`` rows of halo above and below, worked as
    one batch: every step costs >= 1 per row, so a distance below ``cap`` never looks further, and the
    truncated result is the same with a third of the sequential row steps.
    """
    B, _, H, W = zero.shape
    dev = zero.device
    halo = math.ceil(cap) + 1
    n = max(1, min(-(-32 // max(B, 1)), H // (2 * halo)))  # strips per image: >= ~32 rows per row step
    S = -(-H // n)
    z = zero[:, 0].transpose(0, 1)  # (H, B, W) view: rows first
    block = None
    if n > 1:
        g = torch.arange(n, device=dev).view(-1, 1) * S - halo + torch.arange(S + 2 * halo, device=dev)  # (n, R)
        valid = (g >= 0) & (g < H)
        z = (z[g.clamp(0, H - 1).t()] & valid.t()[:, :, None, None]).reshape(S + 2 * halo, n * B, W)
        block = torch.where(valid.t(), 0.0, math.inf).to(torch.float64).repeat_interleave(B, 1)[:, :, None]
    R, N = z.shape[:2]
    t = new_output(zero, (R + 4, N, W + 4), torch.float64).fill_(math.inf)
    _chamfer_pass(t, z, block, backward=False)
    _chamfer_pass(t, None, block, backward=True)
    t = t[2:R + 2, :, 2:W + 2]  # (R, N, W)
    if n > 1:
        t = t[halo:halo + S].reshape(S, n, B, W).transpose(0, 1).reshape(n * S, B, W)[:H]
    out = new_output(zero, (B, 1, H, W), torch.float32)
    out[:, 0].copy_(t.transpose(0, 1))
    return out.clamp_(max=cap)


def box3(x: Tensor, rounding: str = "none", exact: torch.dtype = torch.float64) -> Tensor:
    """OpenCV ``blur(x, (3, 3))`` (normalised 3x3 box, ``BORDER_REFLECT_101``) on (B, 1, H, W).

    The 9-value sum is exact in ``exact`` (float64 for float32 distances; float32 suffices for 8-bit
    integers) and is scaled by ``1/9`` as OpenCV does for float images; ``rounding="round"`` gives the 8-bit
    result (``saturate_cast<uchar>``, no ties arise), ``"floor"`` the ``.astype(np.uint8)`` of a float result.
    """
    p = pad2d(x.to(exact), (1, 1), (1, 1), "reflect101")
    s = p[..., :-2] + p[..., 1:-1] + p[..., 2:]  # (B, 1, H + 2, W)
    s = (s[..., :-2, :] + s[..., 1:-1, :] + s[..., 2:, :]) * (1.0 / 9.0)
    y = s.to(torch.float32)
    if rounding == "floor":
        y = y.floor_()
    elif rounding == "round":
        y = y.round_()
    return y.to(x.dtype)


def emboss(x: Tensor) -> Tensor:
    """OpenCV ``filter2D(x, CV_8U, [[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])`` (``BORDER_REFLECT_101``) on
    (B, 1, H, W) 8-bit valued floats: integer sums of shifted slices, saturated to [0, 255]."""
    H, W = x.shape[-2:]
    p = pad2d(x, (1, 1), (1, 1), "reflect101")

    def at(i: int, j: int) -> Tensor:
        return p[..., i:i + H, j:j + W]

    y = at(1, 1) + at(1, 2) + at(2, 1) - at(0, 1) - at(1, 0) + 2 * (at(2, 2) - at(0, 0))
    return y.clamp_(0, 255)


def equalize_hist(x: Tensor) -> Tensor:
    """OpenCV ``equalizeHist`` per image on (B, 1, H, W) 8-bit valued floats."""
    B = x.shape[0]
    v = x.reshape(B, -1).long()
    hist = torch.zeros(B, 256, dtype=torch.long, device=x.device).scatter_add_(1, v, torch.ones_like(v))
    total = v.shape[1]
    i0 = (hist > 0).long().argmax(1)  # first non-empty bin
    h0 = hist.gather(1, i0[:, None])  # (B, 1)
    scale = 255.0 / (total - h0).clamp(min=1).to(torch.float32)
    lut = torch.round((hist.cumsum(1) - h0).to(torch.float32) * scale).clamp(0, 255)
    flat = (h0 == total).expand(B, 256)
    lut = torch.where(flat, torch.arange(256, device=x.device, dtype=torch.float32).expand(B, 256), lut)
    return lut.gather(1, v).reshape(x.shape).to(x.dtype)


def spatter_apply(x: Tensor, c: tuple[float, ...], field: Tensor) -> Tensor:
    """ImageNet-C spatter given the (B, 1, H, W) normal field ``N(c0, c1)``: water (c5 == 0) or mud.

    Worked a few images at a time, except the distance transform, whose row recursion runs over the whole
    batch at once.
    """
    B = x.shape[0]
    out = new_output(x)
    step = image_chunk(field)
    chunks = [(b0, min(B, b0 + step)) for b0 in range(0, B, step)]
    if c[5] == 0:  # water: Canny edges -> distance -> blur -> equalise -> emboss -> blur, a turquoise tint
        l8 = torch.empty(field.shape, dtype=torch.float32, device=x.device)
        edges = torch.empty(field.shape, dtype=torch.bool, device=x.device)
        k = gaussian_kernel1d(float(c[2]), 4.0, torch.float64, torch.device("cpu")).tolist()
        for b0, b1 in chunks:
            liquid = taps_filter(field[b0:b1].to(torch.float32), k, "nearest")
            liquid = liquid.masked_fill_(liquid < c[3], 0.0)
            torch.floor(liquid.mul_(255), out=l8[b0:b1]).clamp_(0, 255)
            edges[b0:b1] = canny(l8[b0:b1], 50.0, 150.0)
        dist = chamfer_distance(edges, 20.0)  # (B, 1, H, W)
        ker_color = torch.tensor([175 / 255.0, 238 / 255.0, 238 / 255.0], device=x.device).view(1, 3, 1, 1)
        for b0, b1 in chunks:
            d = box3(dist[b0:b1], "floor")  # .astype(uint8)
            d = box3(emboss(equalize_hist(d)), "round", exact=torch.float32)  # blur on uint8 rounds
            m = l8[b0:b1] * d
            m = m / m.amax((2, 3), keepdim=True).clamp(min=1e-12) * c[4]
            torch.add(x[b0:b1], (m * ker_color).to(x.dtype), out=out[b0:b1]).clamp_(0, 1)
        return out
    color = torch.tensor([63 / 255.0, 42 / 255.0, 20 / 255.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    k2 = gaussian_kernel1d(float(c[2]), 4.0, torch.float64, torch.device("cpu")).tolist()
    k4 = gaussian_kernel1d(float(c[4]), 4.0, torch.float64, torch.device("cpu")).tolist()
    for b0, b1 in chunks:  # mud: thresholded, blurred blobs of brown
        liquid = taps_filter(field[b0:b1].to(torch.float32), k2, "nearest")
        m = taps_filter((liquid > c[3]).to(torch.float32), k4, "nearest")
        m = m.masked_fill_(m < 0.8, 0.0).to(x.dtype)
        o = out[b0:b1]
        torch.mul(x[b0:b1], 1 - m, out=o).add_(color * m).clamp_(0, 1)
    return out
