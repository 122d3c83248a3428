"""Contrastive training of small open_clip models on the toy world, and the checkpoint format.

Scenes are generated on the fly from ``(seed, index)``, so a run is reproducible from its config
alone. The model is an ``open_clip.CLIP`` built from a custom ``model_cfg``; the checkpoint is written
in open_clip's "local-dir" layout so that ``open_clip.create_model_and_transforms("local-dir:DIR")``
and ``open_clip.get_tokenizer("local-dir:DIR")`` load it::

    DIR/open_clip_config.json        {"model_cfg": ..., "preprocess_cfg": ...}
    DIR/open_clip_model.safetensors  the state dict (fp16 by default)
    DIR/training.json                config, steps, seed, wall time, held-out metrics, versions

CLI::

    python -m vlmkit.toyworld.train --config vlmkit/toyworld/configs/rn.json --out vlmkit/toyworld/checkpoints/rn
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..runtime import seed_everything
from ..schedules import apply_lr_factor, warmup_cosine
from .evaluate import RESERVED_SEEDS, evaluate
from .grammar import CaptionConfig, sample_caption
from .world import WorldConfig, render_spec, sample_spec, scene_rng

#: OpenAI CLIP normalisation, shared by every toy checkpoint.
MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class TrainConfig:
    """Everything a training run depends on.

    Attributes:
        name: Checkpoint name (``rn``, ``vit``, ...).
        model_cfg: open_clip ``model_cfg`` (``embed_dim``, ``vision_cfg``, ``text_cfg``, ...).
        image_size: Side of the rendered scenes (must match ``vision_cfg.image_size``).
        steps: Optimiser steps.
        batch_size: Scenes per step (one caption each).
        lr: Peak learning rate of AdamW.
        weight_decay: AdamW weight decay (matrices only; not norms, biases, embeddings' logit scale).
        warmup_frac: Share of steps of linear warm-up before the cosine decay.
        logit_scale_lr_mult: Learning-rate multiplier of the logit-scale parameter.
        seed: Training stream seed (scenes, captions, initialisation); must not be an evaluation seed.
        threads: ``torch.set_num_threads`` value.
        world: Overrides of :class:`~vlmkit.toyworld.world.WorldConfig`.
        captions: Overrides of :class:`~vlmkit.toyworld.grammar.CaptionConfig`.
        interpolation: Preprocess interpolation recorded in the checkpoint.
        eval_n: Held-out scenes per metric after training (0: skip).
        log_every: Steps between loss log lines.
        max_wall_s: Wall-clock budget in seconds: when set, the learning-rate schedule follows
            ``max(step / steps, elapsed / max_wall_s)`` and training ends when either reaches 1 (the
            steps actually done are recorded in ``training.json``). This makes the run's length depend
            on machine speed; leave it ``None`` for bit-reproducible runs.
        init_from: A checkpoint folder (this module's layout) whose weights start the run instead of
            a random initialisation: a warm restart with a fresh schedule. Its ``training.json`` is
            kept as ``init_from`` in the new one, so the whole chain of runs stays on record.
        text_from: A checkpoint folder whose text tower (token and position embeddings, transformer,
            final norm, projection) and logit scale replace this model's after ``init_from``. The two
            ``text_cfg`` and ``embed_dim`` must agree. Used to give a slow-learning tower a text space
            that already encodes the world's factors.
        text_lr_mult: Learning-rate multiplier of the text tower; ``0`` locks it (frozen, as in the
            reverse of LiT's locked-image tuning: Zhai et al., "LiT: Zero-Shot Transfer with
            Locked-image text Tuning", CVPR 2022), so only the image tower and logit scale learn.
        distill_from: A teacher checkpoint folder (any toy ``model_cfg`` with the same ``embed_dim``)
            whose normalised image embeddings the student's are pulled towards, on the same batch.
        distill_weight: Weight of the distillation term ``mean(1 - cos(student, teacher))`` added to
            the contrastive loss (``0``: off). Embedding distillation gives every image a dense target
            and speeds up a student whose contrastive signal alone is slow.
    """

    name: str = "toy"
    model_cfg: dict[str, Any] = field(default_factory=dict)
    image_size: int = 64
    steps: int = 1000
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup_frac: float = 0.05
    logit_scale_lr_mult: float = 10.0
    seed: int = 0
    threads: int = 2
    world: dict[str, Any] = field(default_factory=dict)
    captions: dict[str, Any] = field(default_factory=dict)
    interpolation: str = "bicubic"
    eval_n: int = 1000
    log_every: int = 50
    max_wall_s: float | None = None
    init_from: str | None = None
    text_from: str | None = None
    text_lr_mult: float = 1.0
    distill_from: str | None = None
    distill_weight: float = 0.0

    @classmethod
    def from_json(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """Read a config file (keys of this class) and apply ``overrides``."""
        data = json.loads(Path(path).read_text())
        data.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)} in {path}; expected {sorted(cls.__dataclass_fields__)}")
        return cls(**data)

    def world_config(self) -> WorldConfig:
        """The scene mixture."""
        d = dict(self.world)
        for k in ("n_objects_p", "fonts"):
            if k in d:
                d[k] = tuple(d[k])
        return WorldConfig(**d)

    def caption_config(self) -> CaptionConfig:
        """The caption mixture."""
        d = dict(self.captions)
        if "drop" in d:
            d["drop"] = tuple(d["drop"])
        return CaptionConfig(**d)

    def preprocess_cfg(self) -> dict[str, Any]:
        """The ``preprocess_cfg`` written beside the weights."""
        return {
            "size": self.image_size,
            "mean": list(MEAN),
            "std": list(STD),
            "interpolation": self.interpolation,
            "resize_mode": "squash",
        }


class SceneStream:
    """Training batches ``(images, captions)`` drawn from ``(seed, index)``, batch ``b`` = scenes ``b*B ... b*B+B-1``."""

    def __init__(self, seed: int, batch_size: int, size: int, world: WorldConfig, captions: CaptionConfig) -> None:
        self.seed, self.batch_size, self.size = seed, batch_size, size
        self.world, self.captions = world, captions

    def batch(self, b: int) -> tuple[torch.Tensor, list[str]]:
        """Batch ``b``: uint8 images ``(B, 3, H, W)`` and one caption per image."""
        imgs, caps = [], []
        for i in range(b * self.batch_size, (b + 1) * self.batch_size):
            scene = render_spec(sample_spec(scene_rng(self.seed, i), self.world), self.size)
            imgs.append(scene.image)
            caps.append(sample_caption(scene, scene_rng(self.seed, i, 1), self.captions))
        x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()  # (B, 3, H, W) uint8
        return x, caps


class CachedTokenizer:
    """open_clip's BPE tokenizer with a cache (the grammar repeats captions a lot)."""

    def __init__(self, context_length: int) -> None:
        from open_clip.tokenizer import SimpleTokenizer

        self.tok = SimpleTokenizer(context_length=context_length)
        self.cache: dict[str, torch.Tensor] = {}

    def __call__(self, texts: list[str]) -> torch.Tensor:
        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            for t, row in zip(missing, self.tok(missing)):
                if len(self.cache) < 500_000:
                    self.cache[t] = row
        return torch.stack([self.cache[t] if t in self.cache else self.tok([t])[0] for t in texts])


def build_model(model_cfg: dict[str, Any]) -> torch.nn.Module:
    """An ``open_clip.CLIP`` from a ``model_cfg`` dict, exactly as open_clip's factory builds it."""
    import open_clip

    cfg = copy.deepcopy(model_cfg)
    cfg.pop("custom_text", None)
    return open_clip.CLIP(**cfg)


def _read_weights(ckpt_dir: str | Path, what: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    f = Path(ckpt_dir) / "open_clip_model.safetensors"
    if not f.is_file():
        raise FileNotFoundError(f"{what}={str(ckpt_dir)!r}: no open_clip_model.safetensors in that folder")
    return {k: v.float() for k, v in load_file(str(f)).items()}


def load_weights(model: torch.nn.Module, ckpt_dir: str | Path) -> None:
    """Load a checkpoint folder's weights (fp16 or fp32 safetensors) into ``model`` in float32.

    Raises:
        FileNotFoundError: ``ckpt_dir`` has no ``open_clip_model.safetensors``.
        ValueError: The weights do not fit ``model`` (other ``model_cfg``).
    """
    sd = _read_weights(ckpt_dir, "init_from")
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ValueError(f"init_from={str(ckpt_dir)!r}: weights do not fit this model_cfg ({e})") from None


def is_text_param(name: str) -> bool:
    """Whether a parameter or buffer of ``open_clip.CLIP`` belongs to the text tower (or logit scale/bias)."""
    return not name.startswith("visual.")


def load_text_tower(model: torch.nn.Module, ckpt_dir: str | Path) -> None:
    """Copy the text tower and logit scale of a checkpoint folder into ``model`` (image tower untouched).

    Raises:
        FileNotFoundError: ``ckpt_dir`` has no weights.
        ValueError: The text towers differ in shape (other ``text_cfg`` or ``embed_dim``).
    """
    src = {k: v for k, v in _read_weights(ckpt_dir, "text_from").items() if is_text_param(k)}
    own = {k: v for k, v in model.state_dict().items() if is_text_param(k)}
    if set(src) != set(own):
        raise ValueError(
            f"text_from={str(ckpt_dir)!r}: text tower keys differ (missing {sorted(set(own) - set(src))[:3]}, "
            f"unexpected {sorted(set(src) - set(own))[:3]})"
        )
    bad = [k for k in own if own[k].shape != src[k].shape]
    if bad:
        raise ValueError(
            f"text_from={str(ckpt_dir)!r}: text tower shapes differ at {bad[:3]} "
            f"({tuple(src[bad[0]].shape)} vs {tuple(own[bad[0]].shape)}); text_cfg/embed_dim must match"
        )
    model.load_state_dict(src, strict=False)


def load_teacher(ckpt_dir: str | Path) -> torch.nn.Module:
    """A frozen toy checkpoint (eval mode, float32) built from its own ``open_clip_config.json``."""
    cfg_file = Path(ckpt_dir) / "open_clip_config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"distill_from={str(ckpt_dir)!r}: no open_clip_config.json in that folder")
    teacher = build_model(json.loads(cfg_file.read_text())["model_cfg"])
    teacher.load_state_dict(_read_weights(ckpt_dir, "distill_from"), strict=True)
    teacher.eval().requires_grad_(False)
    return teacher


def _param_groups(
    model: torch.nn.Module, lr: float, wd: float, ls_mult: float, text_mult: float = 1.0
) -> list[dict[str, Any]]:
    groups: dict[tuple[bool, float], list[torch.nn.Parameter]] = {}
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if n == "logit_scale":
            key = (False, lr * ls_mult)
        else:
            no_wd = p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "embedding" in n or "class_embedding" in n
            key = (not no_wd, lr * (text_mult if is_text_param(n) else 1.0))
        groups.setdefault(key, []).append(p)
    return [
        {"params": ps, "weight_decay": wd if decay else 0.0, "lr": g_lr, "base_lr": g_lr}
        for (decay, g_lr), ps in groups.items()
    ]


def clip_loss(img: torch.Tensor, txt: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of normalised ``(B, D)`` embeddings."""
    logits = logit_scale.exp().clamp(max=100.0) * img @ txt.T  # (B, B)
    target = torch.arange(len(img), device=img.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        model: The trained model (eval mode, float32).
        losses: Loss per step.
        wall_s: Training wall time in seconds (without the final evaluation).
        metrics: Held-out metrics (empty when ``eval_n == 0``).
        out_dir: Where the checkpoint was written, or ``None``.
    """

    model: torch.nn.Module
    losses: list[float]
    wall_s: float
    metrics: dict[str, float]
    out_dir: Path | None


def train(config: TrainConfig, out_dir: str | Path | None = None, progress: bool = True) -> TrainResult:
    """Train a model on the toy world and optionally write its checkpoint folder.

    Args:
        config: The run's configuration.
        out_dir: Checkpoint folder to write (created); ``None`` writes nothing.
        progress: Show a tqdm progress bar.

    Returns:
        A :class:`TrainResult`.

    Raises:
        ValueError: The seed is reserved for evaluation/export, or the config is inconsistent.
    """
    if config.seed in RESERVED_SEEDS:
        raise ValueError(f"seed={config.seed} is reserved for held-out evaluation/export; pick another")
    vis_size = config.model_cfg.get("vision_cfg", {}).get("image_size", config.image_size)
    if vis_size != config.image_size:
        raise ValueError(f"model image_size={vis_size} differs from config image_size={config.image_size}")
    if config.text_lr_mult < 0:
        raise ValueError(f"text_lr_mult={config.text_lr_mult}: expected >= 0 (0 locks the text tower)")
    if config.distill_weight < 0:
        raise ValueError(f"distill_weight={config.distill_weight}: expected >= 0")
    if config.distill_weight > 0 and config.distill_from is None:
        raise ValueError("distill_weight > 0 needs distill_from (a teacher checkpoint folder)")
    torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    model = build_model(config.model_cfg)
    if config.init_from is not None:
        load_weights(model, config.init_from)
    if config.text_from is not None:
        load_text_tower(model, config.text_from)
    if config.text_lr_mult == 0:
        for n, p in model.named_parameters():
            if is_text_param(n) and n != "logit_scale":
                p.requires_grad_(False)
    teacher = load_teacher(config.distill_from) if config.distill_weight > 0 else None
    model.train()
    ctx = config.model_cfg.get("text_cfg", {}).get("context_length", 77)
    tokenizer = CachedTokenizer(ctx)
    stream = SceneStream(config.seed, config.batch_size, config.image_size, config.world_config(), config.caption_config())
    groups = _param_groups(model, config.lr, config.weight_decay, config.logit_scale_lr_mult, config.text_lr_mult)
    opt = torch.optim.AdamW(groups, betas=(0.9, 0.98), eps=1e-6)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    losses: list[float] = []
    t0 = time.time()
    bar = tqdm(range(config.steps), desc=f"train {config.name}", disable=not progress, mininterval=5.0)
    for step in bar:
        # progress: by steps, or by time when a wall-clock budget is set (whichever is further)
        frac = step / config.steps
        if config.max_wall_s is not None:
            frac = max(frac, (time.time() - t0) / config.max_wall_s)
        if frac >= 1.0:
            print(f"stopping at step {step}: the wall-clock budget max_wall_s={config.max_wall_s} is spent", flush=True)
            break
        apply_lr_factor(opt, warmup_cosine(frac, config.warmup_frac, min_frac=1.0 / config.steps))
        x, caps = stream.batch(step)
        x = (x.float() / 255.0 - mean) / std  # (B, 3, H, W)
        tokens = tokenizer(caps)  # (B, ctx)
        img = F.normalize(model.encode_image(x), dim=-1)  # (B, D)
        with torch.set_grad_enabled(config.text_lr_mult > 0):  # a locked text tower needs no graph
            txt = F.normalize(model.encode_text(tokens), dim=-1)  # (B, D)
        loss = clip_loss(img, txt, model.logit_scale)
        if teacher is not None:
            with torch.no_grad():
                t_img = F.normalize(teacher.encode_image(x), dim=-1)  # (B, D)
            loss = loss + config.distill_weight * (1.0 - (img * t_img).sum(-1)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100.0))
        losses.append(loss.item())
        if progress and (step % config.log_every == 0 or step == config.steps - 1):
            bar.set_postfix(loss=f"{np.mean(losses[-config.log_every:]):.3f}", scale=f"{model.logit_scale.exp().item():.1f}")
        if progress and step % config.log_every == 0:
            print(f"step {step} loss {np.mean(losses[-config.log_every:]):.4f} "
                  f"scale {model.logit_scale.exp().item():.2f} t {time.time() - t0:.0f}s", flush=True)
    wall = time.time() - t0
    model.eval()
    metrics: dict[str, float] = {}
    if config.eval_n > 0:
        metrics = evaluate_model(model, config, n=config.eval_n)
    out = None
    if out_dir is not None:
        out = save_checkpoint(model, config, out_dir, losses=losses, wall_s=wall, metrics=metrics)
    return TrainResult(model=model, losses=losses, wall_s=wall, metrics=metrics, out_dir=out)


def evaluate_model(model: torch.nn.Module, config: TrainConfig, n: int = 1000) -> dict[str, float]:
    """Held-out metrics of an in-memory model (same preprocessing as the saved checkpoint)."""
    from open_clip.tokenizer import SimpleTokenizer

    ctx = config.model_cfg.get("text_cfg", {}).get("context_length", 77)
    tok = SimpleTokenizer(context_length=ctx)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)

    @torch.no_grad()
    def enc_img(x: torch.Tensor) -> torch.Tensor:
        return model.encode_image((x - mean) / std)

    @torch.no_grad()
    def enc_txt(texts: list[str]) -> torch.Tensor:
        return model.encode_text(tok(texts))

    return evaluate(enc_img, enc_txt, n=n, size=config.image_size)


def save_checkpoint(
    model: torch.nn.Module,
    config: TrainConfig,
    out_dir: str | Path,
    losses: list[float] | None = None,
    wall_s: float | None = None,
    metrics: dict[str, float] | None = None,
    fp16: bool = True,
) -> Path:
    """Write ``model`` in open_clip's local-dir layout plus ``training.json``.

    Returns:
        The folder.
    """
    import open_clip
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sd = {k: (v.half() if fp16 and v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(out / "open_clip_model.safetensors"))
    (out / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": config.model_cfg, "preprocess_cfg": config.preprocess_cfg()}, indent=2)
    )
    losses = losses or []
    info = {
        "name": config.name,
        "config": asdict(config),
        "steps": len(losses) if losses else config.steps,
        "steps_planned": config.steps,
        "seed": config.seed,
        "scenes_seen": config.steps * config.batch_size,
        "wall_time_s": None if wall_s is None else round(wall_s, 1),
        "final_loss": None if not losses else float(np.mean(losses[-50:])),
        "loss_curve_every_50": [round(float(np.mean(losses[i : i + 50])), 4) for i in range(0, len(losses), 50)],
        "held_out_metrics": metrics or {},
        "held_out_seed": sorted(RESERVED_SEEDS)[-1],
        "weights_dtype": "float16" if fp16 else "float32",
        "versions": {"torch": torch.__version__, "open_clip": open_clip.__version__, "python": platform.python_version()},
        "machine": f"{platform.machine()} {torch.get_num_threads()} threads, CPU",
    }
    if config.init_from is not None:
        prev = Path(config.init_from) / "training.json"
        info["init_from"] = json.loads(prev.read_text()) if prev.is_file() else {"path": config.init_from}
        info["steps_total"] = info["steps"] + int(info["init_from"].get("steps_total", info["init_from"].get("steps", 0)))
    for key in ("text_from", "distill_from"):
        src = getattr(config, key)
        if src is not None:
            prev = Path(src) / "training.json"
            prev_info = json.loads(prev.read_text()) if prev.is_file() else {}
            info[key] = {
                "path": src,
                "name": prev_info.get("name"),
                "steps_total": prev_info.get("steps_total", prev_info.get("steps")),
                "held_out_metrics": prev_info.get("held_out_metrics", {}),
            }
    (out / "training.json").write_text(json.dumps(info, indent=2))
    return out


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m vlmkit.toyworld.train --config CFG.json --out DIR [--steps N] [--seed S]``."""
    ap = argparse.ArgumentParser(description="Train a toy-world CLIP model (open_clip local-dir checkpoint).")
    ap.add_argument("--config", required=True, help="training config JSON (keys of TrainConfig)")
    ap.add_argument("--out", required=True, help="checkpoint folder to write")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--eval-n", type=int, default=None, dest="eval_n")
    ap.add_argument("--init-from", default=None, dest="init_from", help="checkpoint folder to warm-start from")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    cfg = TrainConfig.from_json(
        args.config, steps=args.steps, seed=args.seed, eval_n=args.eval_n, init_from=args.init_from
    )
    res = train(cfg, out_dir=args.out, progress=not args.no_progress)
    print(json.dumps({"wall_s": round(res.wall_s, 1), **res.metrics}, indent=2))


if __name__ == "__main__":
    main()
