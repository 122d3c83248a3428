"""The captioning task in the engine: toy captioner on toy scenes (known objects), perception-realistic
cells, stored captions, attack cells; tiny random-init BLIP-2 / LLaVA for the transformers path."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from vlmkit.errors import InputError
from vlmkit.evaluate import Cell, evaluate_grid, grid_cells
from vlmkit.evaluate.semantics import captions_of, mask_cells, perception_semantics
from vlmkit.metrics.captions import chair, object_recall
from vlmkit.tasks.caption_data import load_toy_captions


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return load_toy_captions(tmp_path_factory.mktemp("caps"), n=24, seed=0)


@pytest.fixture(scope="module")
def rows(toy, tmp_path_factory) -> pd.DataFrame:
    cells = grid_cells(["gaussian_noise"], [5]) + mask_cells(toy, ["drop_small"], [0.1, 0.4], seed=0, size=64)
    cells.append(Cell("attack", "pgd", 0, {"eps": 8 / 255, "steps": 3}))
    return evaluate_grid(["toycap:rn"], toy, cells, out_dir=tmp_path_factory.mktemp("o"), progress=False, n_boot=200)


def _v(rows, label, metric):
    sel = rows[(rows.label == label) & (rows.metric == metric)]
    assert len(sel) == 1, (label, metric)
    return float(sel.value.iloc[0])


def test_clean_captions_of_the_toy_captioner_hallucinate_rarely(rows):
    assert _v(rows, "clean", "chair_i") <= 0.15 and _v(rows, "clean", "recall") >= 0.75
    assert _v(rows, "clean", "miou_mean") == 1.0


def test_stored_captions_recompute_the_rows(rows, toy):
    for label in ("clean", "gaussian_noise@5"):
        caps = captions_of(rows, "toycap:rn", toy.name, label)
        assert len(caps) == len(toy)
        assert chair(caps, toy.objects, "toy")["chair_i"] == pytest.approx(_v(rows, label, "chair_i"))
        assert object_recall(caps, toy.objects, "toy")["recall"] == pytest.approx(_v(rows, label, "recall"))


def test_dropping_objects_out_of_the_image_turns_mentions_into_omissions(rows):
    """drop_small + inpaint: the perception lost the small objects and they are painted out of the image;
    the captioner stops naming them (omission up) and the cell's measured mIoU drop follows its target."""
    labels = sorted({lab for lab in rows.label if lab.startswith("mask_corruption")},
                    key=lambda lab: json.loads(rows[rows.label == lab].params.iloc[0])["miou_drop"])
    assert len(labels) == 2
    drops = [1 - _v(rows, lab, "miou_mean") for lab in labels]
    assert drops[0] == pytest.approx(0.1, abs=0.05) and drops[1] == pytest.approx(0.4, abs=0.08)
    om = [_v(rows, "clean", "omission_rate")] + [_v(rows, lab, "omission_rate") for lab in labels]
    assert om[2] > om[0] + 0.1 and om[2] >= om[1]


def test_semantic_metrics_and_their_relation_to_perception(rows):
    atk = rows[rows.kind == "attack"]
    assert set(atk.metric) >= {"chair_i", "caption_drift_mean", "safety_flip_rate"}
    assert _v(rows, "pgd ε=8/255 steps=3", "caption_drift_mean") > 0
    corr = perception_semantics(rows, n_boot=100)
    sel = corr[(corr.perception == "miou_drop") & (corr.semantic == "omission_rate") & (corr.method == "spearman")]
    assert len(sel) == 1 and sel.value.iloc[0] > 0


def test_transformers_captioners_run_in_the_engine(toy, tmp_path):
    from vlmkit.tasks.tiny import save_tiny_llava

    path = save_tiny_llava(tmp_path / "llava")
    out = evaluate_grid([str(path)], toy.subset(4, seed=0), grid_cells(["contrast"], [3]), out_dir=tmp_path / "o",
                        progress=False, n_boot=50, task_options={"max_new_tokens": 5, "text_encoder": "toy:vit"})
    caps = captions_of(out, str(path), toy.name, "contrast@3")
    assert len(caps) == 4 and all(isinstance(c, str) for c in caps)
    with pytest.raises(InputError, match="caption_nll"):
        evaluate_grid([str(path)], toy.subset(2, seed=0), [Cell("attack", "pgd", 0, {"steps": 1})],
                      out_dir=tmp_path / "o2", progress=False, task_options={"max_new_tokens": 3,
                                                                              "text_encoder": "toy:vit"})


def test_text_cells_are_refused_by_tasks_without_texts(toy, tmp_path):
    with pytest.raises(InputError, match="no texts to perturb"):
        evaluate_grid(["toycap:rn"], toy, [Cell("text", "synonym", 1)], out_dir=tmp_path, progress=False)
