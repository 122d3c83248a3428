"""vlmkit.data on bad input: every error names the offending file, key, label or argument."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

import vlmkit.data as vd
from vlmkit.errors import DataError, DataNotFoundError, EmptyDatasetError


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VLMKIT_CACHE", str(tmp_path / "vlmkit-cache"))


def make_image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (20, 12), (10, 120, 200)).save(path)
    return path


def write_coco(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "captions.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


GOOD_COCO = {
    "images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}],
    "annotations": [{"id": 10, "image_id": 1, "caption": "a cat"}, {"id": 11, "image_id": 2, "caption": "a dog"}],
}


@pytest.fixture
def coco_dir(tmp_path) -> Path:
    make_image(tmp_path / "images" / "a.jpg")
    make_image(tmp_path / "images" / "b.jpg")
    return tmp_path


def test_missing_image_root_names_the_path(coco_dir):
    missing = coco_dir / "no_such_images"
    with pytest.raises(DataNotFoundError, match="image root not found.*no_such_images"):
        vd.load_coco_captions(write_coco(coco_dir, GOOD_COCO), missing)
    with pytest.raises(DataNotFoundError, match="SCAM root not found.*nowhere"):
        vd.load_scam(coco_dir / "nowhere")


def test_missing_image_file_names_the_file(coco_dir):
    (coco_dir / "images" / "b.jpg").unlink()
    with pytest.raises(DataNotFoundError, match=r"image file not found: .*b\.jpg"):
        vd.load_coco_captions(write_coco(coco_dir, GOOD_COCO), coco_dir / "images")


def test_file_deleted_after_loading_is_reported_at_decode(coco_dir):
    ds = vd.load_coco_captions(write_coco(coco_dir, GOOD_COCO), coco_dir / "images")
    (coco_dir / "images" / "a.jpg").unlink()
    with pytest.raises(DataNotFoundError, match=r"a\.jpg"):
        ds.load_images(8, progress=False)


def test_corrupt_image_names_the_file(coco_dir):
    (coco_dir / "images" / "b.jpg").write_bytes(b"\x00garbage bytes, not a JPEG" * 10)
    ds = vd.load_coco_captions(write_coco(coco_dir, GOOD_COCO), coco_dir / "images")
    with pytest.raises(DataError, match=r"cannot decode image file .*b\.jpg"):
        ds.load_images(8, progress=False)
    assert len(ds) == 2  # raise mode leaves the dataset as it was


def test_invalid_json(coco_dir):
    with pytest.raises(DataError, match=r"captions\.json is not valid JSON.*line 1"):
        vd.load_coco_captions(write_coco(coco_dir, '{"images": [,]}'), coco_dir / "images")


def test_missing_annotations_key_is_named(coco_dir):
    with pytest.raises(DataError, match="has no 'annotations' key"):
        vd.load_coco_captions(write_coco(coco_dir, {"images": GOOD_COCO["images"], "annotation": []}), coco_dir / "images")


def test_annotation_with_unknown_image_id(coco_dir):
    data = {**GOOD_COCO, "annotations": GOOD_COCO["annotations"] + [{"id": 12, "image_id": 999, "caption": "x"}]}
    with pytest.raises(DataError, match=r"annotations\[2\] \(id 12\) has image_id 999, which is not listed in 'images'"):
        vd.load_coco_captions(write_coco(coco_dir, data), coco_dir / "images")


def test_label_not_in_class_list_names_label_row_and_file(tmp_path):
    make_image(tmp_path / "im" / "0.png")
    make_image(tmp_path / "im" / "1.png")
    (tmp_path / "labels.csv").write_text("file,label\n0.png,goldfish\n1.png,goldfsh\n")
    with pytest.raises(DataError, match=r"label 'goldfsh' \(labels\.csv line 3, file '1\.png'\).*Did you mean: goldfish"):
        vd.load_labelled_csv(tmp_path / "labels.csv", tmp_path / "im", ["tench", "goldfish"])


def test_label_index_out_of_range(tmp_path):
    make_image(tmp_path / "im" / "0.png")
    (tmp_path / "labels.csv").write_text("file,class_index\n0.png,1000\n")
    with pytest.raises(DataError, match=r"label index 1000 .*0\.png.*outside \[0, 1000\)"):
        vd.load_labelled_csv(tmp_path / "labels.csv", tmp_path / "im", vd.imagenet_classnames(), label_column="class_index")


def test_integer_labels_need_a_class_list(tmp_path):
    make_image(tmp_path / "im" / "0.png")
    (tmp_path / "labels.csv").write_text("file,label\n0.png,3\n")
    with pytest.raises(DataError, match="integer class indices; pass classnames="):
        vd.load_labelled_csv(tmp_path / "labels.csv", tmp_path / "im")


def test_csv_missing_required_column(tmp_path):
    make_image(tmp_path / "im" / "0.png")
    (tmp_path / "labels.csv").write_text("file,class_index,wnid,class_name\n0.png,0,n01440764,tench\n")
    with pytest.raises(DataError, match=r"no column 'label'; its columns are \['file', 'class_index'"):
        vd.load_labelled_csv(tmp_path / "labels.csv", tmp_path / "im", vd.imagenet_classnames())
    with pytest.raises(DataError, match=r"no column 'clas_index'.*Did you mean: class_index"):
        vd.load_labelled_csv(tmp_path / "labels.csv", tmp_path / "im", vd.imagenet_classnames(), label_column="clas_index")
    scam = tmp_path / "scam"
    (scam / "scam").mkdir(parents=True)
    (scam / "labels.csv").write_text("id,object,attack_word\nimg_0001,cup,dog\n")
    with pytest.raises(DataError, match="no column 'object_label'"):
        vd.load_scam(scam)


def test_empty_datasets(tmp_path):
    make_image(tmp_path / "im" / "0.png")
    (tmp_path / "labels.csv").write_text("file,label\n")
    with pytest.raises(EmptyDatasetError, match="header but no rows"):
        vd.load_labelled_csv(tmp_path / "labels.csv", tmp_path / "im", ["a"])
    (tmp_path / "folder").mkdir()
    with pytest.raises(EmptyDatasetError, match="no class subfolders"):
        vd.load_image_folder(tmp_path / "folder")
    with pytest.raises(EmptyDatasetError, match="no captioned images"):
        vd.load_coco_captions(write_coco(tmp_path, {"images": [], "annotations": []}), tmp_path / "im")


def test_karpathy_split_not_present(tmp_path):
    make_image(tmp_path / "root" / "a.jpg")
    path = tmp_path / "dataset_flickr30k.json"
    path.write_text(json.dumps({"images": [{"filename": "a.jpg", "split": "train", "sentences": [{"raw": "x"}]}]}))
    with pytest.raises(EmptyDatasetError, match=r"no captioned images in split \['tset'\]; splits present: \['train'\]"):
        vd.load_karpathy(path, tmp_path / "root", split="tset")


def test_skipping_everything_leaves_an_empty_dataset_error(tmp_path):
    (tmp_path / "f" / "a").mkdir(parents=True)
    (tmp_path / "f" / "a" / "x.jpg").write_bytes(b"junk")
    ds = vd.load_image_folder(tmp_path / "f", on_error="skip")
    with pytest.warns(UserWarning, match="skipped 1"), pytest.raises(EmptyDatasetError, match="no readable images"):
        ds.load_images(8, progress=False)


def test_subset_larger_than_dataset(coco_dir):
    ds = vd.load_coco_captions(write_coco(coco_dir, GOOD_COCO), coco_dir / "images")
    with pytest.raises(DataError, match=r"n=5 images .* it has only 2"):
        ds.subset(n=5)
    with pytest.raises(ValueError, match="n=0 must be a positive int"):
        ds.subset(n=0)


@pytest.mark.parametrize(("size", "pattern"), [(0, "size=0 is out of range"), (-3, "out of range"),
                                               ("224", "must be a positive int"), (2.5, "must be a positive int"),
                                               (100_000, "out of range")])
def test_bad_size(coco_dir, size, pattern):
    ds = vd.load_coco_captions(write_coco(coco_dir, GOOD_COCO), coco_dir / "images")
    with pytest.raises(ValueError, match=pattern):
        ds.load_images(size=size)


def test_bad_mode_and_on_error(coco_dir):
    ds = vd.load_coco_captions(write_coco(coco_dir, GOOD_COCO), coco_dir / "images")
    with pytest.raises(ValueError, match="mode='sqash' is not supported.*Did you mean: squash"):
        ds.load_images(8, mode="sqash")
    with pytest.raises(ValueError, match="on_error='ignore' is not supported"):
        ds.load_images(8, on_error="ignore")


def test_unknown_scam_variant(tmp_path):
    with pytest.raises(ValueError, match=r"unknown SCAM variant 'synth'.*Did you mean: synthscam"):
        vd.load_scam(tmp_path, "synth")


def test_rta100_bad_file_name(tmp_path):
    make_image(tmp_path / "rta" / "label=dog_text=cat.png")
    make_image(tmp_path / "rta" / "dog_cat.png")
    with pytest.raises(DataError, match=r"'dog_cat\.png' does not follow 'label=<class>_text=<attack word>"):
        vd.load_rta100(tmp_path / "rta")
    with pytest.warns(UserWarning, match="skipped 1"):
        assert len(vd.load_rta100(tmp_path / "rta", on_error="skip")) == 1


def test_image_folder_class_not_in_list(tmp_path):
    make_image(tmp_path / "f" / "dgo" / "0.png")
    with pytest.raises(DataError, match=r"class folder .*dgo is not in the class list. Did you mean: dog"):
        vd.load_image_folder(tmp_path / "f", classes=["cat", "dog"])
