"""Shared primitives of the corruption kernels: batch memory, padding, filters, FFT lengths and colour.

Results are allocated once per call by :func:`new_output` and large batches are walked a few images at a
time (:func:`image_chunk`, :data:`CHUNK_ELEMS`) so that temporaries stay in cache; the filters reproduce
scipy / OpenCV border modes (:func:`pad_index`) and Gaussian weights (:func:`gaussian_filter`,
:func:`taps_filter`), and the colour conversions are skimage's / OpenCV's. Every other kernel module builds
on these.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

# ----------------------------------------------------------------------------------------- batch memory

CHUNK_ELEMS = 1 << 19
"""Values per working chunk (2 MiB of float32): the batched kernels below walk large batches a few images at
a time so that their temporaries stay in cache and are recycled by the allocator instead of being faulted in
afresh for every step (on CPU a fresh 38 MiB tensor costs more in page faults than most of these kernels)."""


def new_output(x: Tensor, shape: Sequence[int] | None = None, dtype: torch.dtype | None = None) -> Tensor:
    """``torch.empty`` for a kernel's result (default: ``x``'s shape and dtype, contiguous, on ``x.device``).

    An ordinary torch allocation, on ordinary 4 KiB pages: a fresh batch is first-touch page-faulted once
    (~0.25 ms per 224-px image), after which :mod:`vlmkit.allocator` has freed batches reused from the heap.
    Advising it for transparent huge pages (``madvise(MADV_HUGEPAGE)``, what this did before) made that
    first touch 5-25x *slower* on a KVM guest -- 90-460 ms instead of 15-20 ms for a 38 MiB batch, the
    kernel faulting fresh 2 MiB pages in -- and turned the first cells of a benchmark into outliers.
    """
    return torch.empty(tuple(x.shape if shape is None else shape), dtype=x.dtype if dtype is None else dtype,
                       device=x.device)


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


# ----------------------------------------------------------------------------------------- fft


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
