"""Compiled CPU loops (numba): the kernels whose reference is a C library (pixelate, JPEG), motion blur, shot noise.

The reference runs Pillow's C resampler and libjpeg on 8-bit images; a chain of whole-tensor torch ops on
float32 planes moves four times the bytes and, for Pillow's uneven box runs, needs gathers along the row
(``benchmarks/bench_corruptions.py`` measured it at 0.6-0.9x the reference). These loops do the same integer
arithmetic in one pass per image plane, with the intermediates in cache:

* :func:`pixelate_planes` -- Pillow's ``resize(BOX)`` (``ImagingResampleHorizontal_8bpc`` then
  ``..Vertical_8bpc``: 22-bit fixed-point weights ``k = int(0.5 + 2^22 / n)`` per run of ``n`` samples,
  ``(2^21 + k * sum) >> 22``) and ``resize(NEAREST)`` back, of the 8-bit image ``rint(255 x)``;
* :func:`pack_rgbx` -- the 8-bit batch packed as Pillow ``RGBX`` pixels for the JPEG encoder;
* :func:`unpack_rgb` -- libjpeg's decoded (H, W, 3) bytes into a float (3, H, W) plane set, as k / 255;
* :func:`motion_planes` -- ImageNet-C's motion blur, a weighted sum of edge-clamped shifts per image, tap by
  tap in the reference's order (one pass over the plane per tap, the interior columns a plain strided loop),
  instead of one small torch op per tap and image;
* :func:`poisson_planes` -- Poisson draws ``Poisson(x * c) / c`` (shot noise) from a seeded splitmix64 stream
  per image: 8-bit values by inversion of their rate's CDF through a guide table (one uniform, ~2
  comparisons: 12 ns a value on one thread at c = 25), other values by Knuth's multiplication method below a
  mean of 10 and Hormann's PTRS above (both as numpy's ``Generator.poisson``; 41 ns a value at c = 4096);
  split over threads.

numba is imported on the first call (``import numba`` costs ~0.5 s; ``import vlmkit`` stays light) and the
compiled code is cached on disk next to this file. Every function releases the GIL, so callers split a batch
over threads (:func:`.threads.over_threads`). :mod:`.digital`, :mod:`.blur` and :mod:`.noise` use them on CPU
batches; CUDA batches take their torch paths. Pixelate and JPEG are checked byte for byte against the
reference, motion blur against the torch path and the reference, the Poisson sampler against scipy's pmf
(chi-square), in ``tests/test_corruptions.py``.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

#: 8-bit value -> float32 ``k / 255`` (the division torch does, correctly rounded).
LUT_255 = np.arange(256, dtype=np.float32) / np.float32(255)
#: ``log(k!)`` for ``k < 1024`` (PTRS's acceptance test; ``math.lgamma`` beyond).
LOG_FACTORIAL = np.array([math.lgamma(k + 1.0) for k in range(1024)], np.float64)


@functools.lru_cache(maxsize=1)
def _kernels() -> dict[str, Any]:
    """Compile (or load from numba's disk cache) the loops; called once per process."""
    from numba import njit

    jit = njit(cache=True, nogil=True)

    @jit
    def pixelate_planes(x, out, h_end, h_k, v_start, v_len, v_k, col, row, lut):  # pragma: no cover - compiled
        B, C, H, W = x.shape  # (B, C, H, W) float32 in [0, 1]
        w, h = h_k.shape[0], v_start.shape[0]
        q = np.empty(W, np.int32)  # one row, 8-bit values
        hor = np.empty((H, w), np.int32)  # horizontal pass, 8-bit values
        acc = np.empty(w, np.int32)  # |sum * k| < 2^31 for runs shorter than 64
        small = np.empty((h, w), np.float32)  # both passes, as k / 255
        line = np.empty(W, np.float32)
        for b in range(B):
            for c in range(C):
                xp, op = x[b, c], out[b, c]
                for i in range(H):
                    xr, hr = xp[i], hor[i]
                    for j in range(W):
                        q[j] = np.int32(min(max(np.rint(xr[j] * np.float32(255.0)), np.float32(0.0)),
                                            np.float32(255.0)))
                    s, o = 0, 0
                    for j in range(W):  # runs partition the row: sum, emit at each run's last sample
                        s += q[j]
                        if h_end[j]:
                            hr[o] = (2097152 + s * h_k[o]) >> 22
                            s = 0
                            o += 1
                for o in range(h):
                    a = v_start[o]
                    for j in range(w):
                        acc[j] = hor[a, j]
                    for t in range(1, v_len[o]):
                        for j in range(w):
                            acc[j] += hor[a + t, j]
                    k = v_k[o]
                    for j in range(w):
                        small[o, j] = lut[(2097152 + acc[j] * k) >> 22]
                last = -1
                for i in range(H):  # NEAREST: rows repeat, each distinct one is built once
                    r = row[i]
                    if r != last:
                        for j in range(W):
                            line[j] = small[r, col[j]]
                        last = r
                    for j in range(W):
                        op[i, j] = line[j]

    @jit
    def pack_rgbx(x, packed):  # pragma: no cover - compiled
        m, _, H, W = x.shape  # (m, 3, H, W) float32 -> (m * H, W) int32 R | G << 8 | B << 16
        for b in range(m):
            for i in range(H):
                r, g, bl, dst = x[b, 0, i], x[b, 1, i], x[b, 2, i], packed[b * H + i]
                for j in range(W):
                    qr = min(max(np.rint(r[j] * np.float32(255.0)), np.float32(0.0)), np.float32(255.0))
                    qg = min(max(np.rint(g[j] * np.float32(255.0)), np.float32(0.0)), np.float32(255.0))
                    qb = min(max(np.rint(bl[j] * np.float32(255.0)), np.float32(0.0)), np.float32(255.0))
                    dst[j] = np.int32(qr) | (np.int32(qg) << 8) | (np.int32(qb) << 16)

    @jit
    def unpack_rgb(src, out):  # pragma: no cover - compiled
        H, W, _ = src.shape  # (H, W, 3) uint8 -> (3, H, W) float32, both C-contiguous
        n = H * W
        s, r, g, b = src.reshape(3 * n), out[0].reshape(n), out[1].reshape(n), out[2].reshape(n)
        d = np.float32(255.0)
        for p in range(n):  # one flat loop, a float32 division a value: vectorised (a table lookup is not)
            r[p] = np.float32(s[3 * p]) / d
            g[p] = np.float32(s[3 * p + 1]) / d
            b[p] = np.float32(s[3 * p + 2]) / d

    @jit
    def motion_planes(x, out, w, dy, dx, n):  # pragma: no cover - compiled
        B, C, H, W = x.shape  # (B, C, H, W) float32 -> out (B, C, oh, ow) float32
        oh, ow = out.shape[2], out.shape[3]
        for b in range(B):
            for t in range(n[b]):
                sy, sx, wt = dy[b, t], dx[b, t], w[t]
                j0 = min(max(sx, 0), ow)  # columns j0..j1-1 read x[.., j - sx] inside the image
                j1 = min(max(W + sx, j0), ow)
                m = j1 - j0
                for c in range(C):
                    for i in range(oh):
                        src, dst = x[b, c, min(max(i - sy, 0), H - 1)], out[b, c, i]
                        s, d = src[j0 - sx:j1 - sx], dst[j0:j1]  # 0-based views: no negative-index checks,
                        lo, hi = src[0] * wt, src[W - 1] * wt  # so the interior loop vectorises
                        if t == 0:
                            for j in range(j0):
                                dst[j] = lo
                            for j in range(m):
                                d[j] = s[j] * wt
                            for j in range(j1, ow):
                                dst[j] = hi
                        else:
                            for j in range(j0):
                                dst[j] += lo
                            for j in range(m):
                                d[j] += s[j] * wt
                            for j in range(j1, ow):
                                dst[j] += hi

    golden, m1, m2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
    s30, s27, s31, s11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
    unit = 1.0 / 9007199254740992.0  # 2^-53

    @jit
    def uniform(state):  # pragma: no cover - compiled
        """One splitmix64 step (Steele et al. 2014): the next state and a uniform in [0, 1) from its top 53 bits."""
        state += golden
        z = (state ^ (state >> s30)) * m1
        z = (z ^ (z >> s27)) * m2
        return state, np.float64((z ^ (z >> s31)) >> s11) * unit

    @jit
    def poisson_planes(x, out, c, seeds, logfact, cdf, guide, lut):  # pragma: no cover - compiled
        B = x.shape[0]  # (B, n) float32 values in [0, 1] -> out (B, n) float32: Poisson(x * c) / c, clamped
        n = x.shape[1]
        nf = logfact.shape[0]
        c32 = np.float32(c)
        tables = cdf.shape[0] == 256  # per 8-bit level: its rate's CDF (256, K) and guide table (256, G)
        g = np.float64(guide.shape[1])
        for b in range(B):
            state = seeds[b]
            xb, ob = x[b], out[b]
            for i in range(n):
                xi = xb[i]
                if tables and xi >= 0.0 and xi <= 1.0:
                    q = int(xi * np.float32(255.0) + np.float32(0.5))
                    if lut[q] == xi:  # an 8-bit level k / 255: inversion, one uniform (Chen & Asau's guide table)
                        state, u = uniform(state)
                        row = cdf[q]
                        j = guide[q, int(u * g)]
                        while u >= row[j]:
                            j += 1
                        ob[i] = min(np.float32(j) / c32, np.float32(1.0))
                        continue
                lam = np.float64(xi * c32)  # the rate as torch forms it, x * c in float32
                k = 0.0
                if lam <= 0.0:
                    k = 0.0
                elif lam < 10.0:  # multiplication method: count uniforms until their product falls below e^-lam
                    enlam = np.exp(-lam)
                    prod = 1.0
                    while True:
                        state, u = uniform(state)
                        prod *= u
                        if prod > enlam:
                            k += 1.0
                        else:
                            break
                else:  # PTRS, Hormann (1993), "The transformed rejection method for generating Poisson random variables"
                    bb = 0.931 + 2.53 * np.sqrt(lam)
                    a = -0.059 + 0.02483 * bb
                    vr = 0.9277 - 3.6224 / (bb - 2.0)
                    while True:
                        state, u = uniform(state)
                        u -= 0.5
                        state, v = uniform(state)
                        us = 0.5 - abs(u)
                        k = np.floor((2.0 * a / us + bb) * u + lam + 0.43)
                        if us >= 0.07 and v <= vr:
                            break
                        if k < 0.0 or (us < 0.013 and v > us):
                            continue
                        ki = int(k)  # the slow test (~1 in 7 draws): log(alpha) and log(lam) only here
                        lf = logfact[ki] if ki < nf else math.lgamma(k + 1.0)
                        invalpha = 1.1239 + 1.1328 / (bb - 3.4)
                        if np.log(v) + np.log(invalpha) - np.log(a / (us * us) + bb) <= -lam + k * np.log(lam) - lf:
                            break
                ob[i] = min(max(np.float32(k) / c32, np.float32(0.0)), np.float32(1.0))

    return {"pixelate_planes": pixelate_planes, "pack_rgbx": pack_rgbx, "unpack_rgb": unpack_rgb,
            "motion_planes": motion_planes, "poisson_planes": poisson_planes}


@functools.lru_cache(maxsize=64)
def box_plan(starts: tuple[int, ...], counts: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pillow's BOX runs (``starts``, ``counts``: :func:`.digital.pil_box_runs`) as arrays ``(start, length, k,
    end)``, with ``k`` the 22-bit weight ``int(0.5 + (1 / n) * 2^22)`` of a run of ``n`` and ``end[j]`` set
    where a run ends at sample ``j``."""
    k = np.array([int(0.5 + (1.0 / n) * (1 << 22)) for n in counts], np.int32)
    end = np.zeros(starts[-1] + counts[-1], np.bool_)
    end[[a + n - 1 for a, n in zip(starts, counts)]] = True
    return np.array(starts, np.int64), np.array(counts, np.int64), k, end


@functools.lru_cache(maxsize=1)
def compile_kernels() -> None:
    """Compile (or load from the disk cache) every loop for the array types the kernels pass, now, in the
    calling thread: numba compiles a signature on its first call, and a batch split over threads must not
    make that first call from several threads at once. Runs once per process."""
    k = _kernels()
    x = np.zeros((1, 3, 16, 16), np.float32)  # (B, C, H, W), C-contiguous like every batch
    runs = ((0, 8), (8, 8))
    pixelate_planes(x, np.empty_like(x), runs, runs, tuple(range(2)) * 8, tuple(range(2)) * 8)
    packed = np.empty((16, 16), np.int32)
    k["pack_rgbx"](x, packed)
    k["unpack_rgb"](np.zeros((16, 16, 3), np.uint8), np.empty((3, 16, 16), np.float32))
    taps = np.zeros((1, 2), np.int64)
    k["motion_planes"](x, np.empty_like(x), np.ones(2, np.float32), taps, taps, np.full(1, 2, np.int64))
    flat = x.reshape(1, -1)
    poisson_planes(flat, np.empty_like(flat), 60.0, np.zeros(1, np.uint64))  # with tables
    poisson_planes(flat, np.empty_like(flat), 2.0 * TABLE_MAX_RATE, np.zeros(1, np.uint64))  # without


def pixelate_planes(x: np.ndarray, out: np.ndarray, h_runs: tuple[tuple[int, ...], tuple[int, ...]],
                    v_runs: tuple[tuple[int, ...], tuple[int, ...]], col: tuple[int, ...], row: tuple[int, ...]
                    ) -> None:
    """Pillow BOX then NEAREST back, of ``x`` (B, C, H, W) float32 C-contiguous into ``out``.

    Args:
        x: The images in [0, 1], worked as ``rint(255 x)``.
        out: The result, same shape.
        h_runs, v_runs: Pillow's box runs ``(starts, counts)`` along the width and the height.
        col, row: Pillow's NEAREST source index of each output column and row.
    """
    _, _, hk, hend = box_plan(*h_runs)
    vs, vn, vk, _ = box_plan(*v_runs)
    _kernels()["pixelate_planes"](x, out, hend, hk, vs, vn, vk, _index(col), _index(row), LUT_255)


@functools.lru_cache(maxsize=64)
def _index(idx: tuple[int, ...]) -> np.ndarray:
    return np.asarray(idx, np.int64)


def pack_rgbx(x: np.ndarray, packed: np.ndarray) -> None:
    """``x`` (m, 3, H, W) float32 in [0, 1] as 8-bit ``R | G << 8 | B << 16`` into ``packed`` (m * H, W) int32."""
    _kernels()["pack_rgbx"](x, packed)


def unpack_rgb(src: np.ndarray, out: np.ndarray) -> None:
    """Decoded (H, W, 3) uint8 ``src`` into ``out`` (3, H, W) float32 (C-contiguous) as k / 255: float32's
    correctly rounded division, so exactly :data:`LUT_255` and torch's ``x.float() / 255``."""
    if not out.flags.c_contiguous:
        raise ValueError("unpack_rgb: out must be C-contiguous")
    _kernels()["unpack_rgb"](np.ascontiguousarray(src), out)


def motion_planes(x: np.ndarray, out: np.ndarray, w: np.ndarray, dy: np.ndarray, dx: np.ndarray,
                  n: np.ndarray) -> None:
    """``out[b, c, i, j] = sum_t w[t] x[b, c, clamp(i - dy[b, t]), clamp(j - dx[b, t])]`` over the first ``n[b]``
    taps, summed in tap order in float32.

    Args:
        x: (B, C, H, W) float32 C-contiguous images.
        out: (B, C, oh, ow) float32 result (``oh <= H``, ``ow <= W``: the top-left of the full result).
        w: (T,) float32 tap weights.
        dy, dx: (B, T) int64 shifts of each image's taps.
        n: (B,) int64 taps used per image (``1 <= n[b] <= T``).
    """
    _kernels()["motion_planes"](x, out, w, dy, dx, n)


def poisson_planes(x: np.ndarray, out: np.ndarray, c: float, seeds: np.ndarray) -> None:
    """Shot noise ``clamp(Poisson(x * c) / c, 0, 1)`` of ``x`` (B, n) float32 into ``out`` (B, n) float32.

    Row ``b`` draws its values in order from a splitmix64 stream (Steele et al. 2014) started at
    ``seeds[b]`` (uint64): a row's draws depend on its seed only, never on the batch around it. Means below 10
    take the multiplication method, the others PTRS (Hormann 1993), as numpy's ``Generator.poisson``; the rate is
    ``x * c`` rounded to float32, as torch forms it.

    When ``c <= TABLE_MAX_RATE``, a value on the 8-bit grid (``x == k / 255`` in float32, as every decoded
    image is) is drawn by inversion instead: one uniform ``u`` and the first ``j`` with ``u < F(j)``, where ``F``
    is the CDF of its rate (one of 256), summed once per ``c`` in float64 and found through a guide table
    (Chen & Asau 1974; Devroye 1986, III.2.4) in about two comparisons. The table ends where the upper tail is
    below 1e-20 (its last entry set to 1), so the law drawn is the Poisson law to float64 rounding.
    """
    cdf, guide = poisson_tables(float(c)) if c <= TABLE_MAX_RATE else _NO_TABLES
    _kernels()["poisson_planes"](x, out, float(c), seeds, LOG_FACTORIAL, cdf, guide, LUT_255)


#: Shot-noise scales up to which 8-bit values are drawn by table inversion (ImageNet-C's go up to 60).
TABLE_MAX_RATE = 256.0
_NO_TABLES = (np.ones((1, 1), np.float64), np.zeros((1, 1), np.int64))


@functools.lru_cache(maxsize=8)
def poisson_tables(c: float, guide_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """The Poisson CDF of each 8-bit level's rate ``float32(k / 255 * c)`` and its guide table.

    Returns:
        ``cdf`` (256, K) float64, ``cdf[q, j] = P(X <= j)`` for ``X ~ Poisson(rate_q)``, its last column 1;
        ``guide`` (256, G) int64, ``guide[q, i] = min{j : cdf[q, j] > i / G}`` (the search for ``u`` in
        ``[i / G, (i + 1) / G)`` starts there).
    """
    from scipy.special import gammaln

    rates = (LUT_255 * np.float32(c)).astype(np.float64)  # (256,) as the kernel forms them, x * c in float32
    K = int(c + 12.0 * math.sqrt(c) + 40.0)  # beyond: upper tail < 1e-20 at every rate <= c (Chernoff)
    j = np.arange(K, dtype=np.float64)  # (K,)
    with np.errstate(divide="ignore", invalid="ignore"):
        logp = np.where(rates[:, None] > 0, -rates[:, None] + j * np.log(rates)[:, None] - gammaln(j + 1.0),
                        np.where(j == 0, 0.0, -np.inf))  # (256, K)
    cdf = np.cumsum(np.exp(logp), axis=1)  # (256, K)
    cdf[:, -1] = 1.0
    cdf = np.minimum(cdf, 1.0)  # monotone, ends at 1
    cuts = np.arange(guide_size, dtype=np.float64) / guide_size  # (G,)
    guide = np.stack([np.searchsorted(row, cuts, side="right") for row in cdf]).astype(np.int64)  # (256, G)
    cdf.flags.writeable = guide.flags.writeable = False
    return cdf, guide
