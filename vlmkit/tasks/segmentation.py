"""The grid task ``"segmentation"``: text-prompted segmentation with CLIPSeg under perturbations.

CLIPSeg (Lüddecke & Ecker 2022, "Image Segmentation Using Text and Image Prompts") predicts a mask
for a text prompt; :class:`SegmentationTask` (registered in ``TASKS``) measures it under the grid's
cells: ``evaluate_grid(["hf:CIDAS/clipseg-rd64-refined"], seg_set, perturbation_cells(...), out_dir=...)``.
Its pieces live in their own modules:

* model: :mod:`vlmkit.tasks.clipseg` (:class:`~vlmkit.tasks.clipseg.CLIPSegTaskModel`,
  :func:`~vlmkit.tasks.clipseg.load_clipseg`);
* data: :mod:`vlmkit.tasks.masks` (:class:`~vlmkit.tasks.masks.SegmentationSet`, PhraseCut-style and
  toy-world loaders) and :mod:`vlmkit.toyworld.task_sets` (toy-world export);
* metrics: :mod:`vlmkit.metrics.segmentation` (``foreground_iou``, ``pixel_accuracy``).

Under geometric perturbations (family ``"geometric"``) the ground-truth mask is moved with the image
(the same perturbation, generator seed and parameters, border filled with background), so IoU keeps
measuring segmentation rather than misalignment; every other family leaves the mask as it is.

Attack cells (white-box, on [0, 1] pixels) maximise :class:`MaskBCE`, the per-image binary
cross-entropy of the predicted logits against the ground-truth mask (the untargeted segmentation
attack of Xie et al. 2017, "Adversarial Examples for Semantic Segmentation and Object Detection").
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from vlmkit.data.images import check_mode
from vlmkit.evaluate.cells import Cell
from vlmkit.evaluate.intervals import Items
from vlmkit.evaluate.task import Task, TaskData
from vlmkit.metrics.segmentation import foreground_iou
from vlmkit.registry import PERTURBATIONS, TASKS
from vlmkit.runtime import stable_hash
from vlmkit.tasks.clipseg import CLIPSegTaskModel, load_clipseg
from vlmkit.tasks.masks import SegmentationSet


def _moves_pixels(cell: Cell) -> bool:
    return cell.kind == "perturbation" and PERTURBATIONS.meta(cell.name).get("family") == "geometric"


class MaskBCE:
    """Objective ``(model, x_adv, batch) -> (B,)``: mean per-pixel BCE of CLIPSeg's logits against the mask.

    ``batch`` holds ``prompt_emb`` ``(B, D)`` (each image's prompt) and ``target`` ``(B, H, W)`` bool.
    """

    def __call__(self, model: CLIPSegTaskModel, x_adv: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        logits, _ = model.segment(x_adv, prompt_emb=batch["prompt_emb"])  # (B, H, W)
        target = batch["target"].to(logits.device).float()
        return F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1).mean(1)

    def __repr__(self) -> str:
        return "MaskBCE()"


@TASKS.register("segmentation", kind="grid", dataset="SegmentationSet",
                models="CLIPSeg (hf:CIDAS/clipseg-rd64-refined)")
class SegmentationTask(Task):
    """Text-prompted segmentation under perturbations (CLIPSeg; Lüddecke & Ecker 2022).

    Metrics per cell: ``iou_mean`` (mean per-image foreground IoU), ``cum_iou`` (total intersection
    over total union, PhraseCut's cumulative IoU), ``pixel_accuracy``, ``consistency_iou`` (IoU of the
    perturbed prediction with the clean one), ``mask_flip_rate`` (share of images whose consistency
    IoU falls below ``flip_iou``), and drift of CLIP's image embedding against control drift
    (:func:`vlmkit.metrics.drift_summary`). Family rows give IFR/IV of mask flips. Attack cells
    maximise :class:`MaskBCE`.

    Args:
        threshold: Probability above which a pixel is predicted foreground.
        flip_iou: Consistency IoU below which a prediction counts as flipped.
        mode: Image/mask decode geometry, ``"squash"`` (default; keeps the whole image, as CLIPSeg's
            processor) or ``"crop"``.
    """

    name = "segmentation"
    default_batch_size = 16
    dataset_types = (SegmentationSet,)

    def __init__(self, threshold: float = 0.5, flip_iou: float = 0.5, mode: str = "squash") -> None:
        self.threshold, self.flip_iou, self.mode = float(threshold), float(flip_iou), check_mode(mode)

    def options(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "flip_iou": self.flip_iou, "mode": self.mode}

    def load_model(self, spec: str, device: torch.device) -> CLIPSegTaskModel:
        return load_clipseg(spec, device=device)

    def prepare(self, model: CLIPSegTaskModel, dataset: SegmentationSet, *, image_size: int | None, cache: Any,
                cache_dir: Path | None, progress: bool) -> TaskData:
        self.check_dataset(dataset)
        size = int(image_size or max(model.image_size))
        images = dataset.load_images(size=size, mode=self.mode, cache_dir=cache_dir, progress=progress)
        masks = dataset.load_masks(size, self.mode)
        uniq = sorted(set(dataset.prompts))
        index = torch.tensor([uniq.index(p) for p in dataset.prompts])
        with torch.inference_mode():
            emb = torch.cat([model.encode_prompts(uniq[i:i + 256]) for i in range(0, len(uniq), 256)])
        key = stable_hash(dataset.content_hash(), size, self.options())
        return TaskData(images, {"masks": masks, "prompt_emb": emb, "prompt_index": index}, key=key)

    def targets(self, data: TaskData, cell: Cell, index: torch.Tensor, seed: int,
                device: torch.device) -> torch.Tensor:
        """Ground-truth masks ``(b, S, S)`` of items ``index``, moved with the image by geometric cells."""
        target = data.extras["masks"][index].to(device)
        if not _moves_pixels(cell):
            return target
        # the same cell on the mask: same per-image generators, border filled with background
        m = target.float()[:, None].expand(-1, 3, -1, -1).contiguous()
        return cell.apply(m, index, seed=seed, overrides={"fill": 0.0})[:, 0] > 0.5

    def outputs(self, model: CLIPSegTaskModel, data: TaskData, cell: Cell, x: torch.Tensor, index: torch.Tensor,
                seed: int) -> dict[str, torch.Tensor]:
        emb = data.extras["prompt_emb"][data.extras["prompt_index"][index]]
        logits, img_emb = model.segment(x, prompt_emb=emb)
        pred = torch.sigmoid(logits) > self.threshold  # (b, S, S)
        target = self.targets(data, cell, index, seed, pred.device)
        inter = (pred & target).flatten(1).sum(1)
        union = (pred | target).flatten(1).sum(1)
        out = {"inter": inter.float(), "union": union.float(),
               "correct": (pred == target).flatten(1).float().mean(1), "emb": img_emb}
        if cell.kind == "clean":
            out["pred"] = pred.to(torch.uint8)
            out["consistency"] = torch.ones(len(pred))
        else:
            p0 = data.clean["pred"][index].to(pred.device).bool()
            out["consistency"] = foreground_iou(pred, p0)
        return out

    def metrics(self, data: TaskData, cell: Cell, out: dict[str, torch.Tensor], seed: int) -> dict[str, float | Items]:
        inter, union = out["inter"], out["union"]
        iou = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
        m: dict[str, float | Items] = {
            "iou_mean": Items(iou, value=float(iou.mean())),
            "cum_iou": Items(torch.stack([inter.float(), union.float().clamp_min(1)], 1), statistic="ratio",
                             value=float(inter.sum() / union.sum().clamp_min(1))),
            "pixel_accuracy": Items(out["correct"], value=float(out["correct"].mean()))}
        m.update(self.drift(data.clean["emb"], out["emb"], seed))
        if cell.kind != "clean":
            flip = out["consistency"] < self.flip_iou
            m["consistency_iou"] = Items(out["consistency"], value=float(out["consistency"].mean()))
            m["mask_flip_rate"] = Items(flip, binary=True, value=float(flip.float().mean()))
        return m

    def flips(self, data: TaskData, out: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        flipped = (out["consistency"] < self.flip_iou).long()
        return torch.zeros_like(flipped), flipped

    def attack_inputs(self, model: CLIPSegTaskModel, data: TaskData, cell: Cell, index: torch.Tensor
                      ) -> tuple[Any, dict[str, Any]]:
        emb = data.extras["prompt_emb"][data.extras["prompt_index"][index]]
        return MaskBCE(), {"prompt_emb": emb, "target": data.extras["masks"][index]}


__all__ = ["MaskBCE", "SegmentationTask"]
