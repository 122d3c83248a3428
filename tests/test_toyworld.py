"""Toy world: renderer ground truth, determinism, caption grammar, render(prompt), exports."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from vlmkit.toyworld import (
    BACKGROUNDS,
    COLOR_NAMES,
    SHAPES,
    WORDS,
    describe,
    export_classification,
    export_retrieval,
    export_typographic,
    parse_prompt,
    render,
    sample_caption,
    sample_scene,
    scene_rng,
)
from vlmkit.toyworld.grammar import mentioned_attributes, visible_objects
from vlmkit.toyworld.world import (
    COLORS,
    POSITIONS,
    SIZES,
    WorldConfig,
    render_typographic,
)

SIGNS = WorldConfig(p_sign=0.6, p_blank=0.2, p_sign_only=0.2)


def _scenes(n: int = 60, seed: int = 5, config: WorldConfig = WorldConfig(), size: int = 64):
    return [sample_scene(seed, i, size, config) for i in range(n)]


def test_vocabulary_sizes() -> None:
    assert len(SHAPES) >= 8 and len(COLOR_NAMES) >= 8 and len(SIZES) == 2 and len(POSITIONS) == 5
    assert set(BACKGROUNDS) == {"flat", "gradient", "stripes", "noise", "blotches"}


@pytest.mark.parametrize("size", [64, 96])
def test_masks_and_boxes_match_pixels(size: int) -> None:
    n_checked = 0
    for scene in _scenes(40, seed=11, config=SIGNS, size=size):
        assert scene.image.shape == (size, size, 3) and scene.image.dtype == np.uint8
        assert 1 <= len(scene.objects) <= 3 or scene.spec.kind == "sign"
        for obj in scene.objects:
            assert obj.mask.any()
            ys, xs = np.nonzero(obj.mask)
            assert obj.bbox == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            assert not (obj.visible & ~obj.mask).any()
            expected = np.round(np.asarray(obj.rgb) * 255)
            vis = scene.image[obj.visible].astype(float)  # (n, 3)
            if len(vis):
                assert np.abs(vis - expected).max() <= 1.0
                n_checked += 1
            # a saturated/named colour: nearest named colour is the object's colour
            names = list(COLORS)
            dist = [np.abs(np.asarray(COLORS[c]) - np.asarray(obj.rgb)).sum() for c in names]
            assert names[int(np.argmin(dist))] == obj.color
            # the centre lies near the position anchor
            ax, ay = POSITIONS[obj.position]
            assert abs(obj.center[0] / size - ax) < 0.05 and abs(obj.center[1] / size - ay) < 0.05
            assert obj.radius == pytest.approx(SIZES[obj.size] * size)
        # occlusion order: a pixel is visible for at most one object
        if scene.objects:
            assert np.stack([o.visible for o in scene.objects]).sum(0).max() <= 1
    assert n_checked > 40


def test_word_box_contains_text_pixels() -> None:
    seen = 0
    for scene in _scenes(80, seed=3, config=SIGNS):
        sign = scene.sign
        if sign is None:
            continue
        x0, y0, x1, y1 = sign.box
        assert sign.mask.sum() == (x1 - x0) * (y1 - y0)
        if sign.word is None:
            assert sign.word_box is None and not sign.text_mask.any()
            # a blank label is a flat rectangle of one colour
            patch = scene.image[y0:y1, x0:x1].reshape(-1, 3)
            assert (patch == patch[0]).all()
            continue
        seen += 1
        wx0, wy0, wx1, wy1 = sign.word_box
        assert x0 <= wx0 < wx1 <= x1 and y0 <= wy0 < wy1 <= y1
        ys, xs = np.nonzero(sign.text_mask)
        assert len(ys) > 10
        assert xs.min() >= wx0 and xs.max() < wx1 and ys.min() >= wy0 and ys.max() < wy1
        # text pixels differ from the label colour; the label covers the objects under it
        label_px = scene.image[sign.mask & ~sign.text_mask].reshape(-1, 3)
        text_px = scene.image[sign.text_mask].reshape(-1, 3)
        assert np.abs(text_px.mean(0) - label_px.mean(0)).sum() > 150
        for obj in scene.objects:
            assert not (obj.visible & sign.mask).any()
    assert seen > 20


def test_glyphs_cached_and_wider_for_longer_words() -> None:
    from vlmkit.glyphs import render_glyph

    a = render_glyph("star", "DejaVuSans-Bold.ttf", 12, crop=True)  # the sign glyphs of the toy world
    assert a is render_glyph("star", "DejaVuSans-Bold.ttf", 12, crop=True)
    assert render_glyph("triangle", "DejaVuSans-Bold.ttf", 12, crop=True).shape[1] > a.shape[1]
    assert 0.0 <= a.min() and a.max() <= 1.0 and a.max() > 0.9


def test_determinism() -> None:
    a = [s.image for s in _scenes(10, seed=7)]
    b = [s.image for s in _scenes(10, seed=7)]
    c = [s.image for s in _scenes(10, seed=8)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert sum(np.array_equal(x, y) for x, y in zip(a, c)) == 0
    s1, s2 = sample_scene(7, 3), sample_scene(7, 3)
    assert all(np.array_equal(o.mask, p.mask) for o, p in zip(s1.objects, s2.objects))
    assert sample_caption(s1, scene_rng(7, 3, 1)) == sample_caption(s2, scene_rng(7, 3, 1))


def test_rendering_is_fast() -> None:
    import time

    _scenes(20)  # warm the glyph cache
    t = time.process_time()  # CPU time of this process: robust to other jobs on a shared machine
    _scenes(300, seed=99)
    per_image = (time.process_time() - t) / 300
    assert per_image < 3e-3, f"{per_image * 1e3:.2f} ms per image"


def test_scene_mixture_has_all_kinds() -> None:
    kinds = {s.spec.kind for s in _scenes(300, seed=2)}
    assert kinds == {"objects", "objects+sign", "objects+blank", "sign"}
    backgrounds = {s.background for s in _scenes(100, seed=2)}
    assert backgrounds == set(BACKGROUNDS)


def test_complete_caption_mentions_everything() -> None:
    for scene in _scenes(60, seed=4, config=SIGNS):
        cap = describe(scene)
        att = mentioned_attributes(cap)
        vis = visible_objects(scene)
        assert att["shapes"] == {o.shape for o in vis}
        assert att["colors"] == {o.color for o in vis}
        assert att["positions"] == {o.position for o in vis}
        if scene.sign is not None and scene.sign.word:
            assert f'a sign that says "{scene.sign.word}"' in cap
            assert att["words"] == {scene.sign.word}
        elif scene.sign is not None:
            assert "blank sign" in cap


def test_training_captions_are_varied_and_faithful() -> None:
    caps, transcribed, subject, short = [], 0, 0, 0
    for i, scene in enumerate(_scenes(400, seed=6)):
        cap = sample_caption(scene, scene_rng(6, i, 1))
        caps.append(cap)
        att = mentioned_attributes(cap)
        vis_shapes = {o.shape for o in visible_objects(scene)}
        word = scene.sign.word if scene.sign is not None else None
        # every named shape is present, or is the written word (the writing as subject)
        assert att["shapes"] <= vis_shapes | ({word} if word else set()), (cap, vis_shapes, word)
        assert att["colors"] <= {o.color for o in visible_objects(scene)}
        if att["words"]:
            assert att["words"] == {word}
            transcribed += 1
        if word and not att["words"] and word in cap:
            subject += 1
        short += cap in {f"a photo of a {s}" for s in SHAPES}
    assert len(set(caps)) > 250
    assert transcribed > 20 and subject > 10 and short > 10


def test_parse_prompt() -> None:
    p = parse_prompt('a small red star on the left and a big blue circle, and a sign that says "cat"')
    assert p.word == "cat"
    assert p.objects[0] == {"shape": "star", "color": "red", "size": "small", "position": "left"}
    assert p.objects[1] == {"shape": "circle", "color": "blue", "size": "large"}
    assert parse_prompt("a photo of a dog").word == "dog"
    assert parse_prompt("a photo of a heart on a striped background").background == "stripes"


@pytest.mark.parametrize(
    "prompt",
    [
        "a photo of a heart",
        "a large green triangle at the top",
        'a small yellow moon on the right and a black ring, and a sign that says "milk"',
    ],
)
def test_render_prompt_matches(prompt: str) -> None:
    parsed = parse_prompt(prompt)
    for seed in range(3):
        scene = render(prompt, seed=seed)
        assert len(scene.objects) == len(parsed.objects)
        for want, obj in zip(parsed.objects, scene.objects):
            for key, value in want.items():
                assert getattr(obj, key) == value
            assert obj.visible_fraction > 0.3
        if parsed.word:
            assert scene.sign is not None and scene.sign.word == parsed.word
        # describing the rendered scene names what was asked for
        att = mentioned_attributes(describe(scene))
        assert {o["shape"] for o in parsed.objects} <= att["shapes"]
    assert not np.array_equal(render(prompt, seed=0).image, render(prompt, seed=1).image)
    assert np.array_equal(render(prompt, seed=2).image, render(prompt, seed=2).image)


def test_render_word_only_and_errors() -> None:
    scene = render("a photo of a cat")
    assert scene.objects == [] and scene.sign.word == "cat" and "cat" in WORDS
    with pytest.raises(ValueError, match="names no shape"):
        render("a photo of nothing in particular")


def test_typographic_triplet() -> None:
    for i in range(20):
        scam, blank, synth, word = render_typographic(scene_rng(1, i))
        obj = scam.objects[0]
        assert word in SHAPES and word != obj.shape
        assert scam.sign.word == word and blank.sign.word is None and synth.sign.word == word
        assert scam.sign.box == blank.sign.box
        assert synth.sign.font != scam.sign.font
        assert obj.visible_fraction > 0.5
        # outside the label, the three images are identical
        out = ~(scam.sign.mask | synth.sign.mask)
        assert np.array_equal(scam.image[out], blank.image[out])
        assert np.array_equal(scam.image[out], synth.image[out])


def test_export_retrieval(tmp_path) -> None:
    root = export_retrieval(tmp_path / "ret", n=12, size=48, captions_per_image=2, progress=False)
    data = json.loads((root / "captions.json").read_text())
    assert set(data) == {"images", "annotations"}
    assert len(data["images"]) == 12 and len(data["annotations"]) == 24
    assert set(data["images"][0]) == {"id", "file_name", "width", "height"}
    assert set(data["annotations"][0]) == {"id", "image_id", "caption"}
    assert {a["image_id"] for a in data["annotations"]} == {im["id"] for im in data["images"]}
    files = sorted(p.name for p in (root / "images").iterdir())
    assert files == sorted(im["file_name"] for im in data["images"])
    from PIL import Image

    assert Image.open(root / "images" / files[0]).size == (48, 48)


@pytest.mark.parametrize("task,classes", [("shape", SHAPES), ("color", COLOR_NAMES)])
def test_export_classification(tmp_path, task, classes) -> None:
    root = export_classification(tmp_path / task, n=15, task=task, progress=False)
    with open(root / "labels.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["file", "label"] and len(rows) == 15
    assert (root / "classes.txt").read_text().split() == list(classes)
    assert {r["label"] for r in rows} <= set(classes)
    assert all((root / "images" / r["file"]).is_file() for r in rows)
    with pytest.raises(ValueError):
        export_classification(tmp_path / "x", n=1, task="texture", progress=False)


def test_export_typographic(tmp_path) -> None:
    root = export_typographic(tmp_path / "typo", n=10, progress=False)
    with open(root / "labels.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["id", "object_label", "attack_word", "postit_area_pct"] and len(rows) == 10
    for r in rows:
        assert r["object_label"] in SHAPES and r["attack_word"] in SHAPES and r["object_label"] != r["attack_word"]
        assert 0 < float(r["postit_area_pct"]) < 50
        for sub in ("scam", "noscam", "synthscam"):
            assert (root / sub / f"{r['id']}.png").is_file()


def test_factor_embeddings_cosine_is_share_of_common_factors() -> None:
    from vlmkit.toyworld import FACTORS, factor_embeddings

    scenes = [s for s in _scenes(60) if s.objects][:40]
    names = list(FACTORS)
    E = factor_embeddings(scenes, names)  # (N, F)
    assert E.shape == (40, sum(len(v) for v in FACTORS.values()))
    np.testing.assert_allclose(np.linalg.norm(E, axis=1), 1.0, rtol=1e-6)

    def value(s, f):
        return s.background if f == "background" else getattr(s.objects[0], f)

    for i in range(0, 40, 7):
        for j in range(40):
            share = np.mean([value(scenes[i], f) == value(scenes[j], f) for f in names])
            assert abs(float(E[i] @ E[j]) - share) < 1e-6
    with pytest.raises(ValueError, match="expected a non-empty subset"):
        factor_embeddings(scenes, ["smell"])
    empty = next(s for s in _scenes(60) if not s.objects)  # a sign-only scene
    with pytest.raises(ValueError, match="has no object"):
        factor_embeddings([empty])
