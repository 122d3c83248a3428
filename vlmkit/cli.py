"""The ``vlmkit`` command: thin wrappers over the package's rooms.

    vlmkit smoke [--data ../shared/data] [--out outputs/smoke-job]    run the smoke job (Python only, no notebooks)
    vlmkit grid params/X.yaml [--data DIR] [--only ...] [--dry-run]   run a papermill grid, then build its report
        [-p KEY VALUE ...] [-y YAML ...]                              (parameters of every run, over the file's)
        [--notebooks DIR]                                             (your copies of the notebooks)
        [--executor local --workers 2 | --executor slurm --partition gpu --gpus-per-node 1 ...]
    vlmkit report outputs/<grid>                                      build the HTML report
    vlmkit notebooks DIR [--force]                                    copy the packaged notebooks out for edits
    vlmkit models [--family open_clip]                                list loadable models
    vlmkit info SPEC                                                  load a model and describe it
    vlmkit robust params/robust/X.yaml [--only NAME ...]              adversarial fine-tuning (FARE / TeCoA)

Every sub-command imports its room when it runs, so ``vlmkit --help`` imports nothing heavy.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path


def _smoke(args: argparse.Namespace) -> int:
    from vlmkit.results import read_table
    from vlmkit.smoke import DEFAULT_MODELS, run_smoke

    out = run_smoke(out_dir=args.out, data=args.data, models=args.models or DEFAULT_MODELS, n=args.n, seed=args.seed,
                    device=args.device)
    df = read_table(out)
    table = df[df.metric.isin(["i2t_R@1", "t2i_R@1", "i2t_R@5"])].pivot_table(
        index=["model", "dataset"], columns="metric", values="value")
    print(table.round(3).to_string())
    print(f"\nsmoke run done: results in {out.resolve() / 'results.parquet'} (and results.csv)")
    return 0


def _notebook_folder(path: str) -> Path:
    from vlmkit.errors import DataNotFoundError

    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise DataNotFoundError(f"--notebooks folder {path!r} does not exist (copy the notebooks there with "
                                f"`vlmkit notebooks {path}`)")
    return folder.resolve()


_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)$")


def _yaml_value(text: str, where: str) -> object:
    """A command-line value read as YAML (``8``, ``'[toy:vit]'``, ``null``); ``1e-3`` is a float, as in Python."""
    import yaml

    from vlmkit.errors import DataError

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise DataError(f"{where}: {text!r} is not valid YAML ({' '.join(str(e).split())[:200]}); quote strings "
                        "and lists, e.g. -p models '[\"toy:vit\"]'") from None
    if isinstance(value, str) and _FLOAT.match(value.strip()):
        return float(value)
    return value


def grid_overrides(yamls: Sequence[str] = (), params: Sequence[Sequence[str]] = (),
                   raw: Sequence[Sequence[str]] = ()) -> dict[str, object]:
    """The ``-y YAML``, ``-p KEY VALUE`` (VALUE read as YAML) and ``-r KEY VALUE`` (VALUE a string) options of
    ``vlmkit grid`` as one mapping, later options winning, like papermill's command line.

    Raises:
        DataError: A ``-y`` that is not a YAML mapping, a VALUE that is not YAML, or a KEY that is not a name.
    """
    from vlmkit.errors import DataError

    out: dict[str, object] = {}
    for text in yamls or ():
        value = _yaml_value(text, "-y")
        if value is None:
            continue
        if not isinstance(value, dict):
            raise DataError(f"-y {text!r}: expected a YAML mapping such as '{{n_images: 8, seed: 1}}', got a "
                            f"{type(value).__name__}")
        out.update(value)
    for key, text in params or ():
        out[key] = _yaml_value(text, f"-p {key}")
    for key, text in raw or ():
        out[key] = text
    for key in out:
        if not isinstance(key, str) or not key.isidentifier():
            raise DataError(f"-p/-y: parameter name {key!r} is not a Python identifier")
    return out


def _grid(args: argparse.Namespace) -> int:
    from vlmkit.grid import run_grid

    overrides = grid_overrides(args.yaml, args.parameters, args.raw)
    extra = None
    if args.data:  # notebooks run with their folder as working directory: pass the data folder as an absolute path
        from vlmkit.errors import DataNotFoundError

        data = Path(args.data).expanduser()
        if not data.is_dir():
            raise DataNotFoundError(f"--data folder {args.data!r} does not exist (resolved to {data.resolve()}); "
                                    "drop --data to run on the toy world only")
        extra = {"data_path": str(data.resolve())}
    options = {"cluster": args.cluster, "partition": args.partition, "gpus_per_node": args.gpus_per_node,
               "cpus_per_task": args.cpus_per_task, "mem_gb": args.mem_gb, "timeout_min": args.timeout_min,
               "max_retries": args.max_retries, "chunk_size": args.chunk_size}
    where = {"notebooks_dir": _notebook_folder(args.notebooks)} if args.notebooks else {}
    if overrides:
        where["overrides"] = overrides
    results = run_grid(args.grid, out_root=args.out, only=args.only, dry_run=args.dry_run, extra=extra,
                       timeout_s=args.timeout, workers=args.workers, executor=args.executor, executor_options=options,
                       **where)
    failed = 0
    for r in results:
        line = f"{r.status:<8} {r.run.run_id:<40} {r.out_dir}"
        if r.status == "failed":
            failed += 1
            line += f"\n         failed notebook: {r.failed_notebook}\n         {r.error}"
            if r.log:
                line += f"\n         job {r.job_id} log ({r.attempts} attempt(s)): {r.log}"
        print(line)
    if not args.dry_run and results:
        from vlmkit.report import build_report

        grid_dir = results[0].out_dir.parent
        print(f"results table: {grid_dir / 'grid_results.parquet'}")
        try:
            print(f"report: {build_report(grid_dir).resolve()}")
        except Exception as e:  # a grid whose runs all failed has nothing to report
            print(f"no report: {e}")
    return 1 if failed else 0


def _report(args: argparse.Namespace) -> int:
    from vlmkit.report import build_report

    print(f"report: {build_report(args.folder)}")
    return 0


def _notebooks(args: argparse.Namespace) -> int:
    from vlmkit.grid.notebooks import copy_notebooks

    copied = copy_notebooks(args.dir, force=args.force)
    for path in copied:
        print(path)
    print(f"{len(copied)} notebooks copied; run a grid on your copies with `vlmkit grid GRID.yaml --notebooks {args.dir}`")
    return 0


def _robust(args: argparse.Namespace) -> int:
    from vlmkit.robust.cli import add_arguments, run

    parser = argparse.ArgumentParser(prog="vlmkit robust", description=_ROBUST_HELP)
    add_arguments(parser)
    return run(parser.parse_args(args.robust_args))


_ROBUST_HELP = "FARE / TeCoA adversarial fine-tuning from a params file (params/robust/*.yaml)"


def _models(args: argparse.Namespace) -> int:
    from vlmkit.models import list_model_families, list_models

    if args.family is None:
        print("families:", ", ".join(list_model_families()))
        return 0
    print("\n".join(list_models(args.family)))
    return 0


def _info(args: argparse.Namespace) -> int:
    from vlmkit.models import load_model

    vlm = load_model(args.spec, device=args.device)
    info = {"name": vlm.name, "family": vlm.family, "image_size": vlm.image_size, "mean": vlm.mean, "std": vlm.std,
            "logit_scale": vlm.logit_scale, "logit_bias": vlm.logit_bias, "layers": vlm.num_layers,
            "has_attention": vlm.has_attention,
            "heads_per_layer": vlm.heads_per_layer if vlm.has_attention else None,
            "meta": {k: v for k, v in vlm.meta.items() if k != "training"}}
    print(json.dumps(info, indent=2, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``vlmkit`` argument parser (sub-commands set ``func``, which imports what it needs when called)."""
    p = argparse.ArgumentParser(prog="vlmkit", description="Measure how CLIP-family models lose alignment under perturbation")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("smoke", help="run the smoke job (toy world + optional real photos)")
    s.add_argument("--data", default=None, help="folder with real photos in the ../shared/data layout (coco-mini/)")
    # not outputs/smoke: that is `vlmkit grid params/smoke.yaml`'s folder, whose report reads every table below it
    s.add_argument("--out", default="outputs/smoke-job", help="results folder")
    s.add_argument("--models", nargs="*", default=None, help="model specs (default: the shipped toy models)")
    s.add_argument("--n", type=int, default=64, help="images per dataset")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="auto")
    s.set_defaults(func=_smoke)

    g = sub.add_parser("grid", help="run a papermill parameter grid (params/*.yaml)")
    g.add_argument("grid", help="grid YAML file, or the name of a grid shipped in vlmkit/params (e.g. smoke)")
    g.add_argument("-p", "--parameter", dest="parameters", nargs=2, action="append", metavar=("KEY", "VALUE"),
                   default=[], help="set a parameter of every run, over the grid file's (VALUE read as YAML: "
                                    "-p n_images 8, -p models '[\"toy:vit\"]'); repeatable")
    g.add_argument("-r", "--raw", nargs=2, action="append", metavar=("KEY", "VALUE"), default=[],
                   help="like -p, VALUE kept as a string; repeatable")
    g.add_argument("-y", "--yaml", action="append", default=[], metavar="YAML",
                   help="parameters of every run as a YAML mapping ('{n_images: 8, seed: 1}'); repeatable")
    g.add_argument("--only", nargs="*", default=None, help="run-id globs to run")
    g.add_argument("--dry-run", action="store_true", help="list the runs and their folders only")
    g.add_argument("--data", default=None, help="real-photo folder passed to every notebook as data_path")
    g.add_argument("--out", default="outputs", help="parent folder of <grid>/<run>/")
    g.add_argument("--notebooks", default=None,
                   help="folder of the notebooks to run (default: the packaged ones; `vlmkit notebooks DIR` copies them)")
    g.add_argument("--timeout", type=int, default=None, help="per-cell timeout in seconds")
    g.add_argument("--workers", default=None, help="runs in parallel (local executor): a number, or 'gpus' for one per visible GPU")
    g.add_argument("--executor", choices=["local", "slurm"], default=None,
                   help="local processes (default: the grid's executor.kind) or slurm jobs through submitit")
    g.add_argument("--cluster", default=None, help="submitit cluster for --executor slurm: slurm (default), local, debug")
    g.add_argument("--partition", default=None, help="slurm partition")
    g.add_argument("--gpus-per-node", type=int, default=None, help="GPUs per job")
    g.add_argument("--cpus-per-task", type=int, default=None, help="CPUs per job")
    g.add_argument("--mem-gb", type=float, default=None, help="memory per job (GB)")
    g.add_argument("--timeout-min", type=int, default=None, help="wall-time limit per job (minutes)")
    g.add_argument("--max-retries", type=int, default=None, help="resubmissions of a failed run (default 1)")
    g.add_argument("--chunk-size", type=int, default=None, help="runs per job (default 1)")
    g.set_defaults(func=_grid)

    r = sub.add_parser("report", help="build the HTML report of a run or grid folder")
    r.add_argument("folder")
    r.set_defaults(func=_report)

    n = sub.add_parser("notebooks", help="copy the packaged notebooks into a folder, for your own edits")
    n.add_argument("dir", help="target folder (created)")
    n.add_argument("--force", action="store_true", help="overwrite notebooks already in the folder")
    n.set_defaults(func=_notebooks)

    m = sub.add_parser("models", help="list model families or the models of one family")
    m.add_argument("--family", default=None, help="open_clip | open_clip_pretrained | toy")
    m.set_defaults(func=_models)

    i = sub.add_parser("info", help="load a model spec and print its interface facts")
    i.add_argument("spec")
    i.add_argument("--device", default="auto")
    i.set_defaults(func=_info)

    # its arguments are parsed by vlmkit.robust.cli when it runs (``vlmkit robust --help`` lists them), so
    # building this parser does not import the fine-tuning code
    rb = sub.add_parser("robust", help=_ROBUST_HELP, add_help=False, prefix_chars="\0")
    rb.add_argument("robust_args", nargs=argparse.REMAINDER, help="PARAMS.yaml [--only NAME ...] [--steps N] ...")
    rb.set_defaults(func=_robust)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``vlmkit`` command; returns its exit status (2 and a one-line message for vlmkit's errors)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except Exception as e:  # a clear one-line error for vlmkit's own error types, a traceback otherwise
        from vlmkit.errors import VLMKitError

        if isinstance(e, VLMKitError):
            print(f"vlmkit: error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
