#!/usr/bin/env bash
# The whole test suite from a fresh clone: install into .venv, then lint,
# type-check and run every test. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
# Exactly the versions CI passed with (requirements/test.lock, with hashes;
# refresh it on purpose with scripts/lock.sh), then chatcli itself on top.
.venv/bin/python -m pip install --quiet --disable-pip-version-check \
    --require-hashes --no-deps -r requirements/test.lock
.venv/bin/python -m pip install --quiet --disable-pip-version-check \
    --no-deps --no-build-isolation -e .
.venv/bin/python -m pip check
echo "== ruff"
.venv/bin/ruff check chatcli tests bench
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
# Two workers (pytest-xdist): end-to-end tests spend much of their time
# waiting on the processes they start, so two at a time fit two cores.
exec .venv/bin/python -m pytest -n 2 "$@"
