"""Toy-world datasets in the data layer's types, exported once and loaded like any real set.

    sets = load_toy_sets("outputs/run/data", n=64, seed=0)
    sets["toy-retrieval"]      # CaptionedImages (COCO captions layout)
    sets["toy-shapes"]         # LabelledImages (shape classes)
    sets["toy-typographic"]    # TypographicImages (misleading word on a label; SCAM layout)
    sets["toy-blank-label"]    # the same scenes with the label left blank (the control)
"""

from __future__ import annotations

from pathlib import Path

from vlmkit.data import CaptionedImages, LabelledImages, TypographicImages, load_coco_captions, load_labelled_csv, load_scam
from vlmkit.toyworld.export import export_classification, export_retrieval, export_typographic

ToySet = CaptionedImages | LabelledImages | TypographicImages


def load_toy_sets(root: str | Path, n: int = 64, seed: int = 0, size: int = 64) -> dict[str, ToySet]:
    """Export (if not already there) and load the toy-world retrieval, shape and typographic sets.

    Args:
        root: Folder for the exported files (one sub-folder per set, keyed by n, seed and size).
        n: Images per set.
        seed: Scene stream seed (the default export seed stream is offset by it).
        size: Image side in pixels.
    """
    root = Path(root)
    tag = f"n{n}-s{seed}-px{size}"
    base = 1_000_003 * (seed + 1)  # disjoint from training streams, distinct per seed

    def once(folder: Path, marker: str, make) -> Path:  # type: ignore[no-untyped-def]
        if not (folder / marker).is_file():
            make(folder)
        return folder

    ret = once(root / f"toy-retrieval-{tag}", "captions.json",
               lambda f: export_retrieval(f, n=n, seed=base, size=size, progress=False))
    cls = once(root / f"toy-shapes-{tag}", "labels.csv",
               lambda f: export_classification(f, n=n, seed=base, size=size, task="shape", progress=False))
    typ = once(root / f"toy-typographic-{tag}", "labels.csv",
               lambda f: export_typographic(f, n=n, seed=base, size=size, progress=False))
    return {
        "toy-retrieval": load_coco_captions(ret / "captions.json", ret / "images", name="toy-retrieval"),
        "toy-shapes": load_labelled_csv(cls / "labels.csv", cls / "images", cls / "classes.txt", name="toy-shapes"),
        "toy-typographic": _named(load_scam(typ, variant="scam"), "toy-typographic"),
        "toy-blank-label": _named(load_scam(typ, variant="noscam"), "toy-blank-label"),
    }


def load_toy_factor_set(root: str | Path, n: int = 64, seed: int = 0, size: int = 64) -> ToySet:
    """Export (if not already there) and load the toy world's factor sweeps (``toy-factors``).

    Every factor of :data:`vlmkit.toyworld.factors.FACTORS` is swept on its own — each value, the unseen
    ones included, forced on ``max(2, n // 4)`` single-object scenes whose other factors follow the
    training distribution — as a shape-classification set whose ``factors`` attribute holds each image's
    factor labels and its ``sweep`` (:func:`vlmkit.data.factors.load_factor_annotations`).
    """
    from vlmkit.data.factors import load_factor_annotations
    from vlmkit.toyworld.factors import export_factor_set

    per_value = max(2, n // 4)
    folder = Path(root) / f"toy-factors-n{per_value}-s{seed}-px{size}"
    if not (folder / "factors.csv").is_file():
        export_factor_set(folder, n_per_value=per_value, seed=1_000_003 * (seed + 1) + 17, unseen=True, size=size)
    ds = load_labelled_csv(folder / "labels.csv", folder / "images", folder / "classes.txt", name="toy-factors")
    ds.factors = load_factor_annotations(folder / "factors.csv", ds)
    return ds


def _named(ds: TypographicImages, name: str) -> TypographicImages:
    ds.name = name
    return ds
