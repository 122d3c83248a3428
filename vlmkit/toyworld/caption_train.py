"""Training and held-out evaluation of the toy captioner (``toycap:``), and its training CLI.

* evaluation: :func:`evaluate_captioner` (CHAIR-i, CHAIR-s, object recall, exact match, yes/no
  accuracy on held-out scenes of :func:`caption_scenes`), with :func:`hallucination_counts` and
  :func:`mentioned_shapes`;
* training: :data:`DEFAULT_CONFIG` and :func:`train_captioner`, which writes a captioner folder that
  :func:`vlmkit.toyworld.captioning.load_captioner_dir` loads;
* CLI: ``python -m vlmkit.toyworld.caption_train --config vlmkit/toyworld/configs/toycap_rn.json
  --out vlmkit/toyworld/captioner/rn`` (:func:`main`).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..schedules import apply_lr_factor, warmup_cosine
from .caption_net import (
    CaptionDecoder,
    ImageHead,
    file_sha256,
    frozen_tokens,
    load_tower,
    tower_kind,
)
from .caption_text import (
    BOS,
    DESCRIBE_PROMPT,
    EOS,
    PAD,
    POSITION_ORDER,
    QUESTION_FORMAT,
    QUESTION_TEMPLATES,
    SPECIALS,
    Vocabulary,
    default_words,
    question_prompt,
    sample_question,
    target_caption,
)
from .captioning import ToyCaptioner
from .evaluate import EVAL_SEED, RESERVED_SEEDS
from .grammar import visible_objects
from .world import SHAPES, Scene, render_spec, sample_spec, scene_rng

# sub-streams of the evaluation seed used here (evaluate.py uses 0, 2, 3, 4)
_STREAM_SCENES, _STREAM_QUESTIONS = 11, 12


# ----------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------


def mentioned_shapes(caption: str) -> set[str]:
    """Shape words a caption mentions as objects; quoted text (a transcribed sign) is not a mention."""
    return set(re.findall(r"[a-z]+", re.sub(r'"[^"]*"', " ", caption.lower()))) & set(SHAPES)


def caption_scenes(n: int, seed: int = EVAL_SEED) -> list[Scene]:
    """``n`` held-out scenes of the default world mixture (sub-stream 11 of ``seed``)."""
    return [render_spec(sample_spec(scene_rng(seed, i, _STREAM_SCENES))) for i in range(n)]


def _stack(scenes: Sequence[Scene]) -> torch.Tensor:
    return torch.from_numpy(np.stack([s.image for s in scenes])).permute(0, 3, 1, 2).float().div_(255.0)


def hallucination_counts(captions: Sequence[str], scenes: Sequence[Scene]) -> dict[str, float]:
    """CHAIR-i, CHAIR-s and object recall over the shape vocabulary.

    CHAIR (Rohrbach et al., "Object Hallucination in Image Captioning", EMNLP 2018): a mentioned
    shape (:func:`mentioned_shapes`, unique per caption) is hallucinated when no object of that shape
    is drawn with any pixel showing; CHAIR-i = hallucinated mentions / all mentions, CHAIR-s = share
    of captions with at least one hallucination. Object recall = ground-truth shapes mentioned / all
    ground-truth shapes, where ground truth is the set of shapes of the visible objects
    (:func:`~vlmkit.toyworld.grammar.visible_objects`, ≥ 35% of their pixels shown), pooled over scenes.
    """
    mentions = halluc = caps_h = gt_total = gt_hit = 0
    for cap, scene in zip(captions, scenes):
        said = mentioned_shapes(cap)
        drawn = {o.shape for o in scene.objects if o.visible.any()}
        gt = {o.shape for o in visible_objects(scene)}
        bad = said - drawn
        mentions += len(said)
        halluc += len(bad)
        caps_h += bool(bad)
        gt_total += len(gt)
        gt_hit += len(gt & said)
    return {
        "chair_i": halluc / mentions if mentions else 0.0,
        "chair_s": caps_h / len(captions) if len(captions) else 0.0,
        "object_recall": gt_hit / gt_total if gt_total else 1.0,
        "n_mentions": float(mentions),
        "n_gt_objects": float(gt_total),
    }


def evaluate_captioner(model: ToyCaptioner, n: int = 500, seed: int = EVAL_SEED, batch_size: int = 100,
                       num_beams: int = 1) -> dict[str, float]:
    """Held-out caption and yes/no quality on ``n`` scenes of ``seed``.

    Returns:
        ``chair_i``, ``chair_s``, ``object_recall`` (:func:`hallucination_counts`), ``exact_match``
        (share of captions equal to :func:`target_caption`), ``yesno_acc`` (one question per scene
        from :func:`sample_question`, answered by the larger :meth:`ToyCaptioner.option_logliks` of
        ``yes`` / ``no``), ``yes_rate`` (share of ground-truth ``yes``), ``n_scenes``,
        ``n_mentions``, ``n_gt_objects``.
    """
    if not isinstance(n, int) or n < 1:
        raise InputError(f"n={n!r} must be a positive int")
    scenes = caption_scenes(n, seed)
    qa = [sample_question(s, scene_rng(seed, i, _STREAM_QUESTIONS)) for i, s in enumerate(scenes)]
    captions: list[str] = []
    correct = 0
    for i in range(0, n, batch_size):
        x = _stack(scenes[i : i + batch_size])
        captions += model.generate(x, num_beams=num_beams)
        chunk = qa[i : i + batch_size]
        correct += sum(a == t for a, (_, t) in zip(model.answer(x, [q for q, _ in chunk]), chunk))
    out = hallucination_counts(captions, scenes)
    out["exact_match"] = float(np.mean([c == target_caption(s) for c, s in zip(captions, scenes)]))
    out["yesno_acc"] = correct / n
    out["yes_rate"] = float(np.mean([t == "yes" for _, t in qa]))
    out["n_scenes"] = float(n)
    return {k: round(float(v), 4) for k, v in out.items()}


# ----------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------

#: Defaults of a training config (keys of ``configs/toycap_*.json``).
DEFAULT_CONFIG: dict[str, Any] = {
    "name": "rn",
    "tower": "rn",
    "train_blocks": 2,
    "width": 128,
    "layers": 3,
    "heads": 4,
    "mlp_ratio": 4.0,
    "max_len": 64,
    "seed": 2718,
    "steps": 2200,
    "batch_size": 48,
    "question_weight": 2.0,
    "questions_per_image": 2,
    "aux_weight": 1.0,
    "lr": 2e-3,
    "image_lr_mult": 0.5,
    "weight_decay": 0.05,
    "warmup_frac": 0.05,
    "max_wall_s": None,
    "threads": 1,
    "eval_n": 500,
    "log_every": 50,
}


def _scene_batch(seed: int, start: int, n: int) -> tuple[torch.Tensor, list[Scene]]:
    """Scenes ``start ... start + n - 1`` of the training stream ``seed`` and their images ``(n, 3, H, W)`` in [0, 1]."""
    scenes = [render_spec(sample_spec(scene_rng(seed, i))) for i in range(start, start + n)]
    return _stack(scenes), scenes


def _patch_labels(scenes: Sequence[Scene], grid: int, min_cover: float = 0.3) -> torch.Tensor:
    """Ground truth of the auxiliary loss: per patch, the shape on top of it.

    A patch is labelled with the shape of the object covering the largest share of its pixels (visible
    pixels only) when that share is at least ``min_cover``, else "none" (index ``len(SHAPES)``).

    Returns:
        ``(B, grid * grid)`` long.
    """
    patch = np.full((len(scenes), grid * grid), len(SHAPES), dtype=np.int64)
    for b, scene in enumerate(scenes):
        best = np.full(grid * grid, min_cover - 1e-9)
        for o in scene.objects:
            h, w = o.visible.shape
            cov = o.visible.reshape(grid, h // grid, grid, w // grid).mean(axis=(1, 3)).reshape(-1)
            take = cov > best
            patch[b, take] = SHAPES.index(o.shape)
            best[take] = cov[take]
    return torch.from_numpy(patch)


def _batch_ids(seqs: Sequence[list[int]], n_prompt: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), PAD, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.bool)
    for i, (s, p) in enumerate(zip(seqs, n_prompt)):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, p : len(s)] = True
    return ids, mask


def _seq_loss(decoder: CaptionDecoder, mem_kv: list, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    logits = decoder(ids[:, :-1], mem_kv)  # (B, T-1, V)
    nll = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")  # (B, T-1)
    m = mask[:, 1:].float()
    return (nll * m).sum() / m.sum()


def train_captioner(config: dict[str, Any], out: Path | str | None = None, progress: bool = True) -> dict[str, Any]:
    """Train a captioner on the toy world and write its folder.

    Recipe: ``steps`` AdamW steps; step ``t`` renders scenes ``t * batch_size ... (t + 1) * batch_size
    - 1`` of the stream ``seed`` (never an evaluation seed), runs the frozen part of the tower, then the
    captioner's own copies of its last ``train_blocks`` blocks and ``ln_post`` (initialised from
    the toy checkpoint, learning rate × ``image_lr_mult``), and trains on two sequences per scene: the caption
    (``<bos> describe: caption <eos>``, :func:`target_caption`) and one yes/no question (``<bos>
    question: ... answer: yes|no <eos>``, :func:`sample_question`). The loss is the token
    cross-entropy of the targets (prompt tokens excluded): caption + ``question_weight`` × question
    + ``aux_weight`` × the per-patch shape cross-entropy of a linear read-out of the image tokens
    (:func:`_patch_labels`; the read-out is not shipped). Learning rate: linear
    warm-up then cosine decay (:func:`vlmkit.schedules.warmup_cosine`); gradient norm clipped at 1.
    With ``max_wall_s`` set, progress is ``max(step / steps, elapsed / max_wall_s)`` as in
    :func:`vlmkit.toyworld.train.train`, so the run ends early on a slow machine (the steps done are
    recorded); without it the run is deterministic.

    Args:
        config: Keys of :data:`DEFAULT_CONFIG` (missing keys take the defaults).
        out: Folder to write (``model.safetensors``, ``config.json``, ``training.json``); ``None``: none.
        progress: Print progress lines.

    Returns:
        The training record (what ``training.json`` holds), with the model under ``"model"``.

    Raises:
        InputError: Unknown config keys, or a reserved seed.
    """
    import open_clip
    from safetensors.torch import save_file

    from . import checkpoint_dir

    unknown = set(config) - set(DEFAULT_CONFIG)
    if unknown:
        raise InputError(f"config has unknown keys {sorted(unknown)}; expected some of {sorted(DEFAULT_CONFIG)}")
    cfg = {**DEFAULT_CONFIG, **config}
    if cfg["seed"] in RESERVED_SEEDS:
        raise InputError(f"seed={cfg['seed']} is reserved for held-out evaluation/export; pick another")

    def log(msg: str) -> None:
        if progress:
            print(msg, flush=True)

    torch.set_num_threads(int(cfg["threads"]))
    torch.manual_seed(int(cfg["seed"]))
    t_start = time.time()
    tdir = checkpoint_dir(cfg["tower"])
    tower = load_tower(tdir)
    vocab = Vocabulary(default_words())
    side = tower.image_size[0] if isinstance(tower.image_size, (tuple, list)) else tower.image_size
    with torch.no_grad():
        probe = ImageHead(tower, int(cfg["train_blocks"])).eval()(frozen_tokens(tower, torch.zeros(1, 3, side, side),
                                                                                  int(cfg["train_blocks"])))
    n_tokens, feat_dim = int(probe.shape[1]), int(probe.shape[2])
    model_cfg = {
        "format": 1,
        "image_size": int(side),
        "tower": {"spec": f"toy:{cfg['tower']}", "name": cfg["tower"], "kind": tower_kind(tower),
                  "file": "open_clip_model.safetensors",
                  "sha256": file_sha256(tdir / "open_clip_model.safetensors")},
        "train_blocks": int(cfg["train_blocks"]),
        "feat_dim": feat_dim,
        "n_tokens": n_tokens,
        "decoder": {"width": cfg["width"], "layers": cfg["layers"], "heads": cfg["heads"],
                    "mlp_ratio": cfg["mlp_ratio"], "max_len": cfg["max_len"]},
        "prompts": {"describe": DESCRIBE_PROMPT, "question": QUESTION_FORMAT},
        "question_templates": QUESTION_TEMPLATES,
        "position_order": list(POSITION_ORDER),
        "vocab": vocab.tokens[len(SPECIALS):],
    }
    model = ToyCaptioner(tower, model_cfg, cfg["name"])
    dec, head = model.decoder, model.image
    grid = math.isqrt(n_tokens - 1)
    # training-only linear read-outs of the image tokens (dense auxiliary supervision; not shipped)
    aux = nn.Linear(feat_dim, len(SHAPES) + 1)  # per-patch shape read-out
    groups: list[dict[str, Any]] = []
    for mod, mult in ((dec, 1.0), (head, float(cfg["image_lr_mult"])), (aux, 1.0)):
        named = list(mod.named_parameters())
        wd = [p for n_, p in named if p.ndim >= 2 and "pos" not in n_ and "tok" not in n_]
        no_wd = [p for n_, p in named if not (p.ndim >= 2 and "pos" not in n_ and "tok" not in n_)]
        for ps, w in ((wd, cfg["weight_decay"]), (no_wd, 0.0)):
            if ps:
                groups.append({"params": ps, "weight_decay": w, "base_lr": cfg["lr"] * mult, "lr": cfg["lr"] * mult})
    opt = torch.optim.AdamW(groups, betas=(0.9, 0.98), eps=1e-8)
    params = [p for g in groups for p in g["params"]]
    describe_ids = [BOS, *vocab.encode(DESCRIBE_PROMPT)]
    bs, steps, every = int(cfg["batch_size"]), int(cfg["steps"]), int(cfg["log_every"])
    cap_losses: list[float] = []
    q_losses: list[float] = []
    aux_losses: list[float] = []
    model.train()
    t_setup = time.time() - t_start
    t0 = time.time()
    for step in range(steps):
        frac = step / steps
        if cfg["max_wall_s"] is not None:
            frac = max(frac, (time.time() - t0) / float(cfg["max_wall_s"]))
            if frac >= 1.0:
                log(f"stopping at step {step}: max_wall_s={cfg['max_wall_s']} spent")
                break
        apply_lr_factor(opt, warmup_cosine(frac, cfg["warmup_frac"], min_frac=1.0 / steps))
        x, scenes = _scene_batch(int(cfg["seed"]), step * bs, bs)
        with torch.no_grad():
            frozen = frozen_tokens(model.tower, model.tower_input(x), model.train_blocks)  # (B, M, C)
        tokens = head(frozen)  # (B, 1 + N, C)
        mem_kv = dec.memory(tokens)
        targets = [vocab.encode(target_caption(s)) + [EOS] for s in scenes]
        ids, mask = _batch_ids([describe_ids + t for t in targets], [len(describe_ids)] * bs)
        loss_c = _seq_loss(dec, mem_kv, ids, mask)
        rng = np.random.default_rng([int(cfg["seed"]), 1, step])
        seqs, plen = [], []
        nq = int(cfg["questions_per_image"])
        for _ in range(nq):
            for s in scenes:
                q, a = sample_question(s, rng)
                p = [BOS, *vocab.encode(question_prompt(q))]
                seqs.append(p + vocab.encode(a) + [EOS])
                plen.append(len(p))
        q_mem = mem_kv if nq == 1 else [(k.repeat(nq, 1, 1, 1), v.repeat(nq, 1, 1, 1)) for k, v in mem_kv]
        loss_q = _seq_loss(dec, q_mem, *_batch_ids(seqs, plen))
        loss = loss_c + float(cfg["question_weight"]) * loss_q
        if float(cfg["aux_weight"]) > 0:
            patch_y = _patch_labels(scenes, grid)
            loss_a = F.cross_entropy(aux(tokens[:, 1:]).transpose(1, 2), patch_y)  # tokens[:, 1:]: (B, N, C)
            loss = loss + float(cfg["aux_weight"]) * loss_a
            aux_losses.append(loss_a.item())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        cap_losses.append(loss_c.item())
        q_losses.append(loss_q.item())
        if step % every == 0 or step == steps - 1:
            log(f"step {step} caption {np.mean(cap_losses[-every:]):.4f} question {np.mean(q_losses[-every:]):.4f} "
                f"aux {np.mean(aux_losses[-every:]) if aux_losses else 0.0:.4f} t {time.time() - t0:.0f}s")
    wall = time.time() - t0
    model.eval()
    t_eval = time.time()
    metrics = evaluate_captioner(model, n=int(cfg["eval_n"])) if cfg["eval_n"] else {}
    t_eval = time.time() - t_eval
    log(json.dumps(metrics))

    def curve(xs: list[float]) -> list[float]:
        return [round(float(np.mean(xs[i : i + 50])), 4) for i in range(0, len(xs), 50)]

    record: dict[str, Any] = {
        "name": cfg["name"],
        "spec": model.spec,
        "config": cfg,
        "steps": len(cap_losses),
        "steps_planned": steps,
        "train_seed": cfg["seed"],
        "scenes_seen": len(cap_losses) * bs,
        "sequences_seen": {"captions": len(cap_losses) * bs,
                           "questions": len(q_losses) * bs * int(cfg["questions_per_image"])},
        "wall_time_s": {"setup": round(t_setup, 1), "train": round(wall, 1), "eval": round(t_eval, 1),
                        "total": round(time.time() - t_start, 1)},
        "final_loss": {"caption": float(np.mean(cap_losses[-50:])), "question": float(np.mean(q_losses[-50:]))},
        "loss_curve_every_50": {"caption": curve(cap_losses), "question": curve(q_losses), "aux": curve(aux_losses)},
        "held_out_metrics": metrics,
        "held_out_seed": EVAL_SEED,
        "held_out_stream": _STREAM_SCENES,
        "weights_dtype": "float32",
        "versions": {"torch": torch.__version__, "open_clip": open_clip.__version__, "python": platform.python_version()},
        "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} thread(s)",
    }
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        save_file(model.trainable_state(), str(out / "model.safetensors"))
        (out / "config.json").write_text(json.dumps(model_cfg, indent=2))
        (out / "training.json").write_text(json.dumps(record, indent=2))
        log(f"wrote {out}")
    record["model"] = model
    return record


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m vlmkit.toyworld.caption_train --config CFG.json --out DIR [--steps N] [--eval-n N]``."""
    ap = argparse.ArgumentParser(description="Train the toy captioner (a decoder on a frozen toy-world tower).")
    ap.add_argument("--config", required=True, help="training config JSON (keys of DEFAULT_CONFIG)")
    ap.add_argument("--out", default=None, help="folder to write (model.safetensors, config.json, training.json)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--eval-n", type=int, default=None, dest="eval_n")
    args = ap.parse_args(argv)
    cfg = json.loads(Path(args.config).read_text())
    for key in ("steps", "eval_n"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    rec = train_captioner(cfg, args.out)
    print(json.dumps({"wall_time_s": rec["wall_time_s"], **rec["held_out_metrics"]}, indent=2))


if __name__ == "__main__":
    main()


__all__ = [
    "DEFAULT_CONFIG",
    "caption_scenes",
    "evaluate_captioner",
    "hallucination_counts",
    "main",
    "mentioned_shapes",
    "train_captioner",
]
