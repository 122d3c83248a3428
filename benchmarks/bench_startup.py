"""Start-up: ``import vlmkit``, ``vlmkit --help`` and each notebook's setup cell, in fresh processes.

Goals (issue "Fast where it counts"): ``import vlmkit`` and ``vlmkit --help`` under 1 s; a notebook's setup
cell (the code cell after the ``parameters`` cell: imports, seeding, loading the datasets) under 3 s on warm
caches. Each notebook's parameters and setup cell run in a fresh Python process (no kernel start-up, which
Jupyter pays once per notebook whatever the cell holds), with ``out_dir`` in a temporary folder: the first
run fills the caches (toy-world exports, decoded images), the following ``--repeats`` runs are timed warm
and the median is printed, with the share beyond importing torch, pandas and pyplot (the floor, measured
in the same run). The report notebook reads the results of the others: its setup is timed on the
output folder of a previous ``vlmkit grid`` run when ``--results DIR`` is given, and skipped otherwise.

    python benchmarks/bench_startup.py [--data ../shared/data] [--repeats 3] [--results outputs/smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "vlmkit" / "notebooks"
VLMKIT = Path(sys.executable).with_name("vlmkit")
#: What every setup cell imports besides vlmkit: the floor of a fresh process's setup cell.
BASELINE = ("import time; t0 = time.perf_counter(); import matplotlib; matplotlib.use('Agg'); "
            "import torch, pandas, matplotlib.pyplot; print('SETUP_S', time.perf_counter() - t0)")


def wall(cmd: list[str], env: dict[str, str] | None = None) -> float:
    """Seconds of one run of ``cmd`` (which must succeed)."""
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env, cwd=REPO)
    return time.perf_counter() - t0


def setup_script(nb: Path, out_dir: Path, data: Path | None) -> str:
    """Python source: the notebook's parameters cell, the overrides, then the setup cell timed."""
    cells = [c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
    i = next(k for k, c in enumerate(cells) if "parameters" in (c.get("metadata", {}).get("tags") or []))
    params, setup = "".join(cells[i]["source"]), "".join(cells[i + 1]["source"])
    overrides = f"out_dir = {str(out_dir)!r}\n"
    if data is not None:
        overrides += f"data_path = {str(data)!r}\n"
    return (f"{params}\n{overrides}import time as _t\n_t0 = _t.perf_counter()\n"
            f"exec(compile({setup!r}, 'setup', 'exec'))\nprint('SETUP_S', _t.perf_counter() - _t0)\n")


def cell_seconds(script: str, cwd: Path) -> float:
    """Run ``script`` in a fresh process; the seconds it reports on its ``SETUP_S`` line."""
    env = dict(os.environ, MPLBACKEND="Agg")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=cwd)
    if res.returncode:
        raise SystemExit(f"failed:\n{res.stderr[-2000:]}")
    return float(next(line.split()[1] for line in res.stdout.splitlines() if line.startswith("SETUP_S")))


def time_setup(nb: Path, out_dir: Path, data: Path | None) -> float:
    """Seconds of the setup cell in a fresh process."""
    return cell_seconds(setup_script(nb, out_dir, data), nb.parent)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None, help="the shared data folder (the notebooks' data_path)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--results", type=Path, default=None, help="a grid's output folder, for the report's setup")
    args = ap.parse_args()
    # the notebooks run in their own folder: a relative path is the caller's, so it is resolved here, first
    if args.data is not None:
        if not args.data.is_dir():
            raise SystemExit(f"--data {args.data}: not a folder (expected the shared data folder)")
        args.data = args.data.resolve()
    if args.results is not None and not args.results.is_dir():
        raise SystemExit(f"--results {args.results}: not a folder (expected a grid's output folder)")
    print(f"load before: {os.getloadavg()[0]:.2f} (1-min), {os.cpu_count()} CPUs")
    rows: list[tuple[str, float, float, str]] = []
    imp = [wall([sys.executable, "-c", "import vlmkit"]) for _ in range(args.repeats)]
    rows.append(("import vlmkit (process)", statistics.median(imp), 1.0, ""))
    helps = [wall([str(VLMKIT), "--help"]) for _ in range(args.repeats)]
    rows.append(("vlmkit --help (process)", statistics.median(helps), 1.0, ""))
    base = statistics.median(cell_seconds(BASELINE, REPO) for _ in range(args.repeats))
    rows.append(("import torch, pandas, pyplot", base, float("nan"), "what every setup cell imports besides vlmkit"))
    tmp = Path(tempfile.mkdtemp(prefix="vlmkit-bench-startup-"))
    try:
        for nb in sorted(NOTEBOOKS.glob("0*.ipynb")):
            if "report" in nb.stem:
                if args.results is None:
                    rows.append((f"{nb.stem} setup cell", float("nan"), 3.0, "skipped: no --results"))
                    continue
                out = args.results.resolve()
            else:
                out = tmp / nb.stem
                cold = time_setup(nb, out, args.data)  # fills the caches
            runs = [time_setup(nb, out, args.data) for _ in range(args.repeats)]
            med = statistics.median(runs)
            note = ("" if "report" in nb.stem else f"cold {cold:.1f} s; ") + f"vlmkit's share {med - base:.2f} s"
            rows.append((f"{nb.stem} setup cell", med, 3.0, note))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nstart-up, median of {args.repeats} warm runs, fresh process each")
    print(f"{'what':<34}{'seconds':>9}{'goal':>7}{'met':>6}  note")
    for what, s, goal, note in rows:
        met = "—" if s != s or goal != goal else ("yes" if s < goal else "NO")
        print(f"{what:<34}{s:>9.2f}{goal:>7.1f}{met:>6}  {note}")
    print(f"load after: {os.getloadavg()[0]:.2f} (1-min)")


if __name__ == "__main__":
    main()
