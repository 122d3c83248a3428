"""CLIPSeg segmentation task: tiny random-init CLIPSeg saved to tmp_path, toy-world masks, metrics, grids."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

import vlmkit
from vlmkit.errors import DataError, DataNotFoundError, InputError, ModelSpecError, WeightsNotFoundError
from vlmkit.evaluate import evaluate_grid, perturbation_cells
from vlmkit.tasks import (
    SegmentationSet,
    SegmentationTask,
    export_toy_segmentation,
    load_clipseg,
    load_segmentation_folder,
    load_toy_segmentation,
)
from vlmkit.metrics.segmentation import foreground_iou, pixel_accuracy
from vlmkit.tasks.tiny import save_tiny_clipseg

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def clipseg_dir(tmp_path_factory):
    return save_tiny_clipseg(tmp_path_factory.mktemp("clipseg"), seed=0, image_size=64)


@pytest.fixture(scope="module")
def seg_model(clipseg_dir):
    return load_clipseg(str(clipseg_dir), device="cpu")


@pytest.fixture(scope="module")
def toy_seg(tmp_path_factory):
    return load_toy_segmentation(tmp_path_factory.mktemp("segdata"), n=6, seed=0, size=32)


def test_task_from_registry_runs_on_toy_masks(tmp_path, seg_model, toy_seg):
    """The task made by name from ``TASKS`` runs a grid on toy masks; its clean IoU and pixel accuracy are the
    ``METRICS`` mask metrics of the model's own predictions, and its options change what counts as a flip."""
    task = vlmkit.TASKS.create("segmentation", threshold=0.5, flip_iou=1.0)
    assert isinstance(task, SegmentationTask) and vlmkit.TASKS.meta("segmentation")["kind"] == "grid"
    table = evaluate_grid([seg_model], toy_seg, perturbation_cells(["gaussian_noise"], [2]), task=task,
                          out_dir=tmp_path / "grid", image_size=32, batch_size=6, progress=False)
    clean = table[table["kind"] == "clean"].set_index("metric")["value"]
    x = toy_seg.load_images(32, mode="squash", progress=False, use_cache=False).float() / 255  # (N, 3, 32, 32)
    probs = seg_model.predict_masks(x, toy_seg.prompts)  # (N, 32, 32)
    masks = toy_seg.load_masks(32)  # (N, 32, 32)
    iou = vlmkit.METRICS.get("foreground_iou")(probs, masks, threshold=0.5)
    acc = vlmkit.METRICS.get("pixel_accuracy")(probs, masks, threshold=0.5)
    assert clean["iou_mean"] == pytest.approx(float(iou.mean()), abs=1e-6)
    assert clean["pixel_accuracy"] == pytest.approx(float(acc.mean()), abs=1e-6)
    noise = table[table["perturbation"] == "gaussian_noise"].set_index("metric")["value"]
    # noise moves some pixels; with flip_iou=1 every changed mask is a flip, and the family rows count them
    assert noise["consistency_iou"] < 1 and noise["mask_flip_rate"] > 0
    fam = table[table["perturbation"] == "family:noise"].set_index("metric")["value"]
    assert fam["IFR"] == pytest.approx(noise["mask_flip_rate"])


def test_iou_and_pixel_accuracy_closed_form():
    pred = torch.zeros(3, 4, 4, dtype=torch.bool)
    target = torch.zeros(3, 4, 4, dtype=torch.bool)
    pred[0, :2, :] = True  # 8 px
    target[0, 1:3, :] = True  # 8 px, overlap 4 -> IoU 4/12, accuracy (16 - 8)/16
    pred[1] = True
    target[1, 0, 0] = True  # IoU 1/16, accuracy 1/16
    # image 2: both empty -> IoU 1, accuracy 1
    iou = foreground_iou(pred, target)
    acc = pixel_accuracy(pred, target)
    torch.testing.assert_close(iou, torch.tensor([4 / 12, 1 / 16, 1.0]))
    torch.testing.assert_close(acc, torch.tensor([0.5, 1 / 16, 1.0]))
    probs = pred.float() * 0.9 + 0.05  # probabilities binarise at the threshold
    torch.testing.assert_close(foreground_iou(probs, target), iou)
    with pytest.raises(InputError, match="shape"):
        foreground_iou(pred, target[:, :2])


def test_predict_masks_shapes_and_determinism(seg_model):
    x = torch.rand(2, 3, 40, 56, generator=torch.Generator().manual_seed(0))
    p1 = seg_model.predict_masks(x, ["a red star", "a blue circle"])
    p2 = seg_model.predict_masks(x, ["a red star", "a blue circle"])
    assert p1.shape == (2, 40, 56) and p1.dtype == torch.float32
    assert float(p1.min()) >= 0 and float(p1.max()) <= 1
    assert torch.equal(p1, p2)
    one = seg_model.predict_masks(x[:1], "a red star")
    torch.testing.assert_close(one, p1[:1], atol=1e-5, rtol=1e-5)  # batch independence
    assert seg_model.image_size == (64, 64)  # from the saved preprocessor_config.json
    with pytest.raises(InputError, match="prompts"):
        seg_model.predict_masks(x, ["a", "b", "c"])
    with pytest.raises(InputError):
        seg_model.predict_masks(x * 2, "a red star")  # outside [0, 1]


def test_load_errors(tmp_path, clipseg_dir):
    with pytest.raises(WeightsNotFoundError):
        load_clipseg(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelSpecError, match="config.json"):
        load_clipseg(str(tmp_path / "empty"))
    with pytest.raises(WeightsNotFoundError, match="offline|downloads are disabled"):
        load_clipseg("hf:CIDAS/clipseg-rd64-refined")  # not cached, offline in tests
    from tests._tiny import save_tiny_hf

    with pytest.raises(ModelSpecError, match="not CLIPSeg"):
        load_clipseg(str(save_tiny_hf("clip", tmp_path / "clip")))


def test_toy_export_masks_match_ground_truth(tmp_path):
    root = export_toy_segmentation(tmp_path / "seg", n=5, seed=3, size=32)
    ds = load_segmentation_folder(root)
    assert len(ds) == 5 and isinstance(ds, SegmentationSet) and ds.task == "segmentation"
    gt = json.loads((root / "ground_truth.json").read_text())
    for i, prompt in enumerate(ds.prompts):
        t = gt[f"{i:06d}"]["target"]
        assert prompt.endswith(f"{t['color']} {t['shape']}")
    masks = ds.load_masks(32)
    assert masks.shape == (5, 32, 32) and masks.dtype == torch.bool and bool(masks.flatten(1).any(1).all())
    # the mask is the object's visible region: its pixels have the object's colour family
    imgs = ds.load_images(32, mode="squash", progress=False, use_cache=False)
    assert imgs.shape == (5, 3, 32, 32)
    m2 = ds.load_masks(64)  # nearest resize keeps it binary
    assert m2.shape == (5, 64, 64)
    again = export_toy_segmentation(tmp_path / "seg2", n=5, seed=3, size=32)
    assert (again / "prompts.csv").read_text() == (root / "prompts.csv").read_text()


def _write_folder(root, rows, size=(8, 6), mask_size=None, header=("image", "mask", "prompt")):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for img, mask, _ in rows:
        Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8)).save(root / "images" / img)
        ms = mask_size or size
        m = np.zeros((ms[1], ms[0]), np.uint8)
        m[:2, :3] = 1  # stored as {0, 1}
        Image.fromarray(m).save(root / "masks" / mask)
    with open(root / "prompts.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def test_folder_layout_and_errors(tmp_path):
    _write_folder(tmp_path / "ok", [("a.png", "a_m.png", "the cat"), ("a.png", "a_m2.png", "the mat")])
    ds = load_segmentation_folder(tmp_path / "ok")
    assert ds.prompts == ["the cat", "the mat"] and len(ds.select([1])) == 1
    m = ds.load_masks(6, mode="squash")
    assert int(m[0].sum()) > 0  # {0, 1} masks are read as foreground where 1
    with pytest.raises(DataNotFoundError, match="not found"):
        load_segmentation_folder(tmp_path / "nope")
    (tmp_path / "noann").mkdir()
    with pytest.raises(DataNotFoundError, match="prompts.csv"):
        load_segmentation_folder(tmp_path / "noann")
    _write_folder(tmp_path / "badcol", [("a.png", "a.png", "x")], header=("image", "mask", "text"))
    with pytest.raises(DataError, match="'prompt'"):
        load_segmentation_folder(tmp_path / "badcol")
    _write_folder(tmp_path / "emptyprompt", [("a.png", "a.png", "")])
    with pytest.raises(DataError, match="empty 'prompt'"):
        load_segmentation_folder(tmp_path / "emptyprompt")
    _write_folder(tmp_path / "missingmask", [("a.png", "a.png", "x")])
    (tmp_path / "missingmask" / "masks" / "a.png").unlink()
    with pytest.raises(DataNotFoundError, match="mask file not found"):
        load_segmentation_folder(tmp_path / "missingmask")
    _write_folder(tmp_path / "size", [("a.png", "a.png", "x")], mask_size=(5, 5))
    with pytest.raises(DataError, match="must match"):
        load_segmentation_folder(tmp_path / "size").load_masks(8)
    (tmp_path / "js").mkdir()
    (tmp_path / "js" / "prompts.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_segmentation_folder(tmp_path / "js")


def test_grid_end_to_end(tmp_path, seg_model, toy_seg):
    cells = perturbation_cells(["gaussian_noise", "translate"], [2])
    table = evaluate_grid([seg_model], toy_seg, cells, out_dir=tmp_path / "grid", image_size=32, batch_size=4,
                          progress=False)
    assert set(table["task"]) == {"segmentation"}
    clean = table[table["kind"] == "clean"].set_index("metric")["value"]
    for k in ("iou_mean", "cum_iou", "pixel_accuracy", "drift_mean", "control_drift_mean"):
        assert k in clean.index
    assert clean["drift_mean"] == pytest.approx(0.0, abs=1e-6)
    pert = table[table["perturbation"] == "gaussian_noise"].set_index("metric")["value"]
    assert 0 <= pert["consistency_iou"] <= 1 and 0 <= pert["mask_flip_rate"] <= 1 and pert["drift_mean"] > 0
    fam = table[table["kind"] == "family"]
    assert set(fam["perturbation"]) == {"family:gaussian_noise", "family:translate", "family:noise", "family:geometric",
                                        "family:all"}  # per perturbation, per registry family, all cells
    # resumable and deterministic: a second run computes nothing and gives the same table
    again = evaluate_grid([seg_model], toy_seg, cells, out_dir=tmp_path / "grid", image_size=32, batch_size=4,
                          progress=False)
    assert again.drop(columns=["time"]).equals(table.drop(columns=["time"]))


def test_geometric_cells_move_the_mask(toy_seg):
    """A geometric cell moves the mask exactly as it moves an image that shows the mask (same per-image
    generators, background fill), so IoU keeps measuring segmentation, not misalignment."""
    from vlmkit.evaluate import Cell, TaskData

    task = SegmentationTask()
    masks = toy_seg.load_masks(32)  # (N, 32, 32) bool
    data = TaskData(torch.zeros(len(masks), 3, 32, 32, dtype=torch.uint8), {"masks": masks})
    idx = torch.arange(len(masks))
    for name in ("translate", "pad_crop", "rotate"):
        cell = Cell("perturbation", name, 3)
        moved = task.targets(data, cell, idx, 0, torch.device("cpu"))
        shown = masks.float()[:, None].expand(-1, 3, -1, -1).contiguous()  # the mask as an image
        ref = Cell("perturbation", name, 3, {"fill": 0.0}) if name != "pad_crop" else cell
        img = cell.apply(shown, idx, seed=0, overrides={"fill": 0.0})[:, 0] > 0.5
        assert torch.equal(moved, img) and not torch.equal(moved, masks), name
        assert torch.equal(task.targets(data, cell, idx, 0, torch.device("cpu")), moved)  # deterministic
        del ref
    noise = Cell("perturbation", "gaussian_noise", 3)
    assert torch.equal(task.targets(data, noise, idx, 0, torch.device("cpu")), masks)  # pixels do not move


def test_attack_cells_maximise_the_mask_loss(tmp_path, seg_model, toy_seg):
    from vlmkit.evaluate import CLEAN, attack_cells, cell_images
    from vlmkit.tasks import MaskBCE

    eps = 8 / 255
    cells = attack_cells("pgd", eps=[eps], steps=[3])
    table = evaluate_grid([seg_model], toy_seg, cells, out_dir=tmp_path / "a", image_size=32, batch_size=4,
                          progress=False)
    atk = table[table["kind"] == "attack"].set_index("metric")["value"]
    assert {"iou_mean", "consistency_iou", "mask_flip_rate", "drift_mean"} <= set(atk.index)
    assert atk["drift_mean"] > 0
    idx = list(range(6))
    x0 = cell_images(seg_model, toy_seg, CLEAN, idx, out_dir=tmp_path / "a", image_size=32)
    xa = cell_images(seg_model, toy_seg, cells[0], idx, out_dir=tmp_path / "a", image_size=32)
    delta = (xa - x0).abs().flatten(1).amax(1)
    assert (delta <= eps + 1e-6).all() and (delta > 0).all() and xa.min() >= 0 and xa.max() <= 1
    batch = {"prompt_emb": seg_model.encode_prompts([toy_seg.prompts[i] for i in idx]),
             "target": toy_seg.load_masks(32)[idx]}
    with torch.no_grad():
        assert (MaskBCE()(seg_model, xa, batch) > MaskBCE()(seg_model, x0, batch)).float().mean() >= 0.8


def test_grid_from_spec_string(tmp_path, clipseg_dir, toy_seg):
    table = evaluate_grid([str(clipseg_dir)], toy_seg, perturbation_cells(["jpeg_compression"], [1]),
                          out_dir=tmp_path / "g", image_size=32, progress=False)
    assert set(table["model"]) == {str(clipseg_dir)}


def test_model_key_follows_the_weights_of_a_task_model(seg_model):
    """A task model wraps its network as ``.model``: its cache key still changes with its weights."""
    from vlmkit.evaluate import model_key

    before = model_key(seg_model)
    p = next(seg_model.model.parameters())
    saved = p.detach().clone()
    with torch.no_grad():
        p.add_(0.25)
    try:
        assert model_key(seg_model) != before
    finally:
        with torch.no_grad():
            p.copy_(saved)
    assert model_key(seg_model) == before
