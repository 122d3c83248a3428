"""What the engine's speed rests on, checked as correctness (no timings here; see benchmarks/).

* A perturbation registered ``batched`` (it never reads its generator) is applied by ``Cell.apply`` in one
  call per batch; that is only allowed when the batch gives, bit for bit, the images of one call per
  image — checked for every registered perturbation, severity and two sizes.
* Text embeddings are cached by content (model weights × texts × templates), not by notebook, dataset
  images or output folder: a second grid call elsewhere encodes no text.
"""

from __future__ import annotations

import pytest
import torch

import vlmkit.perturb  # noqa: F401  (registers every perturbation)
from vlmkit.evaluate import Cell
from vlmkit.perturb.base import draws_randomness
from vlmkit.registry import PERTURBATIONS


def _batched() -> list[str]:
    """The package's batched perturbations (not the ``_test_*`` ones other test modules register)."""
    return [n for n in PERTURBATIONS.list() if PERTURBATIONS.meta(n).get("batched") and not PERTURBATIONS.meta(n)["needs"]
            and not n.startswith("_")]


def test_batched_flag_follows_the_generator() -> None:
    for n in PERTURBATIONS.list():
        if PERTURBATIONS.meta(n).get("batched"):
            assert not draws_randomness(PERTURBATIONS.get(n).raw), n
    # the random ones are never batched, whatever else they are
    for n in ("gaussian_noise", "impulse_noise", "glass_blur", "band_noise", "typographic"):
        assert not PERTURBATIONS.meta(n)["batched"], n
    assert {"contrast", "jpeg_compression", "low_pass", "translate"} <= set(_batched())


@pytest.mark.parametrize("size", [64, 224])
def test_batched_perturbations_are_batch_invariant(size: int) -> None:
    g = torch.Generator().manual_seed(size)
    x = torch.rand(5, 3, size, size, generator=g)  # (B, 3, H, W)
    for n in _batched():
        fn = PERTURBATIONS.get(n)
        for s in PERTURBATIONS.meta(n).get("severities") or (1,):
            whole = fn(x, s)
            single = torch.cat([fn(x[i:i + 1], s) for i in range(len(x))])
            assert torch.equal(whole, single), f"{n}@{s} at {size} px differs by {(whole - single).abs().max():.3g}"


def _item_generators() -> list[str]:
    return [n for n in PERTURBATIONS.list() if PERTURBATIONS.meta(n).get("item_generators") and not n.startswith("_")]


@pytest.mark.parametrize("size", [64, 224])
def test_item_generator_perturbations_equal_one_call_per_image(size: int) -> None:
    """A perturbation registered ``item_generators`` takes one generator per image in one call: bit for bit the
    images of one call per image with that image's generator, every severity, two sizes; a sequence of the
    wrong length, or given to a perturbation that takes one generator, is refused before any work."""
    from vlmkit.errors import InputError
    from vlmkit.runtime import item_generators

    assert {"gaussian_noise", "shot_noise", "motion_blur", "band_noise"} <= set(_item_generators())
    x = (torch.rand(5, 3, size, size, generator=torch.Generator().manual_seed(size)) * 255).round() / 255
    x[3] = torch.rand(3, size, size, generator=torch.Generator().manual_seed(1))  # one image off the 8-bit grid
    for n in _item_generators():
        fn = PERTURBATIONS.get(n)
        for s in PERTURBATIONS.meta(n).get("severities") or (1,):
            whole = fn(x, s, generator=item_generators(s, n, range(5)))
            single = torch.cat([fn(x[i:i + 1], s, generator=g) for i, g in enumerate(item_generators(s, n, range(5)))])
            assert torch.equal(whole, single), f"{n}@{s} at {size} px differs by {(whole - single).abs().max():.3g}"
        with pytest.raises(InputError, match="one torch.Generator per image"):
            fn(x, generator=item_generators(0, n, range(4)))
    with pytest.raises(InputError, match="only perturbations registered with item_generators"):
        PERTURBATIONS.get("impulse_noise")(x, 1, generator=item_generators(0, "k", range(5)))


def test_cell_apply_batched_equals_per_image_and_any_split() -> None:
    x = torch.rand(7, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    for name in ("contrast", "gaussian_noise", "shot_noise", "impulse_noise", "band_noise"):
        cell = Cell("perturbation", name, 3)
        whole = cell.apply(x, list(range(7)), seed=5)
        parts = torch.cat([cell.apply(x[:3], [0, 1, 2], seed=5), cell.apply(x[3:], [3, 4, 5, 6], seed=5)])
        assert torch.equal(whole, parts), name


def test_text_embeddings_are_shared_across_output_folders_and_image_subsets(tmp_path) -> None:
    from _tiny import synthetic_captions, tiny_vit_model

    from vlmkit.evaluate import evaluate_grid

    vlm = tiny_vit_model(tmp_path / "cfg")
    ds = synthetic_captions(tmp_path / "caps", 6)
    calls: list[int] = []
    encode = vlm.encode_text

    def counting(texts, *a, **k):  # noqa: ANN001, ANN002, ANN003
        calls.append(len(texts))
        return encode(texts, *a, **k)

    vlm.encode_text = counting  # type: ignore[method-assign]
    a = evaluate_grid(vlm, ds, [], out_dir=tmp_path / "nb03", progress=False, image_size=32)
    assert calls, "the first call must encode the captions"
    n = len(calls)
    b = evaluate_grid(vlm, ds, [], out_dir=tmp_path / "nb04", progress=False, image_size=48)
    assert len(calls) == n, "another notebook's folder and image size must reuse the text embeddings"
    assert set(a["value"].round(6)) and set(b["value"].round(6))
    evaluate_grid(vlm, ds, [], out_dir=tmp_path / "nb05", progress=False, image_size=32, cache=False)
    assert len(calls) > n, "cache=False reads nothing"


def test_attack_rows_record_their_cost(tmp_path) -> None:
    """An attack row says how many passes each image cost: PGD with ``steps`` steps is ``steps`` forward and
    backward passes (+1 forward for an objective that prepares a clean target), whatever the batch size."""
    from _tiny import synthetic_captions, tiny_vit_model

    from vlmkit.evaluate import evaluate_grid

    vlm = tiny_vit_model(tmp_path / "cfg")
    ds = synthetic_captions(tmp_path / "caps", 6)
    cells = [Cell("attack", "pgd", params={"eps": 2 / 255, "steps": 3})]
    tables = [evaluate_grid(vlm, ds, cells, out_dir=tmp_path / f"o{bs}", progress=False, image_size=32, batch_size=bs)
              for bs in (2, 6)]
    for df in tables:
        atk = df[df["kind"] == "attack"]
        assert len(atk) and atk["backward_passes"].eq(3).all()
        assert atk["forward_passes"].isin([3, 4]).all() and (atk["attack_s_per_image"] > 0).all()
        assert df[df["kind"] == "perturbation"].empty and df[df["kind"] == "clean"]["forward_passes"].isna().all()
    assert tables[0]["forward_passes"].dropna().iloc[0] == tables[1]["forward_passes"].dropna().iloc[0]


def test_family_flip_rates_reuse_the_cells_predictions(tmp_path, monkeypatch) -> None:
    """The family rows (IFR/IV over a perturbation's cells) read each cell's predictions kept by its metrics
    (by the embeddings' content, the outputs being reread from the cache) instead of scoring the cell again;
    the rows equal flip rates recomputed from scratch."""
    from _tiny import synthetic_captions, tiny_vit_model

    from vlmkit.evaluate import evaluate_grid
    from vlmkit.evaluate.dual import RetrievalTask
    from vlmkit.evaluate.runner import Runner

    vlm = tiny_vit_model(tmp_path / "cfg")
    ds = synthetic_captions(tmp_path / "caps", 6)
    inside, scored = [False], []
    family_flips, scores = Runner.family_flips, RetrievalTask.scores

    def watched_family(self, cells):  # noqa: ANN001, ANN202
        inside[0] = True
        try:
            return family_flips(self, cells)
        finally:
            inside[0] = False

    def watched_scores(self, data, emb):  # noqa: ANN001, ANN202
        scored.append(inside[0])
        return scores(self, data, emb)

    monkeypatch.setattr(Runner, "family_flips", watched_family)
    monkeypatch.setattr(RetrievalTask, "scores", watched_scores)
    cells = [Cell("perturbation", "gaussian_noise", s) for s in (2, 5)]
    df = evaluate_grid(vlm, ds, cells, out_dir=tmp_path / "out", progress=False, image_size=32)
    assert scored and not any(scored), "the family pass scored a cell again"
    ifr = df[df.metric == "IFR"].set_index("perturbation").value
    cell_ifr = df[(df.metric == "IFR") & (df.kind == "perturbation")].value
    assert len(cell_ifr) == 2 and float(ifr["family:gaussian_noise"]) == pytest.approx(float(cell_ifr.mean()))


def test_a_batch_of_consecutive_items_is_a_view_of_the_decoded_images() -> None:
    """The engine slices a run of items (no gather); any other order falls back to indexing."""
    from vlmkit.evaluate.runner import contiguous_run

    assert contiguous_run(torch.arange(64, 128)) == slice(64, 128)
    assert contiguous_run(torch.tensor([5], dtype=torch.int32)) == slice(5, 6)
    for index in ([7, 2, 9], [3, 5], [4, 3], [0, 0]):
        assert contiguous_run(torch.tensor(index)) is None, index
    assert contiguous_run(torch.tensor([], dtype=torch.long)) is None
    imgs = torch.randint(0, 256, (10, 3, 4, 4), dtype=torch.uint8)
    index = torch.arange(3, 7)
    assert torch.equal(imgs[contiguous_run(index)], imgs[index])
