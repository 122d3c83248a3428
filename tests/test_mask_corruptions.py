"""Label-map corruptions, their renderers, mIoU and calibration by mIoU drop (vlmkit.perturb.masks,
vlmkit.metrics.segmentation.mean_iou, vlmkit.evaluate.calibrate).

References are independent of the code under test: scipy.ndimage (labelling, binary erosion/dilation),
scikit-learn's ``jaccard_score``, hand-computed maps, and the PASCAL VOC colour map's published values.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from sklearn.metrics import jaccard_score

from vlmkit.errors import InputError
from vlmkit.evaluate.calibrate import calibrate, calibrate_grid, miou_drop
from vlmkit.metrics.segmentation import mean_iou
from vlmkit.perturb.masks import (
    confusable_pairs,
    corrupt_and_render,
    dropped_pixels,
    list_mask_corruptions,
    list_renderers,
    render,
    voc_palette,
)
from vlmkit.registry import MASK_CORRUPTIONS
from vlmkit.toyworld.world import SHAPES, sample_scene

pytestmark = pytest.mark.usefixtures("one_thread")

CORRUPTIONS = ("confuse", "dilate", "drop_small", "erode", "merge")
EIGHT = np.ones((3, 3), dtype=bool)


def gen(seed: int = 0) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def toy_labels(scene) -> np.ndarray:
    """A toy scene's label map: class = shape index + 1 on each object's visible pixels, 0 elsewhere."""
    lab = np.zeros(scene.image.shape[:2], dtype=np.int64)
    for o in scene.objects:
        lab[o.visible] = SHAPES.index(o.shape) + 1
    return lab


@pytest.fixture(scope="module")
def toy():
    """32 toy-world scenes: images (B, 3, 64, 64), label maps (B, 64, 64) int64, scenes."""
    scenes = [sample_scene(3, i, 64) for i in range(32)]
    x = torch.stack([s.to_tensor() for s in scenes])
    m = torch.stack([torch.from_numpy(toy_labels(s)) for s in scenes])
    return x, m, scenes


@pytest.fixture(scope="module")
def toy_ignore(toy):
    """The toy maps with the signs' pixels marked ignore (255)."""
    _, m, scenes = toy
    m = m.clone()
    for b, s in enumerate(scenes):
        if s.sign is not None:
            m[b][torch.from_numpy(s.sign.mask)] = 255
    assert (m == 255).any()
    return m


# ============================================================================================== mIoU


def test_mean_iou_hand_computed():
    t = torch.tensor([[[0, 0, 1, 1],
                       [0, 0, 1, 1],
                       [2, 2, 2, 2]]])
    p = torch.tensor([[[0, 1, 1, 1],
                       [0, 0, 1, 1],
                       [2, 2, 0, 3]]])
    # class 0: T = 4 px, P = 4 px, inter 3 -> 3/5; class 1: T 4, P 5, inter 4 -> 4/5;
    # class 2: T 4, P 2, inter 2 -> 2/4; class 3: T 0, P 1 -> 0/1. Mean over 4 classes.
    want = (3 / 5 + 4 / 5 + 2 / 4 + 0.0) / 4
    assert mean_iou(p, t).item() == pytest.approx(want, abs=1e-6)
    assert mean_iou(t, t).item() == 1.0


def test_mean_iou_ignore_index_hand_computed():
    t = torch.tensor([[[0, 1, 255, 255]]])
    p = torch.tensor([[[0, 0, 1, 255]]])  # pixels 3, 4 ignored by the target
    # class 0: T {0}, P {0, 1} -> 1/2; class 1: T {1}, P {} -> 0. (class 1 at an ignored pixel does not count.)
    assert mean_iou(p, t).item() == pytest.approx(0.25)
    p2 = torch.tensor([[[255, 1, 0, 0]]])  # a predicted ignore on a labelled pixel is a miss of class 0
    assert mean_iou(p2, t).item() == pytest.approx(0.5)  # class 0: 0/1, class 1: 1/1
    assert torch.isnan(mean_iou(t, torch.full_like(t, 255))).all()


def test_mean_iou_matches_sklearn_macro_jaccard():
    g = gen(1)
    t = torch.randint(0, 6, (4, 12, 12), generator=g)
    p = torch.where(torch.rand(4, 12, 12, generator=g) < 0.6, t, torch.randint(0, 8, (4, 12, 12), generator=g))
    ours = mean_iou(p, t)
    for b in range(4):
        ref = jaccard_score(t[b].ravel().numpy(), p[b].ravel().numpy(), average="macro")
        assert ours[b].item() == pytest.approx(ref, abs=1e-6)


def test_mean_iou_bad_input():
    t = torch.zeros(1, 4, 4, dtype=torch.long)
    with pytest.raises(InputError, match="one shape"):
        mean_iou(t, t[:, :3])
    with pytest.raises(InputError, match="integer"):
        mean_iou(t.float(), t.float())
    with pytest.raises(InputError, match="n_classes"):
        mean_iou(t + 3, t, n_classes=2)


# ========================================================================================== registry


def test_registry_lists_corruptions_and_renderers():
    assert list_mask_corruptions() == list(CORRUPTIONS)
    assert list_renderers() == ["blur_dropped", "inpaint_dropped", "overlay"]
    for name in CORRUPTIONS:
        assert MASK_CORRUPTIONS.meta(name)["severity_range"] == (0.0, 1.0)
        assert MASK_CORRUPTIONS.meta(name)["family"] in ("boundary", "dropout", "confusion", "merging")
    assert sorted(n for n in CORRUPTIONS if MASK_CORRUPTIONS.meta(n)["batched"]) == ["dilate", "drop_small", "erode"]


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_severity_zero_is_identity_and_input_untouched(name, toy_ignore):
    fn = MASK_CORRUPTIONS.get(name)
    before = toy_ignore.clone()
    assert torch.equal(fn(toy_ignore, 0.0, generator=gen()), before)
    out = fn(toy_ignore, 1.0, generator=gen())
    assert torch.equal(toy_ignore, before)  # pure: the input is not modified
    assert out.dtype == torch.int64 and out.shape == before.shape
    assert torch.equal(out[before == 255], before[before == 255])  # ignored pixels never change


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_deterministic_given_generator(name, toy):
    fn = MASK_CORRUPTIONS.get(name)
    m = toy[1]
    a, b = fn(m, 0.5, generator=gen(7)), fn(m, 0.5, generator=gen(7))
    assert torch.equal(a, b)
    assert torch.equal(fn(m, 0.5), fn(m, 0.5, generator=gen(0)))  # None: seeded with 0
    assert not torch.equal(a, m) or name == "merge"  # every corruption but merge changes these maps at 0.5


@pytest.mark.parametrize("name", ("erode", "dilate", "drop_small"))
def test_batch_independent(name, toy):
    assert MASK_CORRUPTIONS.meta(name)["batched"] is True
    fn = MASK_CORRUPTIONS.get(name)
    m = toy[1][:6]
    whole = fn(m, 0.37)
    singles = torch.cat([fn(m[i:i + 1], 0.37) for i in range(6)])
    assert torch.equal(whole, singles)


@pytest.mark.parametrize("name", ("confuse", "dilate", "drop_small", "erode"))
def test_changed_set_grows_with_severity(name, toy):
    fn = MASK_CORRUPTIONS.get(name)
    m = toy[1]
    prev = torch.zeros_like(m, dtype=torch.bool)
    for s in (0.1, 0.3, 0.6, 1.0):
        changed = fn(m, s, generator=gen(3)) != m
        assert bool((prev & ~changed).sum() == 0), f"{name}: a pixel changed at a lower severity is restored at {s}"
        prev = changed
    assert prev.any()


def test_bad_input_raises_before_work(toy):
    m = toy[1]
    erode = MASK_CORRUPTIONS.get("erode")
    with pytest.raises(InputError, match="int64"):
        erode(m.float(), 0.5)
    with pytest.raises(InputError, match=r"\(B, H, W\)"):
        erode(m[0], 0.5)
    with pytest.raises(InputError, match="severity"):
        erode(m, 1.5)
    with pytest.raises(InputError, match="severity"):
        erode(m, True)
    with pytest.raises(InputError, match=">= 0"):
        erode(m - 1, 0.5)
    with pytest.raises(InputError, match="differ"):
        erode(m, 0.5, background=255)
    with pytest.raises(InputError, match="pairs"):
        MASK_CORRUPTIONS.get("confuse")(m, 0.5, pairs={1: 255})


# ===================================================================================== boundaries


@pytest.mark.parametrize("k", (1, 2, 3))
def test_erode_integer_radius_matches_scipy_square_erosion(k, toy):
    m = toy[1]
    out = MASK_CORRUPTIONS.get("erode")(m, k / 8, max_radius=8)  # radius k px
    mn = m.numpy()
    want = mn.copy()
    for b in range(len(mn)):
        for c in np.unique(mn[b]):
            if c == 0:
                continue
            keep = ndimage.binary_erosion(mn[b] == c, structure=np.ones((2 * k + 1, 2 * k + 1)), border_value=1)
            want[b][(mn[b] == c) & ~keep] = 0
    np.testing.assert_array_equal(out.numpy(), want)


def test_erode_reduces_every_class_area(toy):
    m = toy[1]
    out = MASK_CORRUPTIONS.get("erode")(m, 0.3)
    for c in range(1, len(SHAPES) + 1):
        n0, n1 = int((m == c).sum()), int((out == c).sum())
        assert n1 <= n0 and (n0 == 0 or n1 < n0)
    assert bool((out[out != m] == 0).all())  # eroded pixels become background


def test_erode_classes_restricts_the_change(toy):
    m = toy[1]
    out = MASK_CORRUPTIONS.get("erode")(m, 0.5, classes=[1])
    assert bool((m[out != m] == 1).all()) and (out != m).any()


@pytest.mark.parametrize("k", (1, 3))
def test_dilate_integer_radius_matches_scipy_square_dilation(k):
    m = torch.zeros(1, 20, 20, dtype=torch.long)
    m[0, 8:12, 5:9] = 4
    m[0, 2:4, 15:18] = 4
    out = MASK_CORRUPTIONS.get("dilate")(m, k / 5, max_radius=5)
    want = ndimage.binary_dilation(m[0].numpy() == 4, structure=np.ones((2 * k + 1, 2 * k + 1)))
    np.testing.assert_array_equal(out[0].numpy(), np.where(want, 4, 0))


def test_dilate_grows_foreground_into_background_only(toy):
    m = toy[1]
    out = MASK_CORRUPTIONS.get("dilate")(m, 0.4)
    assert int((out > 0).sum()) > int((m > 0).sum())
    assert torch.equal(out[m > 0], m[m > 0])  # objects are not overrun by other classes
    changed = out != m
    assert bool((m[changed] == 0).all())
    # a claimed pixel takes a class present within the radius (0.4 * 8 px -> 4 px) in the clean map
    for b in range(len(m)):
        for c in torch.unique(out[b][changed[b]]).tolist():
            near = ndimage.binary_dilation(m[b].numpy() == c, structure=np.ones((9, 9)))
            assert near[(changed[b] & (out[b] == c)).numpy()].all()


# ========================================================================================= objects


def test_drop_small_removes_exactly_the_components_below_threshold(toy):
    m = toy[1]
    thr = 0.5 * 300
    out = MASK_CORRUPTIONS.get("drop_small")(m, 0.5, max_area=300)
    mn, on = m.numpy(), out.numpy()
    n_small = n_big = 0
    for b in range(len(mn)):
        for c in np.unique(mn[b]):
            if c == 0:
                continue
            lab, n = ndimage.label(mn[b] == c, structure=EIGHT)
            for i in range(1, n + 1):
                px = lab == i
                if px.sum() < thr:
                    n_small += 1
                    assert (on[b][px] == 0).all()
                else:
                    n_big += 1
                    assert (on[b][px] == c).all()
        assert (on[b][mn[b] == 0] == 0).all()
    assert n_small and n_big  # the toy maps have objects on both sides of the threshold


def test_drop_small_hand_made():
    m = torch.zeros(1, 10, 10, dtype=torch.long)
    m[0, 0:2, 0:2] = 1  # 4 px
    m[0, 5:10, 5:10] = 1  # 25 px, same class, another component
    m[0, 0:3, 6:9] = 2  # 9 px
    out = MASK_CORRUPTIONS.get("drop_small")(m, 0.5, max_area=20)  # threshold 10 px
    want = m.clone()
    want[0, 0:2, 0:2] = 0
    want[0, 0:3, 6:9] = 0
    assert torch.equal(out, want)


def test_confuse_follows_pairs_and_flips_a_severity_share_of_regions():
    m = torch.zeros(1, 60, 60, dtype=torch.long)
    for i in range(10):
        for j in range(10):
            m[0, 6 * i:6 * i + 4, 6 * j:6 * j + 4] = 3  # 100 separate regions of class 3
    conf = MASK_CORRUPTIONS.get("confuse")
    out = conf(m, 0.3, pairs={3: 7}, generator=gen(5))
    changed = out != m
    assert bool((m[changed] == 3).all()) and bool((out[changed] == 7).all())
    flipped = int((out[0, ::6, ::6] == 7).sum())  # one pixel per region
    for i in range(10):  # whole regions flip
        for j in range(10):
            assert len(torch.unique(out[0, 6 * i:6 * i + 4, 6 * j:6 * j + 4])) == 1
    assert 30 - 14 <= flipped <= 30 + 14  # Binomial(100, 0.3): ±3 sd
    assert torch.equal(conf(m, 1.0, pairs={3: 7}), torch.where(m == 3, 7, m))


def test_confusable_pairs_default():
    assert confusable_pairs(6) == {1: 2, 2: 1, 3: 4, 4: 3, 5: 4}
    assert confusable_pairs(classes=[0, 1, 2, 5]) == {1: 2, 2: 1, 5: 6}
    assert confusable_pairs(4, background=2) == {0: 1, 1: 0, 3: 1}


def test_merge_decisions_grow_with_severity():
    m = torch.zeros(1, 40, 40, dtype=torch.long)
    for i in range(8):  # 8 pairs: a 4x4 region of class 2 touching a 4x8 region of class 1
        m[0, 5 * i:5 * i + 4, 0:8] = 1
        m[0, 5 * i:5 * i + 4, 8:12] = 2
    merge = MASK_CORRUPTIONS.get("merge")
    prev = torch.zeros_like(m, dtype=torch.bool)
    counts = []
    for s in (0.2, 0.5, 0.8, 1.0):
        out = merge(m, s, generator=gen(4))
        changed = out != m
        assert bool((m[changed] == 2).all()) and bool((out[changed] == 1).all())  # the smaller into the larger
        assert not bool((prev & ~changed).any())
        prev = changed
        counts.append(int(changed.sum()) // 16)
    assert counts[-1] == 8 and counts == sorted(counts)


def test_merge_hand_made_chain_and_isolated_region():
    m = torch.zeros(1, 12, 12, dtype=torch.long)
    m[0, 0:6, 0:6] = 1  # 36 px, largest
    m[0, 0:3, 6:9] = 2  # 9 px, touches class 1
    m[0, 0:1, 9:10] = 3  # 1 px, touches class 2 only
    m[0, 9:12, 9:12] = 4  # isolated
    out = MASK_CORRUPTIONS.get("merge")(m, 1.0)
    want = m.clone()
    want[(m == 2) | (m == 3)] = 1
    assert torch.equal(out, want)
    with_bg = MASK_CORRUPTIONS.get("merge")(m, 1.0, include_background=True)
    assert bool((with_bg == 0).all())  # everything touches the (largest) background region


# ========================================================================================= renders


def test_voc_palette_published_values():
    pal = (voc_palette() * 255).round().long()
    assert pal[0].tolist() == [0, 0, 0]
    assert pal[1].tolist() == [128, 0, 0]
    assert pal[2].tolist() == [0, 128, 0]
    assert pal[3].tolist() == [128, 128, 0]
    assert pal[4].tolist() == [0, 0, 128]
    assert pal[15].tolist() == [192, 128, 128]  # VOC "person"


def test_overlay_changes_only_by_the_palette_alpha(toy):
    x, m, _ = toy
    out = render(x, m, m, "overlay", alpha=0.4)
    fg = (m > 0).unsqueeze(1).expand_as(x)
    assert torch.equal(out[~fg], x[~fg])
    pal = torch.tensor([[128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128], [128, 0, 128], [0, 128, 128],
                        [128, 128, 128], [64, 0, 0]], dtype=torch.float32) / 255  # VOC ids 1..8
    colour = pal[(m - 1).clamp_min(0)].permute(0, 3, 1, 2)
    torch.testing.assert_close(out[fg], (0.6 * x + 0.4 * colour)[fg])


@pytest.mark.parametrize("mode", ("blur_dropped", "inpaint_dropped"))
def test_region_renders_change_only_dropped_pixels(mode, toy):
    x, m, _ = toy
    corrupted = MASK_CORRUPTIONS.get("drop_small")(m, 1.0)
    hole = dropped_pixels(m, corrupted)
    assert hole.any()
    out = render(x, m, corrupted, mode)
    keep = (~hole).unsqueeze(1).expand_as(x)
    assert torch.equal(out[keep], x[keep])  # bit-identical outside the dropped pixels
    assert float((out - x).abs()[~keep].mean()) > 0.02
    assert torch.equal(render(x, m, m, mode), x)  # nothing dropped, nothing changed


def test_inpainted_object_looks_like_background(toy):
    x, m, scenes = toy
    checked = 0
    for b, scene in enumerate(scenes):
        for o in scene.objects:
            if o.visible.sum() < 60:
                continue
            vis = torch.from_numpy(o.visible)
            corrupted = m[b:b + 1].clone()
            corrupted[0][vis] = 0
            out = render(x[b:b + 1], m[b:b + 1], corrupted, "inpaint_dropped")[0]  # (3, H, W)
            ring = ndimage.binary_dilation(o.visible, iterations=4) & (m[b].numpy() == 0)
            bg = x[b][:, torch.from_numpy(ring)].mean(1)  # (3,)
            fill = out[:, vis].mean(1)
            obj = torch.tensor(o.rgb, dtype=torch.float32)
            assert float((fill - bg).norm()) < float((fill - obj).norm()), (b, o.shape, o.color)
            checked += 1
    assert checked >= 10


def test_corrupt_and_render_matches_its_parts(toy):
    x, m, _ = toy
    out, corrupted = corrupt_and_render(x, m, "confuse", 0.5, "overlay", generator=gen(2),
                                        render_params={"alpha": 0.3})
    want = MASK_CORRUPTIONS.get("confuse")(m, 0.5, generator=gen(2))
    assert torch.equal(corrupted, want)
    assert torch.equal(out, render(x, m, want, "overlay", alpha=0.3))
    with pytest.raises(InputError, match="renderer"):
        corrupt_and_render(x, m, "erode", 0.5, "paint")
    with pytest.raises(InputError, match="mask corruption"):
        corrupt_and_render(x, m, "overlay", 0.5)
    with pytest.raises(InputError, match="clean_masks"):
        render(x, m[:, :10], m, "overlay")


# ======================================================================================= calibration


def sklearn_drop(corrupted: torch.Tensor, clean: torch.Tensor) -> float:
    """1 − mean over images of sklearn's macro Jaccard (the classes present in either map)."""
    return 1.0 - float(np.mean([jaccard_score(clean[b].ravel().numpy(), corrupted[b].ravel().numpy(), average="macro")
                                for b in range(len(clean))]))


@pytest.mark.parametrize("name", ("erode", "dilate", "drop_small", "confuse"))
def test_calibration_hits_targets_within_tolerance(name, toy):
    m = toy[1]
    cals = calibrate_grid(name, [0.05, 0.1, 0.2], m, seed=1, tol=0.01)
    for cal, target in zip(cals, (0.05, 0.1, 0.2)):
        assert cal.within_tolerance and cal.target == target
        corrupted = MASK_CORRUPTIONS.get(name)(m, cal.severity, generator=gen(1))
        assert abs(sklearn_drop(corrupted, m) - target) <= 0.01  # independent mIoU of the returned severity
        assert cal.curve[0] == (0.0, 0.0) and cal.curve[-1][0] == 1.0
    assert cals[0].severity < cals[1].severity < cals[2].severity


def test_calibrate_single_target_and_curve(toy):
    m = toy[1]
    cal = calibrate("erode", 0.1, m, tol=0.005)
    assert abs(cal.drop - 0.1) <= 0.005 and cal.iterations == len(cal.curve)
    drops = [d for _, d in cal.curve]
    assert drops == sorted(drops)  # erosion's drop is monotone in severity
    assert miou_drop("erode", cal.severity, m) == pytest.approx(cal.drop)


def test_calibrate_out_of_reach_raises(toy):
    m = toy[1]
    with pytest.raises(InputError, match="beyond what 'merge' reaches"):
        calibrate("merge", 0.5, m)
    with pytest.raises(InputError, match="out of reach"):
        calibrate_grid("merge", [0.01, 0.5], m)
    with pytest.raises(InputError, match="not a registered mask corruption"):
        calibrate("overlay", 0.1, m)
    with pytest.raises(InputError, match="lo must be below hi"):
        calibrate("erode", 0.1, m, lo=0.5, hi=0.5)
    with pytest.raises(InputError, match="target_miou_drop"):
        calibrate("erode", 1.5, m)


def test_calibrate_stepwise_drop_returns_closest_with_warning():
    m = torch.zeros(1, 16, 16, dtype=torch.long)
    m[0, 4:8, 4:8] = 1  # one object: dropping it costs 0.5 + a bit, nothing in between
    with pytest.warns(UserWarning, match="jumps"):
        cal = calibrate("drop_small", 0.3, m, params={"max_area": 64})
    assert not cal.within_tolerance
    # dropped: background IoU 240/256, object IoU 0 -> drop 0.53, closer to 0.3 than the 0.0 of keeping it
    assert cal.drop == pytest.approx(1 - (240 / 256) / 2)
    assert cal.severity > 16 / 64  # the object (16 px) is dropped only above threshold 16 px
