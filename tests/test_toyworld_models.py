"""Toy-world models: shipped checkpoints (format, size, loose quality bars) and the training loop."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vlmkit.errors import WeightsNotFoundError
from vlmkit.toyworld import checkpoint_dir, list_checkpoints
from vlmkit.toyworld.evaluate import (
    EVAL_SEED,
    open_clip_encoders,
    reading_accuracy,
    retrieval_recall,
    typographic_attack,
    zero_shot_shape_accuracy,
)
from vlmkit.toyworld.train import TrainConfig, train

SHIPPED = ("rn", "vit")
N_EVAL = 300

TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8, "head_width": 32},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def test_list_and_unknown_name() -> None:
    assert set(SHIPPED) <= set(list_checkpoints())
    with pytest.raises(WeightsNotFoundError, match="shipped: .*rn.*vit"):
        checkpoint_dir("resnet-9000")


@pytest.mark.parametrize("name", SHIPPED)
def test_checkpoint_layout_and_size(name: str) -> None:
    d = checkpoint_dir(name)
    weights = d / "open_clip_model.safetensors"
    assert weights.stat().st_size <= 20 * 1024 * 1024
    cfg = json.loads((d / "open_clip_config.json").read_text())
    assert {"embed_dim", "vision_cfg", "text_cfg"} <= set(cfg["model_cfg"])
    pre = cfg["preprocess_cfg"]
    assert pre["size"] == 64 and len(pre["mean"]) == 3 and len(pre["std"]) == 3
    assert pre["interpolation"] in ("bicubic", "bilinear") and pre["resize_mode"] in ("squash", "shortest")
    info = json.loads((d / "training.json").read_text())
    for key in ("config", "steps", "seed", "wall_time_s", "held_out_metrics", "versions"):
        assert key in info
    assert info["seed"] != EVAL_SEED
    if name == "rn":
        assert isinstance(cfg["model_cfg"]["vision_cfg"]["layers"], list)
    else:
        assert "patch_size" in cfg["model_cfg"]["vision_cfg"]


@pytest.fixture(scope="module", params=SHIPPED)
def encoders(request):
    torch.set_num_threads(2)
    enc_img, enc_txt, model = open_clip_encoders(checkpoint_dir(request.param))
    return request.param, enc_img, enc_txt, model


def test_loads_with_open_clip_local_dir(encoders) -> None:
    import open_clip

    name, enc_img, enc_txt, model = encoders
    tok = open_clip.get_tokenizer("local-dir:" + str(checkpoint_dir(name)))
    assert tok(["a photo of a star"]).shape == (1, 32)
    x = torch.rand(2, 3, 64, 64)
    e = enc_img(x)
    assert e.shape == (2, model.text_projection.shape[1]) and torch.isfinite(e).all()
    # any input size is resized by the encoder
    assert enc_img(torch.rand(1, 3, 80, 80)).shape == (1, e.shape[1])


def _metrics(enc_img, enc_txt) -> dict[str, float]:
    out: dict[str, float] = {}
    out.update(retrieval_recall(enc_img, enc_txt, n=N_EVAL))
    out.update(zero_shot_shape_accuracy(enc_img, enc_txt, n=N_EVAL))
    out.update(reading_accuracy(enc_img, enc_txt, n=N_EVAL))
    out.update(typographic_attack(enc_img, enc_txt, n=N_EVAL))
    return out


@pytest.fixture(scope="module")
def metrics(encoders) -> tuple[str, dict[str, float]]:
    name, enc_img, enc_txt, _ = encoders
    return name, _metrics(enc_img, enc_txt)


# The issue's loose bars, one test per (model, bar). Bars a shipped checkpoint does not reach yet are
# strict xfails (see training.json and the closing note of issue #3): they turn into failures
# ("XPASS(strict)") as soon as a retrained checkpoint meets them, so the marker must then go.
LOOSE_BARS = {
    "i2t_R@1": lambda m: m["i2t_R@1"] >= 0.5,
    "zero_shot_shape_acc": lambda m: m["zero_shot_shape_acc"] >= 0.45,
    "reading_acc": lambda m: m["reading_acc"] >= 0.6,
    "typographic": lambda m: m["attack_share_scam"] >= 0.25 and m["attack_share_scam"] >= 2 * m["attack_share_noscam"],
}
NOT_YET = {("vit", "zero_shot_shape_acc"), ("vit", "reading_acc")}


@pytest.mark.parametrize("bar", sorted(LOOSE_BARS))
def test_issue_loose_quality_bars(metrics, bar, request) -> None:
    name, m = metrics
    if (name, bar) in NOT_YET:
        request.applymarker(pytest.mark.xfail(strict=True, reason=f"toy:{name} does not reach the {bar} bar yet"))
    assert LOOSE_BARS[bar](m), (name, bar, m)


# What the shipped checkpoints reach beyond the loose bars (regression guards, well above chance):
# chance is 1/N_EVAL for R@1, 1/8 for shapes, 1/20 for words.
REACHED = {
    "rn": {"i2t_R@1": 0.55, "zero_shot_shape_acc": 0.55, "reading_acc": 0.3, "attack_share_scam": 0.35},
    "vit": {"i2t_R@1": 0.3, "zero_shot_shape_acc": 0.17},
}


def test_reached_quality(metrics) -> None:
    name, m = metrics
    for key, floor in REACHED[name].items():
        assert m[key] >= floor, (name, key, m)


def _tiny(steps: int, batch: int = 8, seed: int = 3) -> TrainConfig:
    return TrainConfig(name="tiny", model_cfg=TINY_CFG, image_size=32, steps=steps, batch_size=batch,
                       lr=2e-3, warmup_frac=0.1, seed=seed, eval_n=0)


def test_training_is_deterministic(tmp_path) -> None:
    a = train(_tiny(2), progress=False).model.state_dict()
    b = train(_tiny(2), out_dir=tmp_path / "ck", progress=False).model.state_dict()
    c = train(_tiny(2, seed=4), progress=False).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    # the written folder loads through open_clip's local-dir path with identical outputs
    enc_img, _, model = open_clip_encoders(tmp_path / "ck")
    ref = train(_tiny(2), progress=False).model
    ref.half().float()  # the checkpoint stores fp16
    x = torch.rand(3, 3, 32, 32)
    from vlmkit.toyworld.train import MEAN, STD

    xn = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(enc_img(x), ref.eval().encode_image(xn), atol=1e-4)
    assert json.loads((tmp_path / "ck" / "training.json").read_text())["steps"] == 2


def test_training_refuses_eval_seed() -> None:
    with pytest.raises(ValueError, match="reserved"):
        train(_tiny(1, seed=EVAL_SEED), progress=False)


def test_loss_decreases() -> None:
    res = train(_tiny(20, batch=16), progress=False)
    losses = np.asarray(res.losses)
    assert len(losses) == 20 and np.isfinite(losses).all()
    assert losses[-5:].mean() < losses[:5].mean() - 0.1, losses
