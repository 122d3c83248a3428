"""Grids through the cluster path (submitit's local executor), local workers, and one merged table.

The notebook is the cheapest possible grid cell: it writes one results row from its parameters.
A flag file beside the run folders makes a run fail once (then the retry succeeds) or always.
"""

from __future__ import annotations

import json
import time

import nbformat
import pandas as pd
import pytest
import yaml

pytest.importorskip("submitit")

from vlmkit.cli import build_parser  # noqa: E402
from vlmkit.grid import load_grid, run_grid  # noqa: E402
from vlmkit.errors import DataError  # noqa: E402

BODY = """\
import json, pathlib, time
from vlmkit.results import make_row, write_table
out = pathlib.Path(out_dir)
t0 = time.time()
time.sleep(sleep)
for name in (f"fail-once-{x}", f"fail-always-{x}"):
    flag = out.parent / name
    if flag.exists():
        if name.startswith("fail-once"):
            flag.unlink()
        raise RuntimeError(f"asked to fail ({name})")
rows = [make_row(model="m", dataset="d", perturbation="p", severity=x, metric=k, value=v, n=1, seed=0)
        for k, v in {"double": 2 * x, "square": x * x}.items()]
write_table(rows, out / "retrieval")
(out / "span.json").write_text(json.dumps([t0, time.time()]))
"""


def _notebook(path):
    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell("x: int = 1\nout_dir: str = '.'\nsleep: float = 0")
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p, nbformat.v4.new_code_cell(BODY)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster")
    nbs = root / "notebooks"
    nbs.mkdir()
    _notebook(nbs / "01_rows.ipynb")
    spec = {"name": "g", "notebooks": ["01_rows"], "axes": {"x": [1, 2, 3]},
            "executor": {"kind": "local", "workers": 1, "timeout_s": 120}}
    (root / "g.yaml").write_text(yaml.safe_dump(spec))
    return root, nbs


@pytest.fixture(scope="module")
def sequential(grid):
    root, nbs = grid
    res = run_grid(root / "g.yaml", out_root=root / "seq", notebooks_dir=nbs, progress=False)
    assert [r.status for r in res] == ["done"] * 3
    return pd.read_parquet(root / "seq/g/grid_results.parquet")


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    drop = ["time"]
    pd.testing.assert_frame_equal(a.drop(columns=drop).reset_index(drop=True), b.drop(columns=drop).reset_index(drop=True))


def test_sequential_table_has_every_run(sequential):
    assert list(sequential["run_id"]) == ["x-1", "x-1", "x-2", "x-2", "x-3", "x-3"]
    assert list(sequential["run"].unique()) == ["x-1/retrieval", "x-2/retrieval", "x-3/retrieval"]
    assert sequential.loc[sequential.metric == "square", "value"].tolist() == [1.0, 4.0, 9.0]


def test_submitit_path_retries_reports_resumes_and_matches_sequential(grid, sequential):
    root, nbs = grid
    out = root / "cluster"
    (out / "g").mkdir(parents=True)
    (out / "g/fail-once-2").touch()  # the first attempt of run x-2 fails, its retry succeeds
    (out / "g/fail-always-3").touch()  # run x-3 fails on every attempt
    opts = {"cluster": "local", "max_retries": 1, "timeout_min": 5, "poll_s": 0.2}
    res = {r.run.run_id: r for r in run_grid(root / "g.yaml", out_root=out, executor="slurm", executor_options=opts,
                                             notebooks_dir=nbs, progress=False)}
    assert res["x-1"].status == "done" and res["x-1"].attempts == 1
    assert res["x-2"].status == "done" and res["x-2"].attempts == 2
    bad = res["x-3"]
    assert bad.status == "failed" and bad.attempts == 2 and "RuntimeError: asked to fail (fail-always-3)" in bad.error
    assert bad.log is not None and bad.log.is_file() and bad.failed_notebook.name == "01_rows.ipynb"
    summary = json.loads((out / "g/grid.json").read_text())
    assert summary["executor"] == "slurm"
    assert {r["run_id"]: r["log"] for r in summary["runs"]}["x-3"] == str(bad.log)
    partial = pd.read_parquet(out / "g/grid_results.parquet")
    assert sorted(partial["run_id"].unique()) == ["x-1", "x-2"]  # finished runs are in the table already

    # resubmission: only the failed run is submitted again
    (out / "g/fail-always-3").unlink()
    jobs_before = set((out / "g/_jobs").iterdir())
    again = run_grid(root / "g.yaml", out_root=out, executor="slurm", executor_options=opts, notebooks_dir=nbs,
                     progress=False)
    assert [r.status for r in again] == ["skipped", "skipped", "done"]
    assert len(set((out / "g/_jobs").iterdir()) - jobs_before) == 1
    _same(pd.read_parquet(out / "g/grid_results.parquet"), sequential)

    # resumable across executors: the cluster's finished runs are not redone, by submitit or locally
    jobs_before = set((out / "g/_jobs").iterdir())
    assert [r.status for r in run_grid(root / "g.yaml", out_root=out, executor="slurm", executor_options=opts,
                                       notebooks_dir=nbs, progress=False)] == ["skipped"] * 3
    assert set((out / "g/_jobs").iterdir()) == jobs_before
    assert [r.status for r in run_grid(root / "g.yaml", out_root=out, notebooks_dir=nbs, progress=False)] == \
        ["skipped"] * 3
    _same(pd.read_parquet(out / "g/grid_results.parquet"), sequential)


def test_local_two_workers_run_in_parallel_and_match_sequential(grid, sequential):
    root, nbs = grid
    t0 = time.perf_counter()
    res = run_grid(root / "g.yaml", out_root=root / "par", notebooks_dir=nbs, progress=False, workers=2,
                   extra={"sleep": 1.5}, only=["x-1", "x-2"])
    assert [r.status for r in res] == ["done", "done"], [r.error for r in res]
    spans = [json.loads((root / f"par/g/x-{i}/span.json").read_text()) for i in (1, 2)]
    assert max(s[0] for s in spans) < min(s[1] for s in spans), f"runs did not overlap: {spans} ({time.perf_counter() - t0:.1f}s)"
    res = run_grid(root / "g.yaml", out_root=root / "par", notebooks_dir=nbs, progress=False, workers=2,
                   extra={"sleep": 1.5})
    assert [r.status for r in res] == ["skipped", "skipped", "done"]
    _same(pd.read_parquet(root / "par/g/grid_results.parquet"), sequential)


def test_executor_block_and_cli_flags(tmp_path):
    (tmp_path / "a.yaml").write_text("name: a\nnotebooks: [x]\nexecutor: {kind: slurm, partiton: gpu}\n")
    with pytest.raises(DataError, match=r"unknown keys \['partiton'\]"):
        load_grid(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("name: b\nnotebooks: [x]\nexecutor: {kind: kubernetes}\n")
    with pytest.raises(DataError, match="executor kind"):
        load_grid(tmp_path / "b.yaml")
    args = build_parser().parse_args(["grid", "g.yaml", "--executor", "slurm", "--partition", "gpu",
                                      "--gpus-per-node", "1", "--timeout-min", "30", "--mem-gb", "32",
                                      "--cpus-per-task", "8", "--max-retries", "2", "--chunk-size", "4"])
    assert (args.executor, args.partition, args.gpus_per_node, args.timeout_min, args.mem_gb, args.cpus_per_task,
            args.max_retries, args.chunk_size) == ("slurm", "gpu", 1, 30, 32.0, 8, 2, 4)


def test_slurm_executor_writes_the_resources_into_sbatch(tmp_path, monkeypatch):
    from vlmkit.grid.cluster import make_executor

    (tmp_path / "bin").mkdir()
    (tmp_path / "bin/srun").write_text("#!/bin/sh\nexit 1\n")  # submitit checks that srun exists, nothing runs
    (tmp_path / "bin/srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{__import__('os').environ['PATH']}")
    ex = make_executor(tmp_path / "jobs", {"partition": "gpu", "gpus_per_node": 2, "mem_gb": 64, "cpus_per_task": 8,
                                           "timeout_min": 90, "slurm": {"account": "proj"}}, name="vlmkit-g")
    sbatch = ex._executor._make_submission_file_text("python -m x", "uid")
    for line in ("--partition=gpu", "--gpus-per-node=2", "--mem=64GB", "--cpus-per-task=8", "--time=90",
                 "--account=proj", "--job-name=vlmkit-g"):
        assert f"#SBATCH {line}" in sbatch, (line, sbatch)
