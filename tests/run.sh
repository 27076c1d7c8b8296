#!/usr/bin/env bash
# Sets up .venv (the first time; with PyTorch for the export tests) and runs the test
# suite on the CPU.
#   ./tests/run.sh            the whole suite
#   ./tests/run.sh -k fdt     any pytest arguments
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check \
  -r requirements.txt -r requirements-export.txt -e .
exec .venv/bin/python -m pytest -q --durations=15 "$@"
