"""Relevance maps (Chefer et al. 2021; Grad-CAM) on tiny random open_clip and transformers ViTs."""

from __future__ import annotations

import json

import numpy as np
import open_clip
import pytest
import torch
from _tiny import TINY_VIT, register_tiny_open_clip, save_tiny_hf

import vlmkit
from vlmkit.errors import InputError
from vlmkit.interpret import relevance as rel
from vlmkit.interpret.geometry import boxes_to_masks, grid_to_image, image_to_grid
from vlmkit.models.zeroshot import zero_shot_classifier


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("oc_cfgs")
    register_tiny_open_clip(folder)
    # the toy ViT's pooling: average of the patch tokens (open_clip pool_type="avg")
    avg = {**TINY_VIT, "vision_cfg": {**TINY_VIT["vision_cfg"], "pool_type": "avg"}}
    (folder / "vlmkit-tiny-vit-avg.json").write_text(json.dumps(avg))
    open_clip.add_model_config(folder)
    torch.manual_seed(0)
    return {
        "open_clip": vlmkit.load_model("open_clip:vlmkit-tiny-vit", device="cpu"),
        "open_clip_avg": vlmkit.load_model("open_clip:vlmkit-tiny-vit-avg", device="cpu"),
        "hf_clip": vlmkit.load_model(f"hf:{save_tiny_hf('clip', tmp_path_factory.mktemp('hfc'))}", device="cpu"),
        "hf_siglip": vlmkit.load_model(f"hf:{save_tiny_hf('siglip', tmp_path_factory.mktemp('hfs'))}", device="cpu"),
    }


def _images(b=3, h=32, w=32, seed=0):
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _reference_chefer(vlm, x, text, readout_rows):
    """Chefer eqs. written out per image and per layer with retain_grad (the tap's other path)."""
    out = []
    for i in range(x.shape[0]):
        xi = x[i : i + 1].clone().requires_grad_(True)
        with torch.enable_grad(), vlm.tap(record=range(vlm.num_layers), retain_grad=True) as t:
            s = vlm.logit_scale * (vlm.encode_image(xi) @ text[i])
            s.sum().backward()
        N = t.probs[0].shape[-1]
        R = torch.eye(N)
        for li in range(vlm.num_layers):
            A, G = t.probs[li][0], t.probs[li].grad[0]  # (h, N, N)
            R = R + (G * A).clamp(min=0).mean(0) @ R
        P = vlm.num_prefix_tokens
        out.append(R[readout_rows(N, P)].mean(0)[P:])
    return torch.stack(out)


@pytest.mark.parametrize("name,kind", [("open_clip", "cls"), ("open_clip_avg", "patch_mean"), ("hf_clip", "cls"),
                                       ("hf_siglip", "token_mean")])
def test_chefer_matches_written_out_equations(models, name, kind):
    vlm = models[name]
    assert rel.readout(vlm) == kind
    x = _images()
    text = vlm.encode_text(["a photo of a dog", "a cat", "two birds"])
    got = rel.relevance_map(vlm, x, ["a photo of a dog", "a cat", "two birds"], normalize=False, return_grid=True,
                            progress=False)
    rows = {"cls": lambda N, P: slice(0, 1), "patch_mean": lambda N, P: slice(P, N),
            "token_mean": lambda N, P: slice(0, N)}[kind]
    ref = _reference_chefer(vlm, x, text, rows)
    assert got.shape == (3, 4, 4)
    torch.testing.assert_close(got.flatten(1), ref, rtol=1e-4, atol=1e-6)
    assert float(ref.detach().std()) > 0  # not a constant map


@pytest.mark.parametrize("name", ["open_clip", "hf_clip", "hf_siglip"])
@pytest.mark.parametrize("method", ["chefer", "gradcam"])
def test_maps_shape_range_and_batch_independence(models, name, method):
    vlm = models[name]
    x = _images(b=3, h=40, w=48)
    maps = rel.relevance_map(vlm, x, "a photo of a dog", method=method, progress=False)
    assert maps.shape == (3, 40, 48) and maps.dtype == torch.float32
    flat = maps.flatten(1)
    torch.testing.assert_close(flat.amin(1), torch.zeros(3))
    torch.testing.assert_close(flat.amax(1), torch.ones(3))
    # batching does not mix images: per-image calls and a batch of 2 + 1 give the same maps
    single = torch.cat([rel.relevance_map(vlm, x[i : i + 1], "a photo of a dog", method=method, progress=False)
                        for i in range(3)])
    chunked = rel.relevance_map(vlm, x, "a photo of a dog", method=method, batch_size=2, progress=False)
    torch.testing.assert_close(single, maps, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(chunked, maps, atol=1e-5, rtol=1e-4)


def test_class_target_from_prompt_ensemble_equals_its_prompt(models):
    vlm = models["open_clip"]
    x = _images()
    clf = zero_shot_classifier(vlm, ["dog", "cat"], ["a photo of a {}."])
    by_class = rel.relevance_map(vlm, x, [1, 0, 1], classifier=clf, progress=False)
    by_text = rel.relevance_map(vlm, x, ["a photo of a cat.", "a photo of a dog.", "a photo of a cat."], progress=False)
    torch.testing.assert_close(by_class, by_text, atol=1e-5, rtol=1e-4)
    other = rel.relevance_map(vlm, x, 0, classifier=clf, progress=False)
    assert not torch.allclose(other[0], by_class[0], atol=1e-3)  # the target matters
    with pytest.raises(InputError, match="classifier"):
        rel.relevance_map(vlm, x, 1, progress=False)
    with pytest.raises(InputError, match="3 images"):
        rel.relevance_map(vlm, x, ["a", "b"], progress=False)


def text_dim(vlm):
    return vlm.encode_text(["x"]).shape[1]


def _pgc_reference(vlm, x, prompts, layer_module):
    """pytorch-grad-cam's GradCAM on a wrapper whose forward returns the similarity logits."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    text = vlm.encode_text(prompts).detach()
    P = vlm.num_prefix_tokens

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.vlm = vlm

        def forward(self, inp):  # params are frozen: make the input a graph leaf so activations get grads
            return self.vlm.similarity(self.vlm.encode_image(inp.detach().requires_grad_(True)), text)

    def reshape_transform(t):
        t = vlm.tokens_from_block_output(t)[:, P:]
        gh, gw = vlm.token_grid(t.shape[1])
        return t.reshape(t.shape[0], gh, gw, t.shape[2]).permute(0, 3, 1, 2)  # (B, C, gh, gw)

    with GradCAM(model=Logits(), target_layers=[layer_module], reshape_transform=reshape_transform) as cam:
        out = cam(input_tensor=x, targets=[ClassifierOutputTarget(i) for i in range(len(prompts))])
    return torch.from_numpy(np.asarray(out))


@pytest.mark.parametrize("name", ["open_clip", "hf_clip", "hf_siglip"])
def test_gradcam_parity_with_pytorch_grad_cam(models, name):
    pytest.importorskip("pytorch_grad_cam")
    vlm = models[name]
    x = _images(b=3, seed=1)  # at the model's input size: both map onto the same frame
    prompts = ["a photo of a dog", "a red car", "a cat on a mat"]
    ours = rel.grad_cam(vlm, x, prompts, progress=False)
    ref = _pgc_reference(vlm, x, prompts, rel.gradcam_module(vlm, -1))
    ref = (ref - ref.flatten(1).amin(1)[:, None, None]) / (
        ref.flatten(1).amax(1) - ref.flatten(1).amin(1)).clamp_min(1e-12)[:, None, None]
    assert ours.shape == ref.shape == (3, 32, 32)
    err = (ours - ref).abs().max().item()
    assert err < 1e-5, f"max |ours - pytorch-grad-cam| = {err:.2e}"
    # a different target gives a different map (the comparison is not trivially satisfied); a random
    # text direction, because a random text tower embeds all prompts almost alike
    other = torch.randn(3, text_dim(vlm), generator=torch.Generator().manual_seed(5))
    assert (rel.grad_cam(vlm, x, other, progress=False) - ref).abs().max().item() > 1e-2


def test_grid_to_image_follows_the_centre_crop(models):
    vlm = models["open_clip"]  # 32x32 input, 'shortest' resize + centre crop
    grid = torch.ones(1, 4, 4)
    up = grid_to_image(grid, vlm.preprocess_cfg, (32, 64))  # crop keeps the central 32 columns
    assert up.shape == (1, 32, 64)
    assert float(up[0, :, 16:48].min()) == 1.0 and float(up[0, :, :16].max()) == 0.0
    assert float(up[0, :, 48:].max()) == 0.0
    # image-frame masks map onto the grid through the same crop
    m = boxes_to_masks(torch.tensor([[16, 0, 24, 8]]), (32, 64))  # the crop's top-left patch
    cov = image_to_grid(m, vlm.preprocess_cfg, (4, 4))
    assert float(cov[0, 0, 0]) == pytest.approx(1.0) and float(cov.sum()) == pytest.approx(1.0)


def test_mass_in_mask():
    maps = torch.zeros(2, 4, 4)
    maps[0, :2, :2] = 1.0  # all mass in the mask
    maps[1] = 1.0  # uniform
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[:, :2, :2] = True
    out = rel.mass_in_mask(maps, masks)
    torch.testing.assert_close(out["mass"], torch.tensor([1.0, 0.25]))
    torch.testing.assert_close(out["ratio"], torch.tensor([4.0, 1.0]))


def test_cnn_tower_has_no_attention_relevance(tmp_path_factory):
    register_tiny_open_clip(tmp_path_factory.mktemp("oc_rn"))
    rn = vlmkit.load_model("open_clip:vlmkit-tiny-rn", device="cpu")
    x = _images(b=1, h=64, w=64)
    with pytest.raises(InputError, match="without per-layer self-attention"):
        rel.relevance_map(rn, x, "a dog", progress=False)
    cam = rel.grad_cam(rn, x, "a dog", progress=False)  # Grad-CAM on the last stage works for CNNs
    assert cam.shape == (1, 64, 64) and bool(torch.isfinite(cam).all())
    assert 0.0 <= float(cam.min()) <= float(cam.max()) <= 1.0
