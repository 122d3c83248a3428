"""One GPU near its limit, checked on CPU: OOM back-off, automatic batch size, bf16/channels_last/compile
options that leave the default (float32) numbers exactly as they were."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import vlmkit
from vlmkit.evaluate import Cell, evaluate_grid, with_oom_backoff
from vlmkit.runtime import auto_batch_size, fast_model, run_batched_with_backoff

from _tiny import synthetic_captions, tiny_vit_model


def _fake(limit: int, calls: list[int]):
    def fn(start: int, stop: int) -> torch.Tensor:
        calls.append(stop - start)
        if stop - start > limit:
            raise torch.cuda.OutOfMemoryError(f"simulated: {stop - start} > {limit}")
        return torch.arange(start, stop)

    return fn


def test_backoff_halves_until_it_fits_and_keeps_order():
    calls: list[int] = []
    out = run_batched_with_backoff(_fake(5, calls), 23, 16)
    assert torch.equal(torch.cat(out), torch.arange(23))
    assert out.batch_size == 4 and calls[:3] == [16, 8, 4] and max(calls[3:]) == 4
    assert torch.equal(torch.cat(with_oom_backoff(_fake(5, []), 23, 16, progress=False)), torch.arange(23))


def test_backoff_gives_up_at_the_minimum_and_passes_other_errors():
    with pytest.raises(torch.cuda.OutOfMemoryError):
        run_batched_with_backoff(_fake(0, []), 4, 4)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        run_batched_with_backoff(_fake(3, []), 8, 8, min_batch_size=4)

    def boom(start, stop):
        raise RuntimeError("not memory")

    with pytest.raises(RuntimeError, match="not memory"):
        run_batched_with_backoff(boom, 4, 4)
    with pytest.raises(ValueError):
        run_batched_with_backoff(boom, 4, 0)


def test_auto_batch_size_is_the_default_off_cuda():
    assert auto_batch_size(_fake(1, []), 100, "cpu", default=64) == 64


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_vit_model(tmp_path_factory.mktemp("cfg"))


@pytest.fixture(scope="module")
def captioned(tmp_path_factory):
    return synthetic_captions(tmp_path_factory.mktemp("caps"), 8)


def test_fast_model_defaults_are_exact_and_options_are_undone(tiny):
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ref = tiny.encode_image(x)
    with fast_model(tiny):
        assert torch.equal(tiny.encode_image(x), ref)
    with fast_model(tiny, precision="bf16"):
        bf = tiny.encode_image(x)
    assert bf.dtype == torch.float32 and not torch.equal(bf, ref)
    assert torch.nn.functional.cosine_similarity(bf, ref).min() > 0.98
    with fast_model(tiny, channels_last=True, compile="eager"):
        assert torch.allclose(tiny.encode_image(x), ref, atol=1e-5)
    assert "_encode_pixels" not in tiny.__dict__ and torch.equal(tiny.encode_image(x), ref)
    # gradients reach float32 pixels through the bf16 tower (the attacks' path)
    xg = x.clone().requires_grad_(True)
    with fast_model(tiny, precision="bf16"):
        tiny.encode_image(xg).sum().backward()
    assert xg.grad is not None and xg.grad.dtype == torch.float32 and xg.grad.abs().sum() > 0


def test_engine_options_keep_float32_numbers_and_key_bf16_apart(tiny, captioned, tmp_path):
    import vlmkit.attacks  # noqa: F401  (registers the attacks)
    import vlmkit.perturb  # noqa: F401
    from vlmkit.evaluate import attack_cells

    cells = [Cell("perturbation", "gaussian_noise", 2)] + attack_cells("pgd", eps=[4 / 255], steps=2)
    cols = ["model", "dataset", "cell", "metric", "value"]
    ref = evaluate_grid(tiny, captioned, cells, out_dir=tmp_path / "ref", progress=False, batch_size=64)
    auto = evaluate_grid(tiny, captioned, cells, out_dir=tmp_path / "auto", progress=False, batch_size="auto",
                         channels_last=True, resident=True)
    pd.testing.assert_frame_equal(ref[cols], auto[cols], atol=1e-5, rtol=0)  # CPU: auto = 64, channels_last exact
    both = evaluate_grid(tiny, captioned, cells, out_dir=tmp_path / "ref", progress=False, precision="bf16")
    bf = both[both["precision"] == "bf16"]  # its own cached embeddings and cell files, beside the float32 ones
    assert len(both) == 2 * len(ref) and bf[cols].shape == ref[cols].shape
    assert set(bf["cell"]) == set(ref["cell"]) and bf["value"].notna().all()
    clean = lambda df, m: float(df[(df.kind == "clean") & (df.metric == m)]["value"].iloc[0])  # noqa: E731
    assert clean(bf, "i2t_R@1") == pytest.approx(clean(ref, "i2t_R@1"), abs=0.26)
    with pytest.raises(vlmkit.errors.InputError, match="batch_size"):
        evaluate_grid(tiny, captioned, cells, out_dir=tmp_path / "x", progress=False, batch_size="big")
