"""The notebooks as users meet them: committed executed and in sync, and the smoke grid end to end
through papermill with a report whose tables and figures exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from vlmkit.grid.notebooks import packaged_notebooks

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(packaged_notebooks().glob("[0-9][0-9]_*.ipynb"))


def test_seven_notebooks_in_order():
    assert [p.stem[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06", "07"]


def test_notebooks_ship_inside_the_package_and_the_repo_root_shows_them():
    """Grids find the notebooks through importlib.resources (an installed wheel has them as package data);
    ``notebooks/`` at the repository root is a link to them."""
    assert packaged_notebooks() == REPO / "vlmkit" / "notebooks"
    assert sorted(p.name for p in (REPO / "notebooks").glob("*.ipynb")) == [p.name for p in NOTEBOOKS]
    assert '"notebooks/*.ipynb"' in (REPO / "pyproject.toml").read_text()  # package data of vlmkit


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_is_executed_with_defaults(path):
    """Readers see real outputs: every code cell ran, in order, without errors, and there is exactly one
    `parameters` cell of typed, commented literals."""
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    lines = [line for line in "".join(params[0]["source"]).splitlines() if line.strip()]
    for line in lines:
        # a type papermill parses: a name, brackets, or a quoted one ("Optional[int]": `int | None` it cannot read)
        assert re.match(r"^\w+: (\"[\w\[\], ]+\"|[\w\[\], ]+) = .+  # .+", line), f"untyped or uncommented parameter: {line!r}"
    # papermill (--help-notebook, papermill.inspect_notebook) must see every parameter with its help text
    from papermill.translators import PythonTranslator

    seen = PythonTranslator.inspect({"source": "\n".join(lines)})
    assert [p.name for p in seen] == [line.split(":")[0] for line in lines], f"papermill cannot parse {path.name}"
    assert all(p.help for p in seen)
    counts = [c.get("execution_count") for c in code]
    assert counts == list(range(1, len(code) + 1)), f"{path.name} is not executed top to bottom: {counts}"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{path.name} has error outputs"
    assert any(c.get("outputs") for c in code), f"{path.name} has no outputs"


@pytest.mark.slow
def test_smoke_grid_end_to_end_with_report(tmp_path):
    from vlmkit.grid import run_grid
    from vlmkit.report import build_report

    results = run_grid(REPO / "params" / "smoke.yaml", out_root=tmp_path, progress=False, extra={"n_images": 8})
    assert [r.status for r in results] == ["done"], [(r.failed_notebook, r.error) for r in results]
    run_dir = results[0].out_dir
    for nb in ("01_data", "02_attacks", "03_retrieval", "04_drift", "05_interpretability", "06_captions", "07_report"):
        assert (run_dir / f"{nb}.ipynb").is_file() and (run_dir / f".done-{nb}").is_file()
    report = build_report(tmp_path / "smoke")
    html = report.read_text()
    summary = pd.read_csv(report.parent / "summary.csv")
    assert {"toy:vit", "toy:rn"} <= set(summary["model"])
    assert {"i2t_R@1", "top1"} <= set(summary.columns)
    figures = re.findall(r'<img src="([^"]+)"', html)
    assert len(figures) >= 3
    for src in figures:
        assert (report.parent / src).is_file(), src
    # a second run skips every finished notebook
    again = run_grid(REPO / "params" / "smoke.yaml", out_root=tmp_path, progress=False, extra={"n_images": 8})
    assert [r.status for r in again] == ["skipped"]


#: The cells of each notebook that draw a figure, named by a call only they make; each must show its
#: figure inline in the committed notebook (the backend is the kernel's: no vlmkit import switches it).
FIGURE_CELLS = {
    "01_data": ["dataset_gallery(ds,", "axes[0].imshow(scene.image)"],
    "02_attacks": ["image_grid(torch.stack([shown", "log_spectrum(", "image_grid(torch.cat(views)", "natural_section(natural)",
                   "render_view("],
    "03_retrieval": ['degradation_curves(retrieval, "i2t_R@1"', 'degradation_curves(zeroshot, "top1"', "study_sections(",
                     "factor_section("],
    "04_drift": ["drift_distributions(", "instability_section(drift)", "heatmap(h,", "probe_section("],
    "05_interpretability": ["plot_relevance(torch.cat", "worst_failures(", "plot_head_maps(", "plot_head_sweep(",
                            "plot_latent_stats("],
    "06_captions": ["caption_gallery(", "semantics_section("],
    "07_report": ["for s in sections:"],
}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_figure_cells_show_their_figures_inline(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    for marker in FIGURE_CELLS[path.stem]:
        cells = [c for c in code if marker in "".join(c["source"])]
        assert len(cells) == 1, f"{path.stem}: {len(cells)} cells contain {marker!r}; expected one"
        images = [o for o in cells[0].get("outputs", []) if "image/png" in o.get("data", {})]
        assert images, f"{path.stem}: the cell drawing {marker!r} shows no figure inline"


def test_importing_vlmkit_figures_keeps_the_matplotlib_backend():
    import subprocess
    import sys

    code = ("import matplotlib; matplotlib.use('svg'); import vlmkit.report, vlmkit.report.figures, "
            "vlmkit.interpret; print(matplotlib.get_backend())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "svg"
