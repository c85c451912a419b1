#!/usr/bin/env bash
# Refresh requirements/test.lock, the exact versions (with hashes) of every
# runtime, build and test dependency that scripts/test.sh installs. Run it on
# purpose, review the diff, and commit it with the test run that passed:
#     bash scripts/lock.sh            # keep pins, add what pyproject.toml now needs
#     bash scripts/lock.sh --upgrade  # move every pin to the newest allowed release
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv-lock/bin/uv ]; then
    python3 -m venv .venv-lock
    .venv-lock/bin/python -m pip install --quiet --disable-pip-version-check 'uv==0.13.9'
fi
exec .venv-lock/bin/uv pip compile pyproject.toml requirements/build.in \
    --extra test --generate-hashes --python-version 3.11 \
    --custom-compile-command 'bash scripts/lock.sh' \
    -o requirements/test.lock "$@"
