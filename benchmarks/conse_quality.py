"""How good is ConSE (Norouzi et al. 2014) as an offline image–text model on real photos?

Prints, for one ``conse:`` spec (default ``conse:default``):

1. ImageNet: zero-shot top-1/top-5 of the ConSE embedding over the 1000 prompt-ensembled class names
   (the model's own template set, :attr:`ConSEVLM.templates`), next to the classifier's own top-1/top-5, on
   the 800 labelled sample photos.
2. COCO: Recall@{1,5,10} image→text and text→image on the 159 captioned photos (795 captions), with chance.
3. SCAM: two-way accuracy object label vs attack word ("a photo of a {}.") on noscam / scam / synthscam, the
   share of images whose decision flips when the word is written, and the same split by note size.
4. Corruptions: zero-shot and classifier top-1 as Gaussian noise and Gaussian blur get stronger (simple torch
   corruptions defined here; ``vlmkit.perturb``'s ImageNet-C set will replace them).

Usage::

    python benchmarks/conse_quality.py --data ../shared/data [--spec conse:default] [--corrupt-n 800]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import vlmkit.models.conse  # noqa: F401  (registers the family until vlmkit.models imports it)
from vlmkit.data import imagenet_classnames, load_coco_captions, load_labelled_csv, load_scam, to_float
from vlmkit.metrics import retrieval_metrics, topk_accuracy
from vlmkit.models.zeroshot import zero_shot_classifier
from vlmkit.models import load_model


@torch.no_grad()
def embed_with_logits(vlm, images: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ConSE embeddings ``(N, D)`` and classifier logits ``(N, 1000)`` for uint8 images ``(N, 3, S, S)``."""
    embs, logits = [], []
    for i in range(0, len(images), batch_size):
        e, lg = vlm.encode_image_and_logits(to_float(images[i : i + batch_size]))
        embs.append(e)
        logits.append(lg)
    return torch.cat(embs), torch.cat(logits)


def gaussian_noise(x: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    """Additive Gaussian noise of std ``sigma`` on [0, 1] images, clipped."""
    g = torch.Generator().manual_seed(seed)
    return (x + sigma * torch.randn(x.shape, generator=g)).clamp(0, 1)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur (radius 3σ, reflect padding)."""
    r = max(1, int(3 * sigma + 0.5))
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-t**2 / (2 * sigma**2))
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).repeat(3, 1, 1, 1), groups=3)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).repeat(3, 1, 1, 1), groups=3)


def i2t_chance(n_texts: int, n_pos: int, k: int) -> float:
    """P(at least one of ``n_pos`` positives among ``k`` random picks of ``n_texts``)."""
    return 1.0 - math.comb(n_texts - n_pos, k) / math.comb(n_texts, k)


def imagenet(vlm, root: Path, bs: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ds = load_labelled_csv(root / "labels.csv", root / "images", imagenet_classnames(), label_column="class_index")
    images = ds.load_images(size=224, progress=False)  # (800, 3, 224, 224) uint8
    t0 = time.time()
    emb, logits = embed_with_logits(vlm, images, bs)
    # The model's class table IS the prompt-ensembled zero-shot classifier over its templates; rebuild 50
    # classes with the metrics helper to show it (the whole table would re-embed 1000 x templates sentences).
    table = vlm.class_embeddings  # (1000, D)
    check = zero_shot_classifier(vlm, imagenet_classnames()[:50], vlm.templates)  # (50, D)
    gap = float((check - table[:50]).abs().max())
    zs = topk_accuracy(vlm.similarity(emb, table), ds.labels)
    clf = topk_accuracy(logits, ds.labels)
    agree = float((vlm.similarity(emb, table).argmax(1) == logits.argmax(1)).float().mean())
    print(f"\n== ImageNet samples: {len(ds)} photos, 1000-way, {len(vlm.templates)} templates per class "
          f"({time.time() - t0:.0f}s)")
    print(f"  {'':28s} {'top-1':>7s} {'top-5':>7s}")
    print(f"  {'ConSE zero-shot':28s} {zs['top1']:7.1%} {zs['top5']:7.1%}")
    print(f"  {'classifier (its own head)':28s} {clf['top1']:7.1%} {clf['top5']:7.1%}")
    print(f"  {'chance':28s} {1 / 1000:7.1%} {5 / 1000:7.1%}")
    print(f"  ConSE top-1 = classifier top-1 on {agree:.1%} of photos; class table vs "
          f"zero_shot_classifier: max |diff| {gap:.1e}")
    return images, ds.labels, table


def coco(vlm, root: Path, bs: int) -> None:
    ds = load_coco_captions(root / "captions.json", root / "images")
    images = ds.load_images(size=224, progress=False)
    emb, _ = embed_with_logits(vlm, images, bs)
    with torch.no_grad():
        text = vlm.encode_text(ds.captions)  # (T, D)
    r = retrieval_metrics(emb, text, ds.text_to_image)
    n, t = len(ds), len(ds.captions)
    print(f"\n== COCO-mini retrieval: {n} photos, {t} captions")
    print(f"  {'':14s} {'R@1':>7s} {'R@5':>7s} {'R@10':>7s} {'median rank':>12s}")
    print(f"  {'image->text':14s} " + " ".join(f"{r[f'i2t_R@{k}']:7.1%}" for k in (1, 5, 10))
          + f" {r['i2t_medr']:12.0f}")
    print(f"  {'  chance':14s} " + " ".join(f"{i2t_chance(t, t // n, k):7.1%}" for k in (1, 5, 10)))
    print(f"  {'text->image':14s} " + " ".join(f"{r[f't2i_R@{k}']:7.1%}" for k in (1, 5, 10))
          + f" {r['t2i_medr']:12.0f}")
    print(f"  {'  chance':14s} " + " ".join(f"{k / n:7.1%}" for k in (1, 5, 10)))


def scam(vlm, root: Path, bs: int) -> None:
    wins: dict[str, torch.Tensor] = {}
    area = None
    for variant in ("noscam", "scam", "synthscam"):
        ds = load_scam(root, variant)
        emb, _ = embed_with_logits(vlm, ds.load_images(size=224, progress=False), bs)
        table = zero_shot_classifier(vlm, ds.classnames, ["a photo of a {}."])  # (K, D)
        sim = emb @ table.T  # (N, K)
        idx = torch.arange(len(ds))
        wins[variant] = sim[idx, ds.labels] > sim[idx, ds.attack_labels]  # (N,) object label beats attack word
        area = torch.as_tensor(ds.postit_area_pct) if getattr(ds, "postit_area_pct", None) is not None else area
    n = len(wins["noscam"])
    print(f"\n== SCAM: {n} scenes, two-way 'a photo of a <object>.' vs 'a photo of a <attack word>.'")
    print(f"  {'variant':10s} {'accuracy':>9s} {'flips vs noscam':>16s}")
    for v, w in wins.items():
        flips = float((w != wins["noscam"]).float().mean())
        print(f"  {v:10s} {float(w.float().mean()):9.1%} {flips:16.1%}")
    if area is not None and len(area) == n:
        big = area >= area.median()
        for name, m in (("notes < median area", ~big), ("notes >= median area", big)):
            print(f"  {name:22s} noscam {float(wins['noscam'][m].float().mean()):6.1%}  "
                  f"scam {float(wins['scam'][m].float().mean()):6.1%}  "
                  f"synthscam {float(wins['synthscam'][m].float().mean()):6.1%}")


def corruptions(vlm, images: torch.Tensor, labels: torch.Tensor, table: torch.Tensor, n: int, bs: int) -> None:
    sel = torch.arange(len(images)) if n >= len(images) else torch.linspace(0, len(images) - 1, n).long()
    x, y = images[sel], labels[sel]
    print(f"\n== Corruptions on {len(sel)} ImageNet photos (top-1: ConSE zero-shot / classifier)")
    for name, fn, levels in (("gaussian noise sigma", gaussian_noise, (0.0, 0.04, 0.08, 0.16, 0.3)),
                             ("gaussian blur sigma", gaussian_blur, (0.0, 1.0, 2.0, 4.0))):
        cells = []
        for s in levels:
            embs, logits = [], []
            with torch.no_grad():
                for i in range(0, len(x), bs):
                    xb = to_float(x[i : i + bs])
                    e, lg = vlm.encode_image_and_logits(fn(xb, s) if s > 0 else xb)
                    embs.append(e)
                    logits.append(lg)
            zs = topk_accuracy(vlm.similarity(torch.cat(embs), table), y, ks=(1,))["top1"]
            clf = topk_accuracy(torch.cat(logits), y, ks=(1,))["top1"]
            cells.append(f"{s:g}: {zs:5.1%} / {clf:5.1%}")
        print(f"  {name:22s} " + "   ".join(cells))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"), help="folder with imagenet-samples/, "
                    "coco-mini/, scam/")
    ap.add_argument("--spec", default="conse:default")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--corrupt-n", type=int, default=200, help="ImageNet photos in the corruption sweep (max 800)")
    args = ap.parse_args()
    torch.manual_seed(0)
    t0 = time.time()
    vlm = load_model(args.spec, device="cpu")
    print(f"model: {args.spec} -> {vlm!r}")
    print(f"  classifier: {vlm.meta['classifier_weights']}")
    print(f"  text encoder: {vlm.meta['text_weights']}")
    print(f"  top={vlm.top or 'all'}  templates={vlm.meta['templates']} ({len(vlm.templates)})  "
          f"logit_scale={vlm.logit_scale:g}  dim={vlm.embed_dim}  (loaded in {time.time() - t0:.0f}s)")
    images, labels, table = imagenet(vlm, args.data / "imagenet-samples", args.batch_size)
    coco(vlm, args.data / "coco-mini", args.batch_size)
    scam(vlm, args.data / "scam", args.batch_size)
    corruptions(vlm, images, labels, table, args.corrupt_n, args.batch_size)
    print(f"\ntotal {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
