"""Papermill grids: expansion, execution into run folders, skipping finished work, failures, timeouts."""

from __future__ import annotations

import json

import nbformat
import pytest
import yaml

from vlmkit.errors import DataError, DataNotFoundError, InputError
from vlmkit.grid import load_grid, run_grid


def _notebook(path, body: str, params: str = "x: int = 1\nout_dir: str = '.'\nfail: bool = False\nsleep: float = 0"):
    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell(params)
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def grid_dir(tmp_path):
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    _notebook(nbs / "01_write.ipynb", "import pathlib, time\ntime.sleep(sleep)\n"
              "assert not fail, 'asked to fail'\n"
              "pathlib.Path(out_dir, 'value.txt').write_text(str(x * 2))")
    _notebook(nbs / "02_read.ipynb", "import pathlib\nv = int(pathlib.Path(out_dir, 'value.txt').read_text())\n"
              "pathlib.Path(out_dir, 'double.txt').write_text(str(v * 2))")
    spec = {"name": "g", "notebooks": ["01_write", "02_read"], "parameters": {"x": 1},
            "axes": {"x": [1, 2]}, "variants": [{"variant": "ok"}, {"variant": "bad", "fail": True}]}
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(spec))
    return tmp_path, nbs


def test_expansion_ids_and_dry_run(grid_dir):
    root, nbs = grid_dir
    spec = load_grid(root / "g.yaml")
    ids = [r.run_id for r in spec.runs()]
    assert ids == ["variant-ok_x-1", "variant-ok_x-2", "variant-bad_x-1", "variant-bad_x-2"]
    planned = run_grid(root / "g.yaml", out_root=root / "out", dry_run=True, notebooks_dir=nbs, progress=False)
    assert [r.status for r in planned] == ["planned"] * 4 and not (root / "out").exists()
    with pytest.raises(InputError, match="matches no run"):
        spec.runs(only=["nothing*"])


def test_runs_execute_in_order_failures_are_reported_and_finished_runs_skipped(grid_dir):
    root, nbs = grid_dir
    res = run_grid(root / "g.yaml", out_root=root / "out", notebooks_dir=nbs, progress=False, timeout_s=120)
    status = {r.run.run_id: r for r in res}
    assert status["variant-ok_x-2"].status == "done"
    assert (root / "out/g/variant-ok_x-2/double.txt").read_text() == "8"
    bad = status["variant-bad_x-1"]
    assert bad.status == "failed" and bad.failed_notebook.name == "01_write.ipynb" and "asked to fail" in bad.error
    assert not (root / "out/g/variant-bad_x-1/double.txt").exists()  # later notebooks of a failed run don't run
    summary = json.loads((root / "out/g/grid.json").read_text())
    assert {r["run_id"]: r["status"] for r in summary["runs"]}["variant-bad_x-2"] == "failed"
    again = run_grid(root / "g.yaml", out_root=root / "out", only=["variant-ok*"], notebooks_dir=nbs, progress=False)
    assert [r.status for r in again] == ["skipped", "skipped"]


def test_hung_cell_ends_in_timeout_error(grid_dir):
    root, nbs = grid_dir
    (root / "slow.yaml").write_text(yaml.safe_dump({"name": "slow", "notebooks": ["01_write"],
                                                    "parameters": {"sleep": 60}}))
    res = run_grid(root / "slow.yaml", out_root=root / "out", notebooks_dir=nbs, progress=False, timeout_s=3)
    assert res[0].status == "failed" and "Timeout" in res[0].error


def test_bad_grid_files(tmp_path):
    (tmp_path / "a.yaml").write_text("name: a\nnotebooks: []\n")
    with pytest.raises(DataError, match="'notebooks' must be a non-empty list"):
        load_grid(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("name: b\nnotebooks: [x]\nsevrities: [1]\n")
    with pytest.raises(DataError, match=r"unknown keys \['sevrities'\]"):
        load_grid(tmp_path / "b.yaml")
    with pytest.raises(DataNotFoundError, match="does not exist"):
        load_grid(tmp_path / "missing.yaml")

