"""The smoke run: the main job's embedded default, end to end in about a minute on a CPU.

For each model it embeds a toy-world retrieval set (rendered on the spot, deterministic) and, when a
data path is passed, the captioned real photos of ``<data>/coco-mini``; it computes clean retrieval
metrics and writes a tidy results table under ``outputs/``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vlmkit.data import CaptionedImages, load_coco_captions
from vlmkit.errors import DataNotFoundError
from vlmkit.metrics import retrieval_metrics
from vlmkit.models import load_model
from vlmkit.results import make_row, write_table
from vlmkit.runtime import resolve_device, seed_everything

log = logging.getLogger("vlmkit.smoke")

DEFAULT_MODELS = ("toy:rn", "toy:vit")
#: Evaluated on the real photos only (trained on ImageNet, not on the toy world): ConSE from the
#: packaged EfficientNet-Lite0 + MiniLM, with the single "a photo of a {}." template to keep it quick.
REAL_PHOTO_MODELS = ("conse:default?templates=photo",)


def _toy_retrieval(out: Path, n: int, seed: int) -> CaptionedImages:
    from vlmkit.toyworld.export import export_retrieval

    root = export_retrieval(out / "data" / f"toy-retrieval-n{n}-s{seed}", n=n, seed=seed, progress=False)
    return load_coco_captions(root / "captions.json", root / "images", name="toy-retrieval")


def _coco(data: Path, n: int, seed: int) -> CaptionedImages:
    root = data / "coco-mini"
    if not root.is_dir():
        raise DataNotFoundError(f"--data {str(data)!r} has no coco-mini/ folder (expected <data>/coco-mini/captions.json "
                                "and <data>/coco-mini/images/, the layout of ../shared/data)")
    ds = load_coco_captions(root / "captions.json", root / "images", name="coco-mini")
    return ds.subset(n=min(n, len(ds)), seed=seed)


def run_smoke(out_dir: str | Path = "outputs/smoke", data: str | Path | None = None,
              models: Sequence[str] = DEFAULT_MODELS, n: int = 64, seed: int = 0, device: str = "auto",
              batch_size: int = 64, real_photo_models: Sequence[str] = REAL_PHOTO_MODELS) -> Path:
    """Run the smoke job and return the results folder.

    Args:
        out_dir: Results folder (created).
        data: Folder with real photos in the ``../shared/data`` layout (``coco-mini/``); None = toy world only.
        models: Model specs evaluated on every dataset.
        real_photo_models: Extra model specs evaluated on the real photos only (when ``data`` is given).
        n: Images per dataset.
        seed: Seeds rendering, subsets and everything random.
        device: "auto", "cpu", "cuda".
        batch_size: Images per forward pass.
    """
    seed_everything(seed)
    out = Path(out_dir)
    dev = resolve_device(device)
    toy = _toy_retrieval(out, n, seed)
    real = [_coco(Path(data), n, seed)] if data is not None else []
    plan = [(spec, [toy, *real]) for spec in models] + [(spec, real) for spec in real_photo_models if real]
    rows: list[dict[str, Any]] = []
    for spec, datasets in plan:
        vlm = load_model(spec, device=dev)
        for ds in datasets:
            t0 = time.perf_counter()
            size = max(vlm.image_size)
            images = ds.load_images(size=size, cache_dir=out / "cache", progress=False)  # (N, 3, S, S) uint8
            with torch.inference_mode():
                img = vlm.embed_images(images, batch_size=batch_size, progress=False)
                txt = vlm.encode_text(ds.captions)
            metrics = retrieval_metrics(img, txt, ds.text_to_image)
            secs = time.perf_counter() - t0
            for name, value in metrics.items():
                rows.append(make_row(model=spec, dataset=ds.name, metric=name, value=value, n=len(ds), seed=seed,
                                     seconds=round(secs, 3)))
            log.info("%s on %s: i2t R@1 %.3f (%.1fs)", spec, ds.name, metrics["i2t_R@1"], secs)
    write_table(rows, out)
    return out
