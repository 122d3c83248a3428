"""Tiny randomly initialised real architectures for tests (never the network)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

TINY_VIT = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 48, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
TINY_RN = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
TINY_TIMM = {
    "embed_dim": 32,
    "custom_text": True,
    "vision_cfg": {"image_size": 224, "timm_model_name": "vit_tiny_patch16_224", "timm_model_pretrained": False,
                   "timm_pool": "map", "timm_proj": ""},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def register_tiny_open_clip(folder: Path) -> list[str]:
    """Write the tiny configs as open_clip architecture JSONs and register them; returns their names."""
    import open_clip

    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for name, cfg in (("vlmkit-tiny-vit", TINY_VIT), ("vlmkit-tiny-rn", TINY_RN), ("vlmkit-tiny-timm", TINY_TIMM)):
        (folder / f"{name}.json").write_text(json.dumps(cfg))
        names.append(name)
    open_clip.add_model_config(folder)
    return names


def export_local_dir(arch: str, folder: Path, seed: int = 0) -> Path:
    """Create ``arch`` with seeded random weights and save it in open_clip's local-dir layout."""
    import open_clip
    from open_clip.factory import get_model_config
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = open_clip.create_model(arch)
    folder.mkdir(parents=True, exist_ok=True)
    pp = {"size": get_model_config(arch)["vision_cfg"]["image_size"], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
          "interpolation": "bilinear", "resize_mode": "squash"}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": get_model_config(arch), "preprocess_cfg": pp}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return folder


def save_tiny_hf(kind: str, folder: Path, seed: int = 0) -> Path:
    """A tiny random transformers CLIP or SigLIP saved with an offline-built CLIP BPE tokenizer."""
    from transformers import CLIPConfig, CLIPModel, SiglipConfig, SiglipModel

    from vlmkit.models.hf import save_offline_clip_tokenizer

    torch.manual_seed(seed)
    vision = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=3, image_size=32,
                  patch_size=8)
    if kind == "clip":
        text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                    vocab_size=49408, max_position_embeddings=77)
        model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=24))
        ctx = 77
    else:
        text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                    vocab_size=49408, max_position_embeddings=64)
        vision.pop("projection_dim", None)
        model = SiglipModel(SiglipConfig(text_config=text, vision_config={**vision, "hidden_size": 32,
                                                                            "num_attention_heads": 2}))
        ctx = 64
    model.save_pretrained(folder)
    save_offline_clip_tokenizer(folder, context_length=ctx)
    return folder


def tiny_vit_model(cfg_folder: Path, seed: int = 0):
    """The random-init ``open_clip:vlmkit-tiny-vit`` as a loaded VLM on CPU (registers the tiny configs)."""
    import vlmkit

    register_tiny_open_clip(cfg_folder)
    torch.manual_seed(seed)
    return vlmkit.load_model("open_clip:vlmkit-tiny-vit", device="cpu")


def synthetic_captions(root: Path, n: int, name: str = "synthetic-caps"):
    """``n`` distinct 40x40 PNGs with two captions each, in COCO captions layout, loaded as a dataset."""
    import numpy as np
    from PIL import Image

    from vlmkit.data import load_coco_captions

    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images, anns = [], []
    for i in range(n):
        arr = (rng.random((40, 40, 3)) * 255).astype(np.uint8)
        arr[: 10 + i, :, i % 3] = 255
        Image.fromarray(arr).save(root / "images" / f"{i}.png")
        images.append({"id": i, "file_name": f"{i}.png"})
        anns += [{"id": 2 * i + k, "image_id": i, "caption": f"image number {i} variant {k}"} for k in range(2)]
    (root / "captions.json").write_text(json.dumps({"images": images, "annotations": anns}))
    return load_coco_captions(root / "captions.json", root / "images", name=name)
