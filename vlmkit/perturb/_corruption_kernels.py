"""Batched kernels behind :mod:`vlmkit.perturb.corruptions` (ImageNet-C, Hendrycks & Dietterich 2019).

Every function here works on whole batches (CPU and CUDA) with torch ops, except the JPEG round trip, which
calls libjpeg as the reference does (Pillow's encoder; torchvision's libjpeg-turbo decoder or Pillow's). The
functions whose name ends in ``_apply`` take their random fields as arguments, so that tests can feed them
the exact draws of the reference implementation (``imagecorruptions``) and check the deterministic part.

On CPU the kernels walk large batches a few images at a time (:data:`CHUNK_ELEMS`) and write into one
result allocated up front (:func:`new_output`): a fresh batch-sized temporary per step costs more in page
faults than most of these computations.
"""

from __future__ import annotations

import ctypes
import functools
import io
import math
import mmap
import re
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

Tensor = torch.Tensor

# ----------------------------------------------------------------------------------------- batch memory

CHUNK_ELEMS = 1 << 19
"""Values per working chunk (2 MiB of float32): the batched kernels below walk large batches a few images at
a time so that their temporaries stay in cache and are recycled by the allocator instead of being faulted in
afresh for every step (on CPU a fresh 38 MiB tensor costs more in page faults than most of these kernels)."""

_HUGE_PAGE = 2 << 20
_THP_MIN_BYTES = 8 << 20
_MADV_HUGEPAGE = getattr(mmap, "MADV_HUGEPAGE", 14)


@functools.lru_cache(maxsize=1)
def _madvise() -> Callable[[int, int, int], int] | None:
    """libc ``madvise`` on Linux (None elsewhere or when it cannot be loaded)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def new_output(x: Tensor, shape: Sequence[int] | None = None, dtype: torch.dtype | None = None) -> Tensor:
    """``torch.empty`` for a kernel's result (default: ``x``'s shape and dtype, contiguous, on ``x.device``).

    A large CPU result (>= 8 MiB) is advised for transparent huge pages before it is first written
    (``madvise(MADV_HUGEPAGE)`` on Linux; a no-op elsewhere or when THP is off): first-touch page faults
    on a fresh 38 MiB batch cost ~0.25 ms per 224-px image on 4 KiB pages, ~5x less on 2 MiB pages. The
    tensor is an ordinary torch allocation; only the kernel's paging hint changes.
    """
    out = torch.empty(tuple(x.shape if shape is None else shape), dtype=x.dtype if dtype is None else dtype,
                      device=x.device)
    nbytes = out.numel() * out.element_size()
    if out.device.type == "cpu" and nbytes >= _THP_MIN_BYTES:
        fn = _madvise()
        if fn is not None:
            start = -(-out.data_ptr() // _HUGE_PAGE) * _HUGE_PAGE
            end = (out.data_ptr() + nbytes) // _HUGE_PAGE * _HUGE_PAGE
            if end > start:
                fn(start, end - start, _MADV_HUGEPAGE)  # advice only: failure (THP disabled) is harmless
    return out


def image_chunk(x: Tensor, elems: int = CHUNK_ELEMS) -> int:
    """Images per working chunk for a batch ``x`` (B, ...): about ``elems`` values, at least one image."""
    return max(1, elems // max(1, x[0].numel())) if x.shape[0] else 1

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


def taps_filter(x: Tensor, k: Sequence[float], mode: str, out: Tensor | None = None,
                k_rows: Sequence[float] | None = None) -> Tensor:
    """Separable correlation of ``x`` (..., H, W) with the odd kernel ``k`` along each row, then ``k_rows``
    (default ``k``) along each column (as :func:`sep_filter`), as shifted multiply-adds on an edge-padded copy
    (``mode`` borders): ``len(k) + len(k_rows)`` operations per value instead of the ``H + W`` of the dense
    operators."""
    H, W = x.shape[-2:]
    kr = k if k_rows is None else k_rows
    r, rr = len(k) // 2, len(kr) // 2
    xp = pad2d(x, (0, 0), (r, r), mode)  # (..., H, W + 2r)
    acc = torch.mul(xp[..., :W], k[0])
    for t in range(1, 2 * r + 1):
        acc.add_(xp[..., t:t + W], alpha=k[t])
    yp = pad2d(acc, (rr, rr), (0, 0), mode)  # (..., H + 2rr, W)
    acc = torch.mul(yp[..., :H, :], kr[0], out=out)
    for t in range(1, 2 * rr + 1):
        acc.add_(yp[..., t:t + H, :], alpha=kr[t])
    return acc


def gaussian_blur_apply(x: Tensor, sigma: float, mode: str = "nearest", truncate: float = 4.0) -> Tensor:
    """:func:`gaussian_filter` of a batch, clamped to [0, 1], by :func:`taps_filter` a few images at a time
    (18 multiply-adds per value at sigma 1, 98 at sigma 6)."""
    k = gaussian_kernel1d(sigma, truncate, torch.float64, torch.device("cpu")).tolist()
    out = new_output(x)
    step = image_chunk(x)
    for b0 in range(0, x.shape[0], step):
        taps_filter(x[b0:b0 + step], k, mode, out=out[b0:b0 + step]).clamp_(0, 1)
    return out


# ----------------------------------------------------------------------------------------- noise


def impulse_apply(x: Tensor, amount: float, generator: torch.Generator) -> Tensor:
    """skimage ``random_noise(mode='s&p', amount)``: a value is replaced (``U < amount``) by 1 or 0 (``U' < 0.5``).

    The two uniform fields are ``torch.rand(x.shape)`` twice from ``generator`` (all of the first, then all
    of the second). On CPU they are drawn a few images at a time into one small buffer: the CPU generator
    fills values in order, so the draws and the result are bit-identical to two whole-batch ``torch.rand``
    calls and ``torch.where``. The first field's 0/1 "flipped" mask is parked in the output itself, which
    the second sweep then overwrites with ``lerp(x, salted, flipped)`` (exact for 0/1 weights).
    Elsewhere (CUDA's counter-based generator numbers values per call) both fields are drawn whole.
    """
    if x.device.type != "cpu":
        flipped = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) < amount
        salted = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) < 0.5
        return torch.where(flipped, salted.to(x.dtype), x)
    B = x.shape[0]
    step = image_chunk(x)
    out = new_output(x)
    u = torch.empty((min(step, B),) + tuple(x.shape[1:]), dtype=x.dtype)
    for b0 in range(0, B, step):  # first field -> flipped (0/1), kept in ``out``
        b1 = min(B, b0 + step)
        torch.lt(u[:b1 - b0].uniform_(generator=generator), amount, out=out[b0:b1])
    for b0 in range(0, B, step):  # second field -> salted (0/1), then the blend
        b1 = min(B, b0 + step)
        f, v = out[b0:b1], u[:b1 - b0]
        torch.lt(v.uniform_(generator=generator), 0.5, out=v)
        torch.lerp(x[b0:b1], v, f, out=f)  # exact for 0/1 weights: x where not flipped, salted where flipped
    return out


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


def fft_length(n: int) -> int:
    """Smallest ``2^a * {1, 3, 5, 15} >= n``: lengths the FFT libraries transform fastest (240 = 15 * 16 for
    the 224-px images here; higher powers of 3 or 5 -- 243, 250 -- measured 1.5-3x slower)."""
    best = 1 << max(0, (n - 1).bit_length())
    for f in (3, 5, 15):
        m = f
        while m < n:
            m *= 2
        best = min(best, m)
    return best


def crop_kernel(kernel: Tensor, rel: float = 1e-10) -> Tensor:
    """Centred crop of an odd square ``kernel`` to the ring outside which all weights are below
    ``rel * max|kernel|`` (the dropped weights change a [0, 1] result by < (#dropped) * rel)."""
    k = kernel.shape[0] // 2
    big = kernel.abs() > rel * float(kernel.abs().max())
    ys, xs = big.nonzero(as_tuple=True)
    r = int(max((ys - k).abs().max(), (xs - k).abs().max()))
    return kernel[k - r:k + r + 1, k - r:k + r + 1]


def defocus_apply(x: Tensor, kernel: Tensor) -> Tensor:
    """OpenCV ``filter2D(x, -1, kernel)`` (``BORDER_REFLECT_101``) of every channel, clamped to [0, 1].

    FFT correlation, a few images at a time: each chunk is padded (reflect-101) by the kernel radius, zero
    padded to a 5-smooth FFT length and multiplied by the kernel's spectrum (computed once); the result is
    written straight into the output.

    Args:
        x: (B, C, H, W) images.
        kernel: (k, k) odd-sized kernel (e.g. :func:`disk_kernel`, cropped by :func:`crop_kernel`).
    """
    B, C, H, W = x.shape
    kh, kw = kernel.shape
    ct = torch.float64 if x.dtype == torch.float64 else torch.float32
    nh, nw = fft_length(H + kh - 1), fft_length(W + kw - 1)
    fk = torch.fft.rfft2(kernel.to(device=x.device, dtype=ct), s=(nh, nw)).conj()  # (nh, nw // 2 + 1)
    out = new_output(x)
    step = image_chunk(x, CHUNK_ELEMS // 4)  # the spectra are twice the input: small chunks stay in cache
    for b0 in range(0, B, step):
        b1 = min(B, b0 + step)
        xp = pad2d(x[b0:b1].reshape(-1, 1, H, W).to(ct), (kh // 2, (kh - 1) // 2), (kw // 2, (kw - 1) // 2),
                   "reflect101")  # (m * C, 1, H + kh - 1, W + kw - 1)
        y = torch.fft.irfft2(torch.fft.rfft2(xp, s=(nh, nw)).mul_(fk), s=(nh, nw))[..., :H, :W]
        torch.clamp(y.reshape(b1 - b0, C, H, W), 0, 1, out=out[b0:b1])
    return out


def motion_taps(radius: int, sigma: float, angle_deg: Tensor, H: int, W: int
                ) -> tuple[list[float], list[list[int]], list[list[int]]]:
    """ImageNet-C ``_motion_blur`` taps per image: weights ``w_j`` and integer shifts ``(dy_j, dx_j)``.

    ``w`` is the one-sided Gaussian over ``width = 2 * radius + 1`` samples, normalised; tap ``j`` shifts by
    ``-ceil(j * (sin, cos)(angle) - 0.5)``, and the reference stops at the first tap that leaves the image.

    Returns:
        ``(w, dy, dx)``: the weights and, per image, the shifts of its taps (each list cut where that image's
        taps stop).
    """
    width = 2 * radius + 1
    i = torch.arange(width, dtype=torch.float64)
    k = torch.exp(-i ** 2 / (2 * sigma ** 2)) / (math.sqrt(2 * math.pi) * sigma)
    k = k / k.sum()
    a = torch.deg2rad(angle_deg.detach().to(device="cpu", dtype=torch.float64))
    p0, p1 = width * torch.sin(a), width * torch.cos(a)
    hyp = torch.hypot(p0, p1)
    dy = -torch.ceil(i[None] * p0[:, None] / hyp[:, None] - 0.5).long()  # (B, width)
    dx = -torch.ceil(i[None] * p1[:, None] / hyp[:, None] - 0.5).long()
    n = ((dy.abs() < H) & (dx.abs() < W)).long().cumprod(1).sum(1).tolist()  # the reference stops at the border
    return k.tolist(), [r[:m] for r, m in zip(dy.tolist(), n)], [r[:m] for r, m in zip(dx.tolist(), n)]


def motion_blur_apply(x: Tensor, radius: int, sigma: float, angle_deg: Tensor,
                      out_hw: tuple[int, int] | None = None) -> Tensor:
    """ImageNet-C ``_motion_blur``: a one-sided Gaussian-weighted sum of edge-clamped shifts along ``angle``.

    ``out[b, :, y, x] = sum_j w_j x[b, :, clamp(y - dy_j), clamp(x - dx_j)]`` (taps from :func:`motion_taps`),
    summed tap by tap in the reference's order on an edge-replicated copy of each image padded only as far as
    its own shifts reach: ``width`` (21..41) multiply-adds per value, in cache, instead of a convolution with
    a mostly empty ``(2 width - 1)^2`` kernel.

    Args:
        x: (B, C, H, W) images.
        radius, sigma: kernel width ``2 * radius + 1`` and its Gaussian fall-off.
        angle_deg: (B,) angle per image, in degrees.
        out_hw: only the top-left ``(h, w)`` of the result (borders still clamp at ``x``'s edges); default
            all of it.

    Returns:
        (B, C, h, w) blurred images (not clamped).
    """
    B, C, H, W = x.shape
    oh, ow = out_hw if out_hw is not None else (H, W)
    w, dys, dxs = motion_taps(radius, sigma, angle_deg, H, W)
    out = new_output(x, (B, C, oh, ow))
    for b in range(B):
        dy, dx = dys[b], dxs[b]
        top, left = max(0, max(dy)), max(0, max(dx))
        bottom, right = max(0, oh - H - min(dy)), max(0, ow - W - min(dx))
        xp = x[b:b + 1]
        if top or bottom or left or right:
            xp = F.pad(xp, (left, right, top, bottom), mode="replicate")
        xp = xp[0]
        acc = out[b]
        for j, (sy, sx) in enumerate(zip(dy, dx)):
            tap = xp[:, top - sy:top - sy + oh, left - sx:left - sx + ow]
            if j == 0:
                torch.mul(tap, w[0], out=acc)
            else:
                acc.add_(tap, alpha=w[j])
    return out


def np_arange(start: float, stop: float, step: float) -> list[float]:
    """``numpy.arange(start, stop, step)`` values, computed as numpy does: ``start + i * delta`` with
    ``delta = (start + step) - start``."""
    n = math.ceil((stop - start) / step)
    delta = (start + step) - start
    return [start + i * delta for i in range(n)]


def clipped_zoom(x: Tensor, z: float, crop: bool = True) -> Tensor:
    """ImageNet-C ``clipped_zoom``: centre crop of ``ceil(side / z)`` px, order-1 ``scipy.ndimage.zoom``
    by ``z`` (corner-aligned bilinear). (B, C, H, W) -> (B, C, H, W) cut to the top-left ``H x W``
    (``crop=False``: the zoomed crop itself, ``round(ceil(side / z) * z)`` >= side px, as snow uses it)."""
    H, W = x.shape[-2:]
    ch, cw = math.ceil(H / z), math.ceil(W / z)
    top, left = (H - ch) // 2, (W - cw) // 2
    oh, ow = round(ch * z), round(cw * z)
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


# ----------------------------------------------------------------------------------------- elastic


def elastic_apply(x: Tensor, severity_alpha: float, ux: Tensor, uy: Tensor) -> Tensor:
    """ImageNet-C elastic transform given the (B, 1, H, W) uniform fields ``U(-H/200, H/200)`` for dx, dy.

    The fields are smoothed with a Gaussian of sigma ``(H, W) / 100`` (truncate 3, scipy ``reflect``
    padding; float64, :func:`taps_filter`), scaled by ``alpha`` and used to resample ``x`` bilinearly with
    half-sample reflection (``map_coordinates(order=1, mode='reflect')``), a few images at a time.
    """
    B, _, H, W = x.shape
    cpu = torch.device("cpu")
    kh = gaussian_kernel1d(H * 0.01, 3.0, torch.float64, cpu).tolist()
    kw = gaussian_kernel1d(W * 0.01, 3.0, torch.float64, cpu).tolist()
    ar_y = torch.arange(H, device=x.device, dtype=torch.float64).view(1, 1, H, 1)
    ar_x = torch.arange(W, device=x.device, dtype=torch.float64).view(1, 1, 1, W)
    out = new_output(x)
    step = image_chunk(x)
    for b0 in range(0, B, step):
        sl = slice(b0, b0 + step)
        dx = taps_filter(ux[sl].to(torch.float64), kw, "symmetric", k_rows=kh).mul_(severity_alpha)
        dy = taps_filter(uy[sl].to(torch.float64), kw, "symmetric", k_rows=kh).mul_(severity_alpha)
        yy = ar_y + dy.float().double()
        xx = ar_x + dx.float().double()
        grid = torch.stack([(xx + 0.5) / W * 2 - 1, (yy + 0.5) / H * 2 - 1], -1)[:, 0]  # (b, H, W, 2)
        y = F.grid_sample(x[sl], grid.to(x.dtype), mode="bilinear", padding_mode="reflection", align_corners=False)
        torch.clamp(y, 0, 1, out=out[sl])
    return out


# ----------------------------------------------------------------------------------------- pixelate / JPEG


@functools.lru_cache(maxsize=64)
def pil_box_runs(n_in: int, n_out: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Pillow's BOX resampling from ``n_in`` to ``n_out`` samples (``precompute_coeffs`` with the box filter,
    same double arithmetic): output ``o`` averages the contiguous run of inputs whose centres lie in
    ``(o * s, (o + 1) * s]``, ``s = n_in / n_out``. Returns ``(first input, run length)`` per output."""
    scale = n_in / n_out
    fscale = max(scale, 1.0)
    support = 0.5 * fscale
    starts, counts = [], []
    for o in range(n_out):
        center = (o + 0.5) * scale
        lo, hi = max(int(center - support + 0.5), 0), min(int(center + support + 0.5), n_in)
        run = [i for i in range(lo, hi) if -0.5 < (i - center + 0.5) / fscale <= 0.5]
        if not run or run != list(range(run[0], run[-1] + 1)):
            raise ValueError(f"unexpected Pillow box run for {n_in} -> {n_out}, output {o}: {run}")
        starts.append(run[0])
        counts.append(len(run))
    return tuple(starts), tuple(counts)


@functools.lru_cache(maxsize=64)
def pil_nearest_index(n_in: int, n_out: int) -> tuple[int, ...]:
    """Source index of each output sample of Pillow's ``resize(NEAREST)`` from ``n_in`` to ``n_out`` samples,
    read from Pillow itself (a 32-bit image holding its own column numbers, resized)."""
    from PIL import Image  # the index map only; the pixels are worked in torch

    im = Image.new("I", (n_in, 1))
    im.putdata(list(range(n_in)))
    return tuple(int(v) for v in np.asarray(im.resize((n_out, 1), Image.NEAREST))[0])


@functools.lru_cache(maxsize=64)
def _box_plan(n_in: int, n_out: int, device: str) -> tuple[int, Tensor | None, Tensor, Tensor]:
    """What :func:`_box_pass` needs for ``n_in -> n_out``: the longest run ``nmax``, the index of each
    output's run sum among the k-sample running sums laid side by side (None for a uniform factor: strided
    slices), and the per-output numerator offset and denominator of the rounding."""
    starts, counts = pil_box_runs(n_in, n_out)
    nmax = max(counts)
    if nmax >= 64:
        raise ValueError(f"box run of {nmax} samples ({n_in} -> {n_out}): beyond the exact float rounding")
    one = 1 << 22
    add = [n - (1 if int(0.5 + (1.0 / n) * one) * n < one else 0) for n in counts]
    uniform = all(n == nmax for n in counts) and all(a == j * nmax for j, a in enumerate(starts))
    idx = None if uniform else torch.tensor([(n - 1) * n_in + a for a, n in zip(starts, counts)], device=device)
    return (nmax, idx, torch.tensor(add, dtype=torch.float64, device=device),
            torch.tensor([2.0 * n for n in counts], dtype=torch.float64, device=device))


def _box_pass(q: Tensor, dim: int, n_out: int, sec: Tensor | None = None, out: Tensor | None = None) -> Tensor:
    """One 8-bit pass of Pillow's BOX resampling along ``dim`` (-1 or -2) of integer-valued ``q``.

    Pillow sums each run with 22-bit fixed-point weights ``k = round(2^22 / n)`` and rounds:
    ``(2^21 + S * k) >> 22``. As ``|S * (k / 2^22 - 1 / n)| < 1 / (2n)`` for runs shorter than 64, that is
    ``floor((2 S + n - t) / (2 n))`` exactly, with ``t = 1`` where ``k * n < 2^22`` (ties round down) --
    a correctly rounded quotient of small integers, floored: exact in float. Run sums: for a uniform factor,
    strided slices; otherwise the k-sample running sums (k = 1 .. longest run) side by side along ``dim``,
    picked per output by one gather.

    Args:
        sec: optional work buffer for the running sums (``nmax * n_in`` along ``dim``) whose first block
            already holds ``q`` (callers write ``q`` there directly).
        out: optional result buffer.
    """
    n_in = q.shape[dim]
    nmax, idx, add, den = _box_plan(n_in, n_out, str(q.device))
    shape = (n_out, 1) if dim == -2 else (n_out,)
    add, den = add.to(q.dtype).view(shape), den.to(q.dtype).view(shape)
    if idx is None:  # uniform runs of nmax: strided slices
        S = out
        for t in range(nmax):
            part = q.narrow(dim, t, (n_out - 1) * nmax + 1)
            part = part[..., ::nmax] if dim == -1 else part[..., ::nmax, :]
            S = (part.clone() if out is None else out.copy_(part)) if t == 0 else S.add_(part)
    else:
        if sec is None:
            sec_shape = list(q.shape)
            sec_shape[dim] = nmax * n_in
            sec = torch.empty(sec_shape, dtype=q.dtype, device=q.device)
            sec.narrow(dim, 0, n_in).copy_(q)
        for k in range(2, nmax + 1):
            m = n_in - k + 1
            torch.add(sec.narrow(dim, (k - 2) * n_in, m), q.narrow(dim, k - 1, m),
                      out=sec.narrow(dim, (k - 1) * n_in, m))
        if dim == -1:
            S = torch.gather(sec, -1, idx.expand(*q.shape[:-1], n_out), out=out)
        else:
            S = torch.index_select(sec, -2, idx, out=out)
    return torch.add(add, S, alpha=2, out=S).div_(den).floor_()  # (div, floor: exact; rounding_mode="floor" is slow)


def pixelate_apply(x: Tensor, c: float) -> Tensor:
    """Pillow ``resize(BOX)`` to ``int(side * c)`` then ``resize(NEAREST)`` back, as the reference does on its
    8-bit image: the input is rounded to 8 bit, each BOX pass (horizontal, then vertical) rounds as Pillow's
    fixed-point resampler (:func:`_box_pass`), and the nearest-neighbour map is Pillow's own
    (:func:`pil_nearest_index`) -- the result equals Pillow's, as k / 255. Worked a few images at a time in
    work buffers allocated once per call (each pass writes straight into the next one's).
    """
    B, C, H, W = x.shape
    h, w = max(1, int(H * c)), max(1, int(W * c))
    ci = torch.tensor(pil_nearest_index(w, W), device=x.device)
    ri = torch.tensor(pil_nearest_index(h, H), device=x.device)
    out = new_output(x)
    step = image_chunk(x)
    m = min(step, B)
    nh = _box_plan(W, w, str(x.device))
    nv = _box_plan(H, h, str(x.device))
    new = functools.partial(torch.empty, dtype=x.dtype, device=x.device)
    hsec = new(m, C, H, (nh[0] if nh[1] is not None else 1) * W)  # quantised input (+ running sums)
    vsec = new(m, C, (nv[0] if nv[1] is not None else 1) * H, w)  # horizontal result (+ running sums)
    small, up = new(m, C, h, w), new(m, C, h, W)
    for b0 in range(0, B, step):
        k = min(B, b0 + step) - b0
        q = torch.mul(x[b0:b0 + k], 255, out=hsec[:k, ..., :W]).round_()  # (k, C, H, W) 8-bit values
        r = _box_pass(q, -1, w, sec=hsec[:k] if nh[1] is not None else None, out=vsec[:k, :, :H])
        r = _box_pass(r, -2, h, sec=vsec[:k] if nv[1] is not None else None, out=small[:k]).div_(255)
        torch.gather(r, -1, ci.expand(k, C, h, W), out=up[:k])  # (k, C, h, W)
        torch.index_select(up[:k], -2, ri, out=out[b0:b0 + k])
    return out


@functools.lru_cache(maxsize=1)
def _jpeg_decoder() -> Callable[[Tensor], Tensor] | None:
    """torchvision's libjpeg-turbo decoder op (what ``torchvision.io.decode_jpeg`` calls on CPU, without that
    wrapper's deprecation warning), RGB output as a (3, H, W) view of (H, W, 3) bytes; None where torchvision
    or its image extension is missing (then Pillow decodes)."""
    try:
        from torchvision.io import ImageReadMode

        op, rgb = torch.ops.image.decode_jpeg, ImageReadMode.RGB.value
        probe = io.BytesIO()
        _pil_rgbx(torch.zeros(16, 16, dtype=torch.int32)).save(probe, "JPEG", quality=50)
        op(torch.frombuffer(bytearray(probe.getvalue()), dtype=torch.uint8), rgb, False)
    except Exception:  # noqa: BLE001 -- any failure means: use Pillow
        return None
    return lambda data: op(data, rgb, False)


def _pil_rgbx(packed: Tensor) -> Any:  # a PIL.Image.Image (Pillow is imported lazily)
    """A Pillow ``RGBX`` image mapped (no copy) on a contiguous (H, W) int32 CPU tensor ``R | G << 8 | B << 16``."""
    from PIL import Image

    H, W = packed.shape
    return Image.frombuffer("RGBX", (W, H), packed.numpy(), "raw", "RGBX", 0, 1)


_RST = re.compile(rb"\xff[\xd0-\xd7]")


def split_jpeg_mosaic(data: bytes, n: int, h: int) -> list[bytes] | None:
    """Cut a baseline JPEG of ``n`` images stacked vertically (each ``h`` rows, a multiple of the MCU height),
    encoded with one restart interval per image, into ``n`` stand-alone JPEGs.

    A restart resets the entropy coder (DC predictions, byte alignment), so the data between two restart
    markers is exactly the scan of that image encoded alone; each gets the mosaic's headers with the frame
    height set to ``h`` and no restart interval. Returns None when the stream is not of that form.
    """
    if data[:2] != b"\xff\xd8" or data[-2:] != b"\xff\xd9":
        return None
    head, i = bytearray(b"\xff\xd8"), 2
    while True:
        if i + 4 > len(data) or data[i] != 0xFF:
            return None
        marker, length = data[i + 1], int.from_bytes(data[i + 2:i + 4], "big")
        seg = data[i:i + 2 + length]
        if marker in (0xC1, 0xC2, 0xC3) or 0xC5 <= marker <= 0xCF and marker != 0xCC:
            return None  # not baseline sequential
        if marker == 0xC0:
            seg = seg[:5] + h.to_bytes(2, "big") + seg[7:]
        if marker != 0xDD:  # restart interval: dropped
            head += seg
        i += 2 + length
        if marker == 0xDA:
            break
    parts = _RST.split(data[i:-2])
    if len(parts) != n:
        return None
    head = bytes(head)
    return [head + p + b"\xff\xd9" for p in parts]


def _jpeg_group(x: Tensor, out: Tensor, quality: int) -> None:
    """JPEG round trip of ``x`` (m, 3, H, W) on the CPU into ``out`` (same shape): see :func:`jpeg_apply`."""
    m, _, H, W = x.shape
    packed = new_output(x, (m * H, W), torch.int32)  # the images stacked, one int32 per pixel
    pk = packed.numpy()
    step = image_chunk(x)
    for b0 in range(0, m, step):
        b1 = min(m, b0 + step)
        q = torch.mul(x[b0:b1], 255).round_()  # (k, 3, H, W) 8-bit values
        rgb = torch.add(q[:, 0], torch.add(q[:, 1], q[:, 2], alpha=256), alpha=256)  # R + 256 G + 65536 B, exact
        np.copyto(pk[b0 * H:b1 * H], rgb.reshape(-1, W).numpy(), casting="unsafe")
    streams = None
    if H % 16 == 0 and m > 1:  # one encoder call for the whole group, cut at its restart markers
        buf = io.BytesIO()
        _pil_rgbx(packed).save(buf, "JPEG", quality=quality, restart_marker_blocks=-(-W // 16) * (H // 16))
        streams = split_jpeg_mosaic(buf.getvalue(), m, H)
    if streams is None:
        streams = []
        for i in range(m):
            buf = io.BytesIO()
            _pil_rgbx(packed[i * H:(i + 1) * H]).save(buf, "JPEG", quality=quality)
            streams.append(buf.getvalue())
    decode = _jpeg_decoder()
    if decode is not None:
        planes = [decode(torch.frombuffer(bytearray(d), dtype=torch.uint8)) for d in streams]  # (3, H, W) views
    else:
        from PIL import Image

        planes = [torch.from_numpy(np.array(Image.open(io.BytesIO(d)).convert("RGB"))).permute(2, 0, 1)
                  for d in streams]
    for i, pl in enumerate(planes):
        torch.div(pl if out.dtype == torch.float32 else pl.to(out.dtype), 255, out=out[i])


@functools.lru_cache(maxsize=4)
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vlmkit-jpeg")


def jpeg_apply(x: Tensor, quality: int) -> Tensor:
    """JPEG round trip at ``quality`` through the reference's own codec: Pillow's ``save(format="JPEG",
    quality=q)`` (libjpeg, 4:2:0) of the 8-bit image, decoded by libjpeg (torchvision's libjpeg-turbo op when
    present, Pillow otherwise) -- the reference's output exactly, as k / 255.

    The batch is rounded to 8 bit and each pixel's R, G, B packed into one int32 (``R + 256 G + 65536 B``,
    exact in float), which Pillow maps as an ``RGBX`` image without copying. When the image height is a
    multiple of 16 (the 4:2:0 MCU), the images are encoded as one vertical mosaic with a restart marker
    between images and cut into stand-alone streams (:func:`split_jpeg_mosaic`): the same bytes as one
    encoder call per image, without the per-call cost. The (H, W, 3) decoded bytes are unpacked into the
    (3, H, W) float output. With several torch threads the batch is split into as many groups, coded in
    parallel (libjpeg releases the GIL). On CUDA the codec runs on the CPU copy.
    """
    B, H = x.shape[0], x.shape[2]
    dev = x.device
    xc = x.detach().cpu().contiguous()
    out = new_output(xc)
    if B == 0:
        return out.to(dev)
    per = max(1, 65535 // max(H, 1))  # JPEG frames are at most 65535 rows
    workers = max(1, min(torch.get_num_threads(), B))
    size = min(per, -(-B // workers))
    groups = [(b0, min(B, b0 + size)) for b0 in range(0, B, size)]
    if workers > 1 and len(groups) > 1:
        list(_pool(workers).map(lambda g: _jpeg_group(xc[g[0]:g[1]], out[g[0]:g[1]], quality), groups))
    else:
        for b0, b1 in groups:
            _jpeg_group(xc[b0:b1], out[b0:b1], quality)
    return out.to(dev) if dev.type != "cpu" else out
