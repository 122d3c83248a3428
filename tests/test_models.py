"""The one model interface over open_clip and transformers, on randomly initialised real architectures."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import vlmkit
from vlmkit.errors import InputError, ModelSpecError, WeightsNotFoundError
from vlmkit.models.preprocess import PreprocessConfig, resize_and_normalise

from _tiny import export_local_dir, register_tiny_open_clip, save_tiny_hf


@pytest.fixture(scope="module")
def tiny_archs(tmp_path_factory):
    return register_tiny_open_clip(tmp_path_factory.mktemp("oc_cfgs"))


@pytest.fixture(scope="module")
def vitb32():
    torch.manual_seed(0)
    return vlmkit.load_model("open_clip:ViT-B-32", device="cpu")


@pytest.fixture(scope="module")
def tiny_vit(tiny_archs):
    torch.manual_seed(0)
    return vlmkit.load_model("open_clip:vlmkit-tiny-vit", device="cpu")


@pytest.fixture(scope="module")
def hf_clip_dir(tmp_path_factory):
    return save_tiny_hf("clip", tmp_path_factory.mktemp("hf_clip"))


@pytest.fixture(scope="module")
def hf_siglip_dir(tmp_path_factory):
    return save_tiny_hf("siglip", tmp_path_factory.mktemp("hf_siglip"))


def _images(b=2, h=40, w=56, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, h, w, generator=g)


# ---------------------------------------------------------------- open_clip parity
def test_open_clip_random_init_is_logged(tiny_archs, caplog):
    with caplog.at_level(logging.WARNING, logger="vlmkit.models"):
        vlm = vlmkit.load_model("open_clip:vlmkit-tiny-vit", device="cpu")
    assert "RANDOMLY INITIALISED" in caplog.text
    assert vlm.meta["random_init"] is True


def test_open_clip_encode_image_equals_open_clip_preprocess_path(vitb32):
    """encode_image on [0,1] pixels == open_clip's model.encode_image(preprocess(img))."""
    import open_clip
    from PIL import Image
    from torchvision.transforms import CenterCrop, Normalize, Resize, ToTensor

    _, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32")
    # PIL path at the native size: preprocess = ToTensor + Normalize (resize/crop are identities)
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(224, 224, 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    with torch.no_grad():
        ref = F.normalize(vitb32.model.encode_image(preprocess(img).unsqueeze(0)), dim=-1)
        ours = vitb32.encode_image(ToTensor()(img).unsqueeze(0))
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)
    # other sizes: the same transforms (Resize, CenterCrop, Normalize) applied by torchvision to the tensor
    steps = [t for t in preprocess.transforms if isinstance(t, (Resize, CenterCrop, Normalize))]
    assert len(steps) == 3
    x = _images(2, 250, 331, seed=1)
    y = x
    for t in steps:
        y = t(y)
    with torch.no_grad():
        ref = F.normalize(vitb32.model.encode_image(y), dim=-1)
        ours = vitb32.encode_image(x)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)


def test_open_clip_text_and_logits(vitb32):
    import open_clip

    tok = open_clip.get_tokenizer("ViT-B-32")
    texts = ["a photo of a dog", "a diagram"]
    with torch.no_grad():
        ref = F.normalize(vitb32.model.encode_text(tok(texts)), dim=-1)
        ours = vitb32.encode_text(texts)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)
    assert vitb32.logit_scale == pytest.approx(float(vitb32.model.logit_scale.exp()))
    assert vitb32.logit_bias is None
    logits = vitb32.similarity(vitb32.encode_image(_images(1)), ours)
    assert logits.shape == (1, 2)


def test_encode_image_is_differentiable_in_pixels(tiny_vit):
    x = _images(2).requires_grad_(True)
    tiny_vit.encode_image(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in tiny_vit.parameters())


def test_vision_tokens_match_forward_intermediates(vitb32):
    x = _images(2, 224, 224)
    with torch.no_grad():
        vt = vitb32.vision_tokens(x, layer=5)
        ref = vitb32.model.visual.forward_intermediates(resize_and_normalise(x, vitb32.preprocess_cfg), indices=[5],
                                                       intermediates_only=True, output_extra_tokens=True)
    assert vt.patches.shape == (2, 49, 768) and vt.grid == (7, 7) and vt.layer == 5
    torch.testing.assert_close(vt.patches, ref["image_intermediates"][0].flatten(2).transpose(1, 2))
    torch.testing.assert_close(vt.prefix, ref["image_intermediates_prefix"][0])
    assert vt.cls.shape == (2, 768) and vt.as_grid().shape == (2, 768, 7, 7)


@pytest.mark.parametrize("spec", ["open_clip:vlmkit-tiny-vit", "open_clip:vlmkit-tiny-timm"])
def test_attention_maps_and_explicit_path_parity(tiny_archs, spec):
    vlm = vlmkit.load_model(spec, device="cpu")
    x = _images(2)
    with torch.no_grad():
        base = vlm.encode_image(x)
        with vlm.tap(record=range(vlm.num_layers)) as t:
            tapped = vlm.encode_image(x)
    assert sorted(t.probs) == list(range(vlm.num_layers))  # the explicit path really ran
    torch.testing.assert_close(tapped, base, atol=1e-5, rtol=1e-4)
    att = vlm.attention(x, layer=-1)
    n_tok = vlm.vision_tokens(x, -1).patches.shape[1] + vlm.num_prefix_tokens
    assert att.shape == (2, vlm.heads_per_layer[-1], n_tok, n_tok)
    torch.testing.assert_close(att.sum(-1), torch.ones(att.shape[:-1]))


def test_head_mask_equals_zeroing_head_slice_of_out_proj(tiny_vit):
    """Masking head h == zeroing the columns of out_proj that read head h (closed form)."""
    import copy

    x = _images(2)
    layer, head = 1, 1
    with torch.no_grad(), tiny_vit.mask_heads({layer: [head]}):
        masked = tiny_vit.encode_image(x)
    ref = copy.deepcopy(tiny_vit.model)
    attn = ref.visual.transformer.resblocks[layer].attn
    d = attn.embed_dim // attn.num_heads
    with torch.no_grad():
        attn.out_proj.weight[:, head * d:(head + 1) * d] = 0
        expected = F.normalize(ref.encode_image(resize_and_normalise(x, tiny_vit.preprocess_cfg)), dim=-1)
        unmasked = tiny_vit.encode_image(x)
    torch.testing.assert_close(masked, expected, atol=1e-5, rtol=1e-4)
    assert (masked - unmasked).abs().max() > 1e-4  # masking changed something, and leaves no trace after the block


def test_resnet_tower_tokens_and_no_heads(tiny_archs):
    vlm = vlmkit.load_model("open_clip:vlmkit-tiny-rn", device="cpu")
    vt = vlm.vision_tokens(_images(1, 64, 64), layer=-1)
    assert vt.prefix is None and vt.grid == (2, 2) and vt.patches.shape == (1, 4, 512)  # width 16 * 8 * expansion 4
    assert not vlm.has_attention
    with pytest.raises(InputError, match="without per-layer self-attention heads"):
        vlm.attention(_images(1, 64, 64))


def test_open_clip_local_dir_and_weights_file_roundtrip(tiny_archs, tmp_path):
    import open_clip

    folder = export_local_dir("vlmkit-tiny-vit", tmp_path / "export", seed=3)
    a = vlmkit.load_model(f"open_clip:local-dir:{folder}", device="cpu")
    b = vlmkit.load_model(f"open_clip:{folder}", device="cpu")
    assert a.preprocess_cfg.resize_mode == "squash" and a.preprocess_cfg.std == (0.25, 0.25, 0.25)
    x = _images(1)
    with torch.no_grad():
        torch.testing.assert_close(a.encode_image(x), b.encode_image(x))
    # architecture + weights file (a .pt state dict)
    torch.manual_seed(3)
    ref = open_clip.create_model("vlmkit-tiny-vit")
    torch.save(ref.state_dict(), tmp_path / "w.pt")
    c = vlmkit.load_model(f"open_clip:vlmkit-tiny-vit/{tmp_path / 'w.pt'}", device="cpu")
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(c.model.state_dict()[k], v)


# ---------------------------------------------------------------- transformers parity
@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_hf_encode_image_equals_get_image_features(kind, hf_clip_dir, hf_siglip_dir):
    from transformers import AutoModel

    folder = hf_clip_dir if kind == "clip" else hf_siglip_dir
    vlm = vlmkit.load_model(f"hf:{folder}", device="cpu")
    ref_model = AutoModel.from_pretrained(folder).eval()
    x = _images(2, 32, 32)
    mean = torch.tensor(vlm.mean).view(1, 3, 1, 1)
    std = torch.tensor(vlm.std).view(1, 3, 1, 1)
    with torch.no_grad():
        out = ref_model.get_image_features(pixel_values=(x - mean) / std)
        ref = F.normalize(getattr(out, "pooler_output", out), dim=-1)
        ours = vlm.encode_image(x)
        with vlm.tap(record=[0, 1]) as t:
            tapped = vlm.encode_image(x)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(tapped, ref, atol=1e-5, rtol=1e-4)
    n_prefix = 1 if kind == "clip" else 0
    assert t.probs[1].shape == (2, vlm.heads_per_layer[1], 16 + n_prefix, 16 + n_prefix)
    vt = vlm.vision_tokens(x, 0)
    assert vt.grid == (4, 4) and (vt.prefix is None) == (kind == "siglip")
    text = vlm.encode_text(["a red square", "two blue circles"])
    assert text.shape[0] == 2 and torch.allclose(text.norm(dim=-1), torch.ones(2))
    if kind == "siglip":
        assert vlm.logit_bias is not None and vlm.preprocess_cfg.resize_mode == "squash"
    else:
        assert vlm.logit_bias is None and vlm.preprocess_cfg.mean[0] == pytest.approx(0.48145466)


def test_hf_mask_heads_changes_output_and_restores(hf_clip_dir):
    vlm = vlmkit.load_model(f"hf:{hf_clip_dir}", device="cpu")
    x = _images(1, 32, 32)
    with torch.no_grad():
        a = vlm.encode_image(x)
        with vlm.mask_heads({0: [0, 2], -1: [1]}):
            b = vlm.encode_image(x)
        c = vlm.encode_image(x)
    assert (a - b).abs().max() > 1e-5
    torch.testing.assert_close(a, c)


# ---------------------------------------------------------------- preprocessing
def test_resize_modes_shapes_and_identity():
    x = _images(1, 30, 50)
    for mode in ("shortest", "squash", "longest"):
        cfg = PreprocessConfig(size=(16, 16), mean=(0, 0, 0), std=(1, 1, 1), resize_mode=mode)
        assert resize_and_normalise(x, cfg).shape == (1, 3, 16, 16)
    cfg = PreprocessConfig(size=(30, 50), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    torch.testing.assert_close(resize_and_normalise(x, cfg), (x - 0.5) / 0.5)
    pad = resize_and_normalise(torch.ones(1, 3, 10, 20), PreprocessConfig(size=(20, 20), mean=(0, 0, 0), std=(1, 1, 1),
                                                                         resize_mode="longest", interpolation="nearest"))
    assert pad[0, 0, 0, 0] == 0 and pad[0, 0, 10, 10] == 1  # padded rows top/bottom, content in the middle


# ---------------------------------------------------------------- bad input (each a clear error)
def test_unknown_family_lists_known():
    with pytest.raises(ModelSpecError, match=r"unknown model family 'opn_clip'.*Did you mean: open_clip"):
        vlmkit.load_model("opn_clip:ViT-B-32")


def test_spec_without_family():
    with pytest.raises(ModelSpecError, match="has no family prefix"):
        vlmkit.load_model("ViT-B-32")


def test_unknown_architecture_lists_near_matches():
    with pytest.raises(ModelSpecError, match=r"unknown open_clip architecture 'ViT-B-33'.*Did you mean:.*ViT-B-32"):
        vlmkit.load_model("open_clip:ViT-B-33/openai")


def test_unknown_pretrained_tag_lists_known_tags():
    with pytest.raises(ModelSpecError, match=r"unknown pretrained tag 'laion2b_s34b'.*laion2b_s34b_b79k"):
        vlmkit.load_model("open_clip:ViT-B-32/laion2b_s34b")


def test_unreachable_weights_name_weights_cache_and_local_path():
    with pytest.raises(WeightsNotFoundError) as e:
        vlmkit.load_model("open_clip:ViT-B-32/laion2b_s34b_b79k")
    msg = str(e.value)
    assert "laion2b_s34b_b79k" in msg and "Hugging Face cache" in msg and "open_clip:ViT-B-32/path/to/" in msg


def test_unreachable_hf_hub_id():
    with pytest.raises(WeightsNotFoundError, match=r"openai/clip-vit-base-patch32.*hf:/path/to/folder"):
        vlmkit.load_model("hf:openai/clip-vit-base-patch32")


def test_missing_local_weights_file(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="no such file or folder"):
        vlmkit.load_model(f"open_clip:ViT-B-32/{tmp_path}/missing.safetensors")


def test_hf_folder_without_config(tmp_path):
    with pytest.raises(ModelSpecError, match="has no config.json"):
        vlmkit.load_model(f"hf:{tmp_path}")


def test_unknown_toy_model():
    with pytest.raises(ModelSpecError, match="unknown toy model 'nope'"):
        vlmkit.load_model("toy:nope")


@pytest.mark.parametrize("name", ["vit", "rn"])
def test_toy_model_is_built_as_its_class(name):
    from vlmkit.models import ToyVLM

    vlm = vlmkit.load_model(f"toy:{name}", device="cpu")
    assert type(vlm) is ToyVLM and vlm.family == "toy" and "training" in vlm.meta
    assert vlm.name == f"toy:{name}" and vlm.meta["spec"] == f"toy:{name}"


# ---------------------------------------------------------------- the public tower members
def test_public_tower_members_describe_the_tower(tiny_archs, hf_clip_dir, hf_siglip_dir):
    """``blocks``/``num_prefix_tokens``/``token_grid``/``tokens_from_block_output``/``layer_index``/
    ``encode_pixels`` agree with the tokens and embeddings of every family (hf: through its older hooks)."""
    x = _images(2, 64, 64)
    cases = {"open_clip:vlmkit-tiny-vit": (1, (4, 4)), "open_clip:vlmkit-tiny-rn": (0, (2, 2)),
             f"hf:{hf_clip_dir}": (1, (4, 4)), f"hf:{hf_siglip_dir}": (0, (4, 4))}
    for spec, (prefix, grid) in cases.items():
        vlm = vlmkit.load_model(spec, device="cpu")
        assert vlm.num_prefix_tokens == prefix and len(vlm.blocks) == vlm.num_layers
        assert vlm.layer_index(-1) == vlm.num_layers - 1 and vlm.token_grid(grid[0] * grid[1]) == grid
        box = {}
        h = vlm.blocks[-1].register_forward_hook(lambda m, i, o: box.__setitem__("out", o))
        try:
            emb = vlm.encode_pixels(vlm.preprocess(x))  # (B, D) unnormalised
        finally:
            h.remove()
        torch.testing.assert_close(F.normalize(emb, dim=-1), vlm.encode_image(x))
        tokens = vlm.tokens_from_block_output(box["out"])  # (B, N, C)
        vt = vlm.vision_tokens(x, -1)
        assert vt.grid == grid and tokens.shape[1] == prefix + grid[0] * grid[1]
        torch.testing.assert_close(tokens[:, prefix:], vt.patches)
        assert (vlm.attention_modules is None) == (not vlm.has_attention)
        if vlm.has_attention:
            assert len(vlm.require_attention()) == vlm.num_layers
        else:
            with pytest.raises(InputError, match="relevance: model .* without per-layer self-attention"):
                vlm.require_attention("relevance")
        with pytest.raises(InputError, match="cannot arrange 7 tokens"):
            vlm.token_grid(7)


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.randint(0, 255, (1, 3, 32, 32), dtype=torch.uint8), r"float tensor.*x.float\(\) / 255"),
        (torch.rand(1, 32, 32, 3), r"shape \(B, 3, H, W\)"),
        (torch.rand(3, 32, 32), r"shape \(B, 3, H, W\)"),
        (torch.rand(1, 3, 32, 32) * 255, r"values in \[0, 1\].*got range"),
        ((torch.rand(1, 3, 32, 32) - 0.5) / 0.25, r"values in \[0, 1\]"),
        (np.zeros((1, 3, 32, 32), dtype=np.float32), "must be a torch.Tensor"),
    ],
)
def test_encode_image_rejects_wrong_dtype_shape_range(tiny_vit, bad, match):
    with pytest.raises(InputError, match=match):
        tiny_vit.encode_image(bad)


def test_layer_and_head_out_of_range(tiny_vit):
    with pytest.raises(InputError, match="layer=7 is out of range"):
        tiny_vit.vision_tokens(_images(1), layer=7)
    with pytest.raises(InputError, match=r"layer=-3 is out of range .* \(-2\.\.1\)"):
        tiny_vit.layer_index(-3)
    with pytest.raises(InputError, match=r"heads \[9\] of layer 0, which has 3 heads"):
        with tiny_vit.mask_heads({0: [9]}):
            pass


def test_empty_text_list(tiny_vit):
    with pytest.raises(InputError, match="texts is empty"):
        tiny_vit.encode_text([])


def test_device_dtype_resolution():
    assert vlmkit.resolve_device("cpu").type == "cpu"
    assert vlmkit.resolve_dtype(None) == torch.float32 and vlmkit.resolve_dtype("bf16") == torch.bfloat16
    with pytest.raises(ValueError, match="dtype='float8'"):
        vlmkit.resolve_dtype("float8")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            vlmkit.resolve_device("cuda")


def test_bf16_model_returns_float32_embeddings(tiny_archs):
    vlm = vlmkit.load_model("open_clip:vlmkit-tiny-vit", device="cpu", dtype="bf16")
    assert vlm.dtype == torch.bfloat16
    e = vlm.encode_image(_images(1))
    assert e.dtype == torch.float32 and torch.isfinite(e).all()


def test_embed_images_uint8_equals_float(tiny_vit):
    u8 = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    a = tiny_vit.embed_images(u8, batch_size=2, progress=False)
    with torch.no_grad():
        b = tiny_vit.encode_image(u8.float() / 255)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_spec_family_list():
    assert {"open_clip", "hf", "toy"} <= set(vlmkit.list_model_families())
    assert "ViT-B-32" in vlmkit.list_models("open_clip")
    assert "ViT-B-32/laion2b_s34b_b79k" in vlmkit.list_models("open_clip_pretrained")
