#!/usr/bin/env bash
# Sets up .venv (the first time, and again when a requirements file or pyproject.toml
# changes; with PyTorch for the export tests) and runs the tests on the CPU.
#   ./tests/run.sh               the whole suite (what CI runs)
#   ./tests/run.sh quick         the quick tier: every test not marked `slow` (pyproject.toml),
#                                the units and one tiny end-to-end step; under 3 minutes
#   ./tests/run.sh [quick] -k fdt   any pytest arguments
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
stamp=.venv/.fdt_jax-installed
if [ ! -f "$stamp" ] || [ -n "$(find requirements.txt requirements-export.txt pyproject.toml -newer "$stamp")" ]; then
  .venv/bin/pip install --quiet --disable-pip-version-check \
    -r requirements.txt -r requirements-export.txt -e .
  touch "$stamp"
fi
if [ "${1:-}" = quick ]; then
  shift
  set -- -m 'not slow' "$@"
fi
exec .venv/bin/python -m pytest -q --durations=15 "$@"
