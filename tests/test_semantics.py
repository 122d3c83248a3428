"""The semantic-misalignment study's pieces that need no captioner: rank correlations, the mask-corruption
perturbation and cells calibrated in mIoU units, caption sets."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from vlmkit.errors import InputError
from vlmkit.evaluate import Cell
from vlmkit.evaluate.semantics import mask_cells
from vlmkit.metrics.segmentation import mean_iou
from vlmkit.stats import rank_correlation
from vlmkit.tasks.caption_data import load_caption_folder, load_coco_caption_set, load_toy_captions


def _spearman_by_hand(x, y):
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))  # no ties in these samples
    return float(np.corrcoef(rx, ry)[0, 1])


def _kendall_by_hand(x, y):
    s = sum(np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]) for i, j in itertools.combinations(range(len(x)), 2))
    return float(s / (len(x) * (len(x) - 1) / 2))


def test_rank_correlations_match_hand_computed_ones():
    rng = np.random.default_rng(0)
    x = rng.normal(size=25)
    y = x + rng.normal(size=25)
    s, k = rank_correlation(x, y, n_boot=300), rank_correlation(x, y, method="kendall", n_boot=300)
    assert s.value == pytest.approx(_spearman_by_hand(x, y)) and k.value == pytest.approx(_kendall_by_hand(x, y))
    assert s.low < s.value < s.high and k.low < k.value < k.high and s.n == 25
    assert rank_correlation(x, np.exp(x)).value == pytest.approx(1.0)  # any monotone map: ρ = 1
    assert np.isnan(rank_correlation([1, 2], [3, 4]).value)  # too few pairs
    with pytest.raises(InputError):
        rank_correlation(x, y[:3])


@pytest.fixture(scope="module")
def toy_caps(tmp_path_factory):
    return load_toy_captions(tmp_path_factory.mktemp("caps"), n=24, seed=0)


def test_toy_caption_set_knows_its_objects_and_masks(toy_caps):
    from vlmkit.toyworld.world import SHAPES

    masks = toy_caps.load_masks(64)  # (N, 64, 64)
    assert masks.shape == (24, 64, 64) and toy_caps.classes == ["background", *SHAPES]
    for objs, m in zip(toy_caps.objects, masks):  # an image's objects are exactly its mask's classes
        assert sorted(objs) == sorted(SHAPES[i - 1] for i in m.unique().tolist() if i > 0)
    assert toy_caps.vocabulary == "toy" and toy_caps.questions == ["is there a star ?", "is there a cross ?"]
    sub = toy_caps.subset(5, seed=1)
    assert [toy_caps.paths.index(p) for p in sub.paths] == sorted(toy_caps.paths.index(p) for p in sub.paths)
    assert all(sub.objects[i] == toy_caps.objects[toy_caps.paths.index(p)] for i, p in enumerate(sub.paths))


def test_mask_cells_hit_their_mIoU_targets_and_apply_per_image(toy_caps):
    """Calibrated cells: the corrupted maps of the cell's own per-image generators lose the target mIoU
    (deterministic corruptions: exactly the calibration's; within 0.03 of the target)."""
    cells = mask_cells(toy_caps, ["erode", "drop_small"], [0.05, 0.2], seed=0, size=64)
    assert len(cells) == 4 and all(c.name == "mask_corruption" for c in cells)
    from vlmkit.registry import MASK_CORRUPTIONS

    masks = toy_caps.load_masks(64)
    x = toy_caps.load_images(size=64).float() / 255
    for c in cells:
        m1 = MASK_CORRUPTIONS.get(c.params["corruption"])(masks, c.severity)
        has = (masks > 0).flatten(1).any(1) | (m1 > 0).flatten(1).any(1)
        drop = 1 - float(mean_iou(m1[has], masks[has]).mean())
        assert drop == pytest.approx(c.params["miou_drop"], abs=0.03), c.label()
        y = c.apply(x, list(range(len(x))), seed=0, context={"masks": masks})
        assert y.shape == x.shape and not torch.equal(y, x)
        # the image of item 3 alone is the same as in the batch (per-image maps and generators)
        assert torch.equal(c.apply(x[3:4], [3], seed=0, context={"masks": masks[3:4]}), y[3:4])
    with pytest.raises(InputError, match="label maps"):
        Cell("perturbation", "mask_corruption", 0.3, {"corruption": "erode"}).apply(x[:2], [0, 1], seed=0)


def test_caption_folder_and_coco_caption_sets(tmp_path, shared_data):
    from PIL import Image

    root = tmp_path / "city"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "classes.txt").write_text("road\ncar\nperson\n")
    lab = np.zeros((32, 32), np.uint8)
    lab[:10, :10] = 1
    lab[20:, 20:22] = 2  # 24 pixels of person
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(root / "images" / "a.png")
    Image.fromarray(lab).save(root / "labels" / "a.png")
    ds = load_caption_folder(root, safety=["person", "car"], min_pixels=16)
    assert ds.objects == [["car", "person"]] and ds.load_masks(32).shape == (1, 32, 32)
    coco = load_coco_caption_set(shared_data / "coco-mini" / "captions.json", shared_data / "coco-mini" / "images")
    assert len(coco) == 159 and all(r for r in coco.references) and sum(map(len, coco.objects)) > 100
