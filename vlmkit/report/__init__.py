"""Figures and the standalone HTML report (``vlmkit report DIR``)."""

from vlmkit.report.figures import (
    dataset_gallery,
    degradation_curves,
    drift_distributions,
    drift_histograms,
    heatmap,
    image_grid,
    item_titles,
    log_spectrum,
    radar,
    save,
)
from vlmkit.report.html import build_report, collect_results, radar_scores, summary_table
from vlmkit.report.section import Section
from vlmkit.report.studies import study_sections

__all__ = ["Section", "build_report", "collect_results", "dataset_gallery", "degradation_curves", "drift_distributions",
           "drift_histograms", "heatmap", "image_grid", "item_titles", "log_spectrum", "radar", "radar_scores", "save",
           "study_sections", "summary_table"]
