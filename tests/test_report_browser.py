"""The HTML report opened in headless Chromium: a screenshot that is not blank and shows coloured
figures, and every <img> of the page decoded (vlmkit.report.browser). The report is built by vlmkit's
own functions from a small real evaluation (two toy models, toy retrieval + zero-shot sets, two
perturbations at two severities), not from hand-written rows."""

from __future__ import annotations

import re
import shutil
import stat
import time
from pathlib import Path

import numpy as np
import pytest

from vlmkit.report.browser import (BrowserError, BrowserNotFoundError, find_chromium, rendered_images,
                                   screenshot)

pytestmark = pytest.mark.usefixtures("one_thread")


def _chromium() -> str:
    try:
        return find_chromium()
    except BrowserNotFoundError as e:
        pytest.skip(f"headless Chromium not installed ({e}); .ci/run installs the Debian packages "
                    "chromium and chromium-driver")


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """A report built from a small grid run with the rows of all four studies: toy:vit and toy:rn on toy
    retrieval (corruptions, frequency noise and frequency-constrained PGD by band and budget), zero-shot
    (corruptions, synthetic typographic attack) and typographic sets."""
    import vlmkit.perturb  # noqa: F401  (registers every perturbation)
    from vlmkit.data import load_datasets
    from vlmkit.evaluate import evaluate_grid, grid_cells
    from vlmkit.report import build_report

    _chromium()  # skip before spending seconds on a report no browser will open
    root = tmp_path_factory.mktemp("browser") / "grid"
    run = root / "run-0"
    data = load_datasets({"retrieval": "toy", "classification": "toy", "typographic": "toy"}, n_images=8, seed=0,
                         root=run / "data")
    models, kw = ["toy:vit", "toy:rn"], {"seed": 0, "device": "cpu", "progress": False}
    corrupt = grid_cells(["gaussian_noise", "low_pass"], [1, 3])
    freq = grid_cells(["band_noise"], perturbation_params={"band_noise": {"band": ["low", "high"], "norm": "linf",
                                                                          "eps": [2 / 255, 8 / 255]}},
                      attacks=["freq_pgd"], epsilons=[2 / 255, 8 / 255], attack_steps=2,
                      attack_params={"freq_pgd": {"band": ["low", "high"]}})
    typo = grid_cells(["typographic"], [3], perturbation_params={"typographic": {"mode": ["semantic", "empty"]}})
    evaluate_grid(models, data["retrieval"][0], corrupt + freq, out_dir=run / "retrieval", **kw)
    evaluate_grid(models, data["classification"][0], corrupt + typo, out_dir=run / "zeroshot", **kw)
    for ds in data["typographic"]:
        evaluate_grid(models, ds, [], out_dir=run / "typographic", **kw)
    return build_report(root)


def _pixels(png: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(png) as im:
        return np.asarray(im.convert("RGB"), dtype=np.int16)


def test_screenshot_of_report_is_not_blank_and_shows_figures(report, tmp_path):
    _chromium()
    figures = re.findall(r'<img src="([^"]+)"', report.read_text())
    assert len(figures) >= 3 and all((report.parent / f).is_file() for f in figures)
    t0 = time.perf_counter()
    png = screenshot(report, tmp_path / "report.png", width=1280, height=2000, timeout_s=60)
    assert time.perf_counter() - t0 < 60
    px = _pixels(png)
    assert px.shape == (2000, 1280, 3)
    assert px.std() > 20, "screenshot is (nearly) uniform: the page did not render"
    dark = (px.max(axis=2) < 100).mean()
    assert dark > 0.002, f"almost no text or lines in the screenshot ({dark:.4%} dark pixels)"
    # matplotlib's line colours (tab:blue, tab:orange ...) only come from the figures: the page itself is greyscale
    coloured = ((px.max(axis=2) - px.min(axis=2)) > 80).sum()
    assert coloured > 500, f"only {coloured} coloured pixels: no figure rendered in the screenshot"


def test_every_figure_of_report_loaded_in_the_browser(report):
    _chromium()
    loaded, total = rendered_images(report, timeout_s=60)
    n_img = len(re.findall(r"<img\b", report.read_text()))
    assert total == n_img > 0
    assert loaded == total, f"{total - loaded} of {total} figures did not load in Chromium"


def test_broken_figure_is_detected_and_original_page_untouched(report, tmp_path):
    _chromium()
    page = tmp_path / "report" / "report.html"
    shutil.copytree(report.parent, page.parent)
    figures = sorted((page.parent / "figures").glob("*.png"))
    figures[0].unlink()
    before = page.read_bytes()
    loaded, total = rendered_images(page, timeout_s=60)
    assert (loaded, total) == (len(figures) - 1, len(figures))
    assert page.read_bytes() == before
    assert sorted(p.name for p in page.parent.iterdir()) == sorted(p.name for p in report.parent.iterdir())


def test_each_study_section_renders(report, tmp_path):
    """The report reads like the studies: a section per study, each a headline figure and table that render in
    Chromium within the page width; a screenshot of each section is kept in the test's output folder."""
    _chromium()
    page = report.read_text()
    keys = re.findall(r'<h2 id="(\w+)">', page)
    assert keys == ["frequency", "corruptions", "natural", "instability", "attacks", "comparisons", "appendix"]
    assert page.index('<h2 id="frequency">') < page.index("<details>"), "the full table is an appendix, after the studies"
    head = page[: page.index("<body>") + len("<body>")]
    for key, nxt in zip(keys, keys[1:]):
        body = page[page.index(f'<h2 id="{key}">'): page.index(f'<h2 id="{nxt}">')]
        assert body.count("<img ") == 1 and '<div class="table">' in body, key
        section = report.parent / f"section-{key}.html"  # beside the report, so the figure paths resolve
        section.write_text(head + body + "</body></html>", encoding="utf-8")
        try:
            png = screenshot(section, tmp_path / f"section-{key}.png", width=1100, height=600, full_page=True,
                             timeout_s=60)
            assert rendered_images(section, timeout_s=60) == (1, 1), f"{key}: its figure did not load"
        finally:
            section.unlink()
        px = _pixels(png)
        assert px.shape[1] == 1100 and px.shape[0] > 300, (key, px.shape)
        assert ((px.max(axis=2) - px.min(axis=2)) > 80).sum() > 300, f"{key}: no coloured figure in its screenshot"
    print(f"section screenshots: {tmp_path}")


def test_full_page_screenshot_covers_every_figure(report, tmp_path):
    _chromium()
    px = _pixels(screenshot(report, tmp_path / "all.png", height=600, full_page=True, timeout_s=60))
    assert px.shape[0] > 2000, "the report with six figures is taller than 2000 px"
    coloured_rows = np.nonzero(((px.max(axis=2) - px.min(axis=2)) > 80).any(axis=1))[0]
    assert coloured_rows.max() > px.shape[0] * 0.6, "the last figures (near the bottom) are not in the picture"


# ---- failure modes, without a real browser ---------------------------------------------------------------


def _fake_browser(tmp_path: Path, body: str) -> str:
    exe = tmp_path / "fake-chromium"
    exe.write_text("#!/bin/sh\n" + body + "\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return str(exe)


def test_missing_browser_has_a_clear_error(tmp_path, monkeypatch):
    page = tmp_path / "p.html"
    page.write_text("<html><body></body></html>")
    with pytest.raises(BrowserNotFoundError, match="not found"):
        screenshot(page, tmp_path / "p.png", executable=tmp_path / "no-such-chromium")
    monkeypatch.setenv("VLMKIT_CHROMIUM", str(tmp_path / "no-such-chromium"))
    with pytest.raises(FileNotFoundError, match="no-such-chromium"):
        rendered_images(page)
    with pytest.raises(BrowserError, match="does not exist"):
        rendered_images(tmp_path / "missing.html", executable=_fake_browser(tmp_path, "exit 0"))


def test_browser_failure_and_hang_are_errors_not_hangs(tmp_path):
    page = tmp_path / "p.html"
    page.write_text("<html><body></body></html>")
    with pytest.raises(BrowserError, match="status 3"):
        screenshot(page, tmp_path / "p.png", executable=_fake_browser(tmp_path, "echo boom >&2; exit 3"))
    with pytest.raises(BrowserError, match="wrote no screenshot"):
        screenshot(page, tmp_path / "p.png", executable=_fake_browser(tmp_path, "exit 0"))
    with pytest.raises(BrowserError, match="no image count"):
        rendered_images(page, executable=_fake_browser(tmp_path, "echo '<html></html>'"))
    # a hung browser and its children are killed after the timeout
    pidfile = tmp_path / "child.pid"
    hang = _fake_browser(tmp_path, f"sleep 30 & echo $! > {pidfile}; wait")
    t0 = time.perf_counter()
    with pytest.raises(BrowserError, match="did not finish within 1 s"):
        rendered_images(page, timeout_s=1, executable=hang)
    assert time.perf_counter() - t0 < 10
    assert not _alive(int(pidfile.read_text())), "the hung browser's child process survived the timeout"


def _alive(pid: int) -> bool:
    for _ in range(20):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return False
        if state in ("Z", "X"):
            return False
        time.sleep(0.1)
    return True
