"""Numbers with their uncertainty: bootstrap and score intervals, paired tests, multiple-testing correction.

What: a confidence interval for every metric computed from per-item outcomes (:func:`bootstrap_ci`,
:func:`wilson_ci`; for retrieval :func:`retrieval_recall_ci`, from :func:`retrieval_items` and
:func:`retrieval_bootstrap`), a paired test for every difference between two
models on the same items (:func:`paired_bootstrap`, :func:`mcnemar_exact`), Holm's correction over a
family of such tests (:func:`holm`), and the same on tidy result tables (:func:`compare`,
:func:`across_seeds`).

The sampled unit is the *item* (an image with its label; for retrieval an image together with all
its captions), resampled with replacement; the evaluation's seed is fixed within a run, and the
variability across seeds is summarised separately (:func:`across_seeds`). Every resampling is seeded
(``numpy.random.default_rng(seed)``), vectorised (one ``(n_boot, n)`` index matrix) and deterministic.
Differences are ``a − b``.

References:
    Efron & Tibshirani 1993, *An Introduction to the Bootstrap* (percentile, BCa; Efron 1987, JASA 82).
    Wilson 1927, "Probable Inference, the Law of Succession, and Statistical Inference", JASA 22.
    McNemar 1947, "Note on the sampling error of the difference between correlated proportions or
    percentages", Psychometrika 12.
    Holm 1979, "A Simple Sequentially Rejective Multiple Test Procedure", Scand. J. Statist. 6.

This room imports only numpy, scipy, pandas, torch and :mod:`vlmkit.errors`.
"""

from vlmkit.stats.bootstrap import (
    CI,
    RetrievalItems,
    bootstrap_ci,
    first_positive_ranks,
    resample_indices,
    retrieval_bootstrap,
    retrieval_items,
    retrieval_recall_ci,
    wilson_ci,
)
from vlmkit.stats.compare import across_seeds, compare
from vlmkit.stats.correlation import Correlation, rank_correlation
from vlmkit.stats.tests import Comparison, holm, mcnemar_exact, paired_bootstrap

__all__ = [
    "Correlation",
    "rank_correlation",
    "CI", "Comparison", "RetrievalItems",
    "across_seeds", "bootstrap_ci", "compare", "first_positive_ranks", "holm", "mcnemar_exact", "paired_bootstrap", "resample_indices",
    "retrieval_bootstrap", "retrieval_items", "retrieval_recall_ci", "wilson_ci",
]
