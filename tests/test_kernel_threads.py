"""``over_threads``: every item once, the same bytes on torch's OpenMP team as on the pool or one thread,
errors raised in the caller, nesting without a deadlock."""

from __future__ import annotations

import threading

import pytest
import torch

from vlmkit.perturb import corruptions as C
from vlmkit.perturb.kernels import threads
from vlmkit.perturb.kernels.threads import openmp_team, over_threads
from vlmkit.runtime import item_generators

BACKENDS = [b for b in threads.BACKENDS if b != "openmp" or openmp_team() is not None]


@pytest.fixture
def three_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(3)
    yield
    torch.set_num_threads(old)


def test_openmp_team_found_where_torch_ships_gnu_openmp():
    import os
    import sys

    shipped = os.path.isfile(os.path.join(os.path.dirname(torch.__file__), "lib", "libgomp.so.1"))
    if not (sys.platform.startswith("linux") and shipped):
        pytest.skip("torch here does not ship GNU OpenMP: the pool is the only backend")
    assert openmp_team() is not None


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n,most", [(1, None), (2, None), (7, None), (64, None), (10, 3), (5, 1)])
def test_every_item_once_in_disjoint_groups(three_threads, backend, n, most):
    seen, lock = [], threading.Lock()

    def fn(b0: int, b1: int) -> None:
        with lock:
            seen.append((b0, b1))

    over_threads(n, fn, most, backend=backend)
    items = sorted(i for b0, b1 in seen for i in range(b0, b1))
    assert items == list(range(n))
    assert all(b1 - b0 <= (most or n) for b0, b1 in seen)
    if n >= 3 and most is None:
        assert len(seen) == 3  # one group per thread


@pytest.mark.parametrize("backend", BACKENDS)
def test_error_in_a_group_is_raised_in_the_caller(three_threads, backend):
    def fn(b0: int, b1: int) -> None:
        if b0 > 0:
            raise KeyError(f"group {b0}")

    with pytest.raises(KeyError, match="group"):
        over_threads(9, fn, backend=backend)
    over_threads(9, lambda b0, b1: None, backend=backend)  # the team is usable again


@pytest.mark.parametrize("backend", BACKENDS)
def test_nested_split_completes(three_threads, backend):
    out = torch.zeros(6, 4)

    def inner(row: int):
        def fn(c0: int, c1: int) -> None:
            out[row, c0:c1] += 1
        return fn

    over_threads(6, lambda b0, b1: [over_threads(4, inner(r), backend=backend) for r in range(b0, b1)],
                 backend=backend)
    assert torch.equal(out, torch.ones(6, 4))


def test_unknown_backend_fails():
    with pytest.raises(ValueError, match="backend='gpu'"):
        over_threads(4, lambda b0, b1: None, backend="gpu")


@pytest.mark.parametrize("name,severity", [("shot_noise", 2), ("motion_blur", 3), ("pixelate", 4),
                                           ("jpeg_compression", 2)])
def test_kernels_same_bytes_on_every_backend(three_threads, monkeypatch, name, severity):
    """A corruption split over the team, over the pool and run on one thread gives the same bytes."""
    import functools

    from vlmkit.perturb.kernels import blur, digital, noise

    x = (torch.rand(11, 3, 32, 48, generator=torch.Generator().manual_seed(3)) * 255).round() / 255
    fn = getattr(C, name)

    def run() -> torch.Tensor:
        gens = item_generators(0, name, range(len(x))) if name in ("shot_noise", "motion_blur") else None
        return fn(x, severity, **({"generator": gens} if gens else {}))

    outs = {}
    for backend in BACKENDS:
        for mod in (blur, digital, noise):
            monkeypatch.setattr(mod, "over_threads", functools.partial(over_threads, backend=backend))
        outs[backend] = run()
    torch.set_num_threads(1)
    one = run()
    assert all(torch.equal(one, y) for y in outs.values())
    assert not torch.equal(one, x)


def test_openmp_asked_where_missing_fails_before_any_work(monkeypatch):
    monkeypatch.setattr(threads, "openmp_team", lambda: None)
    calls = []
    with pytest.raises(ValueError, match="libgomp"):
        over_threads(4, lambda b0, b1: calls.append((b0, b1)), backend="openmp")
    assert calls == []
    over_threads(4, lambda b0, b1: calls.append((b0, b1)))  # the default falls back to the pool
    assert sorted(i for b0, b1 in calls for i in range(b0, b1)) == [0, 1, 2, 3]


@pytest.mark.parametrize("shape", [(3, 64, 64), (1,)])  # a noise image (split over threads), one value (not)
def test_draw_with_a_generator_per_image_is_each_image_drawing_alone(three_threads, shape, monkeypatch):
    """``draw`` splits big per-image draws over the team; image i's values are what its generator gives alone,
    whether the draws were split or not, and an empty batch draws nothing."""
    from vlmkit.perturb import base

    def sample(g, n):
        return torch.randn((n, *shape), generator=g)

    x = torch.zeros(7, 3, 8, 8)
    alone = torch.cat([sample(g, 1) for g in item_generators(3, "draw", range(7))])  # one image at a time
    split = base.draw(x, item_generators(3, "draw", range(7)), sample)
    monkeypatch.setattr(base, "SPLIT_DRAWS", 10 ** 9)  # never split
    serial = base.draw(x, item_generators(3, "draw", range(7)), sample)
    assert torch.equal(split, alone) and torch.equal(serial, alone)
    assert base.draw(x[:0], [], sample).shape == (0, *shape)
