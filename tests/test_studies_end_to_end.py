"""Each study grid's toy variant, end to end through papermill on a clean output folder, with ``--data``
pointing at a folder in the shared layout that no other test has seen (a fresh sample of
``../shared/data`` written here): every notebook runs, no undeclared parameter is passed, the results
hold the study's headline rows on the toy world *and* on the real photos, and the report shows the
study's section."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from vlmkit.grid import run_grid
from vlmkit.grid.spec import grid_path
from vlmkit.report import build_report

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]


@pytest.fixture(scope="module")
def unseen(shared_data, tmp_path_factory) -> Path:
    """A new folder in the shared layout: a different sample of each set (last items, not the first)."""
    root = tmp_path_factory.mktemp("unseen-data")
    caps = json.loads((shared_data / "coco-mini" / "captions.json").read_text())
    images = caps["images"][-12:]
    ids = {im["id"] for im in images}
    (root / "coco-mini" / "images").mkdir(parents=True)
    for im in images:
        shutil.copy(shared_data / "coco-mini" / "images" / im["file_name"], root / "coco-mini" / "images")
    caps = {**caps, "images": images, "annotations": [a for a in caps["annotations"] if a["image_id"] in ids]}
    (root / "coco-mini" / "captions.json").write_text(json.dumps(caps))
    inet = root / "imagenet-samples"
    (inet / "images").mkdir(parents=True)
    shutil.copy(shared_data / "imagenet-samples" / "classes.csv", inet)
    rows = list(csv.DictReader(open(shared_data / "imagenet-samples" / "labels.csv", newline="")))[-12:]
    with open(inet / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    for r in rows:
        shutil.copy(shared_data / "imagenet-samples" / "images" / r["file"], inet / "images")
    scam = root / "scam"
    scam.mkdir()
    rows = list(csv.DictReader(open(shared_data / "scam" / "labels.csv", newline="")))[-10:]
    with open(scam / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    for variant in ("scam", "noscam", "synthscam"):
        (scam / variant).mkdir()
        for r in rows:
            for src in (shared_data / "scam" / variant).glob(f"{r['id']}.*"):
                shutil.copy(src, scam / variant)
    return root


#: grid -> (the section its report must show, metrics its rows must hold on toy and real photos)
STUDIES = {
    "seed000_frequency_coco": ("frequency", {"i2t_R@1", "t2i_R@1", "i2t_R@5", "t2i_R@5"}),
    "seed001_corruptions_retrieval": ("corruptions", {"i2t_R@1", "ece", "ood_auroc"}),
    "seed002_natural_adversarial": ("natural", {"top1", "attack_word_rate"}),
    "seed003_hidden_instability": ("instability", {"IFR", "IV", "drift_mean", "control_drift_mean", "drift_kept_mean"}),
}


@pytest.mark.parametrize("grid", list(STUDIES))
def test_study_grid_toy_variant_end_to_end(grid, unseen, tmp_path, caplog):
    section, metrics = STUDIES[grid]
    results = run_grid(grid_path(grid), out_root=tmp_path, only=["toy"], extra={"data_path": str(unseen)},
                       overrides={"n_images": 8}, progress=False)
    assert [r.status for r in results] == ["done"], [(r.failed_notebook, r.error) for r in results]
    assert "Passed unknown parameter" not in caplog.text
    run_dir = results[0].out_dir
    for nb in results[0].run.notebooks:  # every notebook ran, each with only the parameters it declares
        assert (run_dir / f".done-{nb}").is_file()
    df = pd.read_parquet(tmp_path / grid / "grid_results.parquet")
    toy = df[df.model.str.startswith("toy:")]
    real = df[df.model == "conse:default"]
    assert metrics <= set(toy.metric), metrics - set(toy.metric)
    assert metrics <= set(real.metric), f"no real-photo rows for {metrics - set(real.metric)}"
    assert not set(real.dataset) & {"toy-retrieval", "toy-shapes"}  # the photo model reads the photos only
    assert set(real.dataset) <= {"coco-mini", "imagenet-samples", "scam", "scam-noscam", "scam-synthscam"}
    page = build_report(tmp_path / grid).read_text()  # what `vlmkit grid` builds after the runs
    assert f'<h2 id="{section}">' in page
    for src in re.findall(r'<img src="([^"]+)"', page):
        assert (tmp_path / grid / "report" / src).is_file()


def test_semantic_misalignment_grid_toy_variant_end_to_end(unseen, tmp_path):
    """seed004: the toy captioner on toy scenes under pixel and calibrated mask-corruption cells; the report
    shows the perception-vs-semantics section. ``--data`` adds COCO captions, which no offline captioner reads
    (``photo_captioners`` is empty): they are loaded and skipped, not an error."""
    grid = "seed004_semantic_misalignment"
    results = run_grid(grid_path(grid), out_root=tmp_path, only=["toy"], extra={"data_path": str(unseen)},
                       overrides={"n_images": 8, "miou_drops": [0.1, 0.3], "severities": [3]}, progress=False)
    assert [r.status for r in results] == ["done"], [(r.failed_notebook, r.error) for r in results]
    df = pd.read_parquet(tmp_path / grid / "grid_results.parquet")
    assert set(df.model) == {"toycap:rn"} and set(df.dataset) == {"toy-captions"}
    assert {"chair_i", "omission_rate", "safety_flip_rate", "caption_drift_mean", "miou_mean"} <= set(df.metric)
    assert (df[df.label.str.startswith("mask_corruption") & (df.metric == "miou_mean")].value < 1).all()
    page = build_report(tmp_path / grid).read_text()
    assert '<h2 id="semantics">' in page
