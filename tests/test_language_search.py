"""Language-induced adversarial search on the toy world with the shipped toy:rn (target and SEM model)."""

from __future__ import annotations

import importlib.util
import json

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import vlmkit
from vlmkit.data import load_labelled_csv
from vlmkit.errors import InputError
from vlmkit.models.zeroshot import zero_shot_classifier
from vlmkit.search import (
    DiffusersGenerator,
    LanguageSearchResult,
    SearchConfig,
    ToyWorldGenerator,
    language_search,
    toy_word_space,
)
from vlmkit.search.config import image_seed
from vlmkit.toyworld import SHAPES

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = dict(population=6, generations=2, words=2, images_per_prompt=3, sem_threshold=0.6, seed=0)


@pytest.fixture(scope="module")
def rn():
    return vlmkit.load_model("toy:rn", device="cpu")


@pytest.fixture(scope="module")
def result(rn):
    return language_search(rn, list(SHAPES), ["star", "circle"], **CFG)


def test_registered_task_is_the_search(rn):
    """``TASKS["language_adversarial"]`` runs the search: the same history as calling it directly."""
    kw = {**CFG, "generations": 0}
    via_registry = vlmkit.TASKS.create("language_adversarial", rn, list(SHAPES), "star", **kw)
    assert vlmkit.TASKS.meta("language_adversarial")["kind"] == "search"
    assert isinstance(via_registry, LanguageSearchResult) and len(via_registry.history) == CFG["population"]
    pd.testing.assert_frame_equal(via_registry.history, language_search(rn, list(SHAPES), "star", **kw).history)


def test_asr_and_sem_known_answers():
    """Equations 1-2 on hand-made predictions and embeddings, through the METRICS registry."""
    asr = vlmkit.METRICS.get("attack_success_rate")
    assert asr(torch.tensor([1, 2, 3, 3]), 3) == 0.5
    assert asr(torch.tensor([2, 2, 2]), 2) == 0.0 and asr(torch.tensor([0, 1]), 2) == 1.0
    assert asr(torch.tensor([0, 0]), torch.tensor([0, 1])) == 0.5  # one true class per image
    sem = vlmkit.METRICS.get("semantic_consistency")
    text = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0], [1.0, 1.0]])  # (P, D)
    s = sem(text, torch.tensor([2.0, 0.0]))
    torch.testing.assert_close(s, torch.tensor([1.0, 0.0, -1.0, 2**-0.5]))
    torch.testing.assert_close(sem(5 * text, torch.tensor([[0.5, 0.0]])), s)  # scale-free; (1, D) reference


def test_history_scores_are_equations_1_and_2(result, rn):
    """ASR and SEM in the history equal equations 1-2 recomputed from scratch for the scored prompts."""
    cfg = result.config
    clf = zero_shot_classifier(rn, list(SHAPES), list(cfg.classifier_templates))
    rows = result.history.drop_duplicates("prompt").groupby("class").head(3).to_dict("records")
    assert any(r["asr"] > 0 for r in rows) and any(r["asr"] < 1 for r in rows)  # both outcomes are checked
    for r in rows:
        x = result.generator(r["prompt"], cfg.images_per_prompt, image_seed(cfg))  # (n, 3, H, W)
        with torch.inference_mode():
            pred = rn.similarity(rn.encode_image(x), clf).argmax(1)  # (n,)
            text = F.normalize(rn.encode_text([r["prompt"], cfg.reference_template.format(cls=r["class"])]), dim=-1)
        y = list(SHAPES).index(r["class"])
        assert r["asr"] == float((pred != y).float().mean())
        assert abs(r["sem"] - float(text[0] @ text[1])) < 1e-4


def test_history_and_curves(result):
    h = result.history
    cfg = result.config
    assert set(h["class"]) == {"star", "circle"} and sorted(h["generation"].unique()) == [0, 1, 2]
    assert (h.groupby(["class", "generation"]).size() == cfg.population).all()
    assert h["asr"].between(0, 1).all() and h["sem"].between(-1, 1.0001).all()
    feasible = h["feasible"]
    assert (h.loc[feasible, "fitness"] == h.loc[feasible, "asr"]).all()
    assert (h.loc[~feasible, "fitness"] < 0).all()
    assert (feasible == ((h["sem"] >= cfg.sem_threshold) & h["depicts"])).all()
    # the plain class prompt is in the first generation, and elitism never loses the best fitness
    assert {"a star", "a circle"} <= set(h.loc[h.generation == 0, "prompt"])
    best = h[h["rank"] == 0].sort_values(["class", "generation"])
    for _, g in best.groupby("class"):
        assert g["fitness"].is_monotonic_increasing
    c = result.curves
    assert {"model", "dataset", "perturbation", "params", "severity", "metric", "value", "generation"} <= set(c.columns)
    assert set(c["metric"]) == {"asr_best", "asr_best_feasible", "asr_mean", "asr_plain", "sem_best", "sem_mean",
                                "fitness_best", "feasible_share"}
    assert len(c) == 2 * 3 * 8 and set(c["perturbation"]) == {"language_search"}
    plain = c[c.metric == "asr_plain"].groupby("class")["value"].nunique()
    assert (plain == 1).all()


def test_word_space_pruning(result, rn):
    ws = result.word_space
    tau = result.config.sem_threshold
    assert set(ws["word"]) == set(toy_word_space())
    assert (ws.loc[ws["kept"], "sem"] >= tau).all() and (ws.loc[~ws["kept"], "sem"] < tau).all()
    used = {w for ws_ in result.history["words"] for w in json.loads(ws_)} - {""}
    kept = set(ws.loc[ws["kept"], "word"])
    assert used <= kept
    top = language_search(rn, list(SHAPES), "star", **{**CFG, "generations": 0, "prune_top_k": 3})
    assert int(top.word_space["kept"].sum()) == 3 and top.word_space["asr"].notna().sum() > 3
    with pytest.raises(InputError, match="left no word"):
        language_search(rn, list(SHAPES), "star", **{**CFG, "sem_threshold": 1.01})


def test_deterministic(result, rn):
    again = language_search(rn, list(SHAPES), ["star", "circle"], **CFG)
    pd.testing.assert_frame_equal(again.history, result.history)
    pd.testing.assert_frame_equal(again.curves.drop(columns=["time"]), result.curves.drop(columns=["time"]))
    other = language_search(rn, list(SHAPES), ["star"], **{**CFG, "seed": 1})
    assert other.history["prompt"].tolist() != result.history[result.history["class"] == "star"]["prompt"].tolist()


def test_adversarial_set_in_labelled_layout(tmp_path, result, rn):
    best = result.best(3, min_asr=1e-9)
    assert best["feasible"].all() and (best["asr"] > 0).all()
    root = result.write_images(tmp_path / "adv", k=2)
    ds = load_labelled_csv(root / "labels.csv", root / "images", root / "classes.txt")
    assert ds.classnames == list(SHAPES) and len(ds) > 0
    assert set(ds.classnames[i] for i in ds.labels.tolist()) <= {"star", "circle"}
    # every written image fools the target: re-classify from the files
    x = ds.load_images(64, progress=False, use_cache=False).float() / 255
    clf = zero_shot_classifier(rn, list(SHAPES), ["a photo of a {}"])
    with torch.inference_mode():
        pred = rn.similarity(rn.encode_image(x), clf).argmax(1)
    assert float((pred != ds.labels).float().mean()) >= 0.75  # PNG round trip may move a borderline image
    meta = json.loads((root / "prompts.json").read_text())
    assert meta["config"]["population"] == CFG["population"] and meta["prompts"]


def test_toy_generator_ground_truth():
    g = ToyWorldGenerator(size=32)
    x = g('a red "circle" star', 2, seed=0)
    assert x.shape == (2, 3, 32, 32) and torch.equal(x, g('a red "circle" star', 2, seed=0))
    assert g.depicts('a red "circle" star', "star")
    assert not g.depicts('a "circle" "heart" star', "star")  # the second quoted word draws a heart
    assert not g.depicts("a red circle", "star")


def test_diffusers_adapter_is_lazy_and_pluggable(rn):
    class FakePipe:  # the diffusers call signature, without diffusers
        def __init__(self):
            self.calls = []

        def __call__(self, prompt, num_images_per_prompt, num_inference_steps, guidance_scale, generator,
                     output_type, height=None, width=None):
            self.calls.append(prompt)
            out = type("Out", (), {})()
            out.images = torch.rand(num_images_per_prompt, 3, height, width, generator=torch.Generator().manual_seed(
                int(generator.initial_seed())))
            return out

    pipe = FakePipe()
    g = DiffusersGenerator(pipe, steps=2, size=64, device="cpu")
    assert g("a star", 2, 7).shape == (2, 3, 64, 64) and torch.equal(g("a star", 2, 7), g("a star", 2, 7))
    r = language_search(rn, list(SHAPES), "star", generator=g, word_space=["red", "blue"],
                        **{**CFG, "generations": 1})
    assert len(r.history) == 2 * CFG["population"] and pipe.calls
    if importlib.util.find_spec("diffusers") is None:
        with pytest.raises(ImportError, match="pip install diffusers"):
            DiffusersGenerator("stabilityai/sd-turbo")


def test_config_errors(rn):
    with pytest.raises(InputError, match="mutation_rate"):
        SearchConfig(mutation_rate=1.5)
    with pytest.raises(InputError, match="elite"):
        SearchConfig(population=2, elite=3)
    with pytest.raises(InputError, match="template"):
        SearchConfig(template="a {cls}")
    with pytest.raises(InputError, match="not in classnames"):
        language_search(rn, list(SHAPES), ["unicorn"], **CFG)
