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
NOT_YET: set[tuple[str, str]] = set()  # every shipped checkpoint meets every loose bar


@pytest.mark.parametrize("bar", sorted(LOOSE_BARS))
def test_issue_loose_quality_bars(metrics, bar, request) -> None:
    name, m = metrics
    if (name, bar) in NOT_YET:
        request.applymarker(pytest.mark.xfail(strict=True, reason=f"toy:{name} does not reach the {bar} bar yet"))
    assert LOOSE_BARS[bar](m), (name, bar, m)


# What the shipped checkpoints reach beyond the loose bars (regression guards, well above chance):
# chance is 1/N_EVAL for R@1, 1/8 for shapes, 1/20 for words.
REACHED = {
    "rn": {"i2t_R@1": 0.8, "zero_shot_shape_acc": 0.9, "reading_acc": 0.78, "attack_share_scam": 0.85},
    "vit": {"i2t_R@1": 0.65, "zero_shot_shape_acc": 0.8, "reading_acc": 0.75, "attack_share_scam": 0.8},
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


TINY_VIT_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
    "text_cfg": TINY_CFG["text_cfg"],
}


def test_text_from_locked_text_tower_and_distillation(tmp_path) -> None:
    """A ViT student takes a ResNet checkpoint's text tower, keeps it frozen, and distils its image embeddings."""
    from dataclasses import replace

    from vlmkit.toyworld.train import is_text_param

    teacher = train(_tiny(3), out_dir=tmp_path / "teacher", progress=False).model
    t_sd = {k: v.half().float() for k, v in teacher.state_dict().items()}  # the folder stores fp16
    base = replace(_tiny(4), model_cfg=TINY_VIT_CFG, text_from=str(tmp_path / "teacher"), text_lr_mult=0.0)
    student = train(base, progress=False).model.state_dict()
    text_keys = [k for k in student if is_text_param(k) and k != "logit_scale"]
    assert text_keys and all(torch.equal(student[k], t_sd[k]) for k in text_keys)  # copied, then frozen
    assert not torch.equal(student["logit_scale"], t_sd["logit_scale"])  # the scale still learns
    # with text_lr_mult=1 the copied tower moves
    moving = train(replace(base, text_lr_mult=1.0), progress=False).model.state_dict()
    assert not all(torch.equal(moving[k], t_sd[k]) for k in text_keys)
    # distillation changes the image tower's updates, deterministically, and is recorded
    d_cfg = replace(base, distill_from=str(tmp_path / "teacher"), distill_weight=1.0)
    d1 = train(d_cfg, out_dir=tmp_path / "student", progress=False)
    d2 = train(d_cfg, progress=False)
    assert all(torch.equal(v, d2.model.state_dict()[k]) for k, v in d1.model.state_dict().items())
    assert not torch.equal(d1.model.state_dict()["visual.conv1.weight"], student["visual.conv1.weight"])
    info = json.loads((tmp_path / "student" / "training.json").read_text())
    assert info["text_from"]["name"] == info["distill_from"]["name"] == "tiny"
    assert info["config"]["text_lr_mult"] == 0.0


def test_distillation_pulls_student_to_teacher(tmp_path) -> None:
    """With only the distillation term weighted heavily, the student's cosine to the teacher rises."""
    from dataclasses import replace

    from vlmkit.toyworld.train import MEAN, STD, load_teacher

    train(_tiny(3), out_dir=tmp_path / "teacher", progress=False)
    teacher = load_teacher(tmp_path / "teacher")
    x = torch.rand(16, 3, 32, 32)
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)

    def cos(model: torch.nn.Module) -> float:
        with torch.no_grad():
            a = torch.nn.functional.normalize(model.eval().encode_image(x), dim=-1)
            b = torch.nn.functional.normalize(teacher.encode_image(x), dim=-1)
        return float((a * b).sum(-1).mean())

    cfg = replace(_tiny(1, batch=16), model_cfg=TINY_VIT_CFG, lr=3e-3, warmup_frac=0.0,
                  distill_from=str(tmp_path / "teacher"), distill_weight=20.0)
    before = cos(train(replace(cfg, steps=1, lr=1e-12), progress=False).model)
    after = cos(train(replace(cfg, steps=30), progress=False).model)
    assert after > before + 0.2, (before, after)


def test_text_from_and_distill_errors(tmp_path) -> None:
    from dataclasses import replace

    train(_tiny(1), out_dir=tmp_path / "teacher", progress=False)
    other = dict(TINY_CFG, text_cfg=dict(TINY_CFG["text_cfg"], width=64))
    with pytest.raises(ValueError, match="text_from=.*shapes differ"):
        train(replace(_tiny(1), model_cfg=other, text_from=str(tmp_path / "teacher")), progress=False)
    with pytest.raises(FileNotFoundError, match="text_from=.*no open_clip_model"):
        train(replace(_tiny(1), text_from=str(tmp_path / "nowhere")), progress=False)
    with pytest.raises(ValueError, match="needs distill_from"):
        train(replace(_tiny(1), distill_weight=1.0), progress=False)
    with pytest.raises(ValueError, match="text_lr_mult=-1"):
        train(replace(_tiny(1), text_lr_mult=-1.0), progress=False)
