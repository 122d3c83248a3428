"""The settings of one adversarial fine-tuning run, and the params-file reader."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from vlmkit.errors import InputError

METHODS = ("fare", "tecoa")


def parse_eps(value: Any, name: str = "eps") -> float:
    """``4/255``, ``"4/255"``, ``0.0157`` → float; anything else is an :class:`InputError`."""
    if isinstance(value, str):
        num, sep, den = value.partition("/")
        try:
            value = float(num) / float(den) if sep else float(num)
        except ValueError:
            raise InputError(f"{name}={value!r} is not a number or a fraction like '4/255'") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{name}={value!r} must be a finite number")
    return float(value)


@dataclass
class RobustConfig:
    """One FARE or TeCoA fine-tuning run.

    Attributes:
        method: ``"fare"`` (Schlarmann et al., 2024; unsupervised embedding-distance adversarial
            training) or ``"tecoa"`` (Mao et al., 2023; supervised zero-shot cross-entropy adversarial
            training with fixed text class embeddings).
        model: Base model spec for :func:`vlmkit.load_model` (``toy:rn``, ``open_clip:ViT-B-32/openai``, ``hf:...``).
        data: Training data block (see :func:`vlmkit.robust.data.load_finetune_data`).
        out: Output folder: the fine-tuned model (family layout + ``robust.json``), ``checkpoints/``, ``log.csv``.
        eps: L∞ (or L2) budget on [0, 1] pixels of the training attack (``"4/255"`` accepted).
        norm: ``"linf"`` or ``"l2"``.
        attack_steps: PGD steps of the training attack (FARE and TeCoA use 10).
        attack_alpha: PGD step size (default ``eps / 4``, FARE's 1/255 at 4/255).
        steps: Optimiser steps.
        batch_size: Images per step.
        lr: Peak AdamW learning rate (FARE: 1e-5 for ViT-L/14; the toy models need ~1e-4).
        weight_decay: AdamW weight decay (FARE: 1e-4).
        warmup_frac: Share of steps of linear warm-up before cosine decay (FARE: 7%).
        amp_dtype: ``None`` (float32) or ``"bf16"``: autocast of forward passes (GPU).
        templates: Prompt templates of the class text embeddings (TeCoA's loss, held-out accuracy).
        seed: Seeds batch order, attack starts and initialisation: same seed, same run on CPU.
        checkpoint_every: Steps between resumable checkpoints (0: only at the end).
        eval_every: Steps between held-out clean/robust evaluations (0: only at the end).
        eval_attack_steps: PGD steps of the held-out robust accuracy (at ``eps``).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``.
        fp16_weights: Save open_clip weights in float16.
        name: Display name (default ``<model>-<method>``).
    """

    method: str
    model: str
    data: dict[str, Any] = field(default_factory=lambda: {"kind": "toy-shapes"})
    out: str = "outputs/robust/run"
    eps: float = 4 / 255
    norm: str = "linf"
    attack_steps: int = 10
    attack_alpha: float | None = None
    steps: int = 300
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup_frac: float = 0.07
    amp_dtype: str | None = None
    templates: list[str] = field(default_factory=lambda: ["a photo of a {}"])
    seed: int = 0
    checkpoint_every: int = 50
    eval_every: int = 50
    eval_attack_steps: int = 10
    device: str = "auto"
    fp16_weights: bool = False
    name: str | None = None

    def __post_init__(self) -> None:
        self.method = str(self.method).lower()
        if self.method not in METHODS:
            raise InputError(f"method={self.method!r} is unknown; expected one of {list(METHODS)}")
        self.eps = parse_eps(self.eps)
        if self.attack_alpha is not None:
            self.attack_alpha = parse_eps(self.attack_alpha, "attack_alpha")
        for k in ("steps", "batch_size", "attack_steps", "eval_attack_steps"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"{k}={v!r} must be an int >= 1")
        for k in ("checkpoint_every", "eval_every", "seed"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise InputError(f"{k}={v!r} must be an int >= 0")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"lr={self.lr!r} must be a positive number")
        if not 0 <= self.warmup_frac < 1:
            raise InputError(f"warmup_frac={self.warmup_frac!r} must be in [0, 1)")
        if not self.templates or not all("{}" in t for t in self.templates):
            raise InputError(f"templates={self.templates!r} must be non-empty, each with a '{{}}' slot")
        if self.name is None:
            self.name = f"{self.model.split('/')[-1].replace(':', '-')}-{self.method}"

    @property
    def alpha(self) -> float:
        """The training attack's step size."""
        return self.attack_alpha if self.attack_alpha is not None else self.eps / 4

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RobustConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise InputError(f"unknown keys {sorted(unknown)} in a robust fine-tuning config; expected {sorted(names)}")
        return cls(**d)


def load_runs(path: str | Path, only: list[str] | None = None) -> list[RobustConfig]:
    """Read a params file of fine-tuning runs (YAML or JSON).

    Layout::

        defaults: {steps: 300, eps: 4/255, data: {kind: toy-shapes}}   # shared by every run
        runs:
          - {name: toy-rn-fare, method: fare, model: "toy:rn", out: outputs/robust/toy-rn-fare}
          - {name: toy-rn-tecoa, method: tecoa, model: "toy:rn", lr: 1e-4}

    Args:
        path: The file.
        only: Run names to keep (default: all).

    Raises:
        InputError: Missing file, bad layout, unknown run names.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"robust params file {str(p)!r} does not exist")
    text = p.read_text()
    if p.suffix in (".yaml", ".yml"):
        import yaml

        doc = yaml.safe_load(text)
    else:
        doc = json.loads(text)
    if not isinstance(doc, dict) or not isinstance(doc.get("runs"), list) or not doc["runs"]:
        raise InputError(f"{str(p)!r} must hold a mapping with a non-empty 'runs' list (and optional 'defaults')")
    defaults = doc.get("defaults") or {}
    runs = [RobustConfig.from_dict({**defaults, **r}) for r in doc["runs"]]
    if only:
        names = [r.name for r in runs]
        missing = sorted(set(only) - set(names))
        if missing:
            raise InputError(f"runs {missing} are not in {str(p)!r}; it has {names}")
        runs = [r for r in runs if r.name in only]
    return runs
