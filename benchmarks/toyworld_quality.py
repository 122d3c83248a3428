"""Held-out quality of the shipped toy-world checkpoints, printed as a table.

Loads each checkpoint through open_clip's ``local-dir:`` path and measures, on scenes from the
held-out evaluation seed (never used in training):

* image→text Recall@1 (1000 images vs their 1000 complete captions),
* zero-shot shape accuracy with ``"a photo of a {shape}"`` (single objects, no sign),
* reading: ``'a sign that says "{w}"'`` names the written word (labelled scenes),
* typographic attack: share of shape predictions moved to a misleading written shape word
  (``scam``), to the same word for a blank label (``noscam``) and for an unseen font (``synthscam``).

Usage::

    python benchmarks/toyworld_quality.py [--n 1000] [--models rn vit] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vlmkit.toyworld import checkpoint_dir, list_checkpoints  # noqa: E402
from vlmkit.toyworld.evaluate import EVAL_SEED, QUALITY_BARS, evaluate, meets_bars, open_clip_encoders  # noqa: E402

COLUMNS = [
    ("i2t_R@1", "R@1 i→t"),
    ("t2i_R@1", "R@1 t→i"),
    ("zero_shot_shape_acc", "0-shot shape"),
    ("reading_acc", "reading"),
    ("acc_clean", "shape acc clean"),
    ("attack_share_scam", "→word scam"),
    ("attack_share_noscam", "→word blank"),
    ("attack_share_synthscam", "→word synth"),
]


def main(argv: list[str] | None = None) -> int:
    """Evaluate the checkpoints, print the table, return 0 when every bar is met (1 otherwise)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="held-out scenes per metric")
    ap.add_argument("--models", nargs="*", default=None, help="checkpoint names (default: all shipped)")
    ap.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    names = args.models or list_checkpoints()
    results: dict[str, dict[str, float]] = {}
    for name in names:
        t0 = time.time()
        enc_img, enc_txt, _ = open_clip_encoders(checkpoint_dir(name))
        results[name] = evaluate(enc_img, enc_txt, n=args.n, seed=EVAL_SEED)
        results[name]["eval_s"] = time.time() - t0
    print(f"toy-world quality on {args.n} held-out scenes per metric (seed {EVAL_SEED})")
    w = max([6, *(len(n) + 1 for n in results)])
    head = f"{'model':<{w}}" + "".join(f"{label:>17}" for _, label in COLUMNS) + f"{'ratio':>8}{'bars':>7}"
    print(head)
    print("-" * len(head))
    all_ok = True
    for name, m in results.items():
        ok = meets_bars(m)
        all_ok &= all(ok.values())
        ratio = m["attack_share_scam"] / m["attack_share_noscam"] if m["attack_share_noscam"] > 0 else float("inf")
        row = f"{name:<{w}}" + "".join(f"{100 * m[k]:>16.1f}%" for k, _ in COLUMNS)
        print(row + f"{ratio:>7.1f}x" + f"{sum(ok.values()):>5}/{len(ok)}")
    bars = ", ".join(f"{k} >= {v:.0%}" for k, v in QUALITY_BARS.items())
    print(f"bars: {bars}, attack_share_scam >= 2x attack_share_noscam")
    for name, m in results.items():
        missed = [k for k, v in meets_bars(m).items() if not v]
        print(f"{name}: {'all bars met' if not missed else 'missed: ' + ', '.join(missed)}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0 if all_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
