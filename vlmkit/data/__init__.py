"""Datasets of vlmkit: captioned, labelled and typographic image sets with decode-once loading.

Every set is built from paths you pass (nothing here looks for data on its own) and decodes each
image once per resolution into a cached ``uint8`` tensor ``(N, 3, S, S)``::

    from vlmkit.data import load_coco_captions, to_float

    ds = load_coco_captions("coco-mini/captions.json", "coco-mini/images")
    small = ds.subset(n=32, seed=0)             # 32 images with all their captions
    x = small.load_images(size=224)             # (32, 3, 224, 224) uint8, cached on disk
    batch = to_float(x[:8])                     # (8, 3, 224, 224) float32 in [0, 1]
    mask = small.positive_mask()                # (32, T) bool

Notebooks and grids name their data with one ``datasets`` parameter (role -> spec, see
:mod:`vlmkit.data.sources`): ``load_datasets({"retrieval": {"format": "karpathy", ...}}, n_images=None, ...)``.
"""

from vlmkit.data.captions import CaptionedImages, CaptionedItem, load_coco_captions, load_karpathy
from vlmkit.data.classnames import (
    imagenet_a_indices,
    imagenet_a_wnids,
    imagenet_classnames,
    imagenet_r_indices,
    imagenet_r_wnids,
    imagenet_subset_classnames,
    imagenet_wnids,
    openai_templates,
)
from vlmkit.data.images import ImageDataset, decode_image, default_cache_dir, to_float
from vlmkit.data.labelled import LabelledImages, LabelledItem, load_image_folder, load_labelled_csv, read_classnames
from vlmkit.data.sources import load_datasets, shared_layout, with_shared_layout
from vlmkit.data.specs import DATASET_FORMATS, DATASET_ROLES, check_datasets, dataset_name
from vlmkit.data.typographic import (
    SCAM_VARIANTS,
    TypographicImages,
    TypographicItem,
    load_rta100,
    load_scam,
    parse_rta100_name,
)

__all__ = [
    "DATASET_FORMATS",
    "DATASET_ROLES",
    "check_datasets",
    "dataset_name",
    "load_datasets",
    "shared_layout",
    "with_shared_layout",
    "CaptionedImages",
    "CaptionedItem",
    "ImageDataset",
    "LabelledImages",
    "LabelledItem",
    "SCAM_VARIANTS",
    "TypographicImages",
    "TypographicItem",
    "decode_image",
    "default_cache_dir",
    "imagenet_a_indices",
    "imagenet_a_wnids",
    "imagenet_classnames",
    "imagenet_r_indices",
    "imagenet_r_wnids",
    "imagenet_subset_classnames",
    "imagenet_wnids",
    "load_coco_captions",
    "load_image_folder",
    "load_karpathy",
    "load_labelled_csv",
    "load_rta100",
    "load_scam",
    "openai_templates",
    "parse_rta100_name",
    "read_classnames",
    "to_float",
]
