"""FARE / TeCoA fine-tuning (vlmkit.robust): losses, frozen text tower, resume, determinism, saving."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vlmkit
from vlmkit.errors import InputError
from vlmkit.robust import (
    RobustConfig,
    finetune,
    frozen_parameters,
    image_tower_parameters,
    load_finetune_data,
    load_runs,
    parse_eps,
    provenance_label,
)

from _tiny import save_tiny_hf

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_DATA = {"kind": "toy-shapes", "n": 16, "n_eval": 8, "seed": 11}


def _cfg(tmp_path: Path, method: str = "fare", **kw) -> RobustConfig:
    base = dict(method=method, model="toy:rn", data=TINY_DATA, out=str(tmp_path / method), steps=4, batch_size=8,
                attack_steps=2, eval_attack_steps=1, eval_every=0, checkpoint_every=0, device="cpu", lr=1e-3, seed=0)
    base.update(kw)
    return RobustConfig(**base)


def _tower(res) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in image_tower_parameters(res.vlm).items()}


@pytest.mark.parametrize("method", ["fare", "tecoa"])
def test_loss_decreases_on_a_fixed_batch(tmp_path, method) -> None:
    # n == batch_size: every step trains on the same 8 images (in another order)
    data = {"kind": "toy-shapes", "n": 8, "n_eval": 4, "seed": 11}
    res = finetune(_cfg(tmp_path, method, data=data, steps=8, lr=2e-3, warmup_frac=0.0), progress=False)
    losses = [h["loss"] for h in res.history]
    assert len(losses) == 8
    assert sum(losses[-2:]) / 2 < 0.8 * sum(losses[:2]) / 2, losses


def test_fare_leaves_text_tower_bit_identical(tmp_path) -> None:
    before = {n: p.detach().clone() for n, p in frozen_parameters(vlmkit.load_model("toy:rn", device="cpu")).items()}
    res = finetune(_cfg(tmp_path, "fare", steps=2), progress=False)
    after = frozen_parameters(res.vlm)
    assert set(before) == set(after) and any(n.startswith("transformer.") for n in after)
    assert "logit_scale" in after
    assert all(torch.equal(before[n], after[n].detach()) for n in before)
    base_tower = image_tower_parameters(vlmkit.load_model("toy:rn", device="cpu"))
    assert any(not torch.equal(base_tower[n], p.detach()) for n, p in image_tower_parameters(res.vlm).items())
    # the saved folder too: the text tower's bits survive saving (float32 weights by default)
    loaded = vlmkit.load_model(res.spec, device="cpu")
    assert all(torch.equal(before[n], p) for n, p in frozen_parameters(loaded).items())


def test_resume_continues_the_same_run(tmp_path) -> None:
    full = finetune(_cfg(tmp_path / "a", "tecoa", checkpoint_every=1, eval_every=2), progress=False)
    cfg = _cfg(tmp_path / "b", "tecoa", checkpoint_every=1, eval_every=2)
    part = finetune(cfg, progress=False, stop_after=2)
    assert not part.finished and part.step == 2 and part.model_dir is None
    state = torch.load(Path(cfg.out) / "checkpoints" / "last.pt", weights_only=False)
    assert state["step"] == 2
    rest = finetune(cfg, progress=False)
    assert rest.finished and rest.step == 4
    assert [h["step"] for h in rest.history] == [1, 2, 3, 4]
    assert [h["loss"] for h in rest.history] == [h["loss"] for h in full.history]
    a, b = _tower(full), _tower(rest)
    assert all(torch.equal(a[n], b[n]) for n in a)
    # a checkpoint of another run is refused with a clear error
    with pytest.raises(InputError, match="another run"):
        finetune(_cfg(tmp_path / "b", "tecoa", lr=5e-4, checkpoint_every=1), progress=False)


def test_resume_restores_rng_state(tmp_path) -> None:
    cfg = _cfg(tmp_path, "fare", steps=2, checkpoint_every=1)
    finetune(cfg, progress=False, stop_after=1)
    saved = torch.load(Path(cfg.out) / "checkpoints" / "last.pt", weights_only=False)["torch_rng"]
    torch.manual_seed(12345)  # anything: resuming must restore the checkpoint's RNG state
    from vlmkit.robust import finetune as ft

    orig = torch.set_rng_state
    seen = []
    torch.set_rng_state = lambda s: (seen.append(s.clone()), orig(s))[1]  # type: ignore[assignment]
    try:
        ft(cfg, progress=False)
    finally:
        torch.set_rng_state = orig  # type: ignore[assignment]
    assert seen and torch.equal(seen[0], saved)


def test_deterministic_on_cpu(tmp_path) -> None:
    a = finetune(_cfg(tmp_path / "a", "fare", steps=2), progress=False)
    b = finetune(_cfg(tmp_path / "b", "fare", steps=2), progress=False)
    c = finetune(_cfg(tmp_path / "c", "fare", steps=2, seed=1), progress=False)
    ta, tb, tc = _tower(a), _tower(b), _tower(c)
    assert all(torch.equal(ta[n], tb[n]) for n in ta)
    assert not all(torch.equal(ta[n], tc[n]) for n in ta)


def test_saved_model_loads_with_provenance_in_result_rows(tmp_path) -> None:
    res = finetune(_cfg(tmp_path, "tecoa", steps=2, eval_every=2), progress=False)
    assert res.spec.startswith("open_clip:local-dir:")
    prov = json.loads((res.model_dir / "robust.json").read_text())
    assert prov["method"] == "tecoa" and prov["base_model"] == "toy:rn" and prov["steps"] == 2
    assert prov["eps"] == pytest.approx(4 / 255) and prov["seed"] == 0 and "toy-shapes" in prov["data"]
    assert {"clean_acc", "robust_acc"} <= set(prov["final"])
    vlm = vlmkit.load_model(res.spec, device="cpu")
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(vlm.encode_image(x), res.vlm.encode_image(x), atol=1e-5)
    from vlmkit.evaluate import evaluate_grid
    from vlmkit.toyworld.sets import load_toy_sets

    ds = load_toy_sets(tmp_path / "data", n=8)["toy-shapes"]
    table = evaluate_grid([vlm], ds, [], out_dir=tmp_path / "eval", device="cpu", progress=False)
    assert set(table["provenance"]) == {provenance_label(prov)}
    assert "tecoa(eps=4/255, steps=2) of toy:rn" in provenance_label(prov)


def test_hf_family_fare_and_save(tmp_path) -> None:
    folder = save_tiny_hf("clip", tmp_path / "hf")
    cfg = _cfg(tmp_path, "fare", model=f"hf:{folder}", steps=2, data={**TINY_DATA, "size": 32}, eval_every=2)
    before = {n: p.detach().clone() for n, p in frozen_parameters(vlmkit.load_model(cfg.model, device="cpu")).items()}
    res = finetune(cfg, progress=False)
    assert all(n.startswith(("vision_model.", "visual_projection.")) for n in image_tower_parameters(res.vlm))
    assert all(torch.equal(before[n], p.detach()) for n, p in frozen_parameters(res.vlm).items())
    assert res.spec == f"hf:{res.model_dir}"
    vlm = vlmkit.load_model(res.spec, device="cpu")
    assert vlm.meta["robust"]["method"] == "fare"
    assert vlm.preprocess_cfg == res.vlm.preprocess_cfg
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(vlm.encode_image(x), res.vlm.encode_image(x), atol=1e-5)
        assert torch.allclose(vlm.encode_text(["a star"]), res.vlm.encode_text(["a star"]), atol=1e-6)


def test_resample_codes_round_trip_through_the_hf_loader() -> None:
    from PIL import Image

    from vlmkit.models.hf import preprocess_config
    from vlmkit.robust.towers import PIL_RESAMPLE_CODES

    for name, code in PIL_RESAMPLE_CODES.items():
        assert preprocess_config("clip", 32, {"resample": code}).interpolation == name
    assert PIL_RESAMPLE_CODES["bicubic"] == Image.Resampling.BICUBIC  # what transformers' processors read


def test_warmup_cosine_schedule_is_shared_with_the_toy_trainer() -> None:
    import vlmkit.toyworld
    from vlmkit.schedules import apply_lr_factor, warmup_cosine

    assert warmup_cosine(0.0, 0.1, min_frac=0.01) == pytest.approx(0.1)  # the first step is not at rate 0
    assert warmup_cosine(0.05, 0.1) == pytest.approx(0.5)
    assert warmup_cosine(0.1, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(0.55, 0.1) == pytest.approx(0.5)  # half-way through the cosine
    assert warmup_cosine(1.0, 0.1) == pytest.approx(0.0, abs=1e-12)
    assert warmup_cosine(0.0, 0.0) == 1.0
    with pytest.raises(InputError, match="warmup_frac"):
        warmup_cosine(0.5, 1.5)
    opt = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 2.0, "base_lr": 2.0}])
    apply_lr_factor(opt, 0.25)
    assert opt.param_groups[0]["lr"] == 0.5
    assert callable(vlmkit.toyworld.train) and vlmkit.toyworld.train.__module__ == "vlmkit.toyworld.train"


def test_config_errors(tmp_path) -> None:
    assert parse_eps("4/255") == pytest.approx(4 / 255)
    assert RobustConfig(method="FARE", model="toy:rn", eps="2/255").eps == pytest.approx(2 / 255)
    with pytest.raises(InputError, match="method"):
        RobustConfig(method="trades", model="toy:rn")
    with pytest.raises(InputError, match="eps"):
        RobustConfig(method="fare", model="toy:rn", eps="four")
    with pytest.raises(InputError, match="steps"):
        RobustConfig(method="fare", model="toy:rn", steps=0)
    with pytest.raises(InputError, match="unknown keys"):
        RobustConfig.from_dict({"method": "fare", "model": "toy:rn", "epochs": 3})
    with pytest.raises(InputError, match="data kind"):
        load_finetune_data({"kind": "coco"})
    with pytest.raises(InputError, match="does not exist"):
        load_runs(tmp_path / "missing.yaml")
    from types import SimpleNamespace

    with pytest.raises(InputError, match="family"):
        image_tower_parameters(SimpleNamespace(family="conse", name="conse:default"))


def test_cli_runs_a_params_file(tmp_path) -> None:
    params = tmp_path / "robust.yaml"
    params.write_text(
        "defaults: {model: 'toy:rn', eps: 4/255, steps: 1, batch_size: 4, attack_steps: 1, eval_attack_steps: 1,\n"
        "           device: cpu, data: {kind: toy-shapes, n: 8, n_eval: 4}}\n"
        "runs:\n  - {name: rn-fare, method: fare}\n  - {name: rn-tecoa, method: tecoa}\n")
    out = subprocess.run([sys.executable, "-m", "vlmkit", "robust", str(params), "--only", "rn-tecoa",
                          "--out-root", str(tmp_path / "runs"), "--no-progress"],
                         capture_output=True, text=True, timeout=300, env={**__import__("os").environ,
                                                                           "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    line = json.loads(out.stdout.strip().splitlines()[-1])
    assert line["run"] == "rn-tecoa" and Path(line["model_dir"], "robust.json").is_file()
    assert not (tmp_path / "runs" / "rn-fare").exists()


def test_shipped_params_files_parse() -> None:
    root = Path(__file__).resolve().parents[1] / "params"
    for f in sorted((root / "robust").glob("*.yaml")):
        runs = load_runs(f)
        assert runs and all(r.method in ("fare", "tecoa") for r in runs), f
