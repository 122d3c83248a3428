"""Batched torch kernels behind :mod:`vlmkit.perturb.corruptions` (ImageNet-C, Hendrycks & Dietterich 2019).

Every function here works on whole batches with torch ops only (CPU and CUDA). The functions whose name
ends in ``_apply`` take their random fields as arguments, so that tests can feed them the exact draws of
the reference implementation (``imagecorruptions``) and check the deterministic part bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

# ----------------------------------------------------------------------------------------- padding / filters


def pad_index(n: int, left: int, right: int, mode: str, device: torch.device) -> Tensor:
    """Source indices for padding a length-``n`` axis by ``left``/``right`` samples.

    Modes: ``nearest`` (edge replicated; scipy ``nearest``), ``reflect101`` (OpenCV ``BORDER_REFLECT_101``,
    edge not repeated) and ``symmetric`` (scipy ``reflect``, edge repeated). Any pad width is allowed.
    """
    i = torch.arange(-left, n + right, device=device)
    if mode == "nearest":
        return i.clamp(0, n - 1)
    if mode == "symmetric":
        j = i.remainder(2 * n)
        return torch.where(j < n, j, 2 * n - 1 - j)
    if mode == "reflect101":
        if n == 1:
            return torch.zeros_like(i)
        j = i.remainder(2 * n - 2)
        return torch.where(j < n, j, 2 * n - 2 - j)
    raise ValueError(f"unknown pad mode {mode!r}")


def pad2d(x: Tensor, ph: tuple[int, int], pw: tuple[int, int], mode: str) -> Tensor:
    """Pad the last two dims of ``x`` with :func:`pad_index` semantics."""
    h, w = x.shape[-2:]
    if ph == (0, 0) and pw == (0, 0):
        return x
    fast = {"nearest": "replicate", "reflect101": "reflect"}.get(mode)
    if fast and x.ndim == 4 and (fast == "replicate" or max(ph) < h and max(pw) < w):
        return F.pad(x, (pw[0], pw[1], ph[0], ph[1]), mode=fast)  # same semantics, much faster on CPU
    x = x.index_select(-2, pad_index(h, ph[0], ph[1], mode, x.device))
    return x.index_select(-1, pad_index(w, pw[0], pw[1], mode, x.device))


def gaussian_kernel1d(sigma: float, truncate: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """scipy's ``gaussian_filter1d`` weights: radius ``int(truncate * sigma + 0.5)``, normalised."""
    r = int(truncate * float(sigma) + 0.5)
    t = torch.arange(-r, r + 1, dtype=torch.float64, device=device)
    k = torch.exp(-0.5 * t * t / float(sigma) ** 2)
    return (k / k.sum()).to(dtype)


def filter_matrix(n: int, k: Tensor, mode: str) -> Tensor:
    """Dense (n, n) operator of a centred 1-D correlation with ``k`` and ``mode`` borders (folded in)."""
    r = (k.numel() - 1) // 2
    idx = pad_index(n, r, r, mode, k.device)  # (n + 2r,)
    rows = torch.arange(n, device=k.device).view(-1, 1).expand(n, k.numel())
    cols = idx[torch.arange(n, device=k.device).view(-1, 1) + torch.arange(k.numel(), device=k.device).view(1, -1)]
    m = torch.zeros(n, n, dtype=k.dtype, device=k.device)
    return m.index_put_((rows, cols), k.view(1, -1).expand(n, -1).clone(), accumulate=True)


def sep_filter(x: Tensor, kh: Tensor, kw: Tensor, mode: str) -> Tensor:
    """Separable correlation of every channel of ``x`` (..., H, W) with ``kh`` (rows) and ``kw`` (cols),
    as two dense matrix products (borders folded into the matrices; fast on CPU and GPU)."""
    H, W = x.shape[-2:]
    mh = filter_matrix(H, kh.to(x.dtype), mode)  # (H, H)
    mw = filter_matrix(W, kw.to(x.dtype), mode)  # (W, W)
    return mh @ (x @ mw.t())


def gaussian_filter(x: Tensor, sigma: float | tuple[float, float], mode: str = "nearest",
                    truncate: float = 4.0) -> Tensor:
    """``skimage.filters.gaussian`` / ``scipy.ndimage.gaussian_filter`` over the last two dims."""
    sh, sw = (sigma, sigma) if not isinstance(sigma, tuple) else sigma
    kh = gaussian_kernel1d(sh, truncate, x.dtype, x.device)
    kw = gaussian_kernel1d(sw, truncate, x.dtype, x.device)
    return sep_filter(x, kh, kw, mode)


def correlate_fft(xp: Tensor, kernel: Tensor, out_hw: tuple[int, int]) -> Tensor:
    """``out[y, x] = sum_ij kernel[i, j] * xp[y + i, x + j]`` for the top-left ``out_hw``, by FFT.

    Args:
        xp: (B, C, Hp, Wp) already padded input.
        kernel: (kh, kw) or (B, 1, kh, kw) (one kernel per image), ``kh <= Hp - H + 1``.
    """
    Hp, Wp = xp.shape[-2:]
    k = kernel if kernel.ndim == 4 else kernel[None, None]
    kh, kw = k.shape[-2:]
    ct = torch.float64 if xp.dtype == torch.float64 else torch.float32
    fx = torch.fft.rfft2(xp.to(ct), s=(Hp, Wp))
    fk = torch.fft.rfft2(k.to(device=xp.device, dtype=ct), s=(Hp, Wp))
    y = torch.fft.irfft2(fx * fk.conj(), s=(Hp, Wp))
    return y[..., :out_hw[0], :out_hw[1]].to(xp.dtype)


def filter2d(x: Tensor, kernel: Tensor, mode: str = "reflect101") -> Tensor:
    """OpenCV ``filter2D`` (correlation, centred anchor) of every channel of ``x`` (..., H, W)."""
    shape = x.shape
    kh, kw = kernel.shape
    y = pad2d(x.reshape(-1, 1, shape[-2], shape[-1]), (kh // 2, (kh - 1) // 2), (kw // 2, (kw - 1) // 2), mode)
    if kh * kw > 49:  # large kernels (defocus disks): FFT
        return correlate_fft(y, kernel, (shape[-2], shape[-1])).reshape(shape)
    return F.conv2d(y, kernel.to(y.dtype).view(1, 1, kh, kw)).reshape(shape)


# ----------------------------------------------------------------------------------------- colour


def rgb_to_hsv(x: Tensor) -> Tensor:
    """``skimage.color.rgb2hsv`` on (B, 3, H, W) in [0, 1] (same tie-breaking: blue > green > red)."""
    r, g, b = x.unbind(1)
    v = x.amax(1)
    delta = v - x.amin(1)
    safe = torch.where(delta == 0, torch.ones_like(delta), delta)
    s = torch.where(delta == 0, torch.zeros_like(v), delta / torch.where(v == 0, torch.ones_like(v), v))
    h = torch.zeros_like(v)
    h = torch.where(r == v, (g - b) / safe, h)
    h = torch.where(g == v, 2.0 + (b - r) / safe, h)
    h = torch.where(b == v, 4.0 + (r - g) / safe, h)
    h = torch.remainder(h / 6.0, 1.0)
    h = torch.where(delta == 0, torch.zeros_like(h), h)
    return torch.stack([h, s, v], 1)


def hsv_to_rgb(hsv: Tensor) -> Tensor:
    """``skimage.color.hsv2rgb`` on (B, 3, H, W) (closed form ``v - v s clamp(min(k, 4 - k), 0, 1)`` with
    ``k = (n + 6 h) mod 6``, n = 5, 3, 1 for R, G, B: the same sextant formulas, fewer ops)."""
    h, s, v = hsv[:, :1], hsv[:, 1:2], hsv[:, 2:]
    n = torch.tensor([5.0, 3.0, 1.0], dtype=hsv.dtype, device=hsv.device).view(1, 3, 1, 1)
    k = torch.remainder(n + h * 6, 6)
    return v - v * s * torch.minimum(k, 4 - k).clamp(0, 1)


def rgb_to_gray(x: Tensor) -> Tensor:
    """OpenCV ``COLOR_RGB2GRAY`` weights, (B, 3, H, W) -> (B, 1, H, W)."""
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


# ----------------------------------------------------------------------------------------- blur helpers


def disk_kernel(radius: int, alias_blur: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """ImageNet-C's anti-aliased disk: 0/1 disk normalised, then a 3x3 (5x5 if radius > 8) Gaussian."""
    L = torch.arange(-8, 9) if radius <= 8 else torch.arange(-radius, radius + 1)
    ks = 3 if radius <= 8 else 5
    Y, X = torch.meshgrid(L, L, indexing="ij")
    d = ((X ** 2 + Y ** 2) <= radius ** 2).to(torch.float32)
    d = d / d.sum()
    t = torch.arange(ks, dtype=torch.float64) - (ks - 1) / 2
    g = torch.exp(-t * t / (2 * alias_blur ** 2))
    g = (g / g.sum()).to(torch.float32)
    d = sep_filter(d[None, None], g, g, "reflect101")[0, 0]
    return d.to(device=device, dtype=dtype)


def shift_clamped(x: Tensor, dy: Tensor, dx: Tensor) -> Tensor:
    """``out[b, :, i, j] = x[b, :, clamp(i - dy[b]), clamp(j - dx[b])]`` (the reference's ``shift``)."""
    B, C, H, W = x.shape
    rows = (torch.arange(H, device=x.device)[None] - dy[:, None]).clamp(0, H - 1)  # (B, H)
    cols = (torch.arange(W, device=x.device)[None] - dx[:, None]).clamp(0, W - 1)  # (B, W)
    y = x.gather(2, rows[:, None, :, None].expand(B, C, H, W))
    return y.gather(3, cols[:, None, None, :].expand(B, C, H, W))


def motion_blur_apply(x: Tensor, radius: int, sigma: float, angle_deg: Tensor) -> Tensor:
    """ImageNet-C ``_motion_blur``: a one-sided Gaussian-weighted sum of edge-clamped shifts along ``angle``.

    Args:
        x: (B, C, H, W) images.
        radius, sigma: kernel width ``2 * radius + 1`` and its Gaussian fall-off.
        angle_deg: (B,) angle per image, in degrees.
    """
    B, C, H, W = x.shape
    width = 2 * radius + 1
    i = torch.arange(width, dtype=torch.float64, device=x.device)
    k = torch.exp(-i ** 2 / (2 * sigma ** 2)) / (math.sqrt(2 * math.pi) * sigma)
    k = k / k.sum()
    a = torch.deg2rad(angle_deg.to(device=x.device, dtype=torch.float64))
    p0, p1 = width * torch.sin(a), width * torch.cos(a)
    hyp = torch.hypot(p0, p1)
    dy = -torch.ceil(i[None] * p0[:, None] / hyp[:, None] - 0.5).long()  # (B, width)
    dx = -torch.ceil(i[None] * p1[:, None] / hyp[:, None] - 0.5).long()
    ok = ((dy.abs() < H) & (dx.abs() < W)).to(torch.float64).cumprod(1)  # the reference stops at the border
    # out[y, x] = sum_j w_j x[clamp(y - dy_j), clamp(x - dx_j)]: a correlation of the edge-replicated image
    # with a per-image kernel holding w_j at (P - dy_j, P - dx_j); evaluated by FFT.
    P = width - 1
    ker = torch.zeros(B, 1, 2 * P + 1, 2 * P + 1, dtype=torch.float64, device=x.device)
    bi = torch.arange(B, device=x.device).view(-1, 1).expand(B, width)
    ker.index_put_((bi, torch.zeros_like(bi), (P - dy).clamp(0, 2 * P), (P - dx).clamp(0, 2 * P)),
                   k.view(1, -1) * ok, accumulate=True)
    xp = pad2d(x, (P, P), (P, P), "nearest")
    return correlate_fft(xp, ker, (H, W))


def np_arange(start: float, stop: float, step: float) -> list[float]:
    """``numpy.arange(start, stop, step)`` values, computed as numpy does: ``start + i * delta`` with
    ``delta = (start + step) - start``."""
    n = int(math.ceil((stop - start) / step))
    delta = (start + step) - start
    return [start + i * delta for i in range(n)]


def clipped_zoom(x: Tensor, z: float, crop: bool = True) -> Tensor:
    """ImageNet-C ``clipped_zoom``: centre crop of ``ceil(side / z)`` px, order-1 ``scipy.ndimage.zoom``
    by ``z`` (corner-aligned bilinear). (B, C, H, W) -> (B, C, H, W) cut to the top-left ``H x W``
    (``crop=False``: the zoomed crop itself, ``round(ceil(side / z) * z)`` >= side px, as snow uses it)."""
    H, W = x.shape[-2:]
    ch, cw = int(math.ceil(H / z)), int(math.ceil(W / z))
    top, left = (H - ch) // 2, (W - cw) // 2
    oh, ow = int(round(ch * z)), int(round(cw * z))
    y = F.interpolate(x[..., top:top + ch, left:left + cw], size=(oh, ow), mode="bilinear", align_corners=True)
    return y[..., :H, :W] if crop else y


# ----------------------------------------------------------------------------------------- glass blur


def glass_shuffle_index(B: int, H: int, W: int, d: int, iterations: int, generator: torch.Generator,
                        device: torch.device, deltas: Tensor | None = None) -> Tensor:
    """Flat source index (B, H*W) of ImageNet-C's glass-blur pixel shuffle, computed exactly in parallel.

    The reference scans ``h = H-d .. d+1``, ``w = W-d .. d+1`` (descending) and does
    ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` with ``(dx, dy)`` uniform in ``[-d, d)``. On an RGB numpy
    array both sides are views, so this "swap" is in fact the copy ``x[h, w] = x[h', w']``. Hence the
    value ending at ``p`` is the one at ``p + delta_p`` when ``p`` is visited: if that position was already
    visited (later in raster order, inside the scanned box) it is *its* final value, otherwise the
    original. That chain is resolved by pointer jumping (O(log chain) batched gathers), which gives the
    reference's exact result for the same ``deltas``.

    Args:
        deltas: optional (B, iterations, n_h, n_w, 2) integer ``(dx, dy)`` per scanned position, in scan
            order (as the reference draws them); drawn from ``generator`` when None.
    """
    hs = torch.arange(H - d, d, -1, device=device)
    ws = torch.arange(W - d, d, -1, device=device)
    nh, nw = hs.numel(), ws.numel()
    if deltas is None:
        deltas = torch.randint(-d, d, (B, iterations, nh, nw, 2), generator=generator, device=device)
    deltas = deltas.to(device=device, dtype=torch.long)
    ident = torch.arange(H * W, device=device).expand(B, H * W)
    total = ident.clone()
    for it in range(iterations):
        dx, dy = deltas[:, it, ..., 0], deltas[:, it, ..., 1]  # (B, nh, nw)
        hp, wp = hs.view(1, -1, 1) + dy, ws.view(1, 1, -1) + dx
        target = hp * W + wp
        visited_before = (hp >= d + 1) & (hp <= H - d) & (wp >= d + 1) & (wp <= W - d) & (
            (hp > hs.view(1, -1, 1)) | ((hp == hs.view(1, -1, 1)) & (wp > ws.view(1, 1, -1))))
        a = ident.clone()
        jump = ident.clone()
        pos = (hs.view(-1, 1) * W + ws.view(1, -1)).reshape(-1)
        a[:, pos] = target.reshape(B, -1)
        jump[:, pos] = torch.where(visited_before, target, pos.view(1, nh, nw)).reshape(B, -1)
        while True:  # pointer jumping to the end of each chain
            nxt = jump.gather(1, jump)
            if torch.equal(nxt, jump):
                break
            jump = nxt
        src = a.gather(1, jump)  # out_it[p] = in_it[src[p]]
        total = total.gather(1, src)
    return total


# ----------------------------------------------------------------------------------------- fog


def plasma_fractal(batch: int, mapsize: int, wibbledecay: float, generator: torch.Generator | None,
                   device: torch.device, dtype: torch.dtype = torch.float64,
                   sampler: Callable[[tuple[int, ...]], Tensor] | None = None) -> Tensor:
    """Diamond-square height maps (B, mapsize, mapsize) in [0, 1], as ImageNet-C's ``plasma_fractal``.

    ``sampler(shape)`` returns U(-1, 1) draws (tests pass the reference's numpy stream); by default they
    come from ``generator``.
    """
    if sampler is None:
        def sampler(shape: tuple[int, ...]) -> Tensor:
            return torch.rand(shape, generator=generator, device=device, dtype=dtype) * 2 - 1
    m = torch.zeros(batch, mapsize, mapsize, device=device, dtype=dtype)
    step, wibble = mapsize, 100.0

    def wibbled(a: Tensor) -> Tensor:
        return a / 4 + wibble * wibble * sampler(tuple(a.shape)).to(device=device, dtype=dtype)

    while step >= 2:
        h = step // 2
        corner = m[:, 0::step, 0::step]
        sq = corner + torch.roll(corner, -1, 1)
        sq = sq + torch.roll(sq, -1, 2)
        m[:, h::step, h::step] = wibbled(sq)
        dr, ul = m[:, h::step, h::step], m[:, 0::step, 0::step]
        lt = dr + torch.roll(dr, 1, 1) + ul + torch.roll(ul, -1, 2)
        m[:, 0::step, h::step] = wibbled(lt)
        tt = dr + torch.roll(dr, 1, 2) + ul + torch.roll(ul, -1, 1)
        m[:, h::step, 0::step] = wibbled(tt)
        step //= 2
        wibble /= wibbledecay
    m = m - m.amin((1, 2), keepdim=True)
    return m / m.amax((1, 2), keepdim=True)


# ----------------------------------------------------------------------------------------- frost

FROST_DIR = Path(__file__).resolve().parent / "frost"
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
        nh, nw = int(math.ceil(th * s)), int(math.ceil(tw * s))
        big = F.interpolate(tex[None], size=(nh, nw), mode="bicubic", align_corners=False)[0]
        _FROST_CACHE[key] = big.round().clamp(0, 255).to(device)
    return _FROST_CACHE[key]


def frost_apply(x: Tensor, c: tuple[float, float], idx: Sequence[int], starts: Sequence[tuple[int, int]]) -> Tensor:
    """``clip(c0 * x + c1 * crop / 255)`` with texture ``idx[b]`` cropped at ``starts[b]`` (row, col)."""
    B, _, H, W = x.shape
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
    layer = motion_blur_apply(layer, int(c[4]), float(c[5]), angle_deg)[..., :H, :W]  # (B, 1, H, W)
    gray = rgb_to_gray(x)
    x = c[6] * x + (1 - c[6]) * torch.maximum(x, gray * 1.5 + 0.5)
    return (x + layer + torch.flip(layer, (-2, -1))).clamp(0, 1)


# ----------------------------------------------------------------------------------------- spatter


def canny(img: Tensor, low: float, high: float) -> Tensor:
    """OpenCV ``Canny(img, low, high)`` (3x3 Sobel, L1 gradient) on (B, 1, H, W) 8-bit valued floats.

    Returns a bool edge map. Non-maximum suppression uses OpenCV's integer sector test; hysteresis grows
    the strong edges through 8-connected weak pixels until nothing changes.
    """
    p = pad2d(img, (1, 1), (1, 1), "nearest")
    sob = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=img.dtype, device=img.device)
    gx = F.conv2d(p, sob.view(1, 1, 3, 3))
    gy = F.conv2d(p, sob.t().contiguous().view(1, 1, 3, 3))
    mag = gx.abs() + gy.abs()
    mp = F.pad(mag, (1, 1, 1, 1))  # zero border, as OpenCV's magnitude buffer

    def nb(dy: int, dx: int) -> Tensor:
        H, W = mag.shape[-2:]
        return mp[..., 1 + dy:1 + dy + H, 1 + dx:1 + dx + W]

    ax = gx.abs().long()
    ay = gy.abs().long() << 15
    tg22 = ax * 13573
    tg67 = tg22 + (ax << 16)
    horiz = ay < tg22
    vert = ~horiz & (ay > tg67)
    diag = ~horiz & ~vert
    s_neg = (gx * gy) < 0  # (dx ^ dy) < 0  ->  s = -1
    keep_h = (mag > nb(0, -1)) & (mag >= nb(0, 1))
    keep_v = (mag > nb(-1, 0)) & (mag >= nb(1, 0))
    keep_d = torch.where(s_neg, (mag > nb(-1, 1)) & (mag > nb(1, -1)), (mag > nb(-1, -1)) & (mag > nb(1, 1)))
    cand = (mag > low) & ((horiz & keep_h) | (vert & keep_v) | (diag & keep_d))
    strong = cand & (mag > high)
    edges = strong
    while True:
        grown = cand & (F.max_pool2d(edges.to(img.dtype), 3, 1, 1) > 0)
        grown = grown | edges
        if torch.equal(grown, edges):
            return edges
        edges = grown


def chamfer_distance(zero: Tensor, cap: float) -> Tensor:
    """OpenCV ``distanceTransform(DIST_L2, 5)`` (chamfer 1 / 1.4 / 2.1969) to the ``zero`` pixels,
    truncated at ``cap``. (B, 1, H, W) bool -> float32. Jacobi min-plus relaxation: after k rounds every
    path of k moves is counted, and a distance <= cap needs at most ceil(cap) moves."""
    big = 1e4
    d = torch.where(zero, torch.zeros_like(zero, dtype=torch.float32), torch.full_like(zero, cap, dtype=torch.float32))
    H, W = d.shape[-2:]
    offs = []
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            a, b = abs(dy), abs(dx)
            if (a, b) in ((0, 1), (1, 0)):
                offs.append((dy, dx, 1.0))
            elif (a, b) == (1, 1):
                offs.append((dy, dx, 1.4))
            elif (a, b) in ((1, 2), (2, 1)):
                offs.append((dy, dx, 2.1969))
    for _ in range(int(math.ceil(cap))):
        p = F.pad(d, (2, 2, 2, 2), value=big)
        new = d
        for dy, dx, w in offs:
            new = torch.minimum(new, p[..., 2 + dy:2 + dy + H, 2 + dx:2 + dx + W] + w)
        if torch.equal(new, d):
            break
        d = new
    return d.clamp(max=cap)


def box3(x: Tensor) -> Tensor:
    """OpenCV ``blur(x, (3, 3))`` (mean, ``BORDER_REFLECT_101``) on (B, 1, H, W)."""
    k = torch.ones(3, dtype=x.dtype, device=x.device) / 3
    return sep_filter(x, k, k, "reflect101")


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
    """ImageNet-C spatter given the (B, 1, H, W) normal field ``N(c0, c1)``: water (c5 == 0) or mud."""
    liquid = gaussian_filter(field.to(torch.float32), float(c[2]), "nearest")
    liquid = torch.where(liquid < c[3], torch.zeros_like(liquid), liquid)
    if c[5] == 0:
        l8 = torch.floor(liquid * 255).clamp(0, 255)
        edges = canny(l8, 50.0, 150.0)
        dist = chamfer_distance(edges, 20.0)
        dist = torch.floor(box3(dist))  # .astype(uint8)
        dist = equalize_hist(dist)
        ker = torch.tensor([[-2.0, -1, 0], [-1, 1, 1], [0, 1, 2]], device=x.device)
        dist = filter2d(dist, ker).clamp(0, 255)
        dist = torch.round(box3(dist))  # blur on uint8 rounds
        m = l8 * dist
        m = m / m.amax((2, 3), keepdim=True).clamp(min=1e-12) * c[4]
        color = torch.tensor([175 / 255.0, 238 / 255.0, 238 / 255.0], device=x.device).view(1, 3, 1, 1)
        return (x + (m * color).to(x.dtype)).clamp(0, 1)
    m = (liquid > c[3]).to(torch.float32)
    m = gaussian_filter(m, float(c[4]), "nearest")
    m = torch.where(m < 0.8, torch.zeros_like(m), m).to(x.dtype)
    color = torch.tensor([63 / 255.0, 42 / 255.0, 20 / 255.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * (1 - m) + color * m).clamp(0, 1)


# ----------------------------------------------------------------------------------------- elastic


def elastic_apply(x: Tensor, severity_alpha: float, ux: Tensor, uy: Tensor) -> Tensor:
    """ImageNet-C elastic transform given the (B, 1, H, W) uniform fields ``U(-H/200, H/200)`` for dx, dy.

    The fields are smoothed with a Gaussian of sigma ``(H, W) / 100`` (truncate 3, scipy ``reflect``
    padding), scaled by ``alpha`` and used to resample ``x`` bilinearly with half-sample reflection
    (``map_coordinates(order=1, mode='reflect')``).
    """
    B, C, H, W = x.shape
    sig = (H * 0.01, W * 0.01)
    dx = gaussian_filter(ux.to(torch.float64), sig, "symmetric", truncate=3.0) * severity_alpha
    dy = gaussian_filter(uy.to(torch.float64), sig, "symmetric", truncate=3.0) * severity_alpha
    yy = torch.arange(H, device=x.device, dtype=torch.float64).view(1, 1, H, 1) + dy.float().double()
    xx = torch.arange(W, device=x.device, dtype=torch.float64).view(1, 1, 1, W) + dx.float().double()
    grid = torch.stack([(xx + 0.5) / W * 2 - 1, (yy + 0.5) / H * 2 - 1], -1)[:, 0]  # (B, H, W, 2)
    out = F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="reflection", align_corners=False)
    return out.clamp(0, 1)


# ----------------------------------------------------------------------------------------- pixelate / JPEG


def pil_box_weights(n_in: int, n_out: int, device: torch.device) -> Tensor:
    """Pillow's BOX resampling weights (n_out, n_in) (``precompute_coeffs`` with the box filter)."""
    scale = n_in / n_out
    fscale = max(scale, 1.0)
    support = 0.5 * fscale
    w = torch.zeros(n_out, n_in, dtype=torch.float64)
    for o in range(n_out):
        center = (o + 0.5) * scale
        lo, hi = max(int(center - support + 0.5), 0), min(int(center + support + 0.5), n_in)
        for i in range(lo, hi):
            t = (i - center + 0.5) / fscale
            w[o, i] = 1.0 if -0.5 < t <= 0.5 else 0.0
        if w[o].sum() > 0:
            w[o] /= w[o].sum()
    return w.to(device)


def pixelate_apply(x: Tensor, c: float) -> Tensor:
    """Pillow ``resize(BOX)`` to ``int(side * c)`` then ``resize(NEAREST)`` back, on the 8-bit grid
    (each Pillow pass rounds to 8 bit, so the output is quantised to k / 255 like the reference's)."""
    B, C, H, W = x.shape
    h, w = int(H * c), int(W * c)
    wh = pil_box_weights(H, h, x.device).to(x.dtype)
    ww = pil_box_weights(W, w, x.device).to(x.dtype)
    y = torch.round(torch.einsum("bchw,ow->bcho", x * 255, ww))  # horizontal pass first, as Pillow
    y = torch.round(torch.einsum("bchw,oh->bcow", y, wh))
    ri = ((torch.arange(H, device=x.device) + 0.5) * (h / H)).floor().long().clamp(max=h - 1)
    ci = ((torch.arange(W, device=x.device) + 0.5) * (w / W)).floor().long().clamp(max=w - 1)
    eh = F.one_hot(ri, h).to(x.dtype)  # (H, h) nearest-neighbour selection as exact 0/1 matmuls
    ew = F.one_hot(ci, w).to(x.dtype)  # (W, w)
    return ((eh @ y @ ew.t()) / 255).clamp(0, 1)


_LUMA_Q = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
           14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
           49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]
_CHROMA_Q = [17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
             47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32


def jpeg_qtable(quality: int, chroma: bool, device: torch.device) -> Tensor:
    """IJG/libjpeg quality scaling of the Annex K tables (``jpeg_set_quality(q, force_baseline=TRUE)``)."""
    q = max(1, min(100, quality))
    scale = 5000 // q if q < 50 else 200 - 2 * q
    base = torch.tensor(_CHROMA_Q if chroma else _LUMA_Q, dtype=torch.int64)
    t = ((base * scale + 50) // 100).clamp(1, 255)
    return t.view(8, 8).to(device=device, dtype=torch.float32)


def _dct_matrix(device: torch.device, dtype: torch.dtype) -> Tensor:
    n = torch.arange(8, dtype=torch.float64)
    k = n.view(-1, 1)
    m = torch.cos((2 * n.view(1, -1) + 1) * k * math.pi / 16) * math.sqrt(2 / 8)
    m[0] /= math.sqrt(2)
    return m.to(device=device, dtype=dtype)


def _jpeg_plane(p: Tensor, qt: Tensor, D: Tensor) -> Tensor:
    """Level-shift, 8x8 DCT, quantise (round half away from zero), dequantise, IDCT, round to 8 bit."""
    N, H, W = p.shape
    blk = (p - 128).reshape(N, H // 8, 8, W // 8, 8).permute(0, 1, 3, 2, 4).reshape(-1, 64)  # (blocks, 64)
    D2 = torch.kron(D, D)  # vec(D X D^T) = (D kron D) vec(X), row-major
    qv = qt.reshape(1, 64)
    coef = blk @ D2.t()
    q = torch.sign(coef) * torch.floor(coef.abs() / qv + 0.5)
    rec = (q * qv) @ D2
    rec = rec.reshape(N, H // 8, W // 8, 8, 8).permute(0, 1, 3, 2, 4).reshape(N, H, W)
    return torch.round(rec + 128).clamp(0, 255)


def jpeg_apply(x: Tensor, quality: int) -> Tensor:
    """Baseline JPEG round trip as Pillow/libjpeg do it at this quality: 8-bit JFIF YCbCr, 4:2:0 chroma
    (2x2 mean), 8x8 DCT quantised with the quality-scaled IJG tables, fancy (triangle) chroma
    upsampling on decode. Float DCT instead of libjpeg's integer one: close, not bit-exact."""
    B, C, H, W = x.shape
    dt = torch.float64  # coefficient rounding sits on .5 ties often enough for float32 to matter
    rgb = torch.round(x.to(dt) * 255)
    ph, pw = (-H) % 16, (-W) % 16
    rgb = pad2d(rgb, (0, ph), (0, pw), "nearest")  # libjpeg replicates the last row / column
    r, g, b = rgb.unbind(1)
    y = torch.round(0.299 * r + 0.587 * g + 0.114 * b)
    cb = torch.round(-0.168735892 * r - 0.331264108 * g + 0.5 * b + 128)
    cr = torch.round(0.5 * r - 0.418687589 * g - 0.081312411 * b + 128)
    sub = torch.round(F.avg_pool2d(torch.stack([cb, cr], 1), 2))  # (B, 2, H/2, W/2)
    D = _dct_matrix(x.device, dt)
    yq = _jpeg_plane(y, jpeg_qtable(quality, False, x.device).to(dt), D)
    cq = _jpeg_plane(sub.reshape(B * 2, *sub.shape[-2:]), jpeg_qtable(quality, True, x.device).to(dt), D)
    cq = cq.reshape(B, 2, *sub.shape[-2:])
    up = torch.round(F.interpolate(cq, scale_factor=2, mode="bilinear", align_corners=False))
    cb, cr = up[:, 0] - 128, up[:, 1] - 128
    out = torch.stack([yq + 1.402 * cr, yq - 0.344136286 * cb - 0.714136286 * cr, yq + 1.772 * cb], 1)
    out = torch.round(out).clamp(0, 255)[..., :H, :W] / 255
    return out.to(x.dtype)
