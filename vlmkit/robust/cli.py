"""Command line of adversarial fine-tuning: ``vlmkit robust PARAMS.yaml [--only NAME ...] [--steps N]``."""

from __future__ import annotations

import argparse
import json

from vlmkit.robust.config import load_runs
from vlmkit.robust.finetune import finetune


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The ``robust`` sub-command's arguments."""
    ap.add_argument("params", help="YAML/JSON file with 'defaults' and a list of 'runs' (see params/robust/toy.yaml)")
    ap.add_argument("--only", nargs="+", default=None, help="run names to execute (default: all)")
    ap.add_argument("--steps", type=int, default=None, help="override every run's number of steps")
    ap.add_argument("--device", default=None, help="override the device (auto, cpu, cuda)")
    ap.add_argument("--out-root", default=None, help="put every run under this folder (as <root>/<name>)")
    ap.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    """Execute the selected runs in order (each resumes from its own checkpoint)."""
    runs = load_runs(args.params, only=args.only)
    for cfg in runs:
        if args.steps is not None:
            cfg.steps = args.steps
        if args.device is not None:
            cfg.device = args.device
        if args.out_root is not None:
            cfg.out = f"{args.out_root.rstrip('/')}/{cfg.name}"
        res = finetune(cfg, progress=not args.no_progress)
        final = {k: v for k, v in (res.history[-1] if res.history else {}).items() if k != "lr"}
        print(json.dumps({"run": cfg.name, "model_dir": str(res.model_dir), **final}), flush=True)
    return 0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="vlmkit robust", description="FARE / TeCoA adversarial fine-tuning")
    add_arguments(ap)
    raise SystemExit(run(ap.parse_args(argv)))
