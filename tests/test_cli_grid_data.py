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


def test_notebooks_command_copies_the_packaged_notebooks_and_refuses_to_overwrite(tmp_path, capsys):
    from vlmkit.grid.notebooks import packaged_notebooks

    shipped = sorted(p.name for p in packaged_notebooks().glob("*.ipynb"))
    assert len(shipped) == 7
    dest = tmp_path / "my-notebooks"
    assert main(["notebooks", str(dest)]) == 0
    assert sorted(p.name for p in dest.iterdir()) == shipped
    first = dest / shipped[0]
    assert first.read_bytes() == (packaged_notebooks() / shipped[0]).read_bytes()
    assert f"{len(shipped)} notebooks copied" in capsys.readouterr().out

    first.write_text("my edits")
    assert main(["notebooks", str(dest)]) == 2
    err = capsys.readouterr().err
    assert "already in" in err and "--force" in err and shipped[0] in err
    assert first.read_text() == "my edits", "nothing is overwritten without --force"

    assert main(["notebooks", str(dest), "--force"]) == 0
    assert first.read_bytes() == (packaged_notebooks() / shipped[0]).read_bytes()


def test_grid_runs_the_notebooks_of_a_folder_given_by_notebooks(tmp_path, captured):
    assert main(["grid", str(REPO / "params" / "smoke.yaml"), "--notebooks", str(tmp_path), "--dry-run"]) == 0
    assert captured[0]["notebooks_dir"] == tmp_path.resolve()
    assert main(["grid", str(REPO / "params" / "smoke.yaml"), "--notebooks", str(tmp_path / "nope")]) == 2
    assert len(captured) == 1


def test_help_imports_nothing_heavy():
    import subprocess
    import sys

    code = ("import sys\nfrom vlmkit.cli import build_parser\nbuild_parser()\n"
            "heavy = sorted(m for m in ('torch', 'pandas', 'vlmkit.robust', 'vlmkit.grid') if m in sys.modules)\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    out = subprocess.run([sys.executable, "-m", "vlmkit", "robust", "--help"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and "usage: vlmkit robust" in out.stdout and "--steps" in out.stdout
