"""``python -m bench.search`` with tiny sizes, so that the benchmark cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_search_bench_reports_every_figure() -> None:
    proc = subprocess.run([sys.executable, "-m", "bench.search", "--messages", "300",
                           "--contacts", "3", "--runs", "2"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["messages"] == 300 and report["build_s"] > 0
    assert set(report["query_ms"]) >= {"rare_word", "common_word", "two_words_and_prefix",
                                       "prefix_only", "no_match", "one_contact"}
    assert report["query_ms"]["no_match"]["results"] == 0
    assert report["query_ms"]["common_word"]["results"] == 20
    assert report["rss_mb"]["after_build"] > 0 and report["snapshot"]["bytes"] > 0
