"""Process allocator policy: keep batch-sized CPU buffers in the heap instead of mapping them afresh.

glibc's ``malloc`` serves every request above ``M_MMAP_THRESHOLD`` (at most 32 MiB under its dynamic rule)
with a fresh ``mmap`` and returns it to the kernel on ``free``. A batch of 64 images at 224 px is 38.5 MB in
float32, so every perturbation result, every activation of that size, is first-touch page-faulted again on
each call: about 0.1-0.25 ms per image on this kind of machine, more than some whole corruption kernels
cost (measured in ``benchmarks/bench_corruptions.py``). Raising the mmap and trim thresholds lets freed
batches be reused from the heap -- the same remedy as PyTorch's CPU tuning advice (jemalloc / tcmalloc),
done with the C library the process already has.

``import vlmkit`` applies it once (:func:`tune_allocator`) on Linux with glibc. It changes no number, only
where freed memory goes. Cost: freed memory stays mapped (up to ``TRIM_THRESHOLD`` at the heap's top), and
as torch allocates with ``posix_memalign``, whose small split-off remainders wait in glibc's per-thread
cache (7 entries) between a freed block and its neighbours, the first ~8 blocks of a size are fresh before
reuse sets in: a steady state some hundred MB above the working set for 224-px batches of 64. Opt out with
``VLMKIT_MALLOC=system`` in the environment; it is skipped too where the user already set glibc's own
``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` variables. Torch-free, so ``import vlmkit`` stays light.
"""

from __future__ import annotations

import ctypes
import os
import sys

#: Environment variable: ``system`` leaves the C library's defaults alone.
ENV = "VLMKIT_MALLOC"
#: Requests up to this size come from the heap (glibc ``M_MMAP_THRESHOLD``).
MMAP_THRESHOLD = 1 << 30
#: Freed memory at the top of the heap is returned to the kernel beyond this size (``M_TRIM_THRESHOLD``).
TRIM_THRESHOLD = 1 << 30

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # <malloc.h>
_state: dict[str, bool] = {}


def tune_allocator() -> bool:
    """Raise glibc's mmap and trim thresholds for this process (once; later calls return the first result).

    Returns:
        True when both thresholds were set; False on other platforms or C libraries, when opted out
        (``VLMKIT_MALLOC=system``), when glibc's own ``MALLOC_*_THRESHOLD_`` variables are set, or when the
        C library refused a value.
    """
    if "tuned" in _state:
        return _state["tuned"]
    ok = False
    if (sys.platform.startswith("linux") and os.environ.get(ENV, "").strip().lower() != "system"
            and not any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"))):
        try:
            mallopt = ctypes.CDLL(None).mallopt  # absent outside glibc (musl): AttributeError
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        except (OSError, AttributeError):
            ok = False
    _state["tuned"] = ok
    return ok
