"""One GPU near its limit, checked on CPU: OOM back-off, automatic batch size, and ``VLM.fast``'s
bf16/channels_last/compile options, which leave the default (float32) numbers exactly as they were and
keep bf16 embeddings close enough that retrievals do not change.

Why the bf16 thresholds: bfloat16 keeps 8 significant bits, a relative rounding error of at most
2^-9 ≈ 0.2% per operation. Through a few blocks (with float32 accumulation in the matmuls) the
embedding's relative error stays at a few percent at most; an error of relative size ε costs
``1 - cos ≈ ε²/2``, so ``cos > 0.999`` allows ε up to 4.5%. The observed values are ~0.99996 (tiny
random ViT) and ~0.99998 / ~0.99996 (toy ViT / ResNet), so the bound has ≥25x headroom, yet it fails
for the real faults: autocast leaking past the tower (half-precision normalisation), a half-precision
cast of the pixels, or a wrong memory layout — each gives cosines far below 0.999 or garbage.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import vlmkit
from vlmkit.evaluate import Cell, cell_embeddings, evaluate_grid
from vlmkit.runtime import auto_batch_size, run_batched_with_backoff

from _tiny import synthetic_captions, tiny_vit_model

#: Per-image cosine between bf16-tower and float32 embeddings (see the module docstring).
MIN_BF16_COS = 0.999


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


def test_fast_defaults_are_exact_and_options_are_undone(tiny):
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ref = tiny.encode_image(x)
    with tiny.fast() as v:
        assert v is tiny and torch.equal(tiny.encode_image(x), ref)
    with tiny.fast(precision="float32"):
        assert torch.equal(tiny.encode_image(x), ref)
    with tiny.fast(precision="bf16"):
        bf = tiny.encode_image(x)
        with tiny.fast(channels_last=True):  # an inner block replaces the options until it exits
            assert torch.allclose(tiny.encode_image(x), ref, atol=1e-5)
        assert torch.equal(tiny.encode_image(x), bf)
    assert bf.dtype == torch.float32 and not torch.equal(bf, ref)
    assert F.cosine_similarity(bf, ref).min() > MIN_BF16_COS
    with tiny.fast(channels_last=True, compile="eager"):
        assert torch.allclose(tiny.encode_image(x), ref, atol=1e-5)
        assert tiny.model.visual.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert tiny.model.visual.conv1.weight.is_contiguous() and torch.equal(tiny.encode_image(x), ref)
    assert "_encode_pixels" not in tiny.__dict__  # nothing is patched onto the instance
    # gradients reach float32 pixels through the bf16 tower (the attacks' path)
    xg = x.clone().requires_grad_(True)
    with tiny.fast(precision="bf16"):
        tiny.encode_image(xg).sum().backward()
    assert xg.grad is not None and xg.grad.dtype == torch.float32 and xg.grad.abs().sum() > 0


def test_fast_bf16_is_restored_after_an_error(tiny):
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ref = tiny.encode_image(x)
    with pytest.raises(RuntimeError, match="inside"):
        with tiny.fast(precision="bf16", channels_last=True):
            raise RuntimeError("inside")
    assert torch.equal(tiny.encode_image(x), ref) and tiny.model.visual.conv1.weight.is_contiguous()


@pytest.mark.parametrize("spec", ["toy:vit", "toy:rn"])
def test_bf16_tower_keeps_embeddings_and_retrievals(spec):
    """Trained toy CLIPs (ViT and ResNet towers) on 64 toy scenes and their ground-truth captions.

    Embeddings: ``cos > MIN_BF16_COS`` per image (module docstring). Retrievals: the image→text top-1
    may only flip where the bf16 error exceeds the gap between the two best captions; on a trained
    model that is a near-tie, so at most 3 of 64 (95%) may differ (observed: none).
    """
    from vlmkit.toyworld import describe, sample_scene

    vlm = vlmkit.load_model(spec, device="cpu")
    scenes = [sample_scene(123, i) for i in range(64)]
    x = torch.stack([s.to_tensor() for s in scenes])  # (64, 3, 64, 64)
    text = vlm.encode_text([describe(s) for s in scenes])  # (64, D)
    ref = vlm.encode_image(x)  # (64, D)
    with vlm.fast(precision="bf16"):
        bf = vlm.encode_image(x)
    assert not torch.equal(bf, ref)  # the tower really ran in bf16
    assert F.cosine_similarity(bf, ref).min() > MIN_BF16_COS
    same = (ref @ text.T).argmax(1) == (bf @ text.T).argmax(1)  # (64,)
    assert int((~same).sum()) <= 3


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
    bf = evaluate_grid(tiny, captioned, cells, out_dir=tmp_path / "ref", progress=False, precision="bf16")
    assert (bf["precision"] == "bf16").all() and bf[cols].shape == ref[cols].shape
    assert set(bf["cell"]) == set(ref["cell"]) and bf["value"].notna().all()
    stored = pd.read_parquet(tmp_path / "ref" / "results.parquet")  # its own cell files, beside the float32 ones
    assert len(stored) == 2 * len(ref) and (stored["precision"] == "bf16").sum() == len(ref)
    # the engine's bf16 clean embeddings: really bf16, and within the bound of the module docstring
    emb = {p: cell_embeddings(tiny, captioned, [], out_dir=tmp_path / "ref", progress=False, precision=p)["clean"]
           for p in (None, "bf16")}
    assert not torch.equal(emb["bf16"], emb[None])
    assert F.cosine_similarity(emb["bf16"], emb[None]).min() > MIN_BF16_COS
    with pytest.raises(vlmkit.errors.InputError, match="batch_size"):
        evaluate_grid(tiny, captioned, cells, out_dir=tmp_path / "x", progress=False, batch_size="big")
