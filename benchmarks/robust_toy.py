"""Base vs FARE vs TeCoA on the toy world: adversarial, corruption, frequency and typographic robustness.

Fine-tunes (or resumes) the runs of ``params/robust/toy.yaml`` for the chosen base models, then
evaluates base and fine-tuned models under one protocol with :func:`vlmkit.evaluate.evaluate_grid`:

* held-out single-object shape scenes (zero-shot "a photo of a {shape}", 8 classes): clean, PGD-10
  L∞ at 2/255 and 4/255 (zero-shot CE, white-box on each model), six ImageNet-C corruptions at
  severity 3, band-limited noise in the low / mid / high frequency bands (severity 3);
* the toy typographic set (SCAM layout): a misleading shape word on a label vs a blank label:
  accuracy and the share of predictions moved to the written word.

    python benchmarks/robust_toy.py                    # toy:rn (and --models toy:rn toy:vit)
    python benchmarks/robust_toy.py --steps 150 --n 256

Prints one table (rows: condition; columns: model × method) and writes it to
``outputs/robust/benchmark.csv``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

from vlmkit.evaluate import attack_cells, evaluate_grid, perturbation_cells
from vlmkit.robust import finetune, load_runs
from vlmkit.runtime import seed_everything
from vlmkit.toyworld.sets import load_toy_sets

CORRUPTIONS = ["gaussian_noise", "defocus_blur", "jpeg_compression", "contrast", "fog", "pixelate"]


def _pretty(label: str) -> str:
    """``pgd{eps=0.0156...,steps=10}`` → ``PGD-10 eps=4/255``; ``band_noise@3{band=low}`` → ``band_noise@3 low``."""
    if label.startswith("pgd{"):
        eps = float(label.split("eps=")[1].split(",")[0])
        return f"PGD-10 eps={round(eps * 255):d}/255"
    if "{band=" in label:
        return label.replace("{band=", " ").rstrip("}")
    return label


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["toy:rn"])
    ap.add_argument("--params", default="params/robust/toy.yaml")
    ap.add_argument("--steps", type=int, default=None, help="override the fine-tuning steps")
    ap.add_argument("--n", type=int, default=256, help="held-out images per set")
    ap.add_argument("--out", default="outputs/robust")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    seed_everything(0)
    out = Path(args.out)

    specs: dict[str, dict[str, str]] = {}
    for cfg in load_runs(args.params):
        if cfg.model not in args.models:
            continue
        if args.steps is not None:
            cfg.steps = args.steps
        cfg.out = str(out / cfg.name)
        cfg.device = "cpu" if not torch.cuda.is_available() else cfg.device
        t = time.time()
        res = finetune(cfg, progress=True)
        h = res.history[-1]
        print(f"{cfg.name}: {cfg.steps} steps in {time.time() - t:.0f}s this call; held-out "
              f"clean {h.get('clean_acc', float('nan')):.3f} robust {h.get('robust_acc', float('nan')):.3f}", flush=True)
        specs.setdefault(cfg.model, {"base": cfg.model})[cfg.method] = res.spec

    sets = load_toy_sets(out / "data", n=args.n, seed=5)
    cells = (attack_cells("pgd", eps=[2 / 255, 4 / 255], steps=10)
             + perturbation_cells(CORRUPTIONS, [3])
             + perturbation_cells("band_noise", [3], band=["low", "mid", "high"]))
    frames = []
    for base, methods in specs.items():
        for method, spec in methods.items():
            name = f"{base} {method}"
            t = evaluate_grid([spec], sets["toy-shapes"], cells, out_dir=out / "eval" / name.replace(":", "-").replace(" ", "-"),
                              dataset_name="toy-shapes", templates=["a photo of a {}"], progress=False, device="cpu")
            t = t[t.metric == "top1"].copy()
            t["condition"] = [_pretty(c) for c in t["label"]]
            for key in ("toy-typographic", "toy-blank-label"):
                ty = evaluate_grid([spec], sets[key], [], out_dir=out / "eval" / f"{name}-{key}".replace(":", "-").replace(" ", "-"),
                                   dataset_name=key, templates=["a photo of a {}"], progress=False, device="cpu")
                ty = ty[ty.metric.isin(["top1", "attack_word_rate"])].copy()
                ty["condition"] = key + " " + ty["metric"].map({"top1": "acc", "attack_word_rate": "→word"})
                t = pd.concat([t, ty])
            t["column"] = name
            frames.append(t[["condition", "column", "value"]])
    table = pd.concat(frames).pivot_table(index="condition", columns="column", values="value", sort=False)
    table = table[[f"{b} {m}" for b, ms in specs.items() for m in ms]]
    table = table.loc[sorted(table.index, key=lambda c: (c != "clean", not c.startswith("PGD"), c.startswith("toy-"), c))]
    (out / "benchmark.csv").parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "benchmark.csv")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print((table * 100).round(1).to_string())


if __name__ == "__main__":
    main()
