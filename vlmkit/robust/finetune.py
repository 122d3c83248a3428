"""The adversarial fine-tuning loop: resumable, deterministic on CPU, one step = attack + update.

Each step ``s``:

1. batch ``s`` of the data (a pure function of ``(seed, s)``, see :mod:`vlmkit.robust.data`);
2. the method's PGD on the current image tower, random start from a generator seeded by ``(seed, s)``;
3. one AdamW update of the image tower on the method's loss at the adversarial images
   (learning rate: linear warm-up, then cosine decay).

Normalisation layers stay in eval mode (frozen BatchNorm statistics in ResNet towers, as the attack
sees them) and nothing else in the model is touched: text tower, logit scale and bias keep their bits.
Every ``checkpoint_every`` steps the image tower, the optimiser state, the step, the log and torch's
RNG state go to ``out/checkpoints/last.pt`` (atomically); :func:`finetune` picks it up and continues
the same run. Because no randomness is carried between steps except through that file, a resumed
run is bit-identical to an uninterrupted one on CPU.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from vlmkit.attacks import PGD
from vlmkit.attacks.objectives import EmbeddingDrift, ZeroShotCE
from vlmkit.errors import InputError
from vlmkit.results import atomic_write
from vlmkit.robust.config import RobustConfig
from vlmkit.robust.data import FinetuneData, load_finetune_data
from vlmkit.robust.methods import Method, make_method
from vlmkit.robust.towers import image_tower_parameters, save_finetuned
from vlmkit.runtime import autocast, make_generator, resolve_device, seed_everything
from vlmkit.schedules import apply_lr_factor, warmup_cosine

CHECKPOINT = "last.pt"


@dataclass
class FinetuneResult:
    """What :func:`finetune` returns.

    Attributes:
        vlm: The fine-tuned model (eval mode).
        history: One dict per step (``step``, ``loss``, ``lr``, and held-out metrics where evaluated).
        model_dir: Folder of the saved model (``None`` while unfinished).
        step: Steps done.
        finished: Whether all ``config.steps`` are done.
    """

    vlm: Any
    history: list[dict[str, Any]]
    model_dir: Path | None
    step: int
    finished: bool

    @property
    def spec(self) -> str | None:
        """The :func:`vlmkit.load_model` spec of the saved model (``open_clip:local-dir:...`` / ``hf:...``)."""
        from vlmkit.robust.towers import read_provenance

        prov = read_provenance(self.model_dir) if self.model_dir is not None else None
        return None if prov is None else prov["load_spec"]


def _to_float(x_u8: torch.Tensor, device: torch.device) -> torch.Tensor:
    return x_u8.to(device).float() / 255.0  # (B, 3, H, W) in [0, 1]


@torch.no_grad()
def _encode(vlm: Any, x: torch.Tensor, normalize: bool, bs: int) -> torch.Tensor:
    return torch.cat([vlm.encode_image(x[i:i + bs], normalize=normalize).float() for i in range(0, len(x), bs)])


def heldout_metrics(vlm: Any, method: Method, data: FinetuneData, config: RobustConfig,
                    device: torch.device) -> dict[str, float]:
    """Clean and PGD accuracy (at ``config.eps``) on the held-out images, and FARE's embedding distance.

    ``clean_acc``/``robust_acc``: zero-shot accuracy with the run's class text embeddings (labelled
    data); ``adv_l2``: mean ``‖φ_θ(x+δ) − φ_org(x)‖²`` under a PGD on that distance (FARE only).
    """
    x = _to_float(data.eval_images, device)  # (M, 3, H, W)
    bs = config.batch_size
    out: dict[str, float] = {}
    if data.labelled and method.text_emb is not None:
        y = data.eval_labels.to(device)
        text = method.text_emb.to(device)
        pgd = PGD(ZeroShotCE(text), eps=config.eps, alpha=config.eps / 4, steps=config.eval_attack_steps,
                  norm=config.norm, seed=config.seed, amp_dtype=config.amp_dtype)
        clean_ok, adv_ok = 0, 0
        for i in range(0, len(x), bs):
            xb, yb = x[i:i + bs], y[i:i + bs]
            with torch.no_grad():
                clean_ok += int((vlm.similarity(vlm.encode_image(xb), text).argmax(1) == yb).sum())
            xa = pgd(vlm, xb, {"labels": yb})
            with torch.no_grad():
                adv_ok += int((vlm.similarity(vlm.encode_image(xa), text).argmax(1) == yb).sum())
        out.update(clean_acc=clean_ok / len(x), robust_acc=adv_ok / len(x))
    if method.name == "fare":
        ref = _encode(method.original, x, False, bs)  # (M, D)
        pgd = PGD(EmbeddingDrift("l2"), eps=config.eps, alpha=config.eps / 4, steps=config.eval_attack_steps,
                  norm=config.norm, seed=config.seed, amp_dtype=config.amp_dtype)
        d = []
        for i in range(0, len(x), bs):
            xa = pgd(vlm, x[i:i + bs], {"clean_emb": ref[i:i + bs]})
            d.append((_encode(vlm, xa, False, bs) - ref[i:i + bs]).pow(2).sum(-1))
        out["adv_l2"] = float(torch.cat(d).mean())
    return out


def _param_groups(params: dict[str, torch.nn.Parameter], lr: float, wd: float) -> list[dict[str, Any]]:
    decay = [p for n, p in params.items() if p.ndim >= 2 and "bn" not in n and "norm" not in n]
    rest = [p for n, p in params.items() if not (p.ndim >= 2 and "bn" not in n and "norm" not in n)]
    return [{"params": decay, "weight_decay": wd, "lr": lr, "base_lr": lr},
            {"params": rest, "weight_decay": 0.0, "lr": lr, "base_lr": lr}]


def _fingerprint(config: RobustConfig) -> dict[str, Any]:
    """The settings a resumed run must share with the checkpoint (everything but bookkeeping)."""
    d = config.to_dict()
    for k in ("checkpoint_every", "eval_every", "device", "out", "name", "fp16_weights"):
        d.pop(k, None)
    return json.loads(json.dumps(d, default=str))


def _save_checkpoint(path: Path, step: int, tower: dict[str, torch.nn.Parameter], opt: torch.optim.Optimizer,
                     history: list[dict[str, Any]], config: RobustConfig, wall_s: float) -> None:
    state = {"step": step, "tower": {n: p.detach().cpu() for n, p in tower.items()}, "optimizer": opt.state_dict(),
             "torch_rng": torch.get_rng_state(), "history": history, "config": _fingerprint(config),
             "wall_s": wall_s}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def _write_log(path: Path, history: list[dict[str, Any]]) -> None:
    keys = list(dict.fromkeys(k for h in history for k in h))

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(history)

    atomic_write(path, write)


def finetune(config: RobustConfig, *, progress: bool = True, stop_after: int | None = None,
             resume: bool = True, data: FinetuneData | None = None) -> FinetuneResult:
    """Run (or resume) one FARE/TeCoA fine-tuning.

    Args:
        config: The run (see :class:`RobustConfig`).
        progress: tqdm bar with loss and the latest held-out clean/robust accuracy.
        stop_after: Stop (after writing a checkpoint) once this many steps are done in total, as if
            interrupted; a later call resumes.
        resume: Continue from ``out/checkpoints/last.pt`` when it exists (else it is ignored and overwritten).
        data: Pre-built data (default: from ``config.data``).

    Returns:
        A :class:`FinetuneResult`; when finished, the model is saved to ``out/model`` with ``robust.json``.

    Raises:
        InputError: Bad config, data without labels for TeCoA, or a checkpoint from another config.
    """
    from vlmkit.models import load_model

    seed_everything(config.seed)
    device = resolve_device(config.device)
    out = Path(config.out)
    ckpt_path = out / "checkpoints" / CHECKPOINT
    vlm = load_model(config.model, device=device)
    vlm.check_inputs = False
    data = data if data is not None else load_finetune_data(config.data, seed=config.seed)
    method = make_method(config.method, vlm, data.classnames, config.templates)
    tower = image_tower_parameters(vlm)
    for p in tower.values():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(_param_groups(tower, config.lr, config.weight_decay), betas=(0.9, 0.999))
    history: list[dict[str, Any]] = []
    start, wall_before = 0, 0.0
    if resume and ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if state["config"] != _fingerprint(config):
            diff = sorted(k for k in state["config"] if state["config"].get(k) != _fingerprint(config).get(k))
            raise InputError(f"checkpoint {str(ckpt_path)!r} belongs to another run (differs in {diff}); "
                             "use another out folder or resume=False")
        with torch.no_grad():
            for n, p in tower.items():
                p.copy_(state["tower"][n].to(device))
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        start, history, wall_before = int(state["step"]), list(state["history"]), float(state.get("wall_s", 0.0))
    t0 = time.time()
    last_eval: dict[str, float] = {}
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, desc=f"{config.method} {config.name}",
               disable=not progress)
    step = start
    for step in bar:
        apply_lr_factor(opt, warmup_cosine(step / config.steps, config.warmup_frac, min_frac=1.0 / config.steps))
        x_u8, y = data.batch(step, config.batch_size)
        x = _to_float(x_u8, device)  # (B, 3, H, W)
        batch = method.prepare(vlm, x, y)
        gen = make_generator(config.seed * 1_000_003 + step + 1, device)
        x_adv = method.attack(vlm, x, batch, eps=config.eps, alpha=config.alpha, steps=config.attack_steps,
                              norm=config.norm, generator=gen, amp_dtype=config.amp_dtype)
        with torch.enable_grad(), autocast(device, config.amp_dtype):
            loss = method.loss(vlm, x_adv, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        row: dict[str, Any] = {"step": step + 1, "loss": float(loss.detach()), "lr": opt.param_groups[0]["lr"]}
        done = step + 1
        if done == config.steps or (config.eval_every and done % config.eval_every == 0):
            last_eval = heldout_metrics(vlm, method, data, config, device)
            row.update(last_eval)
        history.append(row)
        bar.set_postfix(loss=f"{float(loss.detach()):.4g}", **{k: f"{v:.3f}" for k, v in last_eval.items()})
        interrupted = stop_after is not None and done >= stop_after and done < config.steps
        if interrupted or (config.checkpoint_every and done % config.checkpoint_every == 0):
            _save_checkpoint(ckpt_path, done, tower, opt, history, config, wall_before + time.time() - t0)
            _write_log(out / "log.csv", history)
        if interrupted:
            for p in tower.values():
                p.requires_grad_(False)
            return FinetuneResult(vlm, history, None, done, False)
    for p in tower.values():
        p.requires_grad_(False)
    wall = wall_before + time.time() - t0
    if start >= config.steps and history:  # already finished earlier: nothing to redo
        model_dir = out / "model"
        if model_dir.is_dir():
            return FinetuneResult(vlm, history, model_dir, config.steps, True)
    final = {k: v for k, v in history[-1].items() if k not in ("step", "lr")} if history else {}
    base_meta = vlm.meta.get("training", {}) if isinstance(vlm.meta, dict) else {}
    provenance = {
        "method": config.method, "base_model": config.model, "eps": config.eps, "norm": config.norm,
        "attack_steps": config.attack_steps, "attack_alpha": config.alpha, "steps": config.steps,
        "batch_size": config.batch_size, "lr": config.lr, "weight_decay": config.weight_decay,
        "data": data.name, "seed": config.seed, "amp_dtype": config.amp_dtype, "wall_time_s": round(wall, 1),
        "device": str(device), "final": final, "config": config.to_dict(),
        "base_training_steps": base_meta.get("steps_total", base_meta.get("steps")),
    }
    _save_checkpoint(ckpt_path, config.steps if history else step, tower, opt, history, config, wall)
    _write_log(out / "log.csv", history)
    model_dir = save_finetuned(vlm, out / "model", provenance, fp16=config.fp16_weights)
    return FinetuneResult(vlm, history, model_dir, config.steps, True)
