"""PGD-L∞ throughput of ``vlmkit.attacks.PGD`` vs ``torchattacks.PGD`` on the same model and batch.

Both attack the same zero-shot classifier (``logits = vlm.similarity(vlm.encode_image(x), class_text)``)
with the same ε, step size and steps, without random start, and the adversarial images are checked to
agree. Each method is warmed up once, then timed ``--repeats`` times in alternating order; the table
reports the median.

    python benchmarks/bench_attacks.py                       # ViT-B-32 random init, batch 16, 224 px, 10 steps
    python benchmarks/bench_attacks.py --batch 8 --steps 5 --device cuda --amp bf16 --compile
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import vlmkit
from vlmkit.attacks import PGD, ZeroShotCE, ZeroShotClassifier


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="open_clip:ViT-B-32")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=224, help="input side in pixels")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--eps", type=float, default=4 / 255)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amp", default=None, help="autocast dtype for vlmkit's PGD (bf16/fp16); torchattacks has none")
    ap.add_argument("--compile", action="store_true", help="torch.compile the image tower (used by both)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import torchattacks

    device = vlmkit.resolve_device(args.device)
    torch.manual_seed(0)
    vlm = vlmkit.load_model(args.model, device=device)
    if args.compile:
        vlm.model.visual = torch.compile(vlm.model.visual)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, args.size, args.size, generator=g).to(device)
    with torch.no_grad():
        text = vlm.encode_text([f"a photo of a class {i}." for i in range(args.classes)])  # (C, D)
        labels = vlm.similarity(vlm.encode_image(x), text).argmax(1)
    alpha = 2.5 * args.eps / args.steps

    ours = PGD(ZeroShotCE(text), eps=args.eps, alpha=alpha, steps=args.steps, random_start=False,
               amp_dtype=args.amp)
    clf = ZeroShotClassifier(vlm, text)
    ref = torchattacks.PGD(clf, eps=args.eps, alpha=alpha, steps=args.steps, random_start=False)
    ref.set_device(device)
    runs = {
        "vlmkit.attacks.PGD": lambda: ours(vlm, x, {"labels": labels}),
        "torchattacks.PGD": lambda: ref(x, labels),
    }
    outs = {k: f() for k, f in runs.items()}  # warm-up (and compile)
    max_diff = float((outs["vlmkit.attacks.PGD"] - outs["torchattacks.PGD"]).abs().max())
    times: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(args.repeats):
        for k in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
            _sync(device)
            t0 = time.perf_counter()
            runs[k]()
            _sync(device)
            times[k].append(time.perf_counter() - t0)

    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["torchattacks.PGD"]
    print(f"model={args.model} device={device} batch={args.batch} size={args.size} steps={args.steps} "
          f"eps={args.eps:.5f} amp={args.amp} compile={args.compile} threads={torch.get_num_threads()} "
          f"repeats={args.repeats}")
    print(f"max |x_adv(vlmkit) - x_adv(torchattacks)| = {max_diff:.2e}")
    print(f"| {'method':<20} | {'median s':>9} | {'img/s':>8} | {'speed vs torchattacks':>21} |")
    print(f"|{'-' * 22}|{'-' * 11}|{'-' * 10}|{'-' * 23}|")
    for k, t in med.items():
        print(f"| {k:<20} | {t:>9.3f} | {args.batch / t:>8.2f} | {base / t:>20.2f}x |")


if __name__ == "__main__":
    main()
