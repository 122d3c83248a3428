"""Attention heads: per-head maps, region attention, masking sweeps (tiny random open_clip / transformers ViTs)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
from _tiny import register_tiny_open_clip, save_tiny_hf

import vlmkit
from vlmkit.errors import InputError
from vlmkit.interpret import heads as H
from vlmkit.interpret.geometry import boxes_to_masks
from vlmkit.interpret.plotting import plot_head_maps, plot_head_sweep


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    register_tiny_open_clip(tmp_path_factory.mktemp("oc_cfgs"))
    torch.manual_seed(0)
    return {
        "open_clip": vlmkit.load_model("open_clip:vlmkit-tiny-vit", device="cpu"),
        "hf_clip": vlmkit.load_model(f"hf:{save_tiny_hf('clip', tmp_path_factory.mktemp('hfc'))}", device="cpu"),
        "hf_siglip": vlmkit.load_model(f"hf:{save_tiny_hf('siglip', tmp_path_factory.mktemp('hfs'))}", device="cpu"),
    }


def _images(b=4, seed=0, h=32, w=32):
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", ["open_clip", "hf_clip", "hf_siglip"])
def test_head_attention_maps_are_the_attention_rows(models, name):
    vlm = models[name]
    x = _images(2)
    maps = H.head_attention_maps(vlm, x)
    L, h = vlm.num_layers, vlm.heads_per_layer[0]
    assert maps.shape == (2, L, h, 4, 4)
    P = vlm.num_prefix_tokens
    A = vlm.attention(x, layer=1)  # (B, h, N, N)
    row = A[:, :, 0, P:] if P else A[:, :, :, P:].mean(2)
    torch.testing.assert_close(maps[:, 1].flatten(2), row)
    if P:  # a CLS row over the patches sums to 1 minus the attention kept on the CLS token
        torch.testing.assert_close(maps.flatten(3).sum(-1) + torch.stack(
            [vlm.attention(x, li)[:, :, 0, 0] for li in range(L)], 1), torch.ones(2, L, h))
    else:
        with pytest.raises(InputError, match="no class token"):
            H.head_attention_maps(vlm, x, query="cls")


def test_region_attention_matches_a_hand_computation(models):
    vlm = models["open_clip"]
    x = _images(3)
    boxes = torch.tensor([[0, 0, 16, 16], [8, 8, 24, 16], [16, 16, 32, 32]])
    masks = boxes_to_masks(boxes, (32, 32))
    t = H.region_attention(vlm, x, masks, batch_size=2, progress=False)
    assert len(t) == vlm.num_layers * vlm.heads_per_layer[0]
    assert list(t["ratio"]) == sorted(t["ratio"], reverse=True)
    maps = H.head_attention_maps(vlm, x).flatten(3)  # (B, L, h, 16)
    cov = torch.nn.functional.avg_pool2d(masks.float()[:, None], 8).flatten(1)  # (B, 16) patch coverage
    mass = (maps * cov[:, None, None]).sum(-1) / maps.sum(-1)
    ratio = (mass / cov.mean(1)[:, None, None]).mean(0)
    r = t.set_index(["layer", "head"])["ratio"]
    for li in range(vlm.num_layers):
        for hi in range(vlm.heads_per_layer[0]):
            assert r[(li, hi)] == pytest.approx(float(ratio[li, hi]), rel=1e-5)


def _perturbed(x):
    return (x * 0.5 + 0.25 * torch.rand_like(x)).clamp(0, 1)


@pytest.mark.parametrize("name", ["open_clip", "hf_siglip"])
def test_head_mask_sweep_table(models, name):
    vlm = models[name]
    x = _images(8, seed=1)
    xp = _perturbed(x)
    clf = torch.nn.functional.normalize(torch.randn(3, vlm.encode_text(["a"]).shape[1],
                                                    generator=torch.Generator().manual_seed(0)), dim=-1)
    labels = torch.arange(8) % 3
    text_emb = torch.nn.functional.normalize(vlm.embed_images(x, progress=False) + 0.1, dim=-1)
    metrics = {
        "clean": {"top1": H.zero_shot_accuracy_metric(x, labels, clf),
                  "i2t_R@1": H.recall_at_1_metric(x, text_emb, torch.arange(8))},
        "perturbed": {"top1": H.zero_shot_accuracy_metric(xp, labels, clf), "drift": H.drift_metric(x, xp)},
    }
    table = H.head_mask_sweep(vlm, metrics, progress=False)
    L, h = vlm.num_layers, vlm.heads_per_layer[0]
    assert list(table.columns) == ["layer", "head", "condition", "metric", "value", "baseline", "delta"]
    assert len(table) == L * h * 4
    torch.testing.assert_close(torch.tensor(table["delta"].to_numpy()),
                               torch.tensor((table["value"] - table["baseline"]).to_numpy()))
    # each row is the metric recomputed with exactly that head masked
    row = table[(table["layer"] == 1) & (table["head"] == 0) & (table["metric"] == "drift")].iloc[0]
    with vlm.mask_heads({1: [0]}):
        assert row["value"] == pytest.approx(metrics["perturbed"]["drift"](vlm), rel=1e-5)
    assert row["baseline"] == pytest.approx(metrics["perturbed"]["drift"](vlm), rel=1e-5)
    drift_rows = table[table.metric == "drift"]
    assert drift_rows["delta"].abs().max() > 0  # masking a head moves the embedding drift
    # critical heads: exactly the rows above the threshold, largest |delta| first
    thr = float(drift_rows["delta"].abs().median())
    crit = H.critical_heads(table, thr, condition="perturbed", metric="drift")
    assert len(crit) == int((drift_rows["delta"].abs() > thr).sum())
    assert list(crit["delta"].abs()) == sorted(crit["delta"].abs(), reverse=True)
    # the layer x head matrix and its figure
    M = H.per_head_scores(table, condition="perturbed", metric="drift")
    assert M.shape == (L, h) and not bool(torch.isnan(M).any())
    assert float(M[1, 0]) == pytest.approx(row["delta"])
    fig = plot_head_sweep(table, condition="perturbed", metric="drift")
    assert len(fig.axes) == 2  # heat map + colour bar
    with pytest.raises(InputError, match="pick one"):
        H.per_head_scores(table)


def test_mask_effect_and_head_mask_from_table(models):
    vlm = models["hf_clip"]
    x = _images(6, seed=2)
    xp = _perturbed(x)
    metric = H.drift_metric(x, xp)
    region = H.region_attention(vlm, x, boxes_to_masks(torch.tensor([[0, 0, 16, 32]] * 6), (32, 32)), progress=False)
    mask = H.head_mask_from_table(region, top=2)
    assert sum(len(v) for v in mask.values()) == 2
    eff = H.mask_effect(vlm, {"perturbed": metric}, mask)
    with vlm.mask_heads(mask):
        masked = metric(vlm)
    assert eff.loc[0, "value"] == pytest.approx(masked, rel=1e-5)
    assert eff.loc[0, "delta"] == pytest.approx(masked - metric(vlm), rel=1e-4, abs=1e-7)


def test_plot_head_maps(models):
    vlm = models["open_clip"]
    x = _images(1)
    maps = H.head_attention_maps(vlm, x)[0]
    fig = plot_head_maps(x[0], maps)
    assert len(fig.axes) == vlm.num_layers * vlm.heads_per_layer[0]
    wide = _images(1, h=32, w=64)  # centre crop: the overlay goes onto the central 32 columns only
    fig = plot_head_maps(wide[0], H.head_attention_maps(vlm, wide)[0], cfg=vlm.preprocess_cfg)
    heat = fig.axes[0].get_images()[1].get_array()
    assert heat.shape == (32, 64) and float(abs(heat[:, :16]).max()) == 0.0 and float(heat[:, 16:48].max()) == 1.0
