"""`vlmkit grid --data DIR` (the README's main command): notebooks run with notebooks/ as their working
directory, so the data folder reaches them as an absolute path resolved against the caller's folder,
and a missing folder is a one-line error before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

import vlmkit.grid
from vlmkit.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def captured(monkeypatch):
    calls: list[dict] = []

    def fake_run_grid(grid, **kwargs):
        calls.append({"grid": grid, **kwargs})
        return []

    monkeypatch.setattr(vlmkit.grid, "run_grid", fake_run_grid)
    return calls


def test_relative_data_folder_is_passed_as_absolute_path(tmp_path, monkeypatch, captured):
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "checkout").mkdir()
    monkeypatch.chdir(tmp_path / "checkout")
    assert main(["grid", str(REPO / "params" / "smoke.yaml"), "--data", "../shared/data", "--dry-run"]) == 0
    data_path = captured[0]["extra"]["data_path"]
    assert Path(data_path).is_absolute() and Path(data_path) == (tmp_path / "shared" / "data").resolve()


def test_no_data_flag_passes_no_data_path(captured):
    assert main(["grid", str(REPO / "params" / "smoke.yaml"), "--dry-run"]) == 0
    assert not captured[0]["extra"]


def test_missing_data_folder_is_a_clear_error(tmp_path, captured, capsys):
    assert main(["grid", str(REPO / "params" / "smoke.yaml"), "--data", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "--data folder" in err and "does not exist" in err and "nope" in err
    assert not captured, "nothing runs when the data folder is missing"
