"""Text-prompted segmentation with CLIPSeg (Lüddecke & Ecker 2022), evaluated under perturbations.

CLIPSeg ("Image Segmentation Using Text and Image Prompts", CVPR 2022) puts a light transformer
decoder on a frozen CLIP: activations of a few vision layers are FiLM-conditioned on the prompt's
CLIP text embedding and decoded into a per-pixel logit map. This module brings it into the kit:

* :func:`load_clipseg` — ``"hf:CIDAS/clipseg-rd64-refined"``, ``"CIDAS/clipseg-rd64-refined"``,
  ``"clipseg:<id>"`` or a local ``save_pretrained`` folder, offline-aware like
  :func:`vlmkit.models.hf.load_hf` → :class:`CLIPSegTaskModel` with
  :meth:`~CLIPSegTaskModel.predict_masks` ``(images (B,3,H,W) in [0,1], prompts) -> (B,H,W)``
  probabilities at the input resolution;
* metrics :func:`foreground_iou` and :func:`pixel_accuracy` (registered in ``METRICS``);
* data: :class:`SegmentationSet` (image, prompt, binary mask), read from a PhraseCut-style folder by
  :func:`load_segmentation_folder` or made from the toy world's ground-truth masks by
  :func:`export_toy_segmentation` / :func:`load_toy_segmentation`;
* the grid task ``"segmentation"`` (:class:`SegmentationTask`, registered in ``TASKS``):
  ``evaluate_grid(["hf:CIDAS/clipseg-rd64-refined"], seg_set, perturbation_cells(...), out_dir=...)``.

Under geometric perturbations (family ``"geometric"``) the ground-truth mask is moved with the image
(the same perturbation, generator seed and parameters, border filled with background), so IoU keeps
measuring segmentation rather than misalignment; every other family leaves the mask as it is.
"""

from __future__ import annotations

import csv
import inspect
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vlmkit.data.images import ImageDataset, OnError, check_mode, check_on_error, check_size
from vlmkit.errors import DataError, DataNotFoundError, EmptyDatasetError, InputError, ModelSpecError, did_you_mean
from vlmkit.evaluate.cells import Cell
from vlmkit.metrics import control_drift, cosine_drift, prior_shift
from vlmkit.models.base import PreprocessConfig, WrapsModule, resize_and_normalise
from vlmkit.registry import METRICS, PERTURBATIONS, TASKS
from vlmkit.runtime import make_generator, resolve_device, resolve_dtype
from vlmkit.tasks.engine import Task, TaskData, TaskRunner, _hash
from vlmkit.tasks.loading import resolve_source, strip_prefix
from vlmkit.validate import check_images

#: CLIPSeg's processor (``ViTImageProcessor`` of ``CIDAS/clipseg-rd64-refined``): squash to 352, ImageNet stats.
CLIPSEG_DEFAULT_PREPROCESS = PreprocessConfig(size=(352, 352), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                                              interpolation="bilinear", resize_mode="squash")
_PIL_RESAMPLE = {0: "nearest", 1: "bilinear", 2: "bilinear", 3: "bicubic", 4: "area", 5: "bicubic"}


# ----------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------


def clipseg_preprocess_config(processor_cfg: dict[str, Any] | None) -> PreprocessConfig:
    """CLIPSeg preprocessing from a ``preprocessor_config.json`` dict (always a squash resize, as ViT's processor)."""
    d = CLIPSEG_DEFAULT_PREPROCESS
    if not processor_cfg:
        return d
    size = processor_cfg.get("size", d.size[0])
    if isinstance(size, dict):
        hw = (int(size.get("height", size.get("shortest_edge", d.size[0]))),
              int(size.get("width", size.get("shortest_edge", d.size[1]))))
    else:
        hw = (int(size), int(size))
    interp = _PIL_RESAMPLE.get(int(processor_cfg.get("resample", 2)), "bilinear")
    return PreprocessConfig(size=hw, mean=tuple(processor_cfg.get("image_mean", d.mean)),
                            std=tuple(processor_cfg.get("image_std", d.std)), interpolation=interp,
                            resize_mode="squash")


class CLIPSegTaskModel(WrapsModule):
    """A transformers ``CLIPSegForImageSegmentation`` behind a pixel-space interface.

    Images are float ``(B, 3, H, W)`` in [0, 1] of any size; the model's resize and normalisation are
    applied inside (:func:`vlmkit.models.base.resize_and_normalise`) and the logit map is resized back
    to ``(H, W)``. Parameters are frozen and the model is in eval mode. Masks are not differentiable
    in the pixels: transformers runs CLIPSeg's frozen CLIP under ``no_grad`` (so no attack cells yet).

    Attributes:
        name: The spec it was loaded from.
        preprocess_cfg: Resize/normalise settings (from ``preprocessor_config.json``).
        meta: Provenance (spec, weights folder or hub id).
    """

    family = "clipseg"

    def __init__(self, model: torch.nn.Module, tokenizer: Any, *, name: str,
                 preprocess_cfg: PreprocessConfig = CLIPSEG_DEFAULT_PREPROCESS,
                 meta: dict[str, Any] | None = None) -> None:
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.preprocess_cfg = preprocess_cfg
        self.meta = dict(meta or {})
        self.context_length = int(model.config.text_config.max_position_embeddings)

    @property
    def image_size(self) -> tuple[int, int]:
        return self.preprocess_cfg.size

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """``[0, 1]`` images → normalised model input ``(B, 3, *image_size)``."""
        check_images(x, "images")
        return resize_and_normalise(x.to(self.device).float(), self.preprocess_cfg).to(self.dtype)

    def encode_prompts(self, prompts: Sequence[str] | str) -> torch.Tensor:
        """CLIPSeg conditional embeddings ``(P, D)`` of text prompts (CLIP text projections)."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise InputError(f"prompts must be non-empty strings, got {prompts!r}")
        enc = self.tokenizer(prompts, padding=True, truncation=True, max_length=self.context_length,
                             return_tensors="pt")
        return self.model.get_conditional_embeddings(batch_size=len(prompts),
                                                     input_ids=enc["input_ids"].to(self.device),
                                                     attention_mask=enc["attention_mask"].to(self.device))

    def segment(self, images: torch.Tensor, prompts: Sequence[str] | str | None = None,
                prompt_emb: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Logit maps ``(B, H, W)`` at the input resolution and the CLIP image embeddings ``(B, D)``.

        Args:
            images: Float ``(B, 3, H, W)`` in [0, 1].
            prompts: One prompt for every image, or one per image.
            prompt_emb: Precomputed conditional embeddings ``(B, D)`` (or ``(1, D)``) instead of ``prompts``.
        """
        pixels = self.preprocess(images)
        B, (H, W) = images.shape[0], images.shape[-2:]
        if prompt_emb is None:
            if prompts is None:
                raise InputError("segment() needs prompts or prompt_emb")
            plist = [prompts] if isinstance(prompts, str) else list(prompts)
            if len(plist) not in (1, B):
                raise InputError(f"got {len(plist)} prompts for {B} images; pass one prompt or one per image")
            prompt_emb = self.encode_prompts(plist)
        if prompt_emb.shape[0] == 1 and B > 1:
            prompt_emb = prompt_emb.expand(B, -1)
        if prompt_emb.shape[0] != B:
            raise InputError(f"prompt_emb has {prompt_emb.shape[0]} rows for {B} images")
        out = self.model(pixel_values=pixels, conditional_embeddings=prompt_emb.to(self.device, self.dtype),
                         interpolate_pos_encoding=True)
        logits = out.logits.reshape(B, *out.logits.shape[-2:]).float()  # (B, h, w)
        if logits.shape[-2:] != (H, W):
            logits = F.interpolate(logits[:, None], size=(H, W), mode="bilinear", align_corners=False)[:, 0]
        return logits, out.pooled_output.float()

    def predict_masks(self, images: torch.Tensor, prompts: Sequence[str] | str) -> torch.Tensor:
        """Foreground probabilities ``(B, H, W)`` in [0, 1] for each image and its prompt."""
        with torch.inference_mode():
            logits, _ = self.segment(images, prompts)
        return torch.sigmoid(logits)

    def __repr__(self) -> str:
        return f"CLIPSegTaskModel(name={self.name!r}, image_size={self.image_size}, device={self.device})"


def load_clipseg(spec: str = "hf:CIDAS/clipseg-rd64-refined", device: str | torch.device | None = "auto",
                 dtype: str | torch.dtype | None = None) -> CLIPSegTaskModel:
    """Load CLIPSeg from a hub id or a local folder.

    Args:
        spec: ``"hf:CIDAS/clipseg-rd64-refined"``, ``"clipseg:CIDAS/clipseg-rd64-refined"``, the bare
            hub id, or a folder written by ``save_pretrained`` (with the tokenizer and, optionally,
            ``preprocessor_config.json``).
        device: "auto", "cpu", "cuda".
        dtype: Parameter dtype (default float32).

    Raises:
        ModelSpecError: The folder or checkpoint is not a CLIPSeg model.
        WeightsNotFoundError: Offline and not cached, or the download failed (the message says how to
            pass a local folder).
    """
    from transformers import AutoConfig, AutoTokenizer, CLIPSegForImageSegmentation

    from vlmkit.models.hf import _hub_processor_cfg, _read_json

    rest = strip_prefix(str(spec), ("clipseg:", "hf:", "transformers:"))
    src, is_local, load = resolve_source(rest, "CLIPSeg model", "hf:CIDAS/clipseg-rd64-refined")
    config = load(lambda **kw: AutoConfig.from_pretrained(src, **kw))
    if getattr(config, "model_type", None) != "clipseg":
        raise ModelSpecError(f"{spec!r} is a {getattr(config, 'model_type', None)!r} model, not CLIPSeg "
                             "(model_type 'clipseg'), e.g. 'hf:CIDAS/clipseg-rd64-refined'")
    model = load(lambda **kw: CLIPSegForImageSegmentation.from_pretrained(src, **kw))
    try:
        tokenizer = load(lambda **kw: AutoTokenizer.from_pretrained(src, **kw))
    except Exception as e:
        raise ModelSpecError(f"{spec!r}: no usable tokenizer next to the model ({type(e).__name__}: {e}); save one "
                             "with tokenizer.save_pretrained(folder)") from e
    cfg = _read_json(Path(src) / "preprocessor_config.json") if is_local else _hub_processor_cfg(src)
    dev = resolve_device(device)
    model = model.to(device=dev, dtype=resolve_dtype(dtype, dev))
    return CLIPSegTaskModel(model, tokenizer, name=str(spec), preprocess_cfg=clipseg_preprocess_config(cfg),
                            meta={"spec": str(spec), "weights": src})


# ----------------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------------


def _binary(m: torch.Tensor, threshold: float) -> torch.Tensor:
    return m if m.dtype == torch.bool else m > threshold


def _mask_pair(pred: torch.Tensor, target: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    if pred.shape != target.shape or pred.ndim != 3:
        raise InputError(f"expected pred and target masks (B, H, W) of one shape, got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}")
    return _binary(pred, threshold), _binary(target.to(pred.device), 0.5)


@METRICS.register("foreground_iou", kind="mask")
def foreground_iou(pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Foreground intersection-over-union per image ``(B,)``.

    Args:
        pred: Predicted masks ``(B, H, W)``: bool, or probabilities binarised at ``threshold``.
        target: Ground-truth masks ``(B, H, W)`` (bool or {0, 1}).
        threshold: Probability threshold for float predictions.

    Returns:
        ``|P ∩ T| / |P ∪ T|`` per image; 1 when both masks are empty.
    """
    p, t = _mask_pair(pred, target, threshold)
    inter = (p & t).flatten(1).sum(1).float()
    union = (p | t).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


@METRICS.register("pixel_accuracy", kind="mask")
def pixel_accuracy(pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Share of pixels whose foreground/background label is right, per image ``(B,)``."""
    p, t = _mask_pair(pred, target, threshold)
    return (p == t).flatten(1).float().mean(1)


# ----------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------


def decode_mask(path: Path, size: int, mode: str = "squash") -> np.ndarray:
    """Read a binary mask file to bool ``(S, S)``: nearest resize with the image geometry of ``mode``.

    A pixel is foreground when its grey value is above 127, or above 0 in masks stored as {0, 1}.

    Raises:
        DataNotFoundError: The file is missing.
        DataError: The file is not a readable image.
    """
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    try:
        with Image.open(path) as im:
            im.load()
            grey = im.convert("L")
    except FileNotFoundError:
        raise DataNotFoundError(f"mask file not found: {path}") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise DataError(f"cannot decode mask file {path}: {type(e).__name__}: {e}") from e
    arr = np.asarray(grey)
    fg = arr > (0 if arr.max() <= 1 else 127)
    m = Image.fromarray(fg.astype(np.uint8) * 255)
    if mode == "crop":
        m = TF.center_crop(TF.resize(m, size, interpolation=InterpolationMode.NEAREST), [size, size])
    else:
        m = TF.resize(m, [size, size], interpolation=InterpolationMode.NEAREST)
    return np.asarray(m) > 127


class SegmentationSet(ImageDataset):
    """Images, each with a text prompt and the binary mask of what the prompt names.

    Args:
        paths: Image file per item.
        mask_paths: Mask file per item (same original size as its image).
        prompts: Referring expression per item (``"a red star"``).
        name: Dataset name.
        on_error: Policy of :meth:`load_images` for unreadable images.

    Raises:
        DataError: Lengths disagree or a prompt is empty.
    """

    task = "segmentation"

    def __init__(self, paths: Sequence[str | Path], mask_paths: Sequence[str | Path], prompts: Sequence[str], *,
                 name: str = "segmentation", on_error: OnError = "raise") -> None:
        super().__init__(paths, name=name, on_error=on_error)
        self.mask_paths = [Path(p) for p in mask_paths]
        self.prompts = [str(p) for p in prompts]
        if not len(self.paths) == len(self.mask_paths) == len(self.prompts):
            raise DataError(f"{name}: {len(self.paths)} images, {len(self.mask_paths)} masks and {len(self.prompts)} "
                            "prompts: expected one mask and one prompt per image")
        for i, p in enumerate(self.prompts):
            if not p.strip():
                raise DataError(f"{name}: item {i} ({self.paths[i].name}) has an empty prompt")

    def _select(self, indices: list[int]) -> SegmentationSet:
        return SegmentationSet([self.paths[i] for i in indices], [self.mask_paths[i] for i in indices],
                               [self.prompts[i] for i in indices], name=self.name, on_error=self.on_error)

    def __getitem__(self, i: int) -> dict[str, Any]:
        j = self._index(i)
        return {"index": j, "path": self.paths[j], "mask_path": self.mask_paths[j], "prompt": self.prompts[j]}

    def content_hash(self) -> str:
        """Hash of the images, the masks and the prompts."""
        from vlmkit.data.images import file_digest

        return _hash(super().content_hash(), [file_digest(p) for p in self.mask_paths], self.prompts)

    def check_files(self, on_error: OnError | None = None) -> None:
        super().check_files(on_error)
        missing = [p for p in self.mask_paths if not p.is_file()]
        if missing:
            raise DataNotFoundError(f"{self.name}: mask file not found: {missing[0]}"
                                    + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))

    def load_masks(self, size: int, mode: str = "squash") -> torch.Tensor:
        """Every mask decoded to bool ``(N, S, S)`` with the geometry :meth:`load_images` uses for ``mode``.

        Raises:
            DataError: A mask's original size differs from its image's (the message names both files).
        """
        size, mode = check_size(size), check_mode(mode)
        self.check_files()
        out = np.zeros((len(self), size, size), dtype=bool)
        for i, (ip, mp) in enumerate(zip(self.paths, self.mask_paths)):
            with Image.open(ip) as im, Image.open(mp) as mm:
                if im.size != mm.size:
                    raise DataError(f"{self.name}: mask {mp} is {mm.size[0]}x{mm.size[1]} but its image {ip} is "
                                    f"{im.size[0]}x{im.size[1]}; masks must match their images pixel for pixel")
            out[i] = decode_mask(mp, size, mode)
        return torch.from_numpy(out)

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "prompts": len(set(self.prompts))}


_COLUMNS = ("image", "mask", "prompt")


def _read_annotations(path: Path) -> list[dict[str, str]]:
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataError(f"annotation file {path} is not valid JSON: {e.msg} at line {e.lineno}") from e
        if isinstance(data, dict):
            data = data.get("annotations", data.get("items"))
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise DataError(f"annotation file {path} must hold a JSON list of {{image, mask, prompt}} objects "
                            "(or {'annotations': [...]})")
        rows = [{k: str(v) for k, v in r.items()} for r in data]
        header = sorted({k for r in rows for k in r})
    else:
        try:
            with open(path, newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                header = [h.strip() for h in (reader.fieldnames or [])]
                rows = [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in reader]
        except (UnicodeDecodeError, csv.Error) as e:
            raise DataError(f"cannot parse CSV {path}: {e}") from e
    if not rows:
        raise EmptyDatasetError(f"annotation file {path} has no items")
    for col in _COLUMNS:
        if any(col not in r for r in rows):
            raise DataError(f"annotation file {path} has no {col!r} field (in at least one item); expected "
                            f"{list(_COLUMNS)}, found {header}.{did_you_mean(col, header)}")
    return rows


def load_segmentation_folder(root: str | Path, annotations: str | Path | None = None, *, images_dir: str = "images",
                             masks_dir: str = "masks", name: str | None = None,
                             on_error: OnError = "raise") -> SegmentationSet:
    """Load a PhraseCut-style referring-segmentation folder.

    Layout::

        root/images/<file>            the images
        root/masks/<file>.png         one binary mask per item (white/1 = the referred region)
        root/prompts.csv              columns image, mask, prompt (paths relative to images/, masks/)
        (or root/prompts.json         a list of {"image", "mask", "prompt"} objects)

    Several items may share an image (one per referring expression).

    Args:
        root: The folder.
        annotations: The CSV/JSON file (default: ``root/prompts.csv`` or ``root/prompts.json``).
        images_dir, masks_dir: Sub-folders the paths are relative to.
        name: Dataset name (default: the folder name).
        on_error: Image decoding policy.

    Raises:
        DataNotFoundError: The folder, the annotation file, an image or a mask is missing.
        DataError: A field is missing, a prompt is empty, or the file cannot be parsed.
        EmptyDatasetError: No items.
    """
    check_on_error(on_error)
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DataNotFoundError(f"segmentation folder not found (or not a folder): {base}")
    if annotations is None:
        found = [base / f for f in ("prompts.csv", "prompts.json") if (base / f).is_file()]
        if not found:
            raise DataNotFoundError(f"{base} has no prompts.csv or prompts.json; expected images/, masks/ and a CSV "
                                    "with columns image, mask, prompt (or pass annotations=...)")
        ann = found[0]
    else:
        ann = Path(annotations).expanduser()
        ann = ann if ann.is_absolute() or ann.is_file() else base / ann
        if not ann.is_file():
            raise DataNotFoundError(f"annotation file not found: {ann}")
    rows = _read_annotations(ann)
    for r, row in enumerate(rows, start=1):
        for col in _COLUMNS:
            if not row[col].strip():
                raise DataError(f"{ann.name} item {r}: empty {col!r} value")
    ds = SegmentationSet([base / images_dir / r["image"] for r in rows], [base / masks_dir / r["mask"] for r in rows],
                         [r["prompt"] for r in rows], name=name or base.name, on_error=on_error)
    ds.check_files(on_error)
    return ds


def export_toy_segmentation(root: str | Path, n: int = 200, seed: int | None = None, size: int = 64,
                            min_visible: float = 0.35) -> Path:
    """Write a toy-world referring-segmentation set in the :func:`load_segmentation_folder` layout.

    Each item is one scene of the renderer and one of its visible objects, named by colour and shape
    (``"a red star"``; only objects whose colour+shape is unique in the scene are chosen); its mask
    is the object's *visible* ground-truth mask (the pixels where it is on top).

    Args:
        root: Output folder (created).
        n: Number of items (scenes without a nameable object are skipped, drawing further scenes).
        seed: Scene stream seed (default: the toy world's held-out export seed).
        size: Image side.
        min_visible: Least visible share of an object that may be named.

    Returns:
        ``root`` as a Path.
    """
    from vlmkit.toyworld import EXPORT_SEED, render_spec, sample_spec, scene_rng
    from vlmkit.toyworld.export import scene_record
    from vlmkit.toyworld.grammar import article

    seed = EXPORT_SEED if seed is None else int(seed)
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    rows, gt, i = [], {}, 0
    while len(rows) < n:
        if i > 20 * n + 100:
            raise DataError(f"could not draw {n} toy scenes with a nameable object (drew {i})")
        scene = render_spec(sample_spec(scene_rng(seed, i, 7)), size)
        rng = scene_rng(seed, i, 8)
        i += 1
        keys = [(o.color, o.shape) for o in scene.objects]
        cands = [o for o in scene.objects if o.visible_fraction >= min_visible and keys.count((o.color, o.shape)) == 1]
        if not cands:
            continue
        obj = cands[int(rng.integers(len(cands)))]
        stem = f"{len(rows):06d}"
        Image.fromarray(scene.image).save(root / "images" / f"{stem}.png")
        Image.fromarray(obj.visible.astype(np.uint8) * 255).save(root / "masks" / f"{stem}.png")
        prompt = f"{article(obj.color)} {obj.color} {obj.shape}"
        rows.append((f"{stem}.png", f"{stem}.png", prompt))
        gt[stem] = {**scene_record(scene), "target": {"color": obj.color, "shape": obj.shape,
                                                      "bbox": list(obj.bbox)}}
    with open(root / "prompts.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(list(_COLUMNS))
        w.writerows(rows)
    (root / "ground_truth.json").write_text(json.dumps(gt))
    return root


def load_toy_segmentation(root: str | Path, n: int = 64, seed: int = 0, size: int = 64) -> SegmentationSet:
    """Export (once) and load a toy-world segmentation set under ``root/toy-segmentation-n{n}-s{seed}-px{size}``."""
    from vlmkit.toyworld import EXPORT_SEED

    folder = Path(root) / f"toy-segmentation-n{n}-s{seed}-px{size}"
    if not (folder / "prompts.csv").is_file():
        export_toy_segmentation(folder, n=n, seed=EXPORT_SEED + 7919 * (seed + 1), size=size)
    return load_segmentation_folder(folder, name="toy-segmentation")


# ----------------------------------------------------------------------------------------------------
# Grid task
# ----------------------------------------------------------------------------------------------------


def _moves_pixels(cell: Cell) -> bool:
    return cell.kind == "perturbation" and PERTURBATIONS.meta(cell.name).get("family") == "geometric"


@TASKS.register("segmentation", kind="grid", dataset="SegmentationSet",
                models="CLIPSeg (hf:CIDAS/clipseg-rd64-refined)")
class SegmentationTask(Task):
    """Text-prompted segmentation under perturbations (CLIPSeg; Lüddecke & Ecker 2022).

    Metrics per cell: ``iou_mean`` (mean per-image foreground IoU), ``cum_iou`` (total intersection
    over total union, PhraseCut's cumulative IoU), ``pixel_accuracy``, ``consistency_iou`` (IoU of the
    perturbed prediction with the clean one), ``mask_flip_rate`` (share of images whose consistency
    IoU falls below ``flip_iou``), and drift of CLIP's image embedding (``drift_mean``,
    ``control_drift_mean``, ``drift_ratio``, ``prior_shift_mean``). Family rows give IFR/IV of mask flips.

    Args:
        threshold: Probability above which a pixel is predicted foreground.
        flip_iou: Consistency IoU below which a prediction counts as flipped.
        mode: Image/mask decode geometry, ``"squash"`` (default; keeps the whole image, as CLIPSeg's
            processor) or ``"crop"``.
    """

    name = "segmentation"

    def __init__(self, threshold: float = 0.5, flip_iou: float = 0.5, mode: str = "squash") -> None:
        self.threshold, self.flip_iou, self.mode = float(threshold), float(flip_iou), check_mode(mode)

    def load_model(self, spec: str, device: torch.device) -> CLIPSegTaskModel:
        return load_clipseg(spec, device=device)

    def prepare(self, model: CLIPSegTaskModel, dataset: SegmentationSet, *, image_size: int | None,
                cache_dir: Path | None, progress: bool) -> TaskData:
        if not isinstance(dataset, SegmentationSet):
            raise InputError(f"task 'segmentation' needs a SegmentationSet, got {type(dataset).__name__}")
        size = int(image_size or max(model.image_size))
        images = dataset.load_images(size=size, mode=self.mode, cache_dir=cache_dir, progress=progress)
        masks = dataset.load_masks(size, self.mode)
        uniq = sorted(set(dataset.prompts))
        index = torch.tensor([uniq.index(p) for p in dataset.prompts])
        with torch.inference_mode():
            emb = torch.cat([model.encode_prompts(uniq[i:i + 256]) for i in range(0, len(uniq), 256)])
        key = _hash(dataset.content_hash(), size, self.mode, self.threshold, self.flip_iou)
        return TaskData(images, {"masks": masks, "prompt_emb": emb, "prompt_index": index}, key=key)

    def outputs(self, model: CLIPSegTaskModel, data: TaskData, cell: Cell, x: torch.Tensor, start: int, stop: int,
                runner: TaskRunner) -> dict[str, torch.Tensor]:
        emb = data.extras["prompt_emb"][data.extras["prompt_index"][start:stop]]
        logits, img_emb = model.segment(x, prompt_emb=emb)
        pred = torch.sigmoid(logits) > self.threshold  # (b, S, S)
        target = data.extras["masks"][start:stop].to(pred.device)
        if _moves_pixels(cell):
            target = self._move_mask(target, cell, runner.batch_seed(cell, start))
        inter = (pred & target).flatten(1).sum(1)
        union = (pred | target).flatten(1).sum(1)
        out = {"inter": inter.float(), "union": union.float(),
               "correct": (pred == target).flatten(1).float().mean(1), "emb": img_emb}
        if cell.kind == "clean":
            out["pred"] = pred.to(torch.uint8)
            out["consistency"] = torch.ones(len(pred))
        else:
            p0 = data.clean["pred"][start:stop].to(pred.device).bool()
            out["consistency"] = foreground_iou(pred, p0)
        return out

    @staticmethod
    def _move_mask(mask: torch.Tensor, cell: Cell, seed: int) -> torch.Tensor:
        """Apply a geometric cell to masks as to the images: same generator seed, background fill."""
        fn = PERTURBATIONS.get(cell.name)
        params = dict(cell.params)
        raw = getattr(fn, "raw", fn)
        if "fill" in inspect.signature(raw).parameters:
            params["fill"] = 0.0
        m = mask.float()[:, None].expand(-1, 3, -1, -1).contiguous()
        g = make_generator(seed, mask.device)
        return fn(m, cell.severity, generator=g, **params)[:, 0] > 0.5

    def metrics(self, data: TaskData, cell: Cell, out: dict[str, torch.Tensor], seed: int) -> dict[str, float]:
        inter, union = out["inter"], out["union"]
        iou = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
        m = {"iou_mean": float(iou.mean()), "cum_iou": float(inter.sum() / union.sum().clamp_min(1)),
             "pixel_accuracy": float(out["correct"].mean())}
        emb0, emb = data.clean["emb"], out["emb"]
        d = cosine_drift(emb0, emb)
        m["drift_mean"] = float(d.mean())
        if len(emb0) > 1:
            c = control_drift(emb0, make_generator(seed))
            m.update(control_drift_mean=float(c.mean()), drift_ratio=float(d.mean() / c.mean().clamp_min(1e-12)))
        m["prior_shift_mean"] = float(prior_shift(emb0, emb).mean())
        if cell.kind != "clean":
            m["consistency_iou"] = float(out["consistency"].mean())
            m["mask_flip_rate"] = float((out["consistency"] < self.flip_iou).float().mean())
        return m

    def flips(self, data: TaskData, out: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        flipped = (out["consistency"] < self.flip_iou).long()
        return torch.zeros_like(flipped), flipped


__all__ = ["CLIPSEG_DEFAULT_PREPROCESS", "CLIPSegTaskModel", "SegmentationSet", "SegmentationTask", "decode_mask",
           "export_toy_segmentation", "foreground_iou", "load_clipseg", "load_segmentation_folder",
           "load_toy_segmentation", "pixel_accuracy"]
