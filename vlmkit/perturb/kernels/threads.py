"""A batch split over threads: :func:`over_threads`, the one way a CPU kernel runs its images in parallel.

The groups run on **torch's own OpenMP team** where torch uses the GNU OpenMP runtime it ships (the Linux
wheels: ``torch/lib/libgomp.so.1``, called through ``GOMP_parallel``), and on a thread pool elsewhere.

Why the team: after a parallel torch op, libgomp's worker threads spin-wait for the next parallel region
for a while (``GOMP_SPINCOUNT``; several milliseconds on the 2-core machine this was measured on). Groups
handed to other threads in that window compete with the spinning workers for the cores; handed to the
team, the spinning workers run them. Measured (2 cores, 64 images at 64 px, right after the input check's
``amin``/``amax``, best of 7): shot noise 11.8-12.4 ms on the pool against 5.7-6.7 ms on the team, motion
blur 6.8-11.6 ms against 4.3-6.0 ms, pixelate 1.5-2.0 ms against 1.1 ms; JPEG, whose groups hold the GIL
longer, 5.6-7.3 ms against 4.8-6.0 ms.

The functions run here release the GIL (the numba loops of :mod:`.native`, libjpeg, Pillow, and torch's ops
for :func:`vlmkit.perturb.base.draw`'s per-image draws), so the groups run at once. Which thread runs which group never changes a result: every group writes its own images.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

#: ``void (*)(void *)``: the body ``GOMP_parallel`` runs on every thread of the team.
_BODY = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
BACKENDS = ("openmp", "pool")
_POOL_NAME = "vlmkit-kernels"


def over_threads(n: int, fn: Callable[[int, int], None], most: int | None = None, *,
                 backend: str | None = None) -> None:
    """``fn(b0, b1)`` over ``n`` items split in one group per torch thread (at most ``most`` items a group).

    Args:
        n: Items (images) in the batch.
        fn: Works items ``[b0, b1)``; groups are disjoint, so they may run in any order, at once.
        most: Largest group (e.g. a JPEG frame's height limit); more groups than threads then queue.
        backend: ``"openmp"`` (torch's OpenMP team), ``"pool"`` (a thread pool), or None: the team where
            :func:`openmp_team` finds it, the pool otherwise.

    Raises:
        ValueError: An unknown ``backend``, or ``"openmp"`` where torch's runtime is not found.
        Exception: The first error ``fn`` raised (the other groups still running finish first).
    """
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}; expected one of {list(BACKENDS)} or None")
    if backend == "openmp" and openmp_team() is None:
        raise ValueError("backend='openmp': torch's GNU OpenMP runtime (torch/lib/libgomp.so.1) is not loaded here")
    if n == 0:
        return
    workers = max(1, min(torch.get_num_threads(), n))
    size = min(most or n, -(-n // workers))
    groups = [(b0, min(n, b0 + size)) for b0 in range(0, n, size)]
    nested = threading.current_thread().name.startswith(_POOL_NAME)  # the pool's own workers wait on nothing
    if workers == 1 or len(groups) == 1 or (nested and backend != "openmp"):
        for b0, b1 in groups:
            fn(b0, b1)
        return
    team = openmp_team() if backend != "pool" else None
    if team is None:
        list(_pool(workers).map(lambda g: fn(*g), groups))
        return
    todo, errors = groups[::-1], []  # popped from the end: the groups in order

    def body(_: Any) -> None:  # on every thread of the team, the caller included; holds the GIL between groups
        while not errors:
            try:
                b0, b1 = todo.pop()
            except IndexError:
                return
            try:
                fn(b0, b1)
            except BaseException as e:  # re-raised by the caller: a ctypes callback cannot raise
                errors.append(e)

    callback = _BODY(body)  # kept alive until the region ends
    team(callback, None, min(workers, len(groups)), 0)  # GIL released while the team runs
    if errors:
        raise errors[0]


@functools.lru_cache(maxsize=1)
def openmp_team() -> Callable[..., None] | None:
    """``GOMP_parallel`` of the GNU OpenMP runtime torch has loaded, or None (another platform, another
    runtime, or torch built without OpenMP): the team then is not reachable and :func:`over_threads` uses
    its thread pool."""
    if not sys.platform.startswith("linux") or "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return None
    path = os.path.realpath(os.path.join(os.path.dirname(torch.__file__), "lib", "libgomp.so.1"))
    try:
        with open("/proc/self/maps") as f:  # the very file torch loaded, not another copy
            loaded = any(line.rstrip("\n").endswith(path) for line in f)
    except OSError:
        return None
    if not loaded:
        return None
    try:
        lib = ctypes.CDLL(path)  # the loaded object again (same path): no second runtime
        parallel = lib.GOMP_parallel
    except (OSError, AttributeError):
        return None
    parallel.argtypes = [_BODY, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
    parallel.restype = None
    return parallel


@functools.lru_cache(maxsize=4)
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix=_POOL_NAME)


__all__ = ["BACKENDS", "openmp_team", "over_threads"]
