"""Smoke test of the benchmark harness: ``python -m bench`` end to end with tiny
sizes against a real relay process, so that the benchmark cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

TINY = [
    "--pairs", "4", "--messages", "60", "--warmup", "5", "--duration", "8",
    "--window", "16", "--batch", "8",
    "--rate", "100", "--latency-pairs", "5", "--latency-duration", "0.5",
    "--drain-timeout", "5", "--phase-gap", "0.1",
    "--idle-counts", "10", "--idle-settle", "0.2", "--idle-warmup", "2",
    "--cli-runs", "1", "--no-send",
    "--daemon-runs", "1", "--daemon-rpc-sends", "2", "--daemon-idle", "0.2",
]


@pytest.mark.slow
def test_python_m_bench_reports_every_figure() -> None:
    proc = subprocess.run([sys.executable, "-m", "bench", *TINY], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(proc.stdout)

    assert report["machine"]["nproc"] >= 1
    assert report["machine"]["python"].startswith("3.")

    echo = report["echo_floor"]
    assert echo["throughput"]["messages_delivered"] == 4 * 60
    assert echo["throughput"]["ended_by"] == "count"
    assert echo["latency"]["messages_delivered"] == echo["latency"]["messages_sent"] > 0

    (relay,) = report["relays"]
    assert "error" not in relay, relay.get("error")
    assert relay["label"] == "sqlitex1"
    tp = relay["throughput"]
    assert tp["messages_delivered"] == 4 * 60, tp
    assert tp["ended_by"] == "count" and tp["failed"] == 0 and tp["messages_per_s"] > 0
    assert tp["server_cpu_s"] > 0 and tp["generator_cpu_s"] > 0
    assert tp["transport"]["ack_frames"] > 0
    lat = relay["latency"]
    assert lat["messages_sent"] == 50 and lat["lost_or_late"] == 0, lat
    assert lat["p50_ms"] is not None and lat["p99_ms"] >= lat["p50_ms"]

    idle = report["idle_memory"]
    (point,) = idle["points"]
    assert point["connections"] == 10 and point["reached"]
    assert isinstance(point["per_connection_kib"], float)

    cli = report["cli_startup"]
    assert cli["python_c_pass"]["median_ms"] > 0
    assert cli["chatcli_help"]["median_ms"] > 0

    daemon = report["daemon"]["small"]
    assert daemon["cli_send"]["samples"] == 1 and daemon["rpc_and_events"]["not_stored"] == 0
    assert daemon["rpc_and_events"]["end_to_end"]["samples"] == 2

    summary = report["summary"]
    assert summary["relays"]["sqlitex1"]["throughput_ratio_to_echo"] > 0
    assert summary["daemon_ms"]["rpc_send_p50"] > 0
    assert set(summary["idle_kib_per_connection"]) == {"10"}
    assert all(isinstance(k, str) for k in report["targets"])


def test_store_cost_reports_each_step() -> None:
    proc = subprocess.run([sys.executable, "-m", "bench.store_cost", "--batch", "20",
                           "--rounds", "3", "--mailboxes", "4"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    figures = json.loads(proc.stdout)["store_cost_per_message"]
    steps = [figures[f"{name}_us"] for name in ("usage", "capabilities", "insert", "delete",
                                                 "commit")]
    assert all(step > 0 for step in steps)
    assert figures["total_us"] == pytest.approx(sum(steps), abs=0.1)


DAEMON_TINY = [
    "--runs", "2", "--rpc-sends", "4", "--warmup", "1", "--interval", "0.01",
    "--contacts", "3", "--groups", "1", "--group-size", "2", "--scale-sends", "2",
    "--idle", "0.5", "--settle", "0.1",
]


@pytest.mark.slow
def test_daemon_bench_reports_every_figure() -> None:
    """``python -m bench.daemon`` with tiny sizes: real relays, real daemons."""
    proc = subprocess.run([sys.executable, "-m", "bench.daemon", *DAEMON_TINY], cwd=REPO,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(proc.stdout)["daemon"]

    small = report["small"]
    for case in ("without_daemon", "with_daemon"):
        assert small["help"][case]["samples"] == 2 and small["help"][case]["p50_ms"] > 0
    send = small["cli_send"]
    assert send["samples"] == 2 and send["p90_ms"] >= send["p50_ms"] > 0
    assert send["received_by_bob"] == send["expected"] == 4  # two warm-up sends
    rpc = small["rpc_and_events"]
    assert rpc["sends"] == 4 and rpc["not_stored"] == 0
    assert rpc["rpc_send"]["samples"] == rpc["end_to_end"]["samples"] == 4
    seen = 4 - rpc["pushes_not_seen"]
    assert seen > 0 and rpc["daemon_part"]["samples"] == rpc["relay_push"]["samples"] == seen
    assert rpc["end_to_end"]["p50_ms"] >= rpc["daemon_part"]["p50_ms"] > 0
    assert small["idle"]["rss_kib"] > 0 and small["idle"]["cpu_s"] >= 0

    scale = report["scale"]
    assert scale["built"]["contacts"] == 3 and scale["built"]["groups"] == 1
    assert scale["built"]["outbox"] == 0 and scale["status"]["synced"]
    assert scale["idle"]["contacts"] == 3 and scale["idle"]["rss_kib"] > 0
    assert scale["rpc_send"]["rpc_send"]["samples"] == 2
    assert set(report["targets"]) == {
        "cli: one-shot send p50 <= 120 ms through the daemon",
        "rpc: send round trip p50 <= 5 ms",
        "events: relay push -> subscriber p50 <= 10 ms",
        "scale: idle CPU < 1% of a core with 3 contacts, 1 groups"}


def test_msgkinds_reports_each_figure() -> None:
    proc = subprocess.run([sys.executable, "-m", "bench.msgkinds", "--messages", "5"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    figures = json.loads(proc.stdout)
    for name in ("history_plain_us", "history_rich_us", "apply_reaction_ms", "apply_edit_ms",
                 "apply_delete_ms", "edit_before_message_ms"):
        assert figures[name] > 0
