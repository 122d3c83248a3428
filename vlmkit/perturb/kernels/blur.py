"""Blur kernels of ImageNet-C (Hendrycks & Dietterich 2019): gaussian, defocus, motion, zoom and glass blur.

Gaussian blur is a tap filter; defocus blur an FFT correlation with the reference's anti-aliased disk;
motion blur the reference's one-sided Gaussian sum of edge-clamped shifts (also used by snow); zoom blur
averages :func:`clipped_zoom` results over the reference's :func:`np_arange` of zoom factors; glass blur's
sequential pixel "swap" is resolved exactly, batched, by :func:`glass_shuffle_index`.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from vlmkit.perturb.kernels import native
from vlmkit.perturb.kernels.common import (
    CHUNK_ELEMS,
    fft_length,
    gaussian_kernel1d,
    image_chunk,
    new_output,
    pad2d,
    sep_filter,
    taps_filter,
)
from vlmkit.perturb.kernels.threads import over_threads

Tensor = torch.Tensor

# ----------------------------------------------------------------------------------------- gaussian blur


def gaussian_blur_apply(x: Tensor, sigma: float, mode: str = "nearest", truncate: float = 4.0) -> Tensor:
    """:func:`~vlmkit.perturb.kernels.common.gaussian_filter` of a batch, clamped to [0, 1], by
    :func:`~vlmkit.perturb.kernels.common.taps_filter` a few images at a time (18 multiply-adds per value at
    sigma 1, 98 at sigma 6)."""
    k = gaussian_kernel1d(sigma, truncate, torch.float64, torch.device("cpu")).tolist()
    out = new_output(x)
    step = image_chunk(x)
    for b0 in range(0, x.shape[0], step):
        taps_filter(x[b0:b0 + step], k, mode, out=out[b0:b0 + step]).clamp_(0, 1)
    return out


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


@functools.lru_cache(maxsize=16)
def motion_weights(radius: int, sigma: float) -> np.ndarray:
    """The reference's one-sided Gaussian over ``width = 2 * radius + 1`` samples, normalised ``(width,)`` float64."""
    i = np.arange(2 * radius + 1, dtype=np.float64)
    k = np.exp(-i ** 2 / (2 * sigma ** 2)) / (math.sqrt(2 * math.pi) * sigma)
    k = k / k.sum()
    k.flags.writeable = False
    return k


def motion_taps(radius: int, sigma: float, angle_deg: Tensor, H: int, W: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """ImageNet-C ``_motion_blur`` taps per image: weights ``w_j`` and integer shifts ``(dy_j, dx_j)``.

    ``w`` is :func:`motion_weights`; tap ``j`` shifts by ``-ceil(j * (sin, cos)(angle) * width / hypot - 0.5)``
    in float64, as the reference (numpy and ``math``), which stops at the first tap that leaves the image.

    Returns:
        ``(w, dy, dx, n)``: the weights ``(width,)``, the shifts ``(B, width)`` int64 of every tap and the number
        of taps ``(B,)`` each image uses before its first one that leaves the image.
    """
    width = 2 * radius + 1
    i = np.arange(width, dtype=np.float64)
    a = np.deg2rad(angle_deg.detach().to(device="cpu", dtype=torch.float64).numpy())  # (B,)
    p0, p1 = width * np.sin(a), width * np.cos(a)
    hyp = np.hypot(p0, p1)
    dy = -np.ceil(i[None] * p0[:, None] / hyp[:, None] - 0.5).astype(np.int64)  # (B, width)
    dx = -np.ceil(i[None] * p1[:, None] / hyp[:, None] - 0.5).astype(np.int64)
    n = np.cumprod((np.abs(dy) < H) & (np.abs(dx) < W), axis=1).sum(1)  # (B,): the reference stops at the border
    return motion_weights(radius, sigma), dy, dx, n.astype(np.int64)


def motion_blur_apply(x: Tensor, radius: int, sigma: float, angle_deg: Tensor,
                      out_hw: tuple[int, int] | None = None) -> Tensor:
    """ImageNet-C ``_motion_blur``: a one-sided Gaussian-weighted sum of edge-clamped shifts along ``angle``.

    ``out[b, :, y, x] = sum_j w_j x[b, :, clamp(y - dy_j), clamp(x - dx_j)]`` (taps from :func:`motion_taps`),
    summed tap by tap in the reference's order, in float32: ``width`` (21..41) multiply-adds per value, in
    cache, instead of a convolution with a mostly empty ``(2 width - 1)^2`` kernel. CPU float32 batches run
    through :func:`.native.motion_planes` (split over the torch threads); others through :func:`motion_blur_torch`.

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
    taps = motion_taps(radius, sigma, angle_deg, H, W)
    if x.device.type != "cpu" or x.dtype != torch.float32 or oh > H or ow > W:
        return motion_blur_torch(x, taps, (oh, ow))
    w, dy, dx, n = taps
    xc = x.detach().contiguous()
    out = new_output(xc, (B, C, oh, ow))
    w32 = w.astype(np.float32)
    native.compile_kernels()
    over_threads(B, lambda b0, b1: native.motion_planes(xc[b0:b1].numpy(), out[b0:b1].numpy(), w32,
                                                        dy[b0:b1], dx[b0:b1], n[b0:b1]))
    return out


def motion_blur_torch(x: Tensor, taps: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
                      out_hw: tuple[int, int]) -> Tensor:
    """:func:`motion_blur_apply` with torch ops (any device): each image padded (edge-replicated) only as far as
    its own shifts reach, then one multiply-add per tap."""
    B, C, H, W = x.shape
    oh, ow = out_hw
    w, dys, dxs, ns = taps
    wl = w.tolist()
    out = new_output(x, (B, C, oh, ow))
    for b in range(B):
        dy, dx = dys[b, :ns[b]].tolist(), dxs[b, :ns[b]].tolist()
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
                torch.mul(tap, wl[0], out=acc)
            else:
                acc.add_(tap, alpha=wl[j])
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
