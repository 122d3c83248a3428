"""Bootstrap and score confidence intervals for per-item outcomes, and for retrieval Recall@K.

* **Percentile** and **BCa** bootstrap intervals (Efron 1987, "Better Bootstrap Confidence Intervals",
  JASA 82(397); Efron & Tibshirani 1993, *An Introduction to the Bootstrap*, §13.3 and §14.3, Eq. 14.14–14.15):
  the bias correction ``z0 = Φ⁻¹(share of bootstrap statistics below the estimate)`` (ties counted
  half, as ``scipy.stats.bootstrap``), the acceleration ``a = Σ d_i³ / (6 (Σ d_i²)^{3/2})`` with
  ``d_i = θ̄_(·) − θ_(i)`` from the jackknife (leave-one-item-out) estimates.
* **Wilson** score interval for a proportion (Wilson 1927, "Probable Inference, the Law of Succession,
  and Statistical Inference", JASA 22(158)).
* **Retrieval Recall@K** with the *image* as the sampled unit: an image is resampled together with
  all its captions (COCO convention, several captions per image).

Every resampling is seeded (``numpy.random.default_rng(seed)``) and vectorised: one index matrix
``(n_boot, n)`` is drawn and reduced, with no Python loop over resamples. The index matrix is
``default_rng(seed).integers(0, n, (n_boot, n))``, the draw ``scipy.stats.bootstrap`` makes for
``rng=default_rng(seed)`` and ``n_resamples=n_boot``, so the two see the same resamples.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vlmkit.errors import InputError

#: A statistic: a name (``"mean"``, ``"median"``) or a callable ``(batch, n, ...) -> (batch,)``.
Statistic = str | Callable[[np.ndarray], np.ndarray]

METHODS = ("percentile", "bca")
STATISTICS = ("mean", "median")

# elements per block when a callable statistic is evaluated on jackknife batches (bounds memory at O(n) · block)
_JACK_BLOCK = 1 << 22
# elements per block of the similarity matrix in the retrieval ranks
_RANK_BLOCK = 1 << 24


@dataclass(frozen=True)
class CI:
    """A point estimate with its confidence interval.

    Attributes:
        estimate: The statistic on the full sample.
        low: Lower end of the interval.
        high: Upper end of the interval.
        n: Number of sampled units (items; images for retrieval).
        n_boot: Bootstrap resamples (0 for a closed-form interval such as Wilson's).
        ci: Confidence level, e.g. 0.95.
        method: ``"percentile"``, ``"bca"`` or ``"wilson"``.
    """

    estimate: float
    low: float
    high: float
    n: int
    n_boot: int
    ci: float
    method: str


# ---------------------------------------------------------------- checks
def as_array(x: Any, name: str, *, ndim: tuple[int, ...] = (1,), min_n: int = 1) -> np.ndarray:
    """``x`` (list, numpy array or torch tensor) as a finite float64 array with one of ``ndim`` dimensions."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise InputError(f"{name} must be numeric per-item outcomes, got {type(x).__name__}: {e}") from None
    if arr.ndim not in ndim:
        want = " or ".join(["(n,)", "(n, k)"][d - 1] for d in ndim)
        raise InputError(f"{name} must have shape {want}, got {arr.shape}")
    if arr.shape[0] < min_n:
        raise InputError(f"{name} needs at least {min_n} items, got {arr.shape[0]}")
    if not np.isfinite(arr).all():
        raise InputError(f"{name} holds {int((~np.isfinite(arr)).sum())} non-finite value(s); expected finite outcomes")
    return arr


def check_options(*, n_boot: int, ci: float, method: str | None = None) -> str | None:
    """Validate the common resampling options; returns ``method`` lower-cased."""
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise InputError(f"n_boot must be a positive integer, got {n_boot!r}")
    if not 0 < ci < 1:
        raise InputError(f"ci must be a confidence level in (0, 1), got {ci!r}")
    if method is None:
        return None
    m = str(method).lower()
    if m not in METHODS:
        raise InputError(f"method={method!r}; expected one of {', '.join(METHODS)}")
    return m


# ---------------------------------------------------------------- resampling
def resample_indices(n: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """Bootstrap index matrix: row ``b`` lists the ``n`` items (drawn with replacement) of resample ``b``.

    Args:
        n: Number of items (sampled units).
        n_boot: Number of resamples.
        seed: Seed of ``numpy.random.default_rng``.

    Returns:
        ``(n_boot, n)`` int64 indices in ``0..n-1``, ``default_rng(seed).integers(0, n, (n_boot, n))``,
        read-only: the last few matrices are kept (a cell's metrics share one draw), not redrawn.
    """
    if n < 1:
        raise InputError(f"n must be >= 1 items to resample, got {n}")
    if n_boot < 1:
        raise InputError(f"n_boot must be >= 1, got {n_boot}")
    return _draw(int(n), int(n_boot), int(seed))


@functools.lru_cache(maxsize=4)
def _draw(n: int, n_boot: int, seed: int) -> np.ndarray:
    idx = np.random.default_rng(seed).integers(0, n, (n_boot, n))
    idx.flags.writeable = False
    return idx


def resample_counts(idx: np.ndarray, n: int) -> np.ndarray:
    """How often each item appears in each resample: ``(n_boot, n)`` float64 counts of ``idx`` ``(n_boot, m)``."""
    n_boot = idx.shape[0]
    flat = (idx + (np.arange(n_boot, dtype=np.int64) * n)[:, None]).ravel()  # (n_boot · m,)
    return np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)


def resampled_sums(counts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``counts @ values``: each resample's sum of ``values`` ``(n,)`` or ``(n, K)`` from its multiplicities
    ``counts`` ``(n_boot, n)`` → ``(n_boot,)`` or ``(n_boot, K)``.

    A narrow product (``K <= 3``: a metric's outcomes, a ratio's two columns) is computed by ``np.einsum`` on the
    calling thread, not by numpy's BLAS: BLAS splits it over its own thread pool, which fights torch's OpenMP
    workers still spinning after a torch op (on 2 cores a 1000 × 1000 product took 2.3–5.9 ms right after a
    torch matmul against 0.05 ms alone; einsum takes 0.4–0.5 ms either way). A wider one goes to BLAS, whose
    blocking then gains more than the pool costs (20 columns: 4–5× faster than einsum).
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        return np.einsum("bu,u->b", counts, v)  # (n_boot,)
    flat = v.reshape(len(v), -1)  # (n, K)
    if flat.shape[1] > 3:
        return (counts @ flat).reshape(counts.shape[0], *v.shape[1:])  # (n_boot, K)
    vt = np.ascontiguousarray(flat.T)  # (K, n): rows read contiguously
    return np.einsum("bu,ku->bk", counts, vt).reshape(counts.shape[0], *v.shape[1:])  # (n_boot, K)


def _leave_one_out(n: int, rows: slice) -> np.ndarray:
    """Jackknife indices ``(len(rows), n - 1)``: row ``i`` lists every item but ``i``."""
    i = np.arange(n)[rows]
    j = np.arange(n - 1)
    return j[None, :] + (j[None, :] >= i[:, None])


def _apply(statistic: Statistic, batch: np.ndarray) -> np.ndarray:
    """``statistic`` on a batch of samples ``(B, n, ...)`` → ``(B,)``."""
    if statistic == "mean":
        return batch.mean(axis=1)
    if statistic == "median":
        return np.median(batch, axis=1)
    out = np.asarray(statistic(batch), dtype=np.float64)  # type: ignore[operator]
    if out.shape != (batch.shape[0],):
        raise InputError(f"statistic must map a batch {batch.shape} to one value per sample "
                         f"({batch.shape[0]},), got shape {out.shape}")
    return out


def _check_statistic(statistic: Statistic, x: np.ndarray) -> None:
    if isinstance(statistic, str):
        if statistic not in STATISTICS:
            raise InputError(f"statistic={statistic!r}; expected one of {', '.join(STATISTICS)} or a callable "
                             "(batch (B, n, ...)) -> (B,)")
        if x.ndim != 1:
            raise InputError(f"statistic={statistic!r} needs outcomes of shape (n,), got {x.shape}; pass a "
                             "callable statistic for (n, k) outcomes")
    elif not callable(statistic):
        raise InputError(f"statistic must be a name or a callable, got {type(statistic).__name__}")


def jackknife(x: np.ndarray, statistic: Statistic) -> np.ndarray:
    """Leave-one-item-out estimates ``(n,)`` of ``statistic`` on ``x`` ``(n, ...)``.

    The mean is closed form, ``(Σx − x_i) / (n − 1)``; any other statistic is evaluated on batches of
    leave-one-out samples ``(block, n − 1, ...)`` (blocks bound the memory).
    """
    n = x.shape[0]
    if statistic == "mean":
        return (x.sum(axis=0) - x) / (n - 1)
    per_row = max(1, x[0].size * (n - 1))
    block = max(1, _JACK_BLOCK // per_row)
    return np.concatenate([_apply(statistic, x[_leave_one_out(n, slice(r, r + block))])
                           for r in range(0, n, block)])


# ---------------------------------------------------------------- intervals
def bca_levels(estimate: float, boot: np.ndarray, jack: np.ndarray, ci: float) -> np.ndarray:
    """The two quantile levels of the BCa interval (Efron & Tibshirani 1993, Eq. 14.10 and 14.14–14.15).

    ``z0 = Φ⁻¹(p̂)`` with ``p̂`` the share of ``boot`` below ``estimate``, ties counted half (as
    ``scipy.stats.bootstrap``), clipped to ``[1/(2B), 1 − 1/(2B)]`` so that an estimate outside the
    bootstrap range gives the extreme quantile instead of an infinite ``z0``; the acceleration
    ``a = Σ d³ / (6 (Σ d²)^{3/2})``, ``d = mean(jack) − jack`` (0 when the jackknife is constant).

    Args:
        estimate: The statistic on the full sample.
        boot: Bootstrap statistics ``(B,)``.
        jack: Jackknife (leave-one-out) statistics ``(n,)``.
        ci: Confidence level.

    Returns:
        ``(2,)`` levels in (0, 1) at which to read the bootstrap quantiles.
    """
    b = boot.shape[0]
    share = (np.count_nonzero(boot < estimate) + np.count_nonzero(boot <= estimate)) / (2 * b)
    from scipy.stats import norm  # lazy: scipy.stats costs ~1 s at import
    z0 = norm.ppf(np.clip(share, 1 / (2 * b), 1 - 1 / (2 * b)))
    d = jack.mean() - jack
    den = 6.0 * float((d ** 2).sum()) ** 1.5
    a = float((d ** 3).sum()) / den if den > 0 else 0.0
    alpha = (1 - ci) / 2
    z = norm.ppf([alpha, 1 - alpha])
    return norm.cdf(z0 + (z0 + z) / (1 - a * (z0 + z)))


def interval(estimate: float, boot: np.ndarray, *, ci: float, method: str,
             jack: np.ndarray | None = None) -> tuple[float, float]:
    """``(low, high)`` of a percentile or BCa interval from bootstrap statistics ``(B,)``.

    Quantiles are numpy's linear (type-7) quantiles, as ``scipy.stats.bootstrap``. BCa needs the
    jackknife statistics ``jack`` ``(n,)``.
    """
    if method == "percentile":
        alpha = (1 - ci) / 2
        levels = np.array([alpha, 1 - alpha])
    else:
        if jack is None:
            raise InputError("method='bca' needs the jackknife statistics")
        levels = bca_levels(estimate, boot, jack, ci)
    low, high = np.quantile(boot, levels)
    return float(low), float(high)


def bootstrap_ci(outcomes: Any, statistic: Statistic = "mean", *, n_boot: int = 1000, ci: float = 0.95,
                 method: str = "percentile", seed: int = 0) -> CI:
    """Bootstrap confidence interval of a statistic of per-item outcomes (items are the sampled unit).

    Efron & Tibshirani 1993: the percentile interval (§13.3) reads the ``(1 ± ci)/2`` quantiles of the
    bootstrap distribution; BCa (Efron 1987; §14.3) shifts them by the bias correction and the
    jackknife acceleration (see :func:`bca_levels`).

    Args:
        outcomes: Per-item values ``(n,)`` (e.g. 0/1 correctness), or ``(n, k)`` for a callable
            statistic over columns (e.g. a ratio of two per-item sums).
        statistic: ``"mean"``, ``"median"``, or a callable taking a resampled batch ``(B, n, ...)`` and
            returning ``(B,)``; it is also called on the full sample ``(1, n, ...)`` and, for BCa, on
            blocks of leave-one-out samples ``(block, n − 1, ...)``.
        n_boot: Number of resamples ``B``.
        ci: Confidence level.
        method: ``"percentile"`` or ``"bca"``.
        seed: Seed of the resampling (:func:`resample_indices`).

    Returns:
        :class:`CI`.
    """
    m = check_options(n_boot=n_boot, ci=ci, method=method)
    x = as_array(outcomes, "outcomes", ndim=(1, 2) if callable(statistic) else (1,), min_n=2)
    _check_statistic(statistic, x)
    n = x.shape[0]
    estimate = float(_apply(statistic, x[None])[0])
    idx = resample_indices(n, n_boot, seed)  # (B, n)
    boot = _apply(statistic, x[idx])  # (B,)
    jack = jackknife(x, statistic) if m == "bca" else None
    low, high = interval(estimate, boot, ci=ci, method=m, jack=jack)  # type: ignore[arg-type]
    return CI(estimate, low, high, n, n_boot, ci, m)  # type: ignore[arg-type]


def wilson_ci(successes: int, n: int, ci: float = 0.95) -> CI:
    """Wilson (1927) score interval of a proportion ``successes / n``.

    ``(p̂ + z²/2n ± z √(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n)`` with ``z = Φ⁻¹((1 + ci)/2)``; unlike the Wald
    interval it stays inside [0, 1] and keeps its coverage near 0 and 1 (Brown, Cai & DasGupta 2001).

    Args:
        successes: Number of successes ``k`` (0 <= k <= n).
        n: Number of trials (> 0).
        ci: Confidence level.

    Returns:
        :class:`CI` with ``estimate = k / n``, ``n_boot = 0``, ``method = "wilson"``.
    """
    if not 0 < ci < 1:
        raise InputError(f"ci must be a confidence level in (0, 1), got {ci!r}")
    if int(n) != n or n < 1:
        raise InputError(f"n must be a positive number of trials, got {n!r}")
    if int(successes) != successes or not 0 <= successes <= n:
        raise InputError(f"successes must be an integer count in 0..{n}, got {successes!r}")
    k, n = int(successes), int(n)
    p = k / n
    from scipy.stats import norm  # lazy: scipy.stats costs ~1 s at import
    z = float(norm.ppf(1 - (1 - ci) / 2))
    z2 = z * z
    den = 1 + z2 / n
    center = (p + z2 / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / den
    return CI(p, float(max(0.0, center - half)), float(min(1.0, center + half)), n, 0, ci, "wilson")


# ---------------------------------------------------------------- retrieval
def first_positive_ranks(sims: torch.Tensor, text_to_image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """1-based rank of the first positive, per image among all captions and per caption among all images.

    A rank is ``1 + #{candidates scored strictly above the best positive}``: a candidate tying with the best
    positive counts in the query's favour, so a rank does not depend on the order of the candidates (the rule
    of :func:`vlmkit.metrics.first_positive_rank`; :func:`vlmkit.metrics.retrieval_outcomes` ranks through
    this function). The matrix is read in row blocks, never copied whole.

    Args:
        sims: ``(N_img, N_txt)`` image × caption scores (any device).
        text_to_image: ``(N_txt,)`` image index of each caption, on ``sims``' device.

    Returns:
        ``(N_img,)`` image→text ranks (``N_txt + 1`` for an image without captions) and ``(N_txt,)``
        text→image ranks, both int64, on ``sims``' device.
    """
    n_img, n_txt = sims.shape
    dev = sims.device
    pos = sims[text_to_image, torch.arange(n_txt, device=dev)]  # (T,) score of each caption with its image
    best = torch.full((n_img,), -torch.inf, dtype=sims.dtype, device=dev).scatter_reduce(
        0, text_to_image, pos, "amax")  # (N,)
    i2t = torch.empty(n_img, dtype=torch.int64, device=dev)
    t2i = torch.zeros(n_txt, dtype=torch.int64, device=dev)
    rows = max(1, _RANK_BLOCK // max(1, n_txt))
    for r in range(0, n_img, rows):
        block = sims[r:r + rows]  # (rows, T)
        i2t[r:r + rows] = (block > best[r:r + rows, None]).sum(dim=1)
        t2i += (block > pos[None, :]).sum(dim=0)
    return i2t + 1, t2i + 1


@dataclass(frozen=True)
class RetrievalItems:
    """Per-item retrieval outcomes, computed once from the full similarity matrix.

    Attributes:
        ks: Cut-offs ``(K,)``.
        i2t_hits: ``(N_img, K)`` 1.0 where an image has a caption among its top k captions.
        caption_hits: ``(N_img, K)`` number of an image's captions whose image is among their top k images.
        n_captions: ``(N_img,)`` captions per image.
    """

    ks: tuple[int, ...]
    i2t_hits: np.ndarray
    caption_hits: np.ndarray
    n_captions: np.ndarray

    def names(self) -> list[str]:
        """Metric names in output order: ``i2t_R@k, t2i_R@k`` per cut-off."""
        return [f"{d}_R@{k}" for k in self.ks for d in ("i2t", "t2i")]


def retrieval_items(sims: torch.Tensor | np.ndarray, text_to_image: torch.Tensor | np.ndarray | Sequence[int],
                    ks: Sequence[int] = (1, 5, 10)) -> RetrievalItems:
    """Per-image Recall@k outcomes of both directions from image × caption scores ``(N_img, N_txt)``.

    Ranks are on the full gallery, 1-based ranks of the first positive as
    :func:`vlmkit.metrics.retrieval_metrics`; a score tying with the best positive counts in the query's
    favour. The caption hits are summed per image (the sampled unit).
    """
    s = torch.as_tensor(sims).detach().cpu()
    if s.dtype in (torch.float16, torch.bfloat16):
        s = s.float()
    t2i = (text_to_image if isinstance(text_to_image, torch.Tensor)
           else torch.as_tensor(np.asarray(text_to_image))).detach().cpu()
    if s.ndim != 2 or not s.is_floating_point():
        raise InputError(f"sims must be float scores of shape (N_img, N_txt), got {s.dtype} {tuple(s.shape)}")
    n_img, n_txt = s.shape
    if n_img < 2 or n_txt < 1:
        raise InputError(f"sims needs at least 2 images and 1 caption, got shape {tuple(s.shape)}")
    if t2i.shape != (n_txt,) or t2i.is_floating_point() or t2i.dtype == torch.bool:
        raise InputError(f"text_to_image must hold one integer image index per caption ({n_txt},), got "
                         f"{t2i.dtype} {tuple(t2i.shape)}")
    t2i = t2i.long()
    if int(t2i.min()) < 0 or int(t2i.max()) >= n_img:
        raise InputError(f"text_to_image holds indices outside 0..{n_img - 1}")
    if not bool(torch.isfinite(s).all()):
        raise InputError("sims holds non-finite scores")
    kk = tuple(int(k) for k in ks)
    if not kk or min(kk) < 1:
        raise InputError(f"ks must be cut-offs >= 1, got {list(ks)}")

    i2t_rank, t2i_rank = first_positive_ranks(s, t2i)
    k_arr = np.asarray(kk)
    i2t_hits = (i2t_rank.numpy()[:, None] <= k_arr).astype(np.float64)  # (N, K)
    cap_hits = (t2i_rank.numpy()[:, None] <= k_arr).astype(np.float64)  # (T, K)
    owner = t2i.numpy()
    cap_sums = np.stack([np.bincount(owner, weights=cap_hits[:, j], minlength=n_img) for j in range(len(kk))],
                        axis=1)  # (N, K)
    n_caps = np.bincount(owner, minlength=n_img).astype(np.float64)  # (N,)
    return RetrievalItems(kk, i2t_hits, cap_sums, n_caps)


def retrieval_bootstrap(items: RetrievalItems, *, n_boot: int = 1000, seed: int = 0) -> dict[str, np.ndarray]:
    """Bootstrap distributions of Recall@k, images resampled with their captions (no loop over resamples).

    With ``counts`` ``(B, N_img)`` the multiplicity of each image in each resample (a bincount of the
    index matrix of :func:`resample_indices`): i2t Recall@k ``= counts @ i2t_hits / N_img`` and t2i
    Recall@k ``= counts @ caption_hits / counts @ n_captions`` (each caption weighs as often as its
    image was drawn). Two models scored on the same images with the same ``seed`` see the same
    resamples, so their distributions can be subtracted for a paired comparison.

    Args:
        items: :func:`retrieval_items`.
        n_boot: Number of resamples.
        seed: Seed of the resampling.

    Returns:
        ``{"i2t_R@1": (B,), "t2i_R@1": (B,), ...}`` (t2i is NaN in a resample of caption-less images only).
    """
    n_img = items.i2t_hits.shape[0]
    counts = resample_counts(resample_indices(n_img, n_boot, seed), n_img)  # (B, N)
    i2t = resampled_sums(counts, items.i2t_hits) / n_img  # (B, K)
    with np.errstate(invalid="ignore", divide="ignore"):
        t2i = resampled_sums(counts, items.caption_hits) / resampled_sums(counts, items.n_captions)[:, None]  # (B, K)
    out: dict[str, np.ndarray] = {}
    for j, k in enumerate(items.ks):
        out[f"i2t_R@{k}"], out[f"t2i_R@{k}"] = i2t[:, j], t2i[:, j]
    return out


def retrieval_recall_ci(sims: torch.Tensor | np.ndarray, text_to_image: torch.Tensor | np.ndarray | Sequence[int],
                        ks: Sequence[int] = (1, 5, 10), *, n_boot: int = 1000, ci: float = 0.95,
                        method: str = "percentile", seed: int = 0) -> dict[str, CI]:
    """Bootstrap intervals of image→text and text→image Recall@k, resampling images with their captions.

    The sampled unit is the image (a COCO image and its ~5 captions are one draw): per-image i2t
    hits (any caption among the top k) and per-caption t2i hits (its image among the top k) are
    computed once from the full matrix (:func:`retrieval_items`), and each resample only re-weights
    them (:func:`retrieval_bootstrap`): i2t Recall@k is the mean hit over the resampled images, t2i
    Recall@k the mean hit over the captions of the resampled images.

    Ranks stay on the full gallery: the candidates an image or caption is ranked against are not
    resampled (the standard approximation; each hit stays fixed, so the interval reflects the
    sampling of the queries, not of the gallery). Definitions as :func:`vlmkit.metrics.retrieval_metrics`
    (CLIP_benchmark); scores that tie with the best positive count in the query's favour.

    Args:
        sims: Image × caption scores ``(N_img, N_txt)`` (e.g. ``image_emb @ text_emb.T``), torch or numpy.
        text_to_image: Image index of each caption ``(N_txt,)``.
        ks: Cut-offs.
        n_boot: Number of resamples of the images.
        ci: Confidence level.
        method: ``"percentile"`` or ``"bca"`` (jackknife over images, closed form).
        seed: Seed of the resampling.

    Returns:
        ``{"i2t_R@1": CI, "t2i_R@1": CI, ...}`` (recalls in [0, 1], ``n`` = number of images).
    """
    m = check_options(n_boot=n_boot, ci=ci, method=method)
    items = retrieval_items(sims, text_to_image, ks)
    boot = retrieval_bootstrap(items, n_boot=n_boot, seed=seed)
    n_img = items.i2t_hits.shape[0]
    est = {"i2t": items.i2t_hits.mean(axis=0), "t2i": items.caption_hits.sum(axis=0) / items.n_captions.sum()}
    jack: dict[str, np.ndarray] = {}
    if m == "bca":  # leave one image (and its captions) out, closed form
        jack["i2t"] = (items.i2t_hits.sum(axis=0) - items.i2t_hits) / (n_img - 1)  # (N, K)
        with np.errstate(invalid="ignore", divide="ignore"):
            jack["t2i"] = ((items.caption_hits.sum(axis=0) - items.caption_hits)
                           / (items.n_captions.sum() - items.n_captions)[:, None])  # (N, K)
    out: dict[str, CI] = {}
    for j, k in enumerate(items.ks):
        for d in ("i2t", "t2i"):
            b = boot[f"{d}_R@{k}"]
            b = b[np.isfinite(b)]  # t2i: a resample of caption-less images only has no recall
            jk = jack[d][:, j][np.isfinite(jack[d][:, j])] if m == "bca" else None
            low, high = interval(float(est[d][j]), b, ci=ci, method=m, jack=jk)  # type: ignore[arg-type]
            out[f"{d}_R@{k}"] = CI(float(est[d][j]), low, high, n_img, n_boot, ci, m)  # type: ignore[arg-type]
    return out
