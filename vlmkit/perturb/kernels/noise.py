"""Noise kernels of ImageNet-C (Hendrycks & Dietterich 2019) that need more than one draw and a blend.

Gaussian and speckle noise (one field each) are drawn and applied in :mod:`vlmkit.perturb.corruptions`;
here are shot noise, whose CPU draws come from a compiled Poisson sampler (:func:`.native.poisson_planes`),
and impulse (salt-and-pepper) noise, skimage's ``random_noise(mode='s&p')``, whose two uniform fields
are drawn chunk by chunk on CPU into one small buffer with exactly the values of two whole-batch draws.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vlmkit.perturb.base import Generators, default_generator, draw
from vlmkit.perturb.kernels import native
from vlmkit.perturb.kernels.common import image_chunk, new_output
from vlmkit.perturb.kernels.threads import over_threads

Tensor = torch.Tensor

# ----------------------------------------------------------------------------------------- noise


def shot_apply(x: Tensor, c: float, generator: Generators) -> Tensor:
    """ImageNet-C shot noise ``clamp(Poisson(x * c) / c, 0, 1)`` (the reference: ``np.random.poisson``).

    On CPU each image takes one 62-bit seed from ``generator`` (``torch.randint``, in batch order; or from its
    own generator when ``generator`` is one per image) and draws
    its values from its own stream in :func:`.native.poisson_planes` (split over the torch threads; 8-bit
    values by table inversion), so an image's noise depends on its seed only; elsewhere ``torch.poisson`` on
    the whole batch.
    """
    if x.device.type != "cpu":
        if isinstance(generator, Sequence):
            return torch.cat([shot_apply(x[i:i + 1], c, g) for i, g in enumerate(generator)])
        return (torch.poisson(x * c, generator=default_generator(x, generator)) / c).clamp(0, 1)
    B = x.shape[0]
    seeds = draw(x, generator, lambda g, n: torch.randint(0, 2 ** 62, (n,), generator=g)).numpy().astype("uint64")
    xc = x.detach().to(torch.float32).contiguous()
    out = new_output(xc)
    if B == 0:
        return out.to(x.dtype)
    flat, dst = xc.reshape(B, -1).numpy(), out.reshape(B, -1).numpy()  # (B, 3 H W)
    native.compile_kernels()
    over_threads(B, lambda b0, b1: native.poisson_planes(flat[b0:b1], dst[b0:b1], c, seeds[b0:b1]))
    return out if x.dtype == torch.float32 else out.to(x.dtype)


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
