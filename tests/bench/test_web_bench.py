"""Smoke test of ``python -m bench.web`` with tiny sizes: real relay and
daemons, chromium driven by Playwright, so that the web benchmark cannot rot.
Skipped when chromium is not installed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.web import CHROMIUM

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_web_bench_reports_each_figure() -> None:
    if not shutil.which(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    proc = subprocess.run(
        [sys.executable, "-m", "bench.web", "--messages", "3", "--warmup", "1",
         "--type-pause", "0.2", "--history", "300", "--sent", "4", "--pages", "3",
         "--cold", "1", "--warm", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["page_errors"] == []

    latency = report["latency"]
    assert latency["typed_to_dom"]["samples"] == 3
    assert 0 < latency["typed_to_dom"]["p50_ms"] <= latency["typed_to_painted"]["p50_ms"]
    assert latency["typed_to_stored_in_sender"]["samples"] == 3

    for kind in ("cold", "warm"):
        load = report["first_load"][kind]
        assert load["samples"] == 1
        assert 0 < load["list_rendered"]["median_ms"] <= load["list_complete"]["median_ms"]

    long = report["long_conversation"]
    assert long["seed"]["conversation_messages"] == 300 + 3 + 1  # and the timed ones
    assert long["sent_through_daemons"]["messages"] == 4
    assert long["open"]["messages_shown"] == 50
    scroll = long["scroll"]
    # Three older pages of 50, each in front of the last, in order, no day twice.
    assert scroll["pages_loaded"] == 3 and scroll["messages_shown"] == 200
    assert scroll["distinct_texts"] == 200 and scroll["seeded_in_order_without_gaps"]
    assert scroll["duplicate_day_separators"] == 0
    assert isinstance(scroll["longest_task_ms"], float | int)
    assert set(report["targets"]) >= {"typed in A, shown in B: p50 <= 150 ms"}
