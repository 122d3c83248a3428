"""Answer scoring: tiny random-init BLIP-2 (and LLaVA) in tmp_path, option log-likelihoods, toy questions, grids."""

from __future__ import annotations

import json

import pytest
import torch

import vlmkit
from vlmkit.errors import DataError, DataNotFoundError, EmptyDatasetError, InputError, WeightsNotFoundError
from vlmkit.evaluate import evaluate_grid, perturbation_cells
from vlmkit.tasks import (
    AnswerScorer,
    Blip2Adapter,
    ImageTextAdapter,
    ProcessorAdapter,
    QuestionSet,
    export_toy_questions,
    load_answer_model,
    load_question_jsonl,
    load_toy_questions,
    option_logliks,
    toy_questions,
)
from vlmkit.metrics.answers import option_margin, pope_scores
from vlmkit.tasks.tiny import save_tiny_blip2, save_tiny_llava

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def blip_dir(tmp_path_factory):
    return save_tiny_blip2(tmp_path_factory.mktemp("blip2"), seed=0)


@pytest.fixture(scope="module")
def blip(blip_dir):
    return load_answer_model(str(blip_dir), device="cpu")


@pytest.fixture(scope="module")
def questions(tmp_path_factory):
    return load_toy_questions(tmp_path_factory.mktemp("qs"), n_images=3, seed=0, size=32)


def _img(seed=0, shape=(3, 40, 48)):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def test_loaded_as_blip2(blip):
    assert isinstance(blip, AnswerScorer) and isinstance(blip.adapter, Blip2Adapter)
    assert isinstance(blip.adapter, ImageTextAdapter)  # satisfies the protocol
    assert blip.image_size == (32, 32) and blip.adapter.num_query_tokens == 4
    assert blip.adapter.format_prompt("Is there a star?") == "Question: Is there a star? Answer:"


def test_shapes_and_determinism(blip):
    x = torch.stack([_img(0), _img(1)])
    qs = ["Is there a red star in the image?", "What colour is the circle?"]
    opts = [["yes", "no"], ["red", "blue", "green"]]
    a = blip.option_logliks(x, qs, opts)
    b = blip.option_logliks(x, qs, opts)
    assert a.shape == (2, 3) and torch.equal(a, b)
    assert a[0, 2] == float("-inf") and bool(torch.isfinite(a[1]).all()) and bool((a[:, :2] < 0).all())
    assert blip.vision_features(x).shape == (2, 32)
    torch.testing.assert_close(blip.score(x[1], qs[1], opts[1]), a[1])
    assert blip.answer(x, qs, opts)[1] in opts[1]
    mean = blip.option_logliks(x[1:], qs[1:], opts[1:], reduce="mean")
    torch.testing.assert_close(mean, a[1:], atol=1e-5, rtol=1e-5)  # one-token options: sum == mean
    with pytest.raises(InputError, match="reduce"):
        blip.score(x[0], qs[0], opts[0], reduce="max")


def _manual_loglik(model, adapter, image, question, option):
    """Σ_j log p(a_j | prefix) with one forward per answer token, no padding (an independent computation)."""
    prompt = adapter.format_prompt(question)
    inp = adapter.prompt_inputs(image[None], prompt)
    ids = inp.pop("input_ids")
    inp.pop("attention_mask")
    total = 0.0
    for tok in adapter.answer_ids(option, prompt):
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), **inp).logits
        total += float(torch.log_softmax(logits[0, -1].double(), -1)[tok])
        ids = torch.cat([ids, torch.tensor([[tok]])], dim=1)
    return total


def test_loglik_equals_manual_computation(blip):
    x = _img(2)
    q = "What shape is the red object?"
    opts = ["red star", "blue circle on the left", "heart"]  # multi-token options of different lengths
    scores = blip.score(x, q, opts)
    for k, o in enumerate(opts):
        assert len(blip.adapter.answer_ids(o, blip.adapter.format_prompt(q))) == len(o.split())
        assert float(scores[k]) == pytest.approx(_manual_loglik(blip.model, blip.adapter, x, q, o), abs=1e-4)


def test_forced_answer_ranks_first(blip):
    """Bias the LM head towards the tokens of one option: scoring must rank it first."""
    x = torch.stack([_img(3), _img(4)])
    tok = blip.adapter.tokenizer
    opts = [["red", "blue", "green", "white"], ["yes", "no"]]
    qs = ["What colour is the star?", "Is there a heart in the image?"]
    head = blip.model.get_output_embeddings()
    for forced in ("green", "no"):
        bias = torch.zeros(head.out_features)
        bias[tok.convert_tokens_to_ids(forced)] = 20.0
        h = head.register_forward_hook(lambda m, i, o, b=bias: o + b)
        try:
            ll = blip.option_logliks(x, qs, opts)
        finally:
            h.remove()
        assert [o[i] for o, i in zip(opts, ll.argmax(1).tolist())][0 if forced == "green" else 1] == forced
    # a multi-token option: bias both of its tokens
    bias = torch.zeros(head.out_features)
    for w in ("blue", "circle"):
        bias[tok.convert_tokens_to_ids(w)] = 15.0
    h = head.register_forward_hook(lambda m, i, o: o + bias)
    try:
        s = blip.score(x[0], "What is it?", ["red star", "blue circle", "heart"])
    finally:
        h.remove()
    assert int(s.argmax()) == 1


def test_metrics_closed_form():
    ll = torch.tensor([[-1.0, -3.0, float("-inf")], [-2.0, -0.5, -4.0]])
    torch.testing.assert_close(option_margin(ll), torch.tensor([2.0, 1.5]))
    assert vlmkit.METRICS.get("answer_accuracy")(ll, torch.tensor([0, 0])) == 0.5
    s = pope_scores(torch.tensor([True, True, False, False]), torch.tensor([True, False, True, False]))
    assert s == {"accuracy": 0.5, "precision": 0.5, "recall": 0.5, "f1": 0.5, "yes_ratio": 0.5}


def test_metrics_and_toy_exports_do_not_import_tasks_or_models():
    """``vlmkit.metrics`` and the toy-world task exports stand below ``vlmkit.tasks`` (ARCHITECTURE.md)."""
    import subprocess
    import sys

    code = ("import sys, vlmkit.metrics.answers, vlmkit.metrics.segmentation, vlmkit.toyworld.task_sets; "
            "print(sorted(m for m in sys.modules if m.startswith(('vlmkit.tasks', 'vlmkit.models'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_toy_questions_from_ground_truth(tmp_path):
    from vlmkit.toyworld import render_spec, sample_spec, scene_rng

    for pope in ("random", "adversarial"):
        root = export_toy_questions(tmp_path / pope, n_images=8, seed=1, size=32, pope=pope)
        ds = load_question_jsonl(root / "questions.jsonl")
        gt = json.loads((root / "ground_truth.json").read_text())
        assert set(ds.kinds) == {"count", "color", "shape", "exists"}
        for i in range(len(ds)):
            item = ds[i]
            objs = gt[item["id"].split("-")[0]]["objects"]
            ans = item["options"][item["answer"]]
            if item["kind"] == "color":
                shape = item["question"].split()[-1].rstrip("?")
                assert any(o["shape"] == shape and o["color"] == ans for o in objs)
            elif item["kind"] == "exists":
                words = item["question"].rstrip("?").split()
                shape, color = words[3 if pope == "random" else 4], words[3]
                present = any(o["shape"] == shape and (pope == "random" or o["color"] == color) for o in objs)
                assert (ans == "yes") == present
        ex = [ds[i] for i in range(len(ds)) if ds.kinds[i] == "exists"]
        assert {e["options"][e["answer"]] for e in ex} == {"yes", "no"}  # POPE: absent-object negatives
    scene = render_spec(sample_spec(scene_rng(5, 0)), 32)
    with pytest.raises(InputError, match="kinds"):
        toy_questions(scene, scene_rng(5, 1), kinds=["weather"])


def test_jsonl_errors(tmp_path):
    from PIL import Image

    (tmp_path / "im.png").write_bytes(b"")
    Image.new("RGB", (4, 4)).save(tmp_path / "im.png")

    def write(lines):
        p = tmp_path / "q.jsonl"
        p.write_text("\n".join(json.dumps(x) if not isinstance(x, str) else x for x in lines) + "\n")
        return p

    ds = load_question_jsonl(write([{"image": "im.png", "question": "Is it red?", "answer": "Yes"},
                                    {"image": "im.png", "question": "Which?", "options": ["a", "b"], "answer": 1}]))
    assert ds.options[0] == ["yes", "no"] and ds.answers.tolist() == [0, 1] and ds.kinds == ["yesno", "mcq"]
    assert isinstance(ds, QuestionSet) and ds.task == "answer_scoring" and len(ds.select([1])) == 1
    bad = [
        (["{oops"], DataError, "line 1 is not valid JSON"),
        ([{"image": "im.png", "question": "q"}], DataError, "lacks \\['answer'\\]"),
        ([{"image": "im.png", "question": "q", "options": ["a"], "answer": "a"}], DataError, "at least two"),
        ([{"image": "im.png", "question": "q", "options": ["a", "A"], "answer": "a"}], DataError, "distinct"),
        ([{"image": "im.png", "question": "q", "options": ["a", "b"], "answer": "c"}], DataError, "not one of"),
        ([{"image": "im.png", "question": "q", "options": ["a", "b"], "answer": 5}], DataError, "outside"),
        ([{"image": "im.png", "question": "q", "answer": "maybe"}], DataError, "no 'options'"),
        ([{"image": "nope.png", "question": "q", "answer": "yes"}], DataNotFoundError, "nope.png"),
        ([""], EmptyDatasetError, "no questions"),
    ]
    for lines, err, msg in bad:
        with pytest.raises(err, match=msg):
            load_question_jsonl(write(lines))
    with pytest.raises(DataNotFoundError):
        load_question_jsonl(tmp_path / "absent.jsonl")


def test_load_errors(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="downloads are disabled"):
        load_answer_model("hf:Salesforce/blip2-opt-2.7b")
    with pytest.raises(WeightsNotFoundError):
        load_answer_model(str(tmp_path / "missing"))


def test_grid_end_to_end(tmp_path, blip, questions):
    cells = perturbation_cells(["gaussian_noise", "rotate"], [3])
    table = evaluate_grid([blip], questions, cells, out_dir=tmp_path / "grid", batch_size=4, progress=False)
    assert set(table["task"]) == {"answer_scoring"}
    clean = table[table["kind"] == "clean"].set_index("metric")["value"]
    for k in ("accuracy", "margin_mean", "answer_loglik_mean", "accuracy/exists", "pope_f1", "yes_ratio",
              "drift_mean", "drift_ratio"):
        assert k in clean.index, k
    assert clean["drift_mean"] == pytest.approx(0.0, abs=1e-6) and clean["margin_mean"] >= 0
    noise = table[table["perturbation"] == "gaussian_noise"].set_index("metric")["value"]
    for k in ("IFR", "margin_change_mean", "drift_mean_unflipped"):
        assert k in noise.index
    assert noise["drift_mean"] > 0 and 0 <= noise["IFR"] <= 1
    fam = table[table["kind"] == "family"].set_index(["perturbation", "metric"])["value"]
    assert fam[("family:all", "IV")] >= fam[("family:all", "IFR")]
    again = evaluate_grid([blip], questions, cells, out_dir=tmp_path / "grid", batch_size=4, progress=False)
    assert again.drop(columns=["time"]).equals(table.drop(columns=["time"]))


def test_attack_cells_maximise_the_answer_loss(tmp_path, blip, questions):
    from vlmkit.evaluate import CLEAN, attack_cells, cell_images
    from vlmkit.tasks import AnswerCE

    eps = 8 / 255
    cells = attack_cells("pgd", eps=[eps], steps=[2])
    table = evaluate_grid([blip], questions, cells, out_dir=tmp_path / "a", batch_size=4, progress=False)
    atk = table[table["kind"] == "attack"].set_index("metric")["value"]
    clean = table[table["kind"] == "clean"].set_index("metric")["value"]
    assert atk["answer_loglik_mean"] < clean["answer_loglik_mean"] and atk["drift_mean"] > 0
    idx = list(range(4))
    x0 = cell_images(blip, questions, CLEAN, idx, out_dir=tmp_path / "a")
    xa = cell_images(blip, questions, cells[0], idx, out_dir=tmp_path / "a")
    delta = (xa - x0).abs().flatten(1).amax(1)
    assert (delta <= eps + 1e-6).all() and (delta > 0).all()
    batch = {"questions": [questions.questions[i] for i in idx], "options": [questions.options[i] for i in idx],
             "answers": questions.answers[idx], "reduce": "sum", "kmax": questions.max_options}
    with torch.no_grad():
        assert (AnswerCE()(blip, xa, batch) > AnswerCE()(blip, x0, batch)).all()


def test_attack_cells_refused_without_a_differentiable_adapter(tmp_path, blip_dir, questions):
    from transformers import AutoProcessor

    from vlmkit.evaluate import attack_cells

    blip = load_answer_model(str(blip_dir), device="cpu")
    generic = AnswerScorer(blip.model, ProcessorAdapter(blip.model, AutoProcessor.from_pretrained(blip_dir)),
                           name="generic")
    with pytest.raises(InputError, match="no differentiable pixel path"):
        evaluate_grid([generic], questions, attack_cells("pgd", eps=[4 / 255], steps=[1]), out_dir=tmp_path / "r",
                      batch_size=4, progress=False)


def test_generic_processor_adapter_on_blip2_and_llava(tmp_path, blip_dir):
    """The processor adapter (the path LLaVA and Qwen-VL take) on BLIP-2's processor and a tiny LLaVA."""
    from transformers import AutoProcessor

    blip = load_answer_model(str(blip_dir), device="cpu")
    generic = ProcessorAdapter(blip.model, AutoProcessor.from_pretrained(blip_dir))
    x = _img(6, (3, 32, 32))
    q, opts = "Is there a star in the image?", ["yes", "no"]
    g = option_logliks(blip.model, generic, x, q, opts)
    # same token sequence as the BLIP-2 adapter; pixels differ only by the processor's resampling (none at 32 px)
    ids_generic = generic.prompt_inputs(x[None], generic.format_prompt(q))["input_ids"]
    ids_blip = blip.adapter.prompt_inputs(x[None], blip.adapter.format_prompt(q))["input_ids"]
    assert torch.equal(ids_generic, ids_blip)
    torch.testing.assert_close(g, blip.score(x, q, opts), atol=1e-3, rtol=1e-3)

    llava = load_answer_model(str(save_tiny_llava(tmp_path / "llava")), device="cpu")
    assert type(llava.adapter) is ProcessorAdapter and llava.adapter.chat
    prompt = llava.adapter.format_prompt(q)
    assert prompt.startswith("user : <image>") and prompt.endswith("assistant :")
    s = llava.score(x, q, ["yes", "no", "red star"])
    assert s.shape == (3,) and bool(torch.isfinite(s).all())
    assert float(s[2]) == pytest.approx(_manual_loglik(llava.model, llava.adapter, x, q, "red star"), abs=1e-4)
    assert llava.vision_features(torch.stack([x, x])).shape == (2, 32)
