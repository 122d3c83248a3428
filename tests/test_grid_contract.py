"""The parameter contract of `vlmkit grid`: what notebooks declare, what grids may pass, checked before anything runs.

Every error is one line on stderr (exit code 2, no traceback) naming the grid file and the key; notebooks
get only the parameters they declare; -p/-y win over the file; model specs resolve up front, without
network (the hub's reachability is patched to False for every test here).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import nbformat
import pytest

from vlmkit.cli import grid_overrides, main
from vlmkit.errors import InputError, ModelSpecError, WeightsNotFoundError
from vlmkit.grid import check_parameters, check_value, load_grid, notebook_parameters, parameters_for, run_grid
from vlmkit.models import hub

REPO = Path(__file__).resolve().parents[1]

PARAMS_A = '''n_images: int = 4  # images per dataset
models: list[str] = ["toy:vit"]  # model specs
maybe: int | None = None  # papermill's own pattern skips this one
ratio: float = 0.5
tag: str = "a # b"  # a hash inside a string
loose = 3
perturbations: list[str] = ["gaussian_noise"]
out_dir: str = "."
'''
PARAMS_B = '''from typing import Any
attacks: list[str] = ["pgd"]
seed: int = 0
options: dict[str, Any] = {}
out_dir: str = "."
'''
# writes the names it sees after papermill's injected cell, and their values
BODY = '''import json, pathlib
_seen = {k: v for k, v in globals().items() if not k.startswith("_") and k not in ("In", "Out", "get_ipython",
         "exit", "quit", "open", "json", "pathlib", "Any")}
pathlib.Path(out_dir, NAME + ".json").write_text(json.dumps(_seen, default=str))
'''


def _notebook(path: Path, params: str, body: str) -> None:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """No test here may touch the network: the hub is unreachable and nothing is cached."""
    monkeypatch.setattr(hub, "reachable", lambda timeout_s=3.0: False)
    monkeypatch.setattr(hub, "cached_hub_file", lambda repo_id, filename: None)
    import vlmkit.models.check as check

    monkeypatch.setattr(check, "open_clip_url_cached", lambda url: False)


@pytest.fixture
def nbs(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _notebook(folder / "01_a.ipynb", PARAMS_A, "NAME = '01_a'\n" + BODY)
    _notebook(folder / "02_b.ipynb", PARAMS_B, "NAME = '02_b'\n" + BODY)
    return folder


def _grid(tmp_path: Path, text: str, name: str = "g.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


VALID = "name: g\nnotebooks: [01_a, 02_b]\nparameters:\n  n_images: 2\n  seed: 1\n"


def _cli(path: Path, nbs: Path, tmp_path: Path, *extra: str) -> int:
    return main(["grid", str(path), "--notebooks", str(nbs), "--out", str(tmp_path / "out"), "--dry-run", *extra])


def _one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("vlmkit: error: ") and "\n" not in err and "Traceback" not in err, err
    for n in needles:
        assert n in err, f"{n!r} not in {err!r}"
    return err


# --------------------------------------------------------------------------------------------- inspection


def test_notebook_parameters_read_every_annotation(nbs):
    ps = notebook_parameters(nbs / "01_a.ipynb")
    assert list(ps) == ["n_images", "models", "maybe", "ratio", "tag", "loose", "perturbations", "out_dir"]
    assert (ps["n_images"].type, ps["n_images"].default, ps["n_images"].help) == ("int", "4", "images per dataset")
    assert ps["models"].type == "list[str]" and ps["maybe"].type == "int | None"
    assert ps["tag"].default == '"a # b"' and ps["tag"].help == "a hash inside a string"
    assert ps["loose"].type == "" and ps["loose"].expected == "int"
    assert notebook_parameters(nbs / "02_b.ipynb")["options"].type == "dict[str, Any]"


@pytest.mark.parametrize("value, type_str, ok", [
    (3, "int", True), (True, "int", False), (3.0, "int", False), (3, "float", True), (2.5, "float", True),
    (True, "float", False), (None, "int | None", True), (4, "int | None", True), ("x", "int | None", False),
    (None, "Optional[int]", True), (["a", "b"], "list[str]", True), (["a", 1], "list[str]", False),
    ("a", "list[str]", False), ([1, 2.5], "list[float]", True), ({"a": 1}, "dict", True), ([], "dict", False),
    ({"a": [1]}, "dict[str, Any]", True), ({1: "a"}, "dict[str, Any]", False), ("anything", "Any", True),
    (False, "bool", True), (0, "bool", False), ("s", "str", True), (1, "str", False), ([1, "a"], "tuple[int, str]", True),
    ("x", "MyOwnClass", True),
])
def test_check_value(value, type_str, ok):
    assert check_value(value, type_str) is ok


def test_check_value_without_annotation_uses_the_default():
    assert check_value(3, "", default=1) and not check_value("3", "", default=1)
    assert check_value(3, "None", default=1.0) and check_value("x", "", default=None)
    assert check_value([1], "", default=[]) and not check_value({}, "", default=[])


def test_parameters_for_keeps_only_declared():
    assert parameters_for({"a": 1, "b": 2, "out_dir": "x"}, ["a", "out_dir", "c"]) == {"a": 1, "out_dir": "x"}


# -------------------------------------------------------------------------------------- grid file errors


@pytest.mark.parametrize("text, needles", [
    ("name: g\nnotebooks: 3\n", ["'notebooks'", "got 3"]),
    ("name: g\nnotebooks: [1, 2]\n", ["'notebooks'", "[1, 2]"]),
    ("name: g\nnotebooks: [01_a]\nparameters: [n_images, 4]\n", ["'parameters'", "mapping"]),
    ("name: g\nnotebooks: [01_a]\naxes: {seed: 3}\n", ["axes.seed", "list"]),
    ("name: g\nnotebooks: [01_a]\nvariants: {a: 1}\n", ["'variants'", "list of mappings"]),
    ("name: g\nnotebooks: [01_a]\nexecutor: 3\n", ["'executor'", "mapping"]),
    ("[1, 2]\n", ["must hold a mapping"]),
    ("", ["is empty"]),
    ("name: g\nnotebooks: [01_a, 07_nope]\n", ["notebooks", "'07_nope'", "Available: 01_a, 02_b"]),
    ("name: g\nnotebooks: [01_a]\nparamters: {n_images: 2}\n", ["unknown keys ['paramters']", "parameters"]),
    ("name: g\nnotebooks: [01_a]\nexecutor: {workers: many}\n", ["executor.workers"]),
])
def test_malformed_grid_files_are_one_line_errors(tmp_path, nbs, capsys, text, needles):
    path = _grid(tmp_path, text)
    assert _cli(path, nbs, tmp_path) == 2
    _one_line_error(capsys, str(path), *needles)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text, needles", [
    (VALID.replace("n_images: 2", "n_images: many"),
     ["n_images: 'many' is a str; 01_a declares n_images: int"]),
    (VALID.replace("n_images: 2", "n_imags: 2"), ["n_imags", "no notebook of the grid declares", "Did you mean: n_images"]),
    (VALID + "variants: [{variant: toy, ratio: fast}]\n", ["ratio (variants[0] 'toy'): 'fast' is a str", "float"]),
    (VALID + "axes: {maybe: [1, x]}\n", ["maybe (axes): 'x' is a str; 01_a declares maybe: int | None"]),
    (VALID + "variants: [{models: [toy:vit, 3]}]\n", ["models (variants[0])", "item 3 is an int", "list[str]"]),
    (VALID.replace("seed: 1", "seed: true"), ["seed: True is a bool; 02_b declares seed: int"]),
    (VALID.replace("seed: 1", "options: [1]"), ["options: [1] is a list", "dict[str, Any]"]),
    (VALID.replace("seed: 1", "loose: three"), ["loose: 'three' is a str; 01_a declares loose: int"]),
    (VALID.replace("seed: 1", "perturbations: [gausian_noise]"), ["perturbations", "gausian_noise",
                                                                  "Did you mean: gaussian_noise"]),
    (VALID.replace("seed: 1", "attacks: [pgd, pgdd]"), ["attacks", "'pgdd'", "Did you mean: pgd"]),
    (VALID.replace("seed: 1", "models: ['nofamily:x']"), ["models", "unknown model family 'nofamily'"]),
    (VALID.replace("seed: 1", "models: ['toy:nope']"), ["models", "unknown toy model 'nope'"]),
])
def test_parameter_contract_errors_name_file_key_and_expectation(tmp_path, nbs, capsys, text, needles):
    path = _grid(tmp_path, text)
    assert _cli(path, nbs, tmp_path) == 2
    _one_line_error(capsys, f"grid file {str(path)!r}", *needles)


def test_valid_grid_dry_run_and_registered_names_globs_families(tmp_path, nbs, capsys):
    text = VALID.replace("seed: 1", "perturbations: [gaussian_noise, '*blur', noise]\n  attacks: [pgd, apgd_ce]\n"
                                    "  out_dir: ignored\n  maybe: null")
    path = _grid(tmp_path, text + "variants: [{variant: toy, models: [toy:vit, toy:rn]}]\n")
    assert _cli(path, nbs, tmp_path) == 0
    assert "planned  toy" in capsys.readouterr().out
    assert not (tmp_path / "out").exists(), "a dry run creates nothing"


def test_overridden_values_are_not_checked_and_extra_needs_no_declaration(tmp_path, nbs):
    spec = load_grid(_grid(tmp_path, VALID.replace("n_images: 2", "n_images: many")))
    check_parameters(spec, nbs, overrides={"n_images": 3}, extra={"data_path": "/x"})
    with pytest.raises(InputError, match=r"n_images \(-p/-y\): 2\.5 is a float"):
        check_parameters(spec, nbs, overrides={"n_images": 2.5})
    with pytest.raises(InputError, match=r"run 'default'"):  # expanded runs: named by run id
        check_parameters(spec.runs(), nbs)


# ------------------------------------------------------------------------------------------- --out, names


def test_out_under_a_file_or_unwritable_is_an_error_before_anything_runs(tmp_path, nbs, capsys, monkeypatch):
    path = _grid(tmp_path, VALID)
    (tmp_path / "README.md").write_text("x")
    assert main(["grid", str(path), "--notebooks", str(nbs), "--out", str(tmp_path / "README.md" / "x")]) == 2
    _one_line_error(capsys, "--out", "README.md", "is a file")
    import vlmkit.grid.runner as runner

    monkeypatch.setattr(runner.os, "access", lambda p, mode: False)
    assert main(["grid", str(path), "--notebooks", str(nbs), "--out", str(tmp_path / "ro" / "x")]) == 2
    _one_line_error(capsys, "--out", "not writable")
    assert not (tmp_path / "ro").exists()


def test_grid_by_packaged_name(tmp_path, nbs, capsys, monkeypatch):
    import vlmkit.grid.spec as spec

    packaged = tmp_path / "packaged"
    packaged.mkdir()
    (packaged / "mini.yaml").write_text(VALID)
    monkeypatch.setattr(spec, "packaged_grids_dir", lambda: packaged)
    monkeypatch.chdir(tmp_path)
    assert spec.grid_path("mini") == packaged / "mini.yaml" and spec.grid_path("mini.yaml") == packaged / "mini.yaml"
    assert _cli(Path("mini"), nbs, tmp_path) == 0
    capsys.readouterr()
    assert _cli(Path("mnii"), nbs, tmp_path) == 2
    _one_line_error(capsys, "'mnii'", "Did you mean: mini", "Packaged grids: mini")


# --------------------------------------------------------------------------------------------- -p / -y


def test_overrides_parse_like_papermill():
    got = grid_overrides(["{n_images: 8, seed: 1}", "{seed: 2}"], [["models", '["toy:vit"]'], ["ratio", "1e-3"],
                                                                   ["maybe", "null"]], [["tag", "8"]])
    assert got == {"n_images": 8, "seed": 2, "models": ["toy:vit"], "ratio": 0.001, "maybe": None, "tag": "8"}


def test_cli_overrides_win_and_are_checked(tmp_path, nbs, capsys, monkeypatch):
    path = _grid(tmp_path, VALID + "axes: {n_images: [1, 2]}\n")
    assert _cli(path, nbs, tmp_path, "-p", "n_images", "8", "-y", "{maybe: 3}") == 0
    capsys.readouterr()
    assert _cli(path, nbs, tmp_path, "-p", "n_images", "many") == 2
    _one_line_error(capsys, "n_images (-p/-y): 'many' is a str; 01_a declares n_images: int")
    assert _cli(path, nbs, tmp_path, "-y", "[1]") == 2
    _one_line_error(capsys, "-y", "mapping")
    assert _cli(path, nbs, tmp_path, "-p", "n_imgs", "3") == 2
    _one_line_error(capsys, "n_imgs", "Did you mean: n_images")

    import vlmkit.grid

    seen = []
    monkeypatch.setattr(vlmkit.grid, "run_grid", lambda grid, **kw: seen.append(kw) or [])
    assert _cli(path, nbs, tmp_path, "-p", "n_images", "8", "-p", "models", "[toy:rn]") == 0
    assert seen[0]["overrides"] == {"n_images": 8, "models": ["toy:rn"]}


# ------------------------------------------------------------------------------- execution: own parameters


def test_each_notebook_gets_only_its_parameters_and_overrides_win(tmp_path, nbs, caplog):
    path = _grid(tmp_path, VALID.replace("seed: 1", "seed: 1\n  attacks: [pgd]") + "axes: {n_images: [1]}\n")
    with caplog.at_level(logging.WARNING):
        res = run_grid(path, out_root=tmp_path / "out", notebooks_dir=nbs, progress=False, timeout_s=120,
                       overrides={"n_images": 8, "maybe": 3})
    assert [r.status for r in res] == ["done"], res[0].error
    out = res[0].out_dir
    a = json.loads((out / "01_a.json").read_text())
    b = json.loads((out / "02_b.json").read_text())
    assert a["n_images"] == 8 and a["maybe"] == 3 and a["out_dir"] == str(out.resolve())
    assert "attacks" not in a and "seed" not in a
    assert b["attacks"] == ["pgd"] and b["seed"] == 1 and "n_images" not in b and "maybe" not in b
    assert not [r for r in caplog.records if "Passed unknown parameter" in r.getMessage()]
    marker = json.loads((out / ".done-02_b").read_text())
    assert set(marker["parameters"]) == {"attacks", "seed", "out_dir"}
    again = run_grid(path, out_root=tmp_path / "out", notebooks_dir=nbs, progress=False,
                     overrides={"n_images": 8, "maybe": 3})
    assert [r.status for r in again] == ["skipped"]
    from vlmkit.grid.execute import run_finished

    assert run_finished(again[0].run, out) and run_finished(again[0].run, out, nbs)


# ----------------------------------------------------------------------------------------------- models


def test_unreachable_weights_fail_in_seconds(monkeypatch):
    from vlmkit.models.check import check_model_spec

    monkeypatch.delenv("VLMKIT_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    check_model_spec("open_clip:ViT-B-32")  # random init: nothing to download (also imports open_clip first)
    check_model_spec("toy:vit")
    t0 = time.perf_counter()
    with pytest.raises(WeightsNotFoundError) as e:
        check_model_spec("open_clip:ViT-B-32/openai")
    assert time.perf_counter() - t0 < 5
    msg = str(e.value)
    assert "open_clip:ViT-B-32/openai" in msg and "cache" in msg and "local path" in msg and "VLMKIT_OFFLINE" in msg
    with pytest.raises(WeightsNotFoundError, match="hf:org/model"):
        check_model_spec("hf:org/model")
    with pytest.raises(ModelSpecError, match="unknown model family 'opnclip'"):
        check_model_spec("opnclip:ViT-B-32")
    with pytest.raises(ModelSpecError, match="unknown pretrained tag"):
        check_model_spec("open_clip:ViT-B-32/opneai")
    with pytest.raises(WeightsNotFoundError, match="no such file"):
        check_model_spec("open_clip:ViT-B-32/./missing.pt")


def test_grid_resolves_models_before_the_first_notebook(tmp_path, nbs, capsys, monkeypatch):
    path = _grid(tmp_path, VALID + "variants: [{variant: toy}, {variant: real, models: ['open_clip:ViT-B-32/openai']}]\n")
    t0 = time.perf_counter()
    assert main(["grid", str(path), "--notebooks", str(nbs), "--out", str(tmp_path / "out")]) == 2
    assert time.perf_counter() - t0 < 30
    _one_line_error(capsys, "models", "open_clip:ViT-B-32/openai", "VLMKIT_OFFLINE")
    assert not (tmp_path / "out").exists(), "nothing ran"
    assert _cli(path, nbs, tmp_path) == 0, "a dry run parses the specs only"
    seen = []  # --only the toy variant: the real variant's weights are not needed
    import vlmkit.grid.runner as runner

    monkeypatch.setattr(runner.LocalExecutor, "run", lambda self, runs, root, **kw: seen.extend(r.run_id for r in runs) or [])
    run_grid(path, out_root=tmp_path / "out", notebooks_dir=nbs, only=["toy"], progress=False)
    assert seen == ["toy"]


# --------------------------------------------------------------------------------------- shipped grids

SHIPPED = sorted((REPO / "vlmkit" / "params").glob("*.yaml"))  # ./params links to them


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_grids_pass_the_contract(path):
    from vlmkit.grid.contract import check_models, check_run_datasets
    from vlmkit.grid.notebooks import packaged_notebooks

    spec = load_grid(path)
    check_parameters(spec, packaged_notebooks())
    check_models(spec.runs(), weights=False, source=path)
    # the variants that run here name datasets that exist (the real ones name a researcher's paths)
    check_run_datasets([r for r in spec.runs() if r.run_id != "real"], source=path)


def test_a_run_whose_datasets_do_not_exist_fails_before_anything_runs(tmp_path, capsys):
    from vlmkit.cli import main

    code = main(["grid", "seed003_hidden_instability", "--only", "real", "--dry-run", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "seed003_hidden_instability.yaml" in err and "run 'real'" in err and "dataset_coco.json" in err
    assert not any(tmp_path.iterdir())  # nothing was created


def test_new_axes_parameters_are_checked_before_anything_runs(tmp_path):
    """03's text perturbations and transfer spec: a typo or unknown attack fails at the contract."""
    import yaml

    from vlmkit.grid.contract import model_specs
    from vlmkit.grid.notebooks import packaged_notebooks

    NBS = packaged_notebooks()

    def grid(params):
        p = tmp_path / "g.yaml"
        p.write_text(yaml.safe_dump({"name": "g", "notebooks": ["03_retrieval"], "parameters": params}))
        return load_grid(p)

    with pytest.raises(InputError, match="unknown text perturbation 'synonim'"):
        check_parameters(grid({"text_perturbations": ["synonim"]}), NBS)
    with pytest.raises(InputError, match="unknown attack 'pgdd'"):
        check_parameters(grid({"transfer": {"attack": "pgdd", "sources": ["toy:rn"]}}), NBS)
    with pytest.raises(InputError, match="not a transfer spec"):
        check_parameters(grid({"transfer": {"sources": ["toy:rn"]}}), NBS)
    g = grid({"transfer": {"attack": "pgd", "sources": ["toy:rn", "toy:rn+toy:vit"], "eps": 0.01}})
    check_parameters(g, NBS)
    assert set(model_specs(g.runs())) >= {"toy:rn", "toy:vit"}
