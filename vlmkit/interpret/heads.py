"""Attention heads of ViT image towers: per-head maps, attention to a region, and head-masking sweeps.

* :func:`head_attention_maps` — each head's attention from the class token (or the mean over all
  query tokens for towers that do not read the embedding from a class token: SigLIP's attention
  pooling, average pooling) to the patches, on the patch grid
  ``(B, L, heads, gh, gw)`` (Caron et al. 2021 show such maps for DINO; Gandelsman et al. 2024,
  "Interpreting CLIP's Image Representation via Text-Based Decomposition", for CLIP heads).
* :func:`region_attention` — per (layer, head), the share of a head's attention to patches that lands
  in a region (e.g. the box of a written word), against the region's share of the patches.
* :func:`head_mask_sweep` — zero each head's output in turn (``VLM.mask_heads``; Michel et al. 2019,
  "Are Sixteen Heads Really Better than One?") and record how each metric moves on each condition
  (clean, perturbed, ...), as a tidy table; :func:`critical_heads` lists the heads whose removal
  moves a metric by more than a threshold.

Metrics are callables ``metric(vlm) -> float`` evaluated with the mask active; the ``*_metric``
factories build the common ones (zero-shot accuracy, Recall@1, embedding drift, typographic flip
rate) over fixed inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from vlmkit.errors import InputError
from vlmkit.interpret.geometry import image_to_grid
from vlmkit.metrics.drift import cosine_drift
from vlmkit.metrics.retrieval import retrieval_metrics

MetricFn = Callable[[Any], float]


def _query_rows(vlm: Any, query: str, N: int) -> slice:
    P = vlm.num_prefix_tokens
    if query == "auto":  # the rows the embedding is read from: the class token only for CLS pooling
        from vlmkit.interpret.relevance import readout

        query = "cls" if readout(vlm) == "cls" else "all"
    if query == "cls":
        if P == 0:
            raise InputError(f"query='cls': model {vlm.name!r} has no class token; use query='all'")
        return slice(0, 1)
    if query == "all":
        return slice(0, N)
    raise InputError(f"query={query!r}; expected 'auto', 'cls' or 'all'")


@torch.no_grad()
def head_attention_maps(vlm: Any, images: torch.Tensor, layers: Iterable[int] | None = None,
                        query: str = "auto") -> torch.Tensor:
    """Per-head attention to the patches, on the patch grid.

    Args:
        vlm: A ViT-tower :class:`vlmkit.VLM`.
        images: Float images in [0, 1] ``(B, 3, H, W)``.
        layers: Blocks to read (default: all).
        query: ``"cls"`` (the class token's row), ``"all"`` (mean over every query token's row) or
            ``"auto"`` (``cls`` when the embedding is read from the class token, else ``all``: SigLIP's
            attention pooling, average-pooled towers such as the toy ViT).

    Returns:
        ``(B, L, heads, gh, gw)`` attention probabilities to each patch (rows over patches sum to
        1 minus the attention kept on prefix tokens).
    """
    vlm.require_attention("head_attention_maps")
    idx = sorted({vlm.layer_index(int(li)) for li in (range(vlm.num_layers) if layers is None else layers)})
    heads = {vlm.heads_per_layer[li] for li in idx}
    if len(heads) != 1:
        raise InputError(f"layers {idx} have different head counts {sorted(heads)}; read them one at a time")
    with vlm.tap(record=idx) as t:
        vlm.encode_pixels(vlm.preprocess(images))
    P = vlm.num_prefix_tokens
    out = []
    for li in idx:
        A = t.probs[li].float()  # (B, h, N, N)
        rows = _query_rows(vlm, query, A.shape[-1])
        a = A[:, :, rows, P:].mean(2)  # (B, h, n)
        out.append(a.reshape(*a.shape[:2], *vlm.token_grid(a.shape[-1])))
    return torch.stack(out, 1).cpu()  # (B, L, h, gh, gw)


def region_attention(vlm: Any, images: torch.Tensor, masks: torch.Tensor, query: str = "auto",
                     batch_size: int = 64, progress: bool = True) -> pd.DataFrame:
    """How strongly each head attends to a region, per (layer, head).

    For image ``b`` with patch coverage ``c_j`` of the region (fraction of patch ``j`` inside the mask,
    through the model's resize/crop) and a head's attention ``a_j`` to patch ``j``::

        mass  = Σ_j a_j c_j / Σ_j a_j      (share of the head's patch attention in the region)
        share = Σ_j c_j / n                (the region's share of the patches)
        ratio = mass / share               (1 = no preference; > 1 = the head looks at the region)

    Args:
        vlm: A ViT-tower :class:`vlmkit.VLM`.
        images: Float images in [0, 1] ``(B, 3, H, W)``.
        masks: Bool region masks on the image frame ``(B, H, W)`` (e.g. from
            :func:`vlmkit.interpret.geometry.boxes_to_masks`).
        query: See :func:`head_attention_maps`.

    Returns:
        Tidy table with columns ``layer, head, mass, share, ratio`` (means over images, ``ratio`` the
        mean of per-image ratios), sorted by ``ratio`` descending.
    """
    if masks.shape[0] != images.shape[0] or tuple(masks.shape[-2:]) != tuple(images.shape[-2:]):
        raise InputError(f"masks {tuple(masks.shape)} must be (B, H, W) matching images {tuple(images.shape)}")
    mass_sum, ratio_sum, share_sum, n = 0.0, 0.0, 0.0, 0
    for s in tqdm(range(0, len(images), batch_size), desc="region attention", leave=False, disable=not progress):
        maps = head_attention_maps(vlm, images[s : s + batch_size], query=query).flatten(3)  # (b, L, h, n)
        cov = image_to_grid(masks[s : s + batch_size], vlm.preprocess_cfg, vlm.token_grid(maps.shape[-1]))
        cov = cov.flatten(1)[:, None, None, :]  # (b, 1, 1, n)
        mass = (maps * cov).sum(-1) / maps.sum(-1).clamp_min(1e-12)  # (b, L, h)
        share = cov.mean(-1).clamp_min(1e-12)  # (b, 1, 1)
        mass_sum = mass_sum + mass.sum(0)
        ratio_sum = ratio_sum + (mass / share).sum(0)
        share_sum += float(share.sum())
        n += maps.shape[0]
    L, h = mass_sum.shape
    rows = [dict(layer=li, head=hi, mass=float(mass_sum[li, hi] / n), share=share_sum / n,
                 ratio=float(ratio_sum[li, hi] / n)) for li in range(L) for hi in range(h)]
    return pd.DataFrame(rows).sort_values("ratio", ascending=False, ignore_index=True)


def head_mask_from_table(table: pd.DataFrame, top: int | None = None) -> dict[int, list[int]]:
    """``{layer: [heads]}`` for the first ``top`` rows of a table with ``layer``/``head`` columns."""
    rows = table if top is None else table.head(top)
    out: dict[int, list[int]] = {}
    for li, hi in zip(rows["layer"], rows["head"]):
        out.setdefault(int(li), []).append(int(hi))
    return out


def _normalise_metrics(metrics: Mapping[str, Any] | MetricFn) -> dict[str, dict[str, MetricFn]]:
    if callable(metrics):
        return {"all": {getattr(metrics, "__name__", "metric"): metrics}}
    out: dict[str, dict[str, MetricFn]] = {}
    for cond, m in metrics.items():
        if callable(m):
            out[str(cond)] = {getattr(m, "metric_name", getattr(m, "__name__", "metric")): m}
        elif isinstance(m, Mapping) and m and all(callable(f) for f in m.values()):
            out[str(cond)] = {str(k): f for k, f in m.items()}
        else:
            raise InputError(f"metrics[{cond!r}] must be a callable metric(vlm) -> float or a dict of them")
    if not out:
        raise InputError("metrics is empty: give at least one metric(vlm) -> float")
    return out


def _evaluate(vlm: Any, metrics: dict[str, dict[str, MetricFn]]) -> dict[tuple[str, str], float]:
    return {(c, m): float(fn(vlm)) for c, ms in metrics.items() for m, fn in ms.items()}


def mask_effect(vlm: Any, metrics: Mapping[str, Any] | MetricFn,
                head_mask: Mapping[int, Iterable[int]]) -> pd.DataFrame:
    """Metrics with ``head_mask`` applied jointly, against no mask.

    Returns:
        Tidy table ``condition, metric, baseline, value, delta`` (``delta = value - baseline``).
    """
    ms = _normalise_metrics(metrics)
    base = _evaluate(vlm, ms)
    with vlm.mask_heads(head_mask):
        masked = _evaluate(vlm, ms)
    return pd.DataFrame([dict(condition=c, metric=m, baseline=base[(c, m)], value=masked[(c, m)],
                              delta=masked[(c, m)] - base[(c, m)]) for (c, m) in base])


def head_mask_sweep(vlm: Any, metrics: Mapping[str, Any] | MetricFn, layers: Iterable[int] | None = None,
                    heads: Iterable[int] | None = None, progress: bool = True) -> pd.DataFrame:
    """Mask each (layer, head) in turn and measure every metric on every condition.

    Args:
        vlm: A ViT-tower :class:`vlmkit.VLM`.
        metrics: ``{condition: {metric_name: metric(vlm) -> float}}`` (e.g. ``{"clean": {"top1": f},
            "typographic": {"top1": g, "flip_rate": h}}``), ``{condition: metric}`` or one callable.
        layers: Blocks to sweep (default: all).
        heads: Heads to sweep in each block (default: all).
        progress: tqdm bar over heads.

    Returns:
        Tidy table ``layer, head, condition, metric, value, baseline, delta`` with one row per masked
        head, condition and metric (``baseline``: the unmasked value; ``delta = value - baseline``).
    """
    vlm.require_attention("head_mask_sweep")
    ms = _normalise_metrics(metrics)
    idx = sorted({vlm.layer_index(int(li)) for li in (range(vlm.num_layers) if layers is None else layers)})
    pairs = [(li, hi) for li in idx for hi in (range(vlm.heads_per_layer[li]) if heads is None else heads)]
    base = _evaluate(vlm, ms)
    rows = []
    for li, hi in tqdm(pairs, desc="head masking sweep", disable=not progress):
        with vlm.mask_heads({li: [hi]}):
            vals = _evaluate(vlm, ms)
        for (c, m), v in vals.items():
            rows.append(dict(layer=li, head=hi, condition=c, metric=m, value=v, baseline=base[(c, m)],
                             delta=v - base[(c, m)]))
    return pd.DataFrame(rows)


def critical_heads(table: pd.DataFrame, threshold: float, condition: str | None = None,
                   metric: str | None = None) -> pd.DataFrame:
    """Rows of a :func:`head_mask_sweep` table with ``|delta| > threshold``, largest first.

    Args:
        table: Output of :func:`head_mask_sweep`.
        threshold: Minimum absolute change of the metric.
        condition: Keep only this condition.
        metric: Keep only this metric.
    """
    t = table
    if condition is not None:
        t = t[t["condition"] == condition]
    if metric is not None:
        t = t[t["metric"] == metric]
    t = t[t["delta"].abs() > threshold]
    return t.reindex(t["delta"].abs().sort_values(ascending=False).index).reset_index(drop=True)


# ---------------------------------------------------------------------------------------------- metrics


def zero_shot_accuracy_metric(images: torch.Tensor, labels: torch.Tensor, classifier: torch.Tensor,
                              batch_size: int = 128) -> MetricFn:
    """``metric(vlm)``: zero-shot top-1 accuracy of ``images`` against class embeddings ``(C, D)``."""
    labels = torch.as_tensor(labels).long()

    def top1(vlm: Any) -> float:
        emb = vlm.embed_images(images, batch_size=batch_size, progress=False)  # (N, D)
        pred = (emb @ classifier.to(emb.device).T).argmax(1).cpu()
        return float((pred == labels).float().mean())

    top1.metric_name = "top1"  # type: ignore[attr-defined]
    return top1


def flip_rate_metric(images: torch.Tensor, attack_labels: torch.Tensor, classifier: torch.Tensor,
                     batch_size: int = 128) -> MetricFn:
    """``metric(vlm)``: share of zero-shot predictions equal to the *written* (misleading) class.

    The typographic flip rate of Goh et al. 2021 ("Multimodal Neurons in Artificial Neural
    Networks"): how often a written word moves the prediction to itself.
    """
    fn = zero_shot_accuracy_metric(images, attack_labels, classifier, batch_size)

    def flip_rate(vlm: Any) -> float:
        return fn(vlm)

    flip_rate.metric_name = "flip_rate"  # type: ignore[attr-defined]
    return flip_rate


def recall_at_1_metric(images: torch.Tensor, text_emb: torch.Tensor, text_to_image: torch.Tensor,
                       direction: str = "i2t", batch_size: int = 128) -> MetricFn:
    """``metric(vlm)``: Recall@1 (``"i2t"`` or ``"t2i"``) of ``images`` against fixed caption embeddings."""
    if direction not in ("i2t", "t2i"):
        raise InputError(f"direction={direction!r}; expected 'i2t' or 't2i'")
    t2i = torch.as_tensor(text_to_image).long()

    def recall_at_1(vlm: Any) -> float:
        emb = vlm.embed_images(images, batch_size=batch_size, progress=False)
        r = retrieval_metrics(emb, text_emb.to(emb.device), t2i, ks=(1,))
        return r[f"{direction}_R@1"]

    recall_at_1.metric_name = f"{direction}_R@1"  # type: ignore[attr-defined]
    return recall_at_1


def drift_metric(clean: torch.Tensor, perturbed: torch.Tensor, batch_size: int = 128) -> MetricFn:
    """``metric(vlm)``: mean cosine drift ``1 - cos(e(x), e(x'))`` between clean and perturbed images,
    both embedded with the current mask (Wani et al. 2026; :func:`vlmkit.metrics.cosine_drift`)."""
    if clean.shape != perturbed.shape:
        raise InputError(f"clean {tuple(clean.shape)} and perturbed {tuple(perturbed.shape)} must match")

    def drift(vlm: Any) -> float:
        a = vlm.embed_images(clean, batch_size=batch_size, progress=False)
        b = vlm.embed_images(perturbed, batch_size=batch_size, progress=False)
        return float(cosine_drift(a, b).mean())

    drift.metric_name = "drift"  # type: ignore[attr-defined]
    return drift


def embedding_metric(images: torch.Tensor, fn: Callable[[torch.Tensor], float], name: str,
                     batch_size: int = 128) -> MetricFn:
    """``metric(vlm)`` = ``fn(embeddings of images)``, for anything not covered above."""

    def metric(vlm: Any) -> float:
        return float(fn(vlm.embed_images(images, batch_size=batch_size, progress=False)))

    metric.metric_name = name  # type: ignore[attr-defined]
    return metric


def per_head_scores(table: pd.DataFrame, value: str = "delta", condition: str | None = None,
                    metric: str | None = None) -> torch.Tensor:
    """A layer × head matrix of one column of a sweep (or region-attention) table ``(L, heads)``."""
    t = table
    if condition is not None and "condition" in t:
        t = t[t["condition"] == condition]
    if metric is not None and "metric" in t:
        t = t[t["metric"] == metric]
    if t[["layer", "head"]].duplicated().any():
        raise InputError("several rows per (layer, head): pick one condition= and metric=")
    L, H = int(t["layer"].max()) + 1, int(t["head"].max()) + 1
    out = torch.full((L, H), float("nan"))
    li = torch.as_tensor(t["layer"].to_numpy(copy=True))
    hi = torch.as_tensor(t["head"].to_numpy(copy=True))
    out[li, hi] = torch.as_tensor(t[value].to_numpy(dtype="float32", copy=True))
    return out


__all__ = [
    "MetricFn", "critical_heads", "drift_metric", "embedding_metric", "flip_rate_metric", "head_attention_maps",
    "head_mask_from_table", "head_mask_sweep", "mask_effect", "per_head_scores", "recall_at_1_metric",
    "region_attention", "zero_shot_accuracy_metric",
]


def worst_failures(vlm: Any, images: torch.Tensor, labels: torch.Tensor, classifier: torch.Tensor, k: int = 6,
                   batch_size: int = 128) -> tuple[list[int], list[int]]:
    """The ``k`` misclassified images the model is most confident about (the failures worth explaining).

    Args:
        vlm: A :class:`~vlmkit.VLM`.
        images: ``(N, 3, H, W)`` in [0, 1] (or uint8).
        labels: True class per image ``(N,)``.
        classifier: Class embeddings ``(C, D)`` (:func:`vlmkit.models.zeroshot.zero_shot_classifier`).
        k: How many.
        batch_size: Images per forward pass.

    Returns:
        ``(indices, predicted classes)``, most confident failure first; fewer than ``k`` when fewer failed.
    """
    emb = vlm.embed_images(images, batch_size=batch_size, progress=False)  # (N, D)
    probs = (vlm.similarity(emb, classifier.to(emb.device))).float().softmax(-1).cpu()  # (N, C)
    conf, pred = probs.max(1)
    wrong = (pred != torch.as_tensor(labels).long().cpu()).nonzero().flatten()
    order = wrong[conf[wrong].argsort(descending=True)][:k]
    return order.tolist(), pred[order].tolist()
