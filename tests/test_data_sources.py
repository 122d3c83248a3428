"""vlmkit.data.sources: the ``datasets`` parameter (role -> spec) over the data layer's loaders."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from vlmkit.data.classnames import imagenet_a_wnids, imagenet_subset_classnames
from vlmkit.data.sources import load_datasets, shared_layout, with_shared_layout
from vlmkit.data.specs import DATASET_FORMATS, DATASET_ROLES, check_datasets, dataset_name
from vlmkit.errors import DataNotFoundError, InputError


def _img(path: Path, shade: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), (shade % 256, 80, 160)).save(path)


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small folders in each layout: coco, karpathy, csv, imagefolder, imagenet-a, scam, rta100, questions."""
    root = tmp_path_factory.mktemp("layouts")
    out: dict[str, Path] = {"root": root}
    # COCO captions: coco-small/captions.json + coco-small/images/
    coco = root / "coco-small"
    images, anns = [], []
    for i in range(5):
        _img(coco / "images" / f"{i:012d}.jpg", 10 * i)
        images.append({"id": i, "file_name": f"{i:012d}.jpg"})
        anns += [{"id": 10 * i + k, "image_id": i, "caption": f"picture {i} caption {k}"} for k in range(2)]
    (coco / "captions.json").write_text(json.dumps({"images": images, "annotations": anns}))
    out["coco"] = coco
    # Karpathy: 3 test, 2 val, 2 train images under images/val2014; the file is not named dataset_coco.json
    kar = root / "karpathy"
    recs = []
    for i, split in enumerate(["test"] * 3 + ["val"] * 2 + ["train"] * 2):
        fname = f"COCO_val2014_{i:012d}.jpg"
        _img(kar / "images" / "val2014" / fname, 20 * i)
        recs.append({"filepath": "val2014", "filename": fname, "imgid": i, "cocoid": 100 + i, "split": split,
                     "sentences": [{"raw": f"a photo number {i}.", "tokens": ["a", "photo"]}]})
    (kar / "karpathy.json").write_text(json.dumps({"images": recs, "dataset": "coco"}))
    out["karpathy"] = kar
    # CSV with classes: labelled-set/labels.csv, classes.csv, images/
    lab = root / "labelled-set"
    for i in range(6):
        _img(lab / "images" / f"im{i}.jpg", 30 * i)
    _write_csv(lab / "classes.csv", ["class_index", "wnid", "class_name"], [[0, "n0", "cat"], [1, "n1", "dog"]])
    _write_csv(lab / "labels.csv", ["file", "class_index"], [[f"im{i}.jpg", i % 2] for i in range(6)])
    (lab / "classes.txt").write_text("cat\ndog\n")
    out["csv"] = lab
    # ImageFolder: folder-set/<class>/<img>
    fold = root / "folder-set"
    for c in ("apple", "pear"):
        for i in range(3):
            _img(fold / c / f"{c}{i}.png", i)
    out["imagefolder"] = fold
    # ImageNet-A style: wnid folders (two of the 200 classes)
    ina = root / "ina"
    for w in imagenet_a_wnids()[:2]:
        for i in range(2):
            _img(ina / w / f"{w}_{i}.jpg", i)
    out["imagenet-a"] = ina
    # SCAM: labels.csv + scam/ noscam/ synthscam/
    scam = root / "scam-set"
    rows = [[f"img_{i:04d}", "ball" if i % 2 else "cup", "car", 1.5] for i in range(1, 5)]
    for v in ("scam", "noscam", "synthscam"):
        for r in rows:
            _img(scam / v / f"{r[0]}.jpg", 7)
    _write_csv(scam / "labels.csv", ["id", "object_label", "attack_word", "postit_area_pct"], rows)
    out["scam"] = scam
    # RTA-100
    rta = root / "rta"
    _img(rta / "label=dog_text=cat.png")
    _img(rta / "label=cup_text=car.png")
    out["rta100"] = rta
    # questions (jsonl beside its images)
    q = root / "qs"
    _img(q / "images" / "a.png")
    (q / "my-questions.jsonl").write_text(
        json.dumps({"image": "images/a.png", "question": "Is it blue?", "answer": "yes"}) + "\n"
        + json.dumps({"image": "images/a.png", "question": "Colour?", "options": ["red", "blue"], "answer": 1}) + "\n")
    out["questions"] = q
    return out


def _names(loaded: dict) -> dict[str, list[tuple[str, int]]]:
    return {role: [(ds.name, len(ds)) for ds in lst] for role, lst in loaded.items()}


def test_roles_and_formats_tables():
    assert DATASET_ROLES == ("retrieval", "classification", "typographic", "hard", "segmentation", "vqa", "factors",
                             "captioning")
    assert DATASET_FORMATS["toy"] == DATASET_ROLES
    assert DATASET_FORMATS["karpathy"] == ("retrieval",) and DATASET_FORMATS["coco"] == ("retrieval", "captioning")
    assert DATASET_FORMATS["csv"] == ("classification", "hard", "factors")


def test_a_factors_spec_attaches_annotations_after_the_subset(tmp_path):
    """A csv set with a per-image factor file: the annotations follow the subset's file order."""
    import pandas as pd

    root = tmp_path / "fx"
    files = [f"im{i}.png" for i in range(6)]
    for f in files:
        _img(root / "images" / f)
    (root / "labels.csv").write_text("file,label\n" + "".join(f"{f},{i % 2}\n" for i, f in enumerate(files)))
    pd.DataFrame({"file_name": files[::-1], "light": ["dark", "bright"] * 3}).to_csv(root / "f.csv", index=False)
    spec = {"format": "csv", "path": str(root / "labels.csv"), "images": str(root / "images"), "classes": ["a", "b"],
            "factors": str(root / "f.csv")}
    ds = load_datasets({"factors": spec}, n_images=4, seed=1, root=tmp_path)["factors"][0]
    want = {f: lab for f, lab in zip(files[::-1], ["dark", "bright"] * 3)}
    assert list(ds.factors["light"]) == [want[p.name] for p in ds.paths]
    with pytest.raises(InputError, match="needs key 'factors'"):
        check_datasets({"factors": {k: v for k, v in spec.items() if k != "factors"}})
    with pytest.raises(DataNotFoundError, match="factors"):
        check_datasets({"factors": {**spec, "factors": str(root / "missing.csv")}})


def test_each_layout_loads_with_names_and_sizes(layouts, tmp_path):
    L = layouts
    datasets = {
        "retrieval": [{"format": "coco", "path": str(L["coco"] / "captions.json"), "images": str(L["coco"] / "images")},
                      {"format": "karpathy", "path": str(L["karpathy"] / "karpathy.json"),
                       "images": str(L["karpathy"] / "images")}],
        "classification": [{"format": "csv", "path": str(L["csv"] / "labels.csv"), "images": str(L["csv"] / "images"),
                            "classes": str(L["csv"] / "classes.csv"), "label_column": "class_index"},
                           {"format": "imagefolder", "path": str(L["imagefolder"])}],
        "hard": {"format": "imagenet-a", "path": str(L["imagenet-a"])},
        "typographic": [{"format": "scam", "path": str(L["scam"])}, {"format": "rta100", "path": str(L["rta100"])}],
        "vqa": {"format": "questions", "path": str(L["questions"] / "my-questions.jsonl")},
    }
    got = load_datasets(datasets, n_images=None, seed=0, root=tmp_path)
    assert _names(got) == {
        "retrieval": [("coco-small", 5), ("coco-karpathy-test", 3)],  # karpathy: only the test split
        "classification": [("labelled-set", 6), ("folder-set", 6)],
        "hard": [("imagenet-a", 4)],
        "typographic": [("scam", 4), ("scam-noscam", 4), ("scam-synthscam", 4), ("rta100", 2)],
        "vqa": [("my-questions", 2)],
    }
    assert got["classification"][0].classnames == ["cat", "dog"]
    assert got["hard"][0].classnames == imagenet_subset_classnames("imagenet-a")  # 200-class label space
    assert [ds.variant for ds in got["typographic"][:3]] == ["scam", "noscam", "synthscam"]
    # n_images subsets every set (capped at its size) with the seed; a spec's own n_images overrides
    datasets["retrieval"][1]["n_images"] = 2
    datasets["retrieval"][1]["split"] = ["test", "val"]
    small = load_datasets(datasets, n_images=3, seed=1, roles=["retrieval", "typographic"], root=tmp_path)
    assert _names(small) == {"retrieval": [("coco-small", 3), ("coco-karpathy-test+val", 2)],
                             "typographic": [("scam", 3), ("scam-noscam", 3), ("scam-synthscam", 3), ("rta100", 2)]}
    again = load_datasets(datasets, n_images=3, seed=1, roles=["retrieval"], root=tmp_path)
    assert again["retrieval"][0].paths == small["retrieval"][0].paths


def test_names_variants_and_overrides(layouts):
    L = layouts
    specs = check_datasets({
        "typographic": {"format": "scam", "path": str(L["scam"]), "variants": ["NoSCAM", "synthscam"]},
        "classification": {"format": "imagefolder", "path": str(L["imagefolder"]), "name": "fruit"},
        "retrieval": {"format": "karpathy", "path": str(L["karpathy"] / "karpathy.json"),
                      "images": str(L["karpathy"] / "images"), "split": "val", "models": ["toy:tiny"]},
    })
    assert [s["name"] for s in specs["typographic"]] == ["scam-noscam", "scam-synthscam"]
    assert [s["variants"] for s in specs["typographic"]] == [["noscam"], ["synthscam"]]
    assert specs["classification"][0]["name"] == "fruit"
    assert specs["retrieval"][0]["name"] == "coco-karpathy-val" and specs["retrieval"][0]["models"] == ["toy:tiny"]
    assert check_datasets(specs) == specs  # normalised specs check to themselves
    named = check_datasets({"typographic": {"format": "scam", "path": str(L["scam"]), "name": "S"}})
    assert [s["name"] for s in named["typographic"]] == ["S", "S-noscam", "S-synthscam"]
    assert dataset_name({"format": "imagenet-r", "path": "x"}) == "imagenet-r"
    assert dataset_name({"format": "coco", "path": "a/captions.json", "images": "/d/coco-mini/images"}) == "coco-mini"
    assert dataset_name({"format": "karpathy", "path": "/nowhere/dataset_flickr30k.json", "images": "i"}) \
        == "flickr30k-karpathy-test"
    assert check_datasets({"vqa": None, "retrieval": []}) == {}


def test_toy_sets(tmp_path):
    got = load_datasets({"retrieval": {"format": "toy"}, "typographic": {"format": "toy"}}, n_images=4, seed=0,
                        root=tmp_path)
    assert _names(got) == {"retrieval": [("toy-retrieval", 4)],
                           "typographic": [("toy-typographic", 4), ("toy-blank-label", 4)]}
    assert (tmp_path / "toy").is_dir()
    specs = check_datasets({"classification": "toy", "hard": {"format": "toy"},
                            "segmentation": "toy", "vqa": "toy"})  # same toy set in two roles is fine
    assert {r: [s["name"] for s in lst] for r, lst in specs.items()} == {
        "classification": ["toy-shapes"], "hard": ["toy-shapes"], "segmentation": ["toy-segmentation"],
        "vqa": ["toy-questions"]}


def _raises(exc: type[Exception], datasets: object, *words: str, where: str = "datasets") -> str:
    with pytest.raises(exc) as info:
        check_datasets(datasets, where=where)  # type: ignore[arg-type]
    msg = str(info.value)
    for w in (where, *words):
        assert w in msg, f"{w!r} not in message: {msg}"
    return msg


def test_errors_name_where_role_and_key(layouts, tmp_path):
    L = layouts
    coco = {"format": "coco", "path": str(L["coco"] / "captions.json"), "images": str(L["coco"] / "images")}
    kar = {"format": "karpathy", "path": str(L["karpathy"] / "karpathy.json"), "images": str(L["karpathy"] / "images")}
    assert "Did you mean: retrieval" in _raises(InputError, {"retreival": coco}, "'retreival'")
    assert "karpathy" in _raises(InputError, {"retrieval": {**coco, "format": "karpaty"}}, "'retrieval'", "'format'")
    _raises(InputError, {"retrieval": {"path": "x"}}, "'retrieval'", "'format'")
    _raises(InputError, {"classification": coco}, "'classification'", "'coco'", "retrieval")
    msg = _raises(InputError, {"retrieval": {**coco, "imgs": "x"}}, "'retrieval'", "'imgs'", where="params.datasets")
    assert "Did you mean: images" in msg
    _raises(InputError, {"retrieval": {"format": "coco", "path": coco["path"]}}, "'retrieval'", "'images'")
    _raises(DataNotFoundError, {"retrieval": [kar, {**coco, "images": str(tmp_path / "nope")}]},
            "['retrieval'][1]", "'images'", "nope")
    _raises(DataNotFoundError, {"classification": {"format": "imagefolder", "path": str(L["csv"] / "labels.csv")}},
            "'classification'", "'path'", "folder")
    assert "Did you mean: test" in _raises(InputError, {"retrieval": {**kar, "split": "tset"}}, "'retrieval'",
                                           "'split'", "restval")
    _raises(InputError, {"retrieval": {**coco, "n_images": 0}}, "'retrieval'", "'n_images'")
    _raises(InputError, {"retrieval": {**coco, "models": "toy:tiny"}}, "'retrieval'", "'models'", "list")
    _raises(InputError, {"typographic": {"format": "scam", "path": str(L["scam"]), "variants": ["scm"]}},
            "'typographic'", "'variants'", "scam")
    _raises(InputError, {"typographic": {"format": "toy", "sets": ["toy-shapes"]}}, "'typographic'", "'sets'")
    _raises(DataNotFoundError, {"classification": {"format": "csv", "path": str(L["csv"] / "labels.csv"),
                                                   "images": str(L["csv"] / "images"), "classes": "cls.txt"}},
            "'classification'", "'classes'")
    _raises(InputError, {"retrieval": [coco, coco]}, "'retrieval'", "'coco-small'")
    _raises(InputError, {"retrieval": {**coco, "name": "x"}, "classification": {
        "format": "imagefolder", "path": str(L["imagefolder"]), "name": "x"}}, "'x'", "'retrieval'", "'classification'")
    _raises(InputError, ["retrieval"], "mapping")
    with pytest.raises(InputError, match="roles: unknown role 'vqaa'"):
        load_datasets({"retrieval": coco}, n_images=2, seed=0, root=tmp_path, roles=["vqaa"])


def test_with_shared_layout_without_data_is_check(layouts):
    spec = {"retrieval": {"format": "toy"}}
    assert with_shared_layout(spec, None) == with_shared_layout(spec, "") == check_datasets(spec)
    with pytest.raises(DataNotFoundError, match="none of coco-mini"):
        shared_layout(layouts["root"] / "coco-small")


@pytest.mark.shared_data
def test_shared_layout(shared_data):
    specs = shared_layout(shared_data)
    assert {r: [s["name"] for s in lst] for r, lst in specs.items()} == {
        "retrieval": ["coco-mini"], "classification": ["imagenet-samples"],
        "typographic": ["scam", "scam-noscam", "scam-synthscam"], "captioning": ["coco-mini-captions"]}
    assert specs["classification"][0]["label_column"] == "class_index"
    merged = with_shared_layout({"retrieval": "toy"}, shared_data)
    assert [s["name"] for s in merged["retrieval"]] == ["toy-retrieval", "coco-mini"]
    assert set(merged) == {"retrieval"}  # --data fills the roles the study measures, no others
    assert with_shared_layout(specs, shared_data) == specs  # the same specs are not added twice


@pytest.mark.shared_data
def test_shared_layout_loads(shared_data, tmp_path):
    got = load_datasets(shared_layout(shared_data), n_images=None, seed=0, root=tmp_path,
                        roles=["retrieval", "classification"])
    assert _names(got) == {"retrieval": [("coco-mini", 159)], "classification": [("imagenet-samples", 800)]}
    assert got["classification"][0].num_classes == 1000
    typo = load_datasets(shared_layout(shared_data), n_images=8, seed=0, root=tmp_path, roles=["typographic"])
    assert _names(typo) == {"typographic": [("scam", 8), ("scam-noscam", 8), ("scam-synthscam", 8)]}


def test_toy_tasks_and_segmentation_folder(tmp_path):
    got = load_datasets({"segmentation": "toy", "vqa": "toy"}, n_images=4, seed=0, root=tmp_path)
    assert [(ds.name, len(ds)) for ds in got["segmentation"]] == [("toy-segmentation", 4)]
    assert [ds.name for ds in got["vqa"]] == ["toy-questions"] and len(got["vqa"][0]) >= 4
    folder = next((tmp_path / "toy").glob("toy-segmentation-*"))
    spec = {"segmentation": {"format": "segmentation", "path": str(folder), "annotations": "prompts.csv",
                             "name": "masks"}}
    assert check_datasets(spec)["segmentation"][0]["annotations"] == str(folder / "prompts.csv")
    seg = load_datasets(spec, n_images=3, seed=0, root=tmp_path)
    assert [(ds.name, len(ds)) for ds in seg["segmentation"]] == [("masks", 3)]
    with pytest.raises(DataNotFoundError, match=r"\['segmentation'\].*'annotations'"):
        check_datasets({"segmentation": {**spec["segmentation"], "annotations": "missing.csv"}})


def test_a_spec_names_the_models_that_evaluate_its_set(tmp_path):
    got = load_datasets({"retrieval": {"format": "toy", "models": ["toy:rn"]}}, n_images=2, seed=0, root=tmp_path)
    assert got["retrieval"][0].models == ["toy:rn"]
    with pytest.raises(InputError, match="models"):
        check_datasets({"retrieval": {"format": "toy", "models": "toy:rn"}})
