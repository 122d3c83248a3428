"""Attacks: budget/range invariants, seeding, parity with torchattacks, objectives and APGD's schedule."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import vlmkit
from vlmkit.models.zeroshot import zero_shot_classifier
from vlmkit.attacks import (
    APGD,
    PGD,
    EmbeddingDrift,
    FeaturePGD,
    FreqPGD,
    RetrievalCE,
    RetrievalPGD,
    ZeroShotCE,
    ZeroShotClassifier,
    lp_norm,
)
from vlmkit.errors import InputError
from vlmkit.perturb.frequency import BANDS, out_of_band_energy
from vlmkit.registry import ATTACKS

from _tiny import register_tiny_open_clip

CLASSES = ["cat", "dog", "car", "tree", "boat"]
CAPTIONS = ["a cat on a sofa", "a dog in a park", "a red car", "a tall tree"]


@pytest.fixture(scope="module")
def vlm(tmp_path_factory):
    register_tiny_open_clip(tmp_path_factory.mktemp("oc_cfgs"))
    torch.manual_seed(0)
    return vlmkit.load_model("open_clip:vlmkit-tiny-vit", device="cpu")


@pytest.fixture(scope="module")
def data(vlm):
    """4 images, class text embeddings, labels = the clean predictions (clean accuracy 100 %)."""
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    text = zero_shot_classifier(vlm, CLASSES, templates=("a photo of a {}.", "a picture of a {}."))
    with torch.no_grad():
        labels = vlm.similarity(vlm.encode_image(x), text).argmax(1)
    caps = vlm.encode_text(CAPTIONS)
    return {"x": x, "text": text, "labels": labels, "caps": caps}


def _make(name: str, data: dict, norm: str = "linf", seed: int = 0, steps: int = 3):
    eps = 4 / 255 if norm == "linf" else 0.5
    kw = dict(eps=eps, steps=steps, norm=norm, seed=seed)
    if name == "retrieval_pgd":
        return ATTACKS.create(name, **kw), {"text_emb": data["caps"], "positives": torch.arange(4)}
    if name == "feature_pgd":
        return ATTACKS.create(name, **kw), {}
    return ATTACKS.create(name, ZeroShotCE(data["text"]), **kw), {"labels": data["labels"]}


#: The attacks the package documents, plus anything else registered: each is exercised below by name.
DOCUMENTED = ("pgd", "apgd_ce", "freq_pgd", "feature_pgd", "retrieval_pgd")
REGISTERED = sorted(set(DOCUMENTED) | set(ATTACKS.list()))
# (name, norm) for every norm an attack declares; a documented name missing from the registry fails here
CASES = [(name, norm) for name in REGISTERED for norm in ATTACKS.meta(name)["norms"]]


@pytest.mark.parametrize("name,norm", CASES)
def test_registered_attack_invariants(vlm, data, name, norm):
    """Create each registered attack from the registry by name and run it: its output stays in the
    ε-ball around the clean images and in [0, 1], and it raises its objective over the clean input."""
    meta = ATTACKS.meta(name)
    assert "white-box" in meta["threat_model"] and meta["reference"] and ATTACKS.get(name).__doc__
    atk, batch = _make(name, data, norm)  # ATTACKS.create(name, ...)
    assert atk.norm == norm and atk.eps == (4 / 255 if norm == "linf" else 0.5)
    x = data["x"]
    x0 = x.clone()
    xa = atk(vlm, x, batch)
    assert torch.equal(x, x0)  # input not modified
    assert xa.shape == x.shape and float(xa.min()) >= 0 and float(xa.max()) <= 1
    assert float(lp_norm(xa - x, norm).max()) <= atk.eps + 1e-6
    assert float(lp_norm(xa - x, norm).min()) > 0  # every image was actually perturbed
    assert torch.equal(xa, atk(vlm, x, batch))  # same seed -> same output (fresh generator per call)
    assert not torch.equal(xa, _make(name, data, norm, seed=1)[0](vlm, x, batch))  # random start differs
    obj = atk.objective
    b = obj.prepare(vlm, x, dict(batch)) if hasattr(obj, "prepare") else batch
    with torch.no_grad():
        assert float(obj(vlm, xa, b).mean()) > float(obj(vlm, x, b).mean())  # the objective goes up
    assert not vlm.model.training and not any(p.requires_grad for p in vlm.parameters())  # state restored


@pytest.mark.parametrize("name", ["pgd", "apgd_ce", "freq_pgd"])
def test_robust_accuracy_not_above_clean(vlm, data, name):
    atk, batch = _make(name, data, steps=5)
    xa = atk(vlm, data["x"], batch)
    with torch.no_grad():
        clean = (vlm.similarity(vlm.encode_image(data["x"]), data["text"]).argmax(1) == data["labels"]).float()
        robust = (vlm.similarity(vlm.encode_image(xa), data["text"]).argmax(1) == data["labels"]).float()
    assert float(clean.mean()) == 1.0
    assert float(robust.mean()) <= float(clean.mean())
    if name != "freq_pgd":  # full-band attacks flip every near-uniform random-model prediction
        assert float(robust.mean()) < 1.0


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_parity_with_torchattacks(vlm, data, norm):
    torchattacks = pytest.importorskip("torchattacks")
    clf = ZeroShotClassifier(vlm, data["text"])
    if norm == "linf":
        ref = torchattacks.PGD(clf, eps=4 / 255, alpha=1 / 255, steps=4, random_start=False)
        eps, alpha = 4 / 255, 1 / 255
    else:
        ref = torchattacks.PGDL2(clf, eps=0.5, alpha=0.2, steps=4, random_start=False)
        eps, alpha = 0.5, 0.2
    ref.set_device("cpu")
    expected = ref(data["x"], data["labels"])
    ours = PGD(ZeroShotCE(data["text"]), eps=eps, alpha=alpha, steps=4, norm=norm, random_start=False)(
        vlm, data["x"], {"labels": data["labels"]})
    assert torch.allclose(ours, expected, atol=1e-6, rtol=0)
    assert float((ours - data["x"]).abs().max()) > 0


def test_freq_pgd_is_band_limited(vlm, data):
    band = BANDS["low"]
    atk = FreqPGD(ZeroShotCE(data["text"]), band="low", eps=4 / 255, steps=3)
    d = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    c = atk.constrain(d)  # band + ball, before clamping
    assert float(out_of_band_energy(c, *band).max()) < 1e-10
    assert float(lp_norm(c, "linf").max()) <= atk.eps + 1e-7
    grey = 0.5 + 0.05 * (data["x"] - 0.5)  # never clamped at eps = 4/255
    delta = atk(vlm, grey, {"labels": data["labels"]}) - grey
    assert float(lp_norm(delta, "linf").min()) > 0.5 * atk.eps
    assert float(out_of_band_energy(delta, *band).max()) < 1e-8
    delta = atk(vlm, data["x"], {"labels": data["labels"]}) - data["x"]  # uniform images saturate: clamping
    assert float(out_of_band_energy(delta, *band).max()) < 0.25
    clip = FreqPGD(ZeroShotCE(data["text"]), band="low", eps=4 / 255, linf_ball="clip")
    assert float(lp_norm(clip.constrain(d * 10), "linf").max()) <= clip.eps + 1e-7
    with pytest.raises(InputError, match="band"):
        FreqPGD(band=(0.3, 0.1))


def test_feature_and_retrieval_targeted(vlm, data):
    x = data["x"]
    target_emb = vlm.encode_image(torch.flip(x, dims=[0])).detach()
    drift = EmbeddingDrift(targeted=True)
    xa = FeaturePGD(drift, eps=8 / 255, steps=4)(vlm, x, {"target_emb": target_emb})
    with torch.no_grad():
        before, after = drift(vlm, x, {"target_emb": target_emb}), drift(vlm, xa, {"target_emb": target_emb})
    assert bool((after > before).all())  # closer to the target embedding
    l2 = FeaturePGD(distance="l2", eps=4 / 255, steps=2)
    assert isinstance(l2.objective, EmbeddingDrift) and l2.objective.distance == "l2"
    assert float(lp_norm(l2(vlm, x) - x, "linf").max()) <= 4 / 255 + 1e-6
    tgt = torch.tensor([1, 2, 3, 0])
    ret = RetrievalPGD(targeted=True, eps=8 / 255, steps=4)
    xr = ret(vlm, x, {"text_emb": data["caps"], "target": tgt})
    obj = RetrievalCE(data["caps"], targeted=True)
    with torch.no_grad():
        assert float(obj(vlm, xr, {"target": tgt}).mean()) > float(obj(vlm, x, {"target": tgt}).mean())
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[:, 0] = True
    mask[torch.arange(4), torch.arange(4)] = True  # several positives per image
    assert RetrievalCE(data["caps"])(vlm, x, {"positives": mask}).shape == (4,)


def test_validation_errors(vlm, data):
    for bad in (0, -0.1, float("nan"), True):
        with pytest.raises(InputError, match="eps"):
            PGD(eps=bad)
    with pytest.raises(InputError, match="/255"):
        PGD(eps=8)
    assert PGD(eps=3.0, norm="l2").eps == 3.0  # L2 budgets may exceed 1
    with pytest.raises(InputError, match="norm"):
        PGD(norm="l3")
    with pytest.raises(InputError, match="steps"):
        APGD(steps=0)
    with pytest.raises(InputError, match="alpha"):
        PGD(alpha=-1.0)
    with pytest.raises(InputError, match="seed"):
        PGD(seed=-1)
    with pytest.raises(InputError, match="alpha"):
        APGD(alpha=0.1)
    atk = PGD(ZeroShotCE(data["text"]), steps=1)
    with pytest.raises(InputError, match="labels"):
        atk(vlm, data["x"], {})
    with pytest.raises(InputError, match="mapping"):
        atk(vlm, data["x"], [1, 2])
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        atk(vlm, data["x"] * 3, {"labels": data["labels"]})
    with pytest.raises(InputError, match="one loss per image"):
        PGD(lambda m, x, b: m.encode_image(x).sum(), steps=1)(vlm, data["x"])
    with pytest.raises(InputError, match="indices"):
        atk(vlm, data["x"], {"labels": torch.tensor([0, 1, 2, 9])})


def test_generator_argument_and_bf16_autocast(vlm, data):
    batch = {"labels": data["labels"]}
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a = PGD(ZeroShotCE(data["text"]), steps=1, generator=g1)(vlm, data["x"], batch)
    b = PGD(ZeroShotCE(data["text"]), steps=1, generator=g2)(vlm, data["x"], batch)
    assert torch.equal(a, b)
    xa = PGD(ZeroShotCE(data["text"]), steps=2, amp_dtype="bf16")(vlm, data["x"], batch)
    assert xa.dtype == torch.float32 and float(lp_norm(xa - data["x"], "linf").max()) <= 4 / 255 + 1e-6


# ---------------------------------------------------------------- APGD without a VLM
class _Quadratic(nn.Module):
    """Objective ``-‖x - c‖²``: the optimum in the ball is the projection of ``c``."""

    def __init__(self, c: torch.Tensor) -> None:
        super().__init__()
        self.c = nn.Parameter(c)


def _quad(model: _Quadratic, x_adv: torch.Tensor, batch: dict) -> torch.Tensor:
    return -(x_adv - model.c).pow(2).flatten(1).sum(1)


def test_apgd_checkpoints_follow_the_paper():
    seen: list[int] = []

    class Recording(APGD):
        def _checkpoint(self, x_adv, grad, s):
            seen.append(len(s["losses"]) - 1)  # iteration index of the checkpoint
            return super()._checkpoint(x_adv, grad, s)

    x = torch.full((2, 3, 4, 4), 0.5)
    Recording(_quad, eps=0.1, steps=100)(_Quadratic(torch.full_like(x, 0.9)), x)
    # p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06) (Croce & Hein 2020, Sec. 3.2)
    p, expected = [0.0, 0.22], []
    while p[-1] <= 1.0:
        expected.append(round(p[-1] * 100))
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    assert seen == [e for e in expected if e < 100]


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_apgd_converges_on_a_concave_objective(norm):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 6, 6, generator=g) * 0.6 + 0.2
    c = torch.rand(3, 3, 6, 6, generator=g)
    eps = 0.05 if norm == "linf" else 0.5
    model = _Quadratic(c)
    if norm == "linf":
        opt = torch.clamp(torch.min(torch.max(c, x - eps), x + eps), 0, 1)
    else:
        d = c - x
        opt = x + d * torch.clamp(eps / d.flatten(1).norm(dim=1), max=1).view(-1, 1, 1, 1)
    best = _quad(model, opt, {})
    xa = APGD(_quad, eps=eps, steps=60, norm=norm)(model, x)
    assert float(lp_norm(xa - x, norm).max()) <= eps + 1e-6
    with torch.no_grad():
        assert torch.allclose(_quad(model, xa, {}), best, atol=1e-3 * float(best.abs().max()) + 1e-4)
    assert model.c.requires_grad and model.training  # model state restored
