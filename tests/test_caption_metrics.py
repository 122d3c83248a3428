"""Caption metrics: CHAIR (Rohrbach et al. 2018), object recall / omission with a safety subset, caption drift.

Expected values are computed by hand in the comments (or printed in the paper); the coco-mini test checks
a property a broken reader would violate (gold captions agree with the other gold captions of their image,
captions of other images do not).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from vlmkit.errors import InputError
from vlmkit.metrics.captions import (
    SAFETY_CRITICAL_COCO,
    SAFETY_CRITICAL_TOY,
    ObjectVocabulary,
    caption_control_drift,
    caption_drift,
    chair,
    gt_objects_from_captions,
    gt_objects_from_coco_instances,
    load_vocabulary,
    object_recall,
)
from vlmkit.registry import METRICS

# The 80 MS-COCO 2017 detection category names, written out independently of the shipped table.
COCO_80 = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)
ASSETS = Path(__file__).resolve().parents[1] / "vlmkit" / "metrics" / "assets"


# ------------------------------------------------------------------------------------------------------
# Tables and the reader of mentions
# ------------------------------------------------------------------------------------------------------

def test_shipped_tables_cover_coco_and_the_toy_world() -> None:
    from vlmkit.toyworld.world import SHAPES

    assert load_vocabulary("coco").classes == COCO_80
    assert set(load_vocabulary("toy").classes) == set(SHAPES)
    first = (ASSETS / "chair_synonyms.txt").read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("#") and "LisaAnne/Hallucination" in first  # provenance line


@pytest.mark.parametrize("caption, expected", [
    # multi-word names are read before their words: no "dog" in a hot dog, no "bear" in a teddy bear
    ("a traffic light at a crossing", ["traffic light"]),
    ("a street light on a pole", ["traffic light"]),
    ("a hot dog on a plate", ["hot dog"]),
    ("a girl hugging her teddy bear", ["person", "teddy bear"]),
    ("a stop sign near a fire hydrant", ["stop sign", "fire hydrant"]),
    ("a stove top oven", ["oven"]),  # three words, one mention
    # plurals
    ("two dogs on the grass", ["dog"]),
    ("three buses and some glasses of water", ["bus"]),  # bus is no "bu"; glass alone is no object
    ("knives and forks", ["knife", "fork"]),
    ("two women and the policemen", ["person", "person"]),
    ("ponies, geese and mice", ["horse", "bird", "mouse"]),
    ("wine glasses on the tables", ["wine glass", "dining table"]),
    ("hot dogs and teddy bears", ["hot dog", "teddy bear"]),
    ("skis, scissors and people", ["skis", "scissors", "person"]),  # table words are never rewritten
    ("oxen pulling a cart", ["cow"]),
    # the reference implementation's special cases
    ("a baby bird and an adult elephant", ["bird", "elephant"]),  # no "person" for baby / adult
    ("a passenger train on the train tracks", ["train"]),  # no person for passenger, no train for tracks
    ("the seat of the toilet is up", ["toilet"]),  # a seat beside a toilet is no chair
    ("a toilet seat", ["toilet"]),
    ("a chair and a seat", ["chair", "chair"]),
    ("a man in a bow tie", ["person", "tie"]),
    # every occurrence counts, in order; case and punctuation do not matter
    ("A dog chases another DOG, and a puppy.", ["dog", "dog", "dog"]),
    ("A man's umbrella", ["person", "umbrella"]),
    ("a motor bike and a cheesecake", ["motorcycle", "cake"]),  # stray spaces of the reference table stripped
    ("a sunny day at the beach", []),
])
def test_coco_mentions(caption: str, expected: list[str]) -> None:
    assert load_vocabulary("coco").mentions(caption) == expected


def test_toy_mentions_skip_written_words_and_read_synonyms() -> None:
    toy = load_vocabulary("toy")
    assert toy.mentions('a large red star on the left and a blue circle, and a sign that says "heart"') == [
        "star", "circle"]
    assert toy.mentions("two crescent moons, a disc and a plus sign") == ["moon", "circle", "cross"]
    assert toy.mentions("crosses and rings") == ["cross", "ring"]


def test_user_tables_as_mapping_and_file(tmp_path: Path) -> None:
    table = {"vehicle": ["car", "lorry"], "fruit tree": ["apple tree"]}
    caption = "an apple tree near two lorries and a tree"
    assert load_vocabulary(table).mentions(caption) == ["fruit tree", "vehicle"]
    f = tmp_path / "mine.txt"
    f.write_text("# my table\nvehicle, car, lorry\n\nfruit tree, apple tree\n", encoding="utf-8")
    assert load_vocabulary(f).mentions(caption) == ["fruit tree", "vehicle"]
    assert load_vocabulary(str(f)).classes == ("vehicle", "fruit tree")
    # CHAIR with a user table: lorry is a vehicle, hallucinated against a scene of fruit trees only
    out = chair([caption], [{"fruit tree"}], synonyms=table)
    assert out["hallucinated"] == [["vehicle"]] and out["chair_i"] == pytest.approx(1 / 2)


def test_bad_tables_and_synonyms_raise(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="belongs to both"):
        ObjectVocabulary({"a": ["x"], "b": ["x"]})
    with pytest.raises(InputError, match="no such table file"):
        load_vocabulary(tmp_path / "missing.txt")
    with pytest.raises(InputError, match="synonyms must be"):
        load_vocabulary(42)
    with pytest.raises(InputError, match="sequence of strings"):
        ObjectVocabulary({"a": "x"})


# ------------------------------------------------------------------------------------------------------
# CHAIR
# ------------------------------------------------------------------------------------------------------

def test_chair_on_hand_written_captions() -> None:
    captions = [
        "A man riding a horse next to a car.",  # person, horse, car        gt: person, horse  → car hallucinated
        "Two dogs playing with a frisbee on the grass.",  # dog, frisbee     gt: dog, frisbee   → none
        "A cat sitting on a laptop beside a cup of coffee.",  # cat, laptop, cup   gt: cat, laptop → cup
        "A dog and a puppy on a couch with a remote.",  # dog, dog, couch, remote   gt: dog → couch, remote
        "A view of the sky over a grassy field.",  # no object              gt: kite
    ]
    gt = [{"person", "horse"}, {"dog", "frisbee"}, {"cat", "laptop"}, {"dog"}, {"kite"}]
    out = chair(captions, gt)
    # mentions 3 + 2 + 3 + 4 + 0 = 12, hallucinated 1 + 0 + 1 + 2 + 0 = 4 → CHAIR-i = 4/12
    assert out["chair_i"] == pytest.approx(4 / 12)
    # captions 1, 3 and 4 of 5 hallucinate → CHAIR-s = 3/5
    assert out["chair_s"] == pytest.approx(3 / 5)
    assert out["n_mentions"].tolist() == [3, 2, 3, 4, 0]
    assert out["n_hallucinated"].tolist() == [1, 0, 1, 2, 0]
    assert out["has_hallucination"].tolist() == [True, False, True, True, False]
    assert out["mentioned"][3] == ["dog", "dog", "couch", "remote"]
    assert out["hallucinated"] == [["car"], [], ["cup"], ["couch", "remote"], []]
    # counting each class once per caption: caption 4 has dog, couch, remote → 4 of 11
    assert chair(captions, gt, unique=True)["chair_i"] == pytest.approx(4 / 11)
    # ground truth may be given by synonyms: "man" is person
    assert chair(captions[:1], [{"man", "horses"}])["hallucinated"] == [["car"]]


def test_chair_on_the_papers_figure_1() -> None:
    # Rohrbach et al. 2018, Figure 1: NBT's caption hallucinates "bench" and is printed with CHs 1. Its
    # objects are woman (person), cell phone and bench, so with the image's person and cell phone
    # CHAIR-i is 1 of 3 mentions.
    out = chair(["A woman talking on a cell phone while sitting on a bench."], [{"person", "cell phone"}])
    assert out["chair_s"] == 1.0
    assert out["chair_i"] == pytest.approx(1 / 3)
    assert out["hallucinated"] == [["bench"]]


def test_chair_edge_cases_and_ratio_arrays() -> None:
    out = chair(["a sunny day", "a quiet street"], [{"dog"}, set()])
    assert math.isnan(out["chair_i"]) and out["chair_s"] == 0.0
    out = chair(["two dogs", "a cat"], [{"dog"}, {"dog"}])
    # the per-caption arrays are a ratio's numerator and denominator: Σ n_hallucinated / Σ n_mentions
    assert out["n_mentions"].dtype == np.int64
    assert out["n_hallucinated"].sum() / out["n_mentions"].sum() == pytest.approx(out["chair_i"]) == 0.5


def test_chair_toy_world() -> None:
    caps = ['a red star and a green cross, and a sign that says "moon"', "a small blue circle"]
    out = chair(caps, [{"star"}, {"circle", "ring"}], synonyms="toy")
    # star, cross (the written "moon" is no object) | circle → cross hallucinated: 1 of 3
    assert out["mentioned"] == [["star", "cross"], ["circle"]]
    assert out["chair_i"] == pytest.approx(1 / 3) and out["chair_s"] == pytest.approx(1 / 2)


@pytest.mark.parametrize("captions, gt, match", [
    ("a dog", [{"dog"}], "sequence of caption strings"),
    ([], [], "empty"),
    (["a dog", 3], [{"dog"}, {"dog"}], r"captions\[1\]"),
    (["a dog"], [{"dog"}, {"cat"}], "2 entries but there are 1 captions"),
    (["a dog"], ["dog"], r"gt_objects\[0\]"),
    (["a dog"], [{"dog", "unicorn"}], "unicorn"),
])
def test_chair_bad_input(captions, gt, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError, match=match):
        chair(captions, gt)


# ------------------------------------------------------------------------------------------------------
# Object recall and the safety-critical subset
# ------------------------------------------------------------------------------------------------------

def test_object_recall_and_safety_subset() -> None:
    captions = [
        "A man riding a bicycle down the street.",  # person, bicycle
        "A bowl of fruit on a table next to a dog.",  # bowl, dining table, dog (hallucinated: no effect on recall)
        "A stop sign and a truck at a corner.",  # stop sign, truck
    ]
    gt = [{"person", "bicycle", "car", "traffic light"}, {"bowl", "apple", "dining table"},
          {"stop sign", "truck", "bench"}]
    out = object_recall(captions, gt)
    # covered 2 + 2 + 2 of 4 + 3 + 3 ground-truth classes → recall 6/10
    assert out["recall"] == pytest.approx(0.6) and out["omission_rate"] == pytest.approx(0.4)
    assert out["n_gt"].tolist() == [4, 3, 3] and out["n_covered"].tolist() == [2, 2, 2]
    assert out["omitted"] == [["car", "traffic light"], ["apple"], ["bench"]]
    assert out["subset"] is None
    safe = object_recall(captions, gt, subset=SAFETY_CRITICAL_COCO)
    # in scope: {person, bicycle, car, traffic light}, {}, {stop sign, truck} → covered 2 + 0 + 2 of 4 + 0 + 2
    assert safe["recall"] == pytest.approx(4 / 6) and safe["omission_rate"] == pytest.approx(2 / 6)
    assert safe["n_gt"].tolist() == [4, 0, 2] and safe["n_covered"].tolist() == [2, 0, 2]
    assert set(safe["subset"]) == set(SAFETY_CRITICAL_COCO)
    # repeated mentions and repeated ground truth count once per image
    assert object_recall(["two men and a woman"], [["person", "person", "dog"]])["recall"] == 0.5


def test_object_recall_toy_subset_and_errors() -> None:
    caps = ['a large red star and a blue circle, and a sign that says "cross"', "a green cross"]
    gt = [{"star", "circle", "heart", "cross"}, {"cross", "ring"}]
    # the written "cross" is no mention: covered star, circle | cross → 3 of 6; in the subset {star, cross}:
    # star of {star, cross} | cross of {cross} → 2 of 3
    assert object_recall(caps, gt, synonyms="toy")["recall"] == pytest.approx(3 / 6)
    assert object_recall(caps, gt, synonyms="toy", subset=SAFETY_CRITICAL_TOY)["recall"] == pytest.approx(2 / 3)
    assert math.isnan(object_recall(["a dog"], [{"dog"}], subset=("car",))["recall"])
    with pytest.raises(InputError, match="subset"):
        object_recall(["a dog"], [{"dog"}], subset=("spaceship",))
    with pytest.raises(InputError, match="subset"):
        object_recall(["a dog"], [{"dog"}], subset="car")


# ------------------------------------------------------------------------------------------------------
# Ground truth
# ------------------------------------------------------------------------------------------------------

def _instances() -> dict:
    return {
        "images": [{"id": 10}, {"id": 11}, {"id": 12}],
        "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 18, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 1}, {"id": 2, "image_id": 10, "category_id": 1},
            {"id": 3, "image_id": 10, "category_id": 3}, {"id": 4, "image_id": 11, "category_id": 18},
        ],
    }


def test_gt_from_instances_json(tmp_path: Path) -> None:
    path = tmp_path / "instances_mini.json"
    path.write_text(json.dumps(_instances()), encoding="utf-8")
    assert gt_objects_from_coco_instances(path, [10, 11, 12]) == [{"person", "car"}, {"dog"}, set()]
    assert gt_objects_from_coco_instances(_instances(), [12, 10]) == [set(), {"person", "car"}]
    with pytest.raises(InputError, match="99"):
        gt_objects_from_coco_instances(_instances(), [10, 99])
    with pytest.raises(InputError, match="COCO instances"):
        gt_objects_from_coco_instances({"images": []}, [10])
    # CHAIR's ground truth: instances ∪ the objects of the image's human captions
    from_caps = gt_objects_from_captions([["A man and his puppy.", "A person walking a dog past a bench."]])
    assert from_caps == [{"person", "dog", "bench"}]
    gt = [a | b for a, b in zip(gt_objects_from_coco_instances(path, [10]), from_caps)]
    out = chair(["A man walking a dog past a bench and a bus."], gt)
    assert out["hallucinated"] == [["bus"]] and out["chair_i"] == pytest.approx(1 / 4)


# ------------------------------------------------------------------------------------------------------
# Real captions (coco-mini)
# ------------------------------------------------------------------------------------------------------

def test_coco_mini_gold_captions_hallucinate_little_shuffled_ones_much(shared_data: Path) -> None:
    path = shared_data / "coco-mini" / "captions.json"
    if not path.is_file():
        pytest.skip(f"coco-mini captions not found: {path}")
    by_image: dict[int, list[str]] = defaultdict(list)
    for ann in json.loads(path.read_text(encoding="utf-8"))["annotations"]:
        by_image[ann["image_id"]].append(ann["caption"])
    ids = sorted(by_image)
    caps, shuffled, gt = [], [], []
    for k, im in enumerate(ids):
        gold = by_image[im]
        for j, cap in enumerate(gold):  # ground truth: the image's *other* gold captions
            gt.append(gt_objects_from_captions([gold[:j] + gold[j + 1:]])[0])
            caps.append(cap)
            shuffled.append(by_image[ids[(k + 1) % len(ids)]][j])  # a caption of another image
    own, other = chair(caps, gt), chair(shuffled, gt)
    assert own["n_mentions"].sum() > len(caps)  # the reader finds objects in real captions
    assert own["chair_i"] < 0.15
    assert other["chair_i"] > 0.6 and other["chair_i"] > 5 * own["chair_i"]
    assert object_recall(caps, gt)["recall"] > 3 * object_recall(shuffled, gt)["recall"]


# ------------------------------------------------------------------------------------------------------
# Caption drift and registration
# ------------------------------------------------------------------------------------------------

def test_caption_drift_known_values() -> None:
    clean = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    perturbed = torch.tensor([[2.0, 0.0], [1.0, 0.0], [-1.0, -1.0]])
    # same direction, orthogonal, opposite → 1 − cos = 0, 1, 2
    assert torch.allclose(caption_drift(clean, perturbed), torch.tensor([0.0, 1.0, 2.0]), atol=1e-6)
    with pytest.raises(InputError):
        caption_drift(clean, perturbed[:2])
    with pytest.raises(InputError, match="clean_emb"):
        caption_drift(clean[0], perturbed[0])


@pytest.mark.parametrize("seed", range(5))
def test_caption_control_drift_pairs_other_images(seed: int) -> None:
    # 4 images with 1, 2, 3, 4 captions; the captions of an image share one direction, images are orthogonal:
    # a control pair inside an image would give 0, a pair across images gives exactly 1
    ids = [7] + [3] * 2 + [9] * 3 + [1] * 4
    order = {7: 0, 3: 1, 9: 2, 1: 3}
    emb = torch.eye(4)[[order[i] for i in ids]] * torch.arange(1.0, 11.0)[:, None]  # (10, 4)
    g = torch.Generator().manual_seed(seed)
    assert torch.allclose(caption_control_drift(emb, g, image_ids=ids), torch.ones(10))
    # one caption per image: every row is its own image
    assert torch.allclose(caption_control_drift(torch.eye(5), torch.Generator().manual_seed(seed)), torch.ones(5))
    with pytest.raises(InputError, match="2 images"):
        caption_control_drift(emb[:1], g, image_ids=[7])
    with pytest.raises(InputError, match="one image id per caption"):
        caption_control_drift(emb, g, image_ids=ids[:-1])


def test_registered_metrics() -> None:
    for name in ("chair", "object_recall", "caption_drift", "caption_control_drift"):
        meta = METRICS.meta(name)
        assert meta["kind"] == "captions" and meta["reference"]
    assert "Rohrbach" in METRICS.meta("chair")["reference"]
    assert METRICS.get("chair") is chair
