"""Coverage-guided fuzzing with atheris (issue 3), bounded so it fits in the suite.

Each target of :mod:`tests.protocol.atheris_targets` runs in a subprocess (the
fuzzer exits the process when done) from a seed corpus of valid frames and
conversations, with a fixed libFuzzer seed so that a run is reproducible. A
crash fails the test and prints the Python traceback and the crashing input.

``CHATCLI_FUZZ_RUNS=<n>`` runs every target ``n`` times instead (a longer
session; see the module docstring of atheris_targets for open-ended runs).
atheris is a test dependency: when it is missing these tests fail, they do not
skip.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.protocol.atheris_seeds import TARGETS, seeds

ROOT = Path(__file__).resolve().parents[2]

# About 15 s in all on a 2-core machine (decoder ~30k, relay ~4k, client ~3k,
# mailbox ~20k executions per second, plus ~0.5 s start-up each).
RUNS = {"decoder": 50_000, "relay": 15_000, "client": 15_000, "mailbox": 30_000}
MAX_LEN = 4096


def test_atheris_is_installed() -> None:
    assert importlib.util.find_spec("atheris") is not None, (
        "atheris is missing: install the test extras (pip install -e '.[test]')")


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_target(target: str, tmp_path: Path) -> None:
    runs = int(os.environ.get("CHATCLI_FUZZ_RUNS") or RUNS[target])
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for index, data in enumerate(seeds(target)):
        assert len(data) <= MAX_LEN
        (corpus / f"seed-{index:02d}").write_bytes(data)
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    command = [sys.executable, "-m", "tests.protocol.atheris_targets", target,
               f"-runs={runs}", f"-max_len={MAX_LEN}", "-seed=1", "-timeout=10",
               f"-artifact_prefix={artifacts}/", "-print_final_stats=1", str(corpus)]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                          timeout=60 + runs // 500, check=False)
    # A "slow unit" is only a report that one input took long, which a loaded
    # machine makes of any input; hangs are -timeout's job (they fail the run).
    crashes = {path.name: path.read_bytes()[:300].hex() for path in artifacts.iterdir()
               if not path.name.startswith("slow-unit-")}
    # atheris prints the Python traceback on stdout, libFuzzer its report on stderr.
    log = "\n".join(line for line in (proc.stdout + proc.stderr).splitlines()
                    if not line.startswith(("INFO: Instrumenting", "#")))
    assert proc.returncode == 0 and not crashes, (
        f"atheris target {target!r} failed (exit {proc.returncode}); inputs (hex, "
        f"truncated) in {artifacts}: {crashes}\n{log[-6000:]}")
    assert f"Done {runs} runs" in proc.stderr, log[-3000:]
