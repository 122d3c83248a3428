#!/usr/bin/env bash
# Create ./.venv (Python 3.11) and install vlmkit with its test peers. Idempotent: re-running
# only installs what is missing. Works offline except for the package registry.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  echo "vlmkit setup: creating .venv with $("$PY" --version)"
  "$PY" -m venv .venv
fi
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip
# torch/torchvision: these pins install from local files here (~75 s); others download several GB.
$PIP install -q torch==2.14.1 torchvision==0.29.1
$PIP install -q -e ".[dev,offline,cluster]"
# torchattacks (PGD reference in tests/benchmarks) pins requests~=2.25, which conflicts with the
# huggingface stack; it does not use requests for attacking, so install it without its pins.
$PIP install -q --no-deps torchattacks==3.5.1
echo "vlmkit setup: done ($(.venv/bin/python -c 'import vlmkit, torch; print("vlmkit", vlmkit.__version__, "torch", torch.__version__)'))"
