"""Figures and the standalone HTML report (``vlmkit report DIR``)."""

from vlmkit.report.figures import degradation_curves, drift_histograms, heatmap, image_grid, log_spectrum, radar, save
from vlmkit.report.html import build_report, collect_results, radar_scores, summary_table

__all__ = ["build_report", "collect_results", "degradation_curves", "drift_histograms", "heatmap", "image_grid",
           "log_spectrum", "radar", "radar_scores", "save", "summary_table"]
