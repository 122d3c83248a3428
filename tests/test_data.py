"""vlmkit.data: loaders, decode-once cache, subsets and shipped class lists.

Real-photo tests use the ``shared_data`` fixture (``../shared/data``) and decode only a few images
at small sizes; layout tests build tiny synthetic sets in ``tmp_path``.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vlmkit.data as vd
import vlmkit.data.images as vimages
from vlmkit.errors import InputError


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own image cache (never ~/.cache)."""
    monkeypatch.setenv("VLMKIT_CACHE", str(tmp_path / "vlmkit-cache"))


def make_image(path: Path, size: tuple[int, int] = (24, 16), color: tuple[int, int, int] = (200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def forbid_decoding(monkeypatch) -> None:
    def boom(*args, **kwargs):
        raise AssertionError("image was decoded again instead of read from the cache")

    monkeypatch.setattr(vimages, "_decode_one", boom)


# --------------------------------------------------------------------------- shipped class lists
def test_imagenet_assets_are_consistent():
    names, wnids, templates = vd.imagenet_classnames(), vd.imagenet_wnids(), vd.openai_templates()
    assert len(names) == 1000 and names[0] == "tench" and names[999] == "toilet paper"
    assert len(wnids) == 1000 and wnids == sorted(set(wnids)) and wnids[0] == "n01440764"
    assert len(templates) == 80 and all(t.count("{}") == 1 for t in templates)
    assert "a photo of a {}." in templates and templates[0].format("dog") == "a bad photo of a dog."
    for idx, sub_wnids in ((vd.imagenet_a_indices(), vd.imagenet_a_wnids()), (vd.imagenet_r_indices(), vd.imagenet_r_wnids())):
        assert len(idx) == 200 and idx == sorted(set(idx)) and 0 <= idx[0] and idx[-1] < 1000
        assert [wnids[i] for i in idx] == sub_wnids
    # facts from the datasets' own eval code: ImageNet-A starts at stingray (6), ImageNet-R at goldfish (1)
    assert vd.imagenet_a_indices()[:3] == [6, 11, 13] and vd.imagenet_r_indices()[:3] == [1, 2, 4]
    assert vd.imagenet_subset_classnames("imagenet-r")[0] == "goldfish"
    vd.imagenet_classnames().append("x")  # callers get copies
    assert len(vd.imagenet_classnames()) == 1000


def test_class_lists_do_not_import_open_clip():
    code = "import sys, vlmkit.data as d; d.imagenet_classnames(); d.openai_templates(); print('open_clip' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_shipped_wnids_match_shared_class_table(shared_data):
    with open(shared_data / "imagenet-samples" / "classes.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["wnid"] for r in rows] == vd.imagenet_wnids()
    assert [int(r["class_index"]) for r in rows] == list(range(1000))


# --------------------------------------------------------------------------- real photos
@pytest.fixture(scope="module")
def coco(shared_data):
    return vd.load_coco_captions(shared_data / "coco-mini" / "captions.json", shared_data / "coco-mini" / "images")


@pytest.fixture(scope="module")
def imagenet(shared_data):
    root = shared_data / "imagenet-samples"
    return vd.load_labelled_csv(root / "labels.csv", root / "images", vd.imagenet_classnames(), label_column="class_index")


def test_coco_mini_counts_and_maps(coco):
    assert len(coco) == 159 and coco.num_texts == 795
    assert coco.summary()["captions"] == 795 and coco.summary()["min_captions_per_image"] == 5
    assert all(len(t) == 5 for t in coco.image_to_texts)
    assert coco.text_to_image.dtype == torch.long and coco.text_to_image.shape == (795,)
    for i, texts in enumerate(coco.image_to_texts):
        assert (coco.text_to_image[texts] == i).all()
    mask = coco.positive_mask()
    assert mask.shape == (159, 795) and mask.dtype == torch.bool
    assert (mask.sum(0) == 1).all() and (mask.sum(1) == 5).all()
    item = coco[-1]
    assert item.index == 158 and len(item.captions) == 5 and item.path.is_file()


def test_imagenet_samples_labels_match_shipped_classes(imagenet, shared_data):
    root = shared_data / "imagenet-samples"
    with open(root / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(imagenet) == 800 and imagenet.summary()["classes_present"] == 800
    assert imagenet.labels.tolist() == [int(r["class_index"]) for r in rows]
    wnids = vd.imagenet_wnids()
    assert [wnids[i] for i in imagenet.labels.tolist()] == [r["wnid"] for r in rows]
    by_wnid = vd.load_labelled_csv(root / "labels.csv", root / "images", vd.imagenet_classnames(),
                                   label_column="wnid", class_keys=wnids)
    assert torch.equal(by_wnid.labels, imagenet.labels)
    assert imagenet[0].classname == "tench" and imagenet.classnames == vd.imagenet_classnames()


@pytest.mark.parametrize("variant", ["scam", "noscam", "synthscam"])
def test_scam_counts(shared_data, variant):
    ds = vd.load_scam(shared_data / "scam", variant)
    assert len(ds) == 800 and ds.variant == variant
    assert all(p.parent.name == variant for p in ds.paths)
    assert ds.classnames == sorted(set(ds.true_classnames) | set(ds.attack_words))
    assert (ds.labels != ds.attack_labels).all()
    assert ds.postit_area_pct is not None and 0.2 < float(ds.postit_area_pct.min()) < float(ds.postit_area_pct.max()) < 36
    first = ds[0]
    assert (first.classname, first.attack_word) == ("ball", "car") and first.path.name == "img_0001.jpg"


def test_decode_real_photos_and_cache_hit(imagenet, tmp_path, monkeypatch):
    sub = imagenet.subset(n=8, seed=0)
    x = sub.load_images(size=32, cache_dir=tmp_path / "c", progress=False)
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.uint8 and x.device.type == "cpu"
    assert x.float().std() > 10  # real photos, not blank
    cache_file = sub.cache_path(32, "crop", tmp_path / "c")
    assert cache_file.is_file() and not list(cache_file.parent.glob("*.tmp"))
    mtime = cache_file.stat().st_mtime_ns
    forbid_decoding(monkeypatch)
    again = sub.load_images(size=32, cache_dir=tmp_path / "c", progress=False)
    assert torch.equal(again, x) and cache_file.stat().st_mtime_ns == mtime
    # another size is another cache entry, so it must decode
    with pytest.raises(AssertionError, match="decoded again"):
        sub.load_images(size=24, cache_dir=tmp_path / "c", progress=False)


def test_decode_matches_clip_style_preprocess(coco):
    """crop mode = torchvision Resize(S, bicubic) + CenterCrop(S) on the PIL image."""
    import torchvision.transforms as T

    sub = coco.subset(n=2, seed=3)
    x = sub.load_images(size=40, progress=False, use_cache=False)
    ref = T.Compose([T.Resize(40, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(40), T.PILToTensor()])
    for i, p in enumerate(sub.paths):
        assert torch.equal(x[i], ref(Image.open(p).convert("RGB")))


def test_subset_is_deterministic_and_keeps_captions(coco):
    a, b = coco.subset(n=10, seed=7), coco.subset(n=10, seed=7)
    assert a.image_ids == b.image_ids and a.captions == b.captions
    assert coco.subset(n=10, seed=8).image_ids != a.image_ids
    assert set(coco.subset(n=5, seed=7).image_ids) <= set(a.image_ids)  # nested for one seed
    assert len(a) == 10 and a.num_texts == 50 and a.positive_mask().shape == (10, 50)
    for i in range(len(a)):
        original = coco.image_ids.index(a.image_ids[i])
        assert a[i].captions == coco[original].captions
    assert coco.subset().image_ids == coco.image_ids
    assert [coco.image_ids.index(x) for x in a.image_ids] == sorted(coco.image_ids.index(x) for x in a.image_ids)


def test_subset_labels_follow_items(imagenet):
    sub = imagenet.subset(n=6, seed=1)
    for i in range(len(sub)):
        j = imagenet.paths.index(sub.paths[i])
        assert sub[i].label == imagenet[j].label
    assert sub.classnames == imagenet.classnames


# --------------------------------------------------------------------------- synthetic layouts
def test_crop_and_squash_modes(tmp_path):
    img = np.zeros((20, 40, 3), dtype=np.uint8)  # H=20, W=40: red | green | blue stripes
    img[:, :10] = (255, 0, 0)
    img[:, 10:30] = (0, 255, 0)
    img[:, 30:] = (0, 0, 255)
    make_image(tmp_path / "imgs" / "a" / "x.png")
    Image.fromarray(img).save(tmp_path / "imgs" / "a" / "x.png")
    ds = vd.load_image_folder(tmp_path / "imgs")
    crop = ds.load_images(8, "crop", progress=False)[0]  # (3, 8, 8): only the green middle survives
    squash = ds.load_images(8, "squash", progress=False)[0]  # (3, 8, 8): all three stripes
    assert crop.shape == squash.shape == (3, 8, 8)
    assert crop[1, :, 0].min() > 200 and crop[1, :, -1].min() > 200
    assert squash[0, :, 0].min() > 200 and squash[2, :, -1].min() > 200


def test_to_float():
    x = torch.tensor([[[[0, 255]]] * 3], dtype=torch.uint8)  # (1, 3, 1, 2)
    y = vd.to_float(x)
    assert y.dtype == torch.float32 and y.shape == x.shape and y.min() == 0 and y.max() == 1
    assert vd.to_float(x[0], dtype=torch.float64).dtype == torch.float64
    with pytest.raises(InputError, match="uint8"):
        vd.to_float(y)


def test_image_folder_layout(tmp_path):
    for cls, n in (("cat", 2), ("dog", 3)):
        for k in range(n):
            make_image(tmp_path / "f" / cls / f"{k}.jpg")
    (tmp_path / "f" / "dog" / "notes.txt").write_text("not an image")
    ds = vd.load_image_folder(tmp_path / "f")
    assert ds.classnames == ["cat", "dog"] and ds.labels.tolist() == [0, 0, 1, 1, 1]
    named = vd.load_image_folder(tmp_path / "f", classes=["dog", "cat", "bird"], classnames=["a dog", "a cat", "a bird"])
    assert named.labels.tolist() == [1, 1, 0, 0, 0] and named[0].classname == "a cat"
    assert named.summary() == {"type": "LabelledImages", "name": "f", "images": 5, "classes": 3, "classes_present": 2}
    assert ds.load_images(16, progress=False).shape == (5, 3, 16, 16)


def test_labelled_csv_with_class_names(tmp_path):
    for k in range(3):
        make_image(tmp_path / "im" / f"{k}.png")
    (tmp_path / "labels.csv").write_text("file,label\n0.png,zebra\n1.png,ant\n2.png,zebra\n")
    ds = vd.load_labelled_csv(tmp_path / "labels.csv", tmp_path / "im")
    assert ds.classnames == ["ant", "zebra"] and ds.labels.tolist() == [1, 0, 1]
    (tmp_path / "classes.txt").write_text("zebra\nant\nbee\n")
    ds2 = vd.load_labelled_csv(tmp_path / "labels.csv", tmp_path / "im", tmp_path / "classes.txt")
    assert ds2.classnames == ["zebra", "ant", "bee"] and ds2.labels.tolist() == [0, 1, 0]


def _karpathy(tmp_path: Path) -> Path:
    images = [
        {"filename": "a.jpg", "filepath": "val2014", "split": "test", "cocoid": 1,
         "sentences": [{"raw": " A red square. ", "tokens": ["a", "red", "square"]}, {"raw": "red  box"}]},
        {"filename": "b.jpg", "filepath": "val2014", "split": "train", "sentences": [{"raw": "train only"}]},
        {"filename": "c.jpg", "split": "test", "sentences": [{"tokens": ["blue", "thing"]}]},
        {"filename": "d.jpg", "split": "val", "sentences": [{"raw": "val image"}]},
    ]
    make_image(tmp_path / "root" / "val2014" / "a.jpg")
    make_image(tmp_path / "root" / "val2014" / "b.jpg")
    make_image(tmp_path / "root" / "c.jpg", color=(0, 0, 255))
    make_image(tmp_path / "root" / "d.jpg")
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps({"images": images, "dataset": "coco"}))
    return path


def test_karpathy_split(tmp_path):
    path = _karpathy(tmp_path)
    ds = vd.load_karpathy(path, tmp_path / "root", split="test")
    assert len(ds) == 2 and ds.captions == ["A red square.", "red box", "blue thing"]
    assert ds.text_to_image.tolist() == [0, 0, 1] and ds.image_to_texts == [[0, 1], [2]]
    assert ds.paths[0] == tmp_path / "root" / "val2014" / "a.jpg" and ds.image_ids[0] == "1"
    both = vd.load_karpathy(path, tmp_path / "root", split=["test", "val"])
    assert len(both) == 3 and both.positive_mask().sum() == 4
    x = ds.load_images(8, progress=False)
    assert x.shape == (2, 3, 8, 8) and x[1, 2].float().mean() > 200  # c.jpg is blue


def test_rta100_layout(tmp_path):
    data = tmp_path / "rta" / "ours" / "data"
    make_image(data / "label=dog_text=cat.png")
    make_image(data / "label=cat_text=dog.jpg")
    make_image(data / "label=ice cream_text=pizza.png")
    (data / "README.txt").write_text("ignored")
    ds = vd.load_rta100(tmp_path / "rta")
    assert len(ds) == 3 and ds.variant == "rta100"
    assert ds.classnames == ["cat", "dog", "ice cream", "pizza"]
    assert ds.true_classnames == ["cat", "dog", "ice cream"] and ds.attack_words == ["dog", "cat", "pizza"]
    assert ds.summary()["attack_words"] == 3
    assert vd.parse_rta100_name("label=traffic light_text=stop.png") == ("traffic light", "stop")


def test_synthetic_scam_layout_and_original_names(tmp_path):
    root = tmp_path / "scam"
    (root / "labels.csv").parent.mkdir(parents=True)
    (root / "labels.csv").write_text("id,object_label,attack_word,postit_area_pct\nimg_0001,cup,dog,1.5\nimg_0002,dog,cup,3\n")
    make_image(root / "synthscam" / "img_0001.jpg")
    make_image(root / "synthscam" / "SynthSCAM_img_0002.png")  # original release naming
    ds = vd.load_scam(root, "SynthSCAM")
    assert ds.variant == "synthscam" and ds.classnames == ["cup", "dog"]
    assert ds.labels.tolist() == [0, 1] and ds.attack_labels.tolist() == [1, 0]
    assert ds.paths[1].name == "SynthSCAM_img_0002.png"
    assert ds.subset(n=1, seed=0).postit_area_pct.shape == (1,)


def test_skip_corrupt_image_drops_item_and_warns(tmp_path, monkeypatch):
    for cls in ("a", "b", "c"):
        make_image(tmp_path / "f" / cls / "x.jpg")
    (tmp_path / "f" / "b" / "x.jpg").write_bytes(b"this is not a jpeg")
    ds = vd.load_image_folder(tmp_path / "f", on_error="skip")
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image file\(s\).*b/x.jpg"):
        x = ds.load_images(8, progress=False)
    assert x.shape == (2, 3, 8, 8) and len(ds) == 2 and ds.labels.tolist() == [0, 2]
    # the cache remembers the bad file: a fresh dataset reads it without decoding, same result
    forbid_decoding(monkeypatch)
    fresh = vd.load_image_folder(tmp_path / "f", on_error="skip")
    with pytest.warns(UserWarning, match="skipped 1"):
        y = fresh.load_images(8, progress=False)
    assert torch.equal(x, y) and fresh.labels.tolist() == [0, 2]


def test_skip_missing_file_at_load(tmp_path):
    make_image(tmp_path / "im" / "0.png")
    (tmp_path / "labels.csv").write_text("file,label\n0.png,ant\n1.png,bee\n")
    with pytest.warns(UserWarning, match=r"skipped 1 missing.*1\.png"):
        ds = vd.load_labelled_csv(tmp_path / "labels.csv", tmp_path / "im", on_error="skip")
    assert len(ds) == 1 and ds[0].classname == "ant" and ds.classnames == ["ant", "bee"]


def test_cache_is_keyed_by_content(tmp_path, monkeypatch):
    make_image(tmp_path / "f" / "a" / "x.png", color=(255, 0, 0))
    ds = vd.load_image_folder(tmp_path / "f")
    red = ds.load_images(4, progress=False)
    make_image(tmp_path / "f" / "a" / "x.png", color=(0, 0, 255))  # same path, new content
    calls = []
    real = vimages._decode_one
    monkeypatch.setattr(vimages, "_decode_one", lambda *a: calls.append(a) or real(*a))
    blue = ds.load_images(4, progress=False)
    assert len(calls) == 1 and red[0, 0].min() > 200 and blue[0, 2].min() > 200
    assert len(list((tmp_path / "vlmkit-cache" / "images").glob("*.npz"))) == 2


def test_items_and_indexing(tmp_path):
    for k in range(3):
        make_image(tmp_path / "f" / "a" / f"{k}.png")
    ds = vd.load_image_folder(tmp_path / "f")
    assert ds[-1].path.name == "2.png" and ds[-1].index == 2
    with pytest.raises(IndexError, match="out of range"):
        ds[3]
    assert [p.name for p in ds.select([2, 0]).paths] == ["2.png", "0.png"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_load_images_to_cuda(tmp_path):
    make_image(tmp_path / "f" / "a" / "0.png")
    x = vd.load_image_folder(tmp_path / "f").load_images(8, device="cuda", progress=False)
    assert x.device.type == "cuda" and x.dtype == torch.uint8
