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



def test_a_custom_executor_runs_the_grid_and_is_named_in_grid_json(grid_dir):
    from vlmkit.grid import Executor, LocalExecutor

    class Recording(Executor):
        kind = "recording"

        def __init__(self) -> None:
            self.seen: list[str] = []

        def run(self, runs, grid_root, **kwargs):
            self.seen += [r.run_id for r in runs]
            return LocalExecutor().run(runs, grid_root, **kwargs)

    root, nbs = grid_dir
    ex = Recording()
    res = run_grid(root / "g.yaml", out_root=root / "out", only=["variant-ok*"], notebooks_dir=nbs, progress=False,
                   executor=ex)
    assert ex.seen == ["variant-ok_x-1", "variant-ok_x-2"] and [r.status for r in res] == ["done", "done"]
    assert json.loads((root / "out/g/grid.json").read_text())["executor"] == "recording"
    with pytest.raises(ValueError, match="executor 'kubernetes' is not available"):
        run_grid(root / "g.yaml", out_root=root / "out", notebooks_dir=nbs, progress=False, executor="kubernetes")


def test_grid_modules_import_one_way():
    """spec <- notebooks <- execute <- executors <- cluster <- runner: no grid module imports one after it."""
    import ast
    from pathlib import Path

    import vlmkit.grid

    order = ["spec", "notebooks", "execute", "executors", "cluster", "runner"]
    folder = Path(vlmkit.grid.__file__).parent
    for i, name in enumerate(order):
        tree = ast.parse((folder / f"{name}.py").read_text())
        imported = {n.module.split(".")[2] for n in ast.walk(tree)
                    if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("vlmkit.grid.")}
        assert not imported & set(order[i:]), f"grid.{name} imports {sorted(imported & set(order[i:]))}"


def test_packaged_notebooks_are_the_default(tmp_path):
    from vlmkit.grid.execute import NOTEBOOKS_DIR, notebook_path
    from vlmkit.grid.notebooks import packaged_notebooks

    assert NOTEBOOKS_DIR == packaged_notebooks() and notebook_path("01_data", NOTEBOOKS_DIR).is_file()
    with pytest.raises(DataNotFoundError, match=r"notebook '07_x' not found .* available: \['01_data'"):
        notebook_path("07_x", NOTEBOOKS_DIR)


def _parquet(path, rows):
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path, index=False)
    return path


def test_merge_files_order_columns_and_empty_files(tmp_path):
    import pandas as pd

    from vlmkit.results import merge_files

    a = _parquet(tmp_path / "a.parquet", [{"model": "m2", "metric": "x", "value": 1.0},
                                          {"model": "m1", "metric": "x", "value": 2.0}])
    b = _parquet(tmp_path / "b.parquet", [{"model": "m1", "metric": "y", "value": 3.0, "family": "noise"}])
    empty = tmp_path / "e.parquet"
    pd.DataFrame({"model": pd.Series([], dtype=str), "only_in_empty": pd.Series([], dtype=str)}).to_parquet(empty)

    df = merge_files([a, empty, b])  # file order, each file's rows in order
    assert list(df["value"]) == [1.0, 2.0, 3.0]
    assert list(df.columns) == ["model", "metric", "value", "only_in_empty", "family"]  # union, first seen
    assert df["family"].isna().tolist() == [True, True, False] and df["value"].dtype == float
    assert list(df.index) == [0, 1, 2]

    by_model = merge_files([a, b], sort_by=["model", "no_such_column"])  # stable: ties keep file order
    assert list(zip(by_model["model"], by_model["value"])) == [("m1", 2.0), ("m1", 3.0), ("m2", 1.0)]

    tagged = merge_files([a, b], with_columns=lambda f: {"source": f.stem})
    assert list(tagged["source"]) == ["a", "a", "b"] and list(tagged.columns) == ["model", "metric", "value", "source",
                                                                                "family"]

    assert list(merge_files([], columns=["run_id", "model"]).columns) == ["run_id", "model"]
    assert merge_files([empty]).empty and list(merge_files([empty]).columns) == ["model", "only_in_empty"]



def test_merge_files_is_pandas_read_and_concat(tmp_path):
    """Against pandas itself: read_parquet of each file, concat, union of the columns (runs of files with one
    schema are converted at once; an index stays an index; a column all null in one file; per-item lists)."""
    import pandas as pd

    from vlmkit.results import merge_files

    frames = [pd.DataFrame({"model": ["m2", "m1"], "value": [1.0, 2.0], "n": [3, 4], "outcomes": [[0.5], [1.0, 0.0]]}),
              pd.DataFrame({"model": ["m3"], "value": [6.0], "n": [7], "outcomes": [[0.25]]}),  # a's schema
              pd.DataFrame({"model": ["m0"], "value": [None], "n": [None], "flag": [True]}),  # nulls, a bool
              pd.DataFrame({"model": ["q"], "value": [1.5]}, index=pd.Index(["r0"], name="rid")),  # a named index
              pd.DataFrame({"model": ["m4"], "value": [8.0], "n": [9], "outcomes": [[0.0]]})]
    files = []
    for i, df in enumerate(frames):
        files.append(tmp_path / f"{i}.parquet")
        df.to_parquet(files[-1], index=df.index.name is not None)
    for order in ([0, 1, 4], [0, 2, 1, 3, 4], [3, 2, 0]):
        picked = [files[i] for i in order]
        want = pd.concat([pd.read_parquet(f) for f in picked], ignore_index=True, sort=False)
        pd.testing.assert_frame_equal(merge_files(picked), want, check_exact=True)
        tagged = pd.concat([pd.read_parquet(f).assign(src=f.stem) for f in picked], ignore_index=True, sort=False)
        pd.testing.assert_frame_equal(merge_files(picked, with_columns=lambda f: {"src": f.stem}), tagged,
                                      check_exact=True)

def test_result_files_skip_report_and_cells_folders(tmp_path):
    from vlmkit.report import collect_results
    from vlmkit.results import result_files

    row = {"model": "m", "metric": "x", "value": 1.0}
    keep = [_parquet(tmp_path / "results.parquet", [row]), _parquet(tmp_path / "run/sub/results.parquet", [row])]
    _parquet(tmp_path / "report/results.parquet", [row])
    _parquet(tmp_path / "cells/results.parquet", [row])
    assert result_files(tmp_path) == sorted(keep)
    assert result_files(tmp_path / "missing") == []
    assert list(collect_results(tmp_path)["run"]) == [".", "run/sub"]
    # the folder's own name does not matter, only the parts below it
    inner = tmp_path / "report" / "grid"
    _parquet(inner / "r1/results.parquet", [row])
    assert list(collect_results(inner)["run"]) == ["r1"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError, match="no results.parquet"):
        collect_results(tmp_path / "empty")
    with pytest.raises(DataNotFoundError, match="does not exist"):
        collect_results(tmp_path / "missing")
