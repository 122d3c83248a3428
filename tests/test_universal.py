"""Universal adversarial perturbations (SGD-UAP) on the trained toy models and toy-world scenes.

Properties a broken implementation would violate: a UAP fitted on a training split lowers held-out
zero-shot accuracy more than a random sign perturbation of the same norm; the budget holds exactly;
the same seed gives the bit-identical δ; a targeted UAP raises the target's rate; an ensemble of one
model twice is that model (the objectives are averaged), while a real ensemble moves δ.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import vlmkit
from vlmkit.attacks import EmbeddingDrift, ZeroShotCE, lp_norm
from vlmkit.attacks.universal import TowardText, UniversalPerturbation, fit_universal
from vlmkit.errors import DataError, InputError
from vlmkit.models.zeroshot import zero_shot_classifier
from vlmkit.toyworld.world import SHAPES, render_spec, single_object_spec

pytestmark = pytest.mark.usefixtures("one_thread")

EPS = 8 / 255
N_TRAIN, N_TEST = 64, 96
FIT = {"eps": EPS, "epochs": 2, "batch_size": 32, "progress": False}


def _scenes(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    scenes = [render_spec(single_object_spec(rng)) for _ in range(n)]
    x = torch.stack([s.to_tensor() for s in scenes])  # (n, 3, 64, 64)
    y = torch.tensor([SHAPES.index(s.objects[0].shape) for s in scenes])  # (n,)
    return x, y


@pytest.fixture(scope="module")
def vit():
    return vlmkit.load_model("toy:vit", device="cpu")


@pytest.fixture(scope="module")
def rn():
    return vlmkit.load_model("toy:rn", device="cpu")


@pytest.fixture(scope="module")
def data(vit):
    """Disjoint training and held-out splits (different scene seeds) and the zero-shot classifier."""
    xtr, ytr = _scenes(0, N_TRAIN)
    xte, yte = _scenes(1, N_TEST)
    text = zero_shot_classifier(vit, SHAPES, ["a photo of a {}"])  # (8, D)
    return {"xtr": xtr, "ytr": ytr, "xte": xte, "yte": yte, "text": text}


@pytest.fixture(scope="module")
def uap_ce(vit, data):
    return fit_universal(vit, data["xtr"], ZeroShotCE(data["text"]), labels=data["ytr"], seed=0, **FIT)


def _pred(vlm, x, text):
    with torch.no_grad():
        return vlm.similarity(vlm.encode_image(x), text).argmax(1)  # (B,)


def _acc(vlm, x, y, text) -> float:
    return float((_pred(vlm, x, text) == y).float().mean())


@pytest.mark.parametrize("kind", ["ce", "embedding"])
def test_uap_beats_random_sign_on_held_out(vit, data, uap_ce, kind):
    """Held-out accuracy under the UAP is clearly below accuracy under a random ±ε sign pattern (same L∞
    norm), which itself barely moves the clean accuracy; for both the supervised and the label-free objective."""
    if kind == "ce":
        uap = uap_ce
    else:
        uap = fit_universal(vit, data["xtr"], EmbeddingDrift("cosine"), seed=0, **FIT)
    xte, yte, text = data["xte"], data["yte"], data["text"]
    rand = EPS * torch.sign(torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(7)))
    assert float(lp_norm(rand, "linf")[0]) == pytest.approx(float(lp_norm(uap.delta, "linf")[0]), abs=1e-6)
    clean = _acc(vit, xte, yte, text)
    random_acc = _acc(vit, (xte + rand).clamp(0, 1), yte, text)
    uap_acc = _acc(vit, uap.apply(xte), yte, text)
    assert clean > 0.8  # the trained toy model classifies the clean scenes
    assert uap_acc < random_acc - 0.1, (clean, random_acc, uap_acc)
    # the objective went up while fitting (loss curve measured on the training minibatches)
    assert uap.record.epoch_loss[-1] > uap.record.epoch_loss[0]


def test_norm_constraint_holds_exactly(vit, data, uap_ce):
    d = uap_ce.delta
    assert d.shape == (1, 3, 64, 64) and d.dtype == torch.float32
    assert float(d.abs().max()) <= EPS + 1e-6
    assert float(d.abs().max()) >= EPS - 1e-6  # the sign steps reach the boundary (δ is used, not ~0)
    # L2: a step larger than the ball, so the projection is active every step
    u2 = fit_universal(vit, data["xtr"][:32], ZeroShotCE(data["text"]), labels=data["ytr"][:32], eps=1.5,
                       norm="l2", alpha=3.0, epochs=2, batch_size=16, progress=False)
    n2 = float(u2.delta.flatten().norm())
    assert n2 <= 1.5 + 1e-5 and n2 >= 1.5 - 1e-3
    assert u2.norm == "l2" and u2.record.steps == 4 and len(u2.record.loss) == 4
    with pytest.raises(InputError, match="outside its budget"):  # a hand-made δ must respect its budget
        UniversalPerturbation(torch.full((3, 8, 8), 2 * EPS), "linf", EPS)


def test_deterministic_given_seed(vit, data, uap_ce):
    again = fit_universal(vit, data["xtr"], ZeroShotCE(data["text"]), labels=data["ytr"], seed=0, **FIT)
    assert torch.equal(again.delta, uap_ce.delta)
    assert again.record.loss == uap_ce.record.loss
    other = fit_universal(vit, data["xtr"], ZeroShotCE(data["text"]), labels=data["ytr"], seed=1, **FIT)
    assert not torch.equal(other.delta, uap_ce.delta)  # another minibatch order
    rec = uap_ce.record
    assert rec.steps == 2 * math.ceil(N_TRAIN / 32) == len(rec.loss) and len(rec.epoch_loss) == 2
    assert rec.n_train == N_TRAIN and rec.models == ["toy:vit"] and rec.seed == 0 and rec.image_size == (64, 64)


def test_targeted_raises_target_rate(vit, data):
    xte, text = data["xte"], data["text"]
    star = SHAPES.index("star")
    clean_rate = float((_pred(vit, xte, text) == star).float().mean())
    # towards a class (targeted zero-shot cross-entropy)
    u = fit_universal(vit, data["xtr"], ZeroShotCE(text, targeted=True), targeted=True, target=star, **FIT)
    assert u.targeted and u.target == star
    assert float((_pred(vit, u.apply(xte), text) == star).float().mean()) > clean_rate + 0.1
    # towards a text embedding (no labels, no class list while fitting)
    prompt = "a photo of a star"
    t = TowardText(vit.encode_text([prompt])[0])
    u2 = fit_universal(vit, data["xtr"], t, targeted=True, target=prompt, **FIT)
    assert u2.target == prompt
    assert float((_pred(vit, u2.apply(xte), text) == star).float().mean()) > clean_rate + 0.1


def test_save_load_round_trip(uap_ce, data, tmp_path):
    path = uap_ce.save(tmp_path / "uap" / "vit.safetensors")
    back = UniversalPerturbation.load(path)
    assert torch.equal(back.delta, uap_ce.delta)
    assert (back.norm, back.eps, back.targeted, back.target) == ("linf", EPS, False, None)
    assert back.record == uap_ce.record
    assert torch.equal(back.apply(data["xte"][:4]), uap_ce.apply(data["xte"][:4]))
    side = json.loads((tmp_path / "uap" / "vit.json").read_text())
    assert side["eps"] == EPS and side["record"]["models"] == ["toy:vit"] and side["record"]["n_train"] == N_TRAIN
    with pytest.raises(InputError, match="safetensors"):
        uap_ce.save(tmp_path / "vit.pt")
    (tmp_path / "junk.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(DataError):
        UniversalPerturbation.load(tmp_path / "junk.safetensors")
    from safetensors.torch import save_file

    save_file({"delta": uap_ce.delta}, str(tmp_path / "bare.safetensors"))  # a tensor without vlmkit metadata
    with pytest.raises(DataError, match="vlmkit"):
        UniversalPerturbation.load(tmp_path / "bare.safetensors")


def test_apply_sizes_and_clamping():
    u = UniversalPerturbation(torch.full((1, 3, 8, 8), EPS), "linf", EPS)
    x = torch.cat([torch.ones(1, 3, 8, 8), torch.full((1, 3, 8, 8), 0.5)])
    out = u.apply(x)
    assert torch.equal(out[0], torch.ones(3, 8, 8))  # 1 + ε clamped to 1
    assert torch.allclose(out[1], torch.full((3, 8, 8), 0.5 + EPS))
    with pytest.raises(InputError, match=r"\(16, 16\).*\(8, 8\)"):
        u.apply(torch.rand(2, 3, 16, 16))
    big = u.apply(torch.full((1, 3, 16, 16), 0.5), resize=True)
    assert torch.allclose(big, torch.full((1, 3, 16, 16), 0.5 + EPS))
    u2 = UniversalPerturbation(torch.full((3, 8, 8), 1.0 / math.sqrt(3 * 64)), "l2", 1.0)  # ‖δ‖₂ = 1
    grown = u2.apply(torch.full((1, 3, 16, 16), 0.5), resize=True) - 0.5  # 4x the pixels: re-projected
    assert float(grown.flatten().norm()) == pytest.approx(1.0, abs=1e-5)


def test_ensemble_source(vit, rn, data):
    x, y = data["xtr"][:48], data["ytr"][:48]
    kw = {"eps": EPS, "epochs": 1, "batch_size": 16, "progress": False}
    single = fit_universal(vit, x, ZeroShotCE(data["text"]), labels=y, **kw)
    twice = fit_universal([vit, vit], x, ZeroShotCE(data["text"]), labels=y, **kw)
    assert torch.equal(twice.delta, single.delta)  # the mean of two identical objectives is that objective
    assert twice.record.loss == pytest.approx(single.record.loss, abs=1e-6)
    text_rn = zero_shot_classifier(rn, SHAPES, ["a photo of a {}"])
    ens = fit_universal([vit, rn], x, [ZeroShotCE(data["text"]), ZeroShotCE(text_rn)], labels=y, **kw)
    assert ens.record.models == ["toy:vit", "toy:rn"] and len(ens.record.objective) == 2
    assert not torch.equal(ens.delta, single.delta)  # the second model's gradient counts
    assert float(ens.delta.abs().max()) <= EPS + 1e-6
    assert not vit.model.training and not any(p.requires_grad for p in rn.parameters())  # state restored


def test_bad_inputs_raise_before_work(vit, data):
    calls = []

    def obj(model, x_adv, batch):
        calls.append(1)
        return model.encode_image(x_adv).sum(1)

    x = data["xtr"][:8]
    cases = [
        ("eps", {"eps": 0.0}), ("eps", {"eps": -0.1}), ("/255", {"eps": 8}),
        ("norm", {"eps": EPS, "norm": "l3"}), ("epochs", {"eps": EPS, "epochs": 0}),
        ("batch_size", {"eps": EPS, "batch_size": 0}), ("alpha", {"eps": EPS, "alpha": -1.0}),
        ("seed", {"eps": EPS, "seed": -1}), ("labels", {"eps": EPS, "labels": torch.zeros(3, dtype=torch.long)}),
        ("target", {"eps": EPS, "targeted": True}), ("targeted", {"eps": EPS, "target": 2}),
    ]
    for what, kw in cases:
        with pytest.raises(InputError, match=what):
            fit_universal(vit, x, obj, progress=False, **kw)
    with pytest.raises(InputError, match=r"images.*\[0, 1\]"):
        fit_universal(vit, x * 3, obj, eps=EPS, progress=False)
    with pytest.raises(InputError, match="images"):
        fit_universal(vit, x[0], obj, eps=EPS, progress=False)
    with pytest.raises(InputError, match="objective"):
        fit_universal([vit, vit], x, [obj], eps=EPS, progress=False)
    with pytest.raises(InputError, match="targeted"):
        fit_universal(vit, x, ZeroShotCE(data["text"], targeted=True), eps=EPS, progress=False)
    with pytest.raises(InputError, match="models"):
        fit_universal([], x, obj, eps=EPS, progress=False)
    assert not calls  # every check ran before the first forward pass
    with pytest.raises(InputError, match="one loss per image"):
        fit_universal(vit, x, lambda m, xa, b: m.encode_image(xa).sum(), eps=EPS, progress=False)
