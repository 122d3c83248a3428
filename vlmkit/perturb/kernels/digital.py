"""Digital kernels of ImageNet-C (Hendrycks & Dietterich 2019): elastic transform, pixelate and JPEG.

Elastic transform smooths its displacement fields with :func:`~vlmkit.perturb.kernels.common.taps_filter`
and resamples bilinearly; pixelate reproduces Pillow's fixed-point BOX resampler (:func:`pil_box_runs`)
and its NEAREST map (:func:`pil_nearest_index`) exactly; the JPEG round trip calls libjpeg (Pillow's
encoder, torchvision's or Pillow's decoder) on the 8-bit batch. On CPU both run their per-pixel loops in
:mod:`.native` (compiled, one pass per plane); pixelate on other devices runs :func:`pixelate_torch`.
Contrast, brightness and saturate are element-wise or colour-space edits done in
:mod:`vlmkit.perturb.corruptions` with
:mod:`~vlmkit.perturb.kernels.common`'s colour conversions.
"""

from __future__ import annotations

import functools
import io
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vlmkit.perturb.kernels import native
from vlmkit.perturb.kernels.common import gaussian_kernel1d, image_chunk, new_output, taps_filter
from vlmkit.perturb.kernels.threads import over_threads

Tensor = torch.Tensor

# ----------------------------------------------------------------------------------------- elastic


def elastic_apply(x: Tensor, severity_alpha: float, ux: Tensor, uy: Tensor) -> Tensor:
    """ImageNet-C elastic transform given the (B, 1, H, W) uniform fields ``U(-H/200, H/200)`` for dx, dy.

    The fields are smoothed with a Gaussian of sigma ``(H, W) / 100`` (truncate 3, scipy ``reflect``
    padding; float64, :func:`~vlmkit.perturb.kernels.common.taps_filter`), scaled by ``alpha`` and used to
    resample ``x`` bilinearly with half-sample reflection (``map_coordinates(order=1, mode='reflect')``), a
    few images at a time.
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
    8-bit image ``rint(255 x)``: the reference's output exactly, as k / 255.

    On CPU the batch runs through :func:`.native.pixelate_planes` (float32; split over ``torch.get_num_threads()``
    threads, the loops release the GIL); on other devices through :func:`pixelate_torch`.
    """
    if x.device.type != "cpu":
        return pixelate_torch(x, c)
    B, _, H, W = x.shape
    h, w = max(1, int(H * c)), max(1, int(W * c))
    xc = x.detach().to(torch.float32).contiguous()
    out = new_output(xc)
    native.compile_kernels()
    plan = (pil_box_runs(W, w), pil_box_runs(H, h), pil_nearest_index(w, W), pil_nearest_index(h, H))
    over_threads(B, lambda b0, b1: native.pixelate_planes(xc[b0:b1].numpy(), out[b0:b1].numpy(), *plan))
    return out if x.dtype == torch.float32 else out.to(x.dtype)


def pixelate_torch(x: Tensor, c: float) -> Tensor:
    """:func:`pixelate_apply` with whole-tensor torch ops (any device; CUDA batches run here): the input is
    rounded to 8 bit, each BOX pass (horizontal, then vertical) rounds as Pillow's fixed-point resampler
    (:func:`_box_pass`), and the nearest-neighbour map is Pillow's own (:func:`pil_nearest_index`) -- the
    result equals Pillow's, as k / 255. Worked a few images at a time in
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
    """JPEG round trip of ``x`` (m, 3, H, W) float32 on the CPU into ``out`` (same): see :func:`jpeg_apply`."""
    m, _, H, W = x.shape
    packed = new_output(x, (m * H, W), torch.int32)  # the images stacked, one int32 per pixel
    native.pack_rgbx(x.numpy(), packed.numpy())
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
    for i, d in enumerate(streams):
        if decode is not None:  # (3, H, W) view of the decoded (H, W, 3) bytes
            hwc = decode(torch.frombuffer(bytearray(d), dtype=torch.uint8)).permute(1, 2, 0).numpy()
        else:
            from PIL import Image

            hwc = np.asarray(Image.open(io.BytesIO(d)).convert("RGB"))
        native.unpack_rgb(hwc, out[i].numpy())


def jpeg_apply(x: Tensor, quality: int) -> Tensor:
    """JPEG round trip at ``quality`` through the reference's own codec: Pillow's ``save(format="JPEG",
    quality=q)`` (libjpeg, 4:2:0) of the 8-bit image ``rint(255 x)``, decoded by libjpeg (torchvision's
    libjpeg-turbo op when present, Pillow otherwise) -- the reference's output exactly, as k / 255.

    The batch is packed to 8-bit ``RGBX`` pixels (one int32 each, :func:`.native.pack_rgbx`), which Pillow
    maps without copying. When the image height is a multiple of 16 (the 4:2:0 MCU), the images are encoded
    as one vertical mosaic with a restart marker between images and cut into stand-alone streams
    (:func:`split_jpeg_mosaic`): the same bytes as one encoder call per image, without the per-call cost. The
    decoded (H, W, 3) bytes are unpacked into the (3, H, W) float output (:func:`.native.unpack_rgb`). With
    several torch threads the batch is split into as many groups, coded in parallel (libjpeg and the loops
    release the GIL). On CUDA the codec runs on the CPU copy.
    """
    B, H = x.shape[0], x.shape[2]
    xc = x.detach().to("cpu", torch.float32).contiguous()
    out = new_output(xc)
    native.compile_kernels()
    per = max(1, 65535 // max(H, 1))  # JPEG frames are at most 65535 rows
    over_threads(B, lambda b0, b1: _jpeg_group(xc[b0:b1], out[b0:b1], quality), most=per)
    return out.to(x.device, x.dtype)
