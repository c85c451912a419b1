"""End-to-end relay throughput and delivery latency.

Starts a real relay process (``chatcli relay serve --port 0``; SQLite by
default, any ``--db`` and ``--workers`` through ``--relay``), and a load
generator in a separate process, so that relay CPU and generator CPU are
measured apart. Each pair is a receiver (a registered mailbox, authenticated
on its own connection, with one deposit capability) and a sender (an
unauthenticated connection that deposits with that capability). A message
counts once its receiver got it pushed (Deliver) - that is after the relay's
durable commit - and the receiver acknowledges every Deliver frame (Ack).

Usage::

    python -m bench.relay_load [--relay SPEC]... [load flags]   # JSON on stdout
    python -m bench.relay_load gen --url ws://... [load flags]  # the generator

SPEC is ``sqlite`` (default), ``sqlite:PATH``, or a PostgreSQL URL, with
``;workers=N`` and ``;arg=--flag=value`` options (see :class:`RelayConfig`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from bench.common import (
    BenchError,
    RelayConfig,
    RelayProcess,
    Worker,
    emit,
    latency_summary,
    now_ns,
    raise_nofile_limit,
)
from bench.loadgen import Harness, LoadParams, PairSender, cpu_meter, guarded
from bench.profile import Profiler
from bench.wire import RelayConnection, open_owner
from chatcli.protocol import frames

TRANSIENT = frozenset({"rate_limited", "try_again", "shutting_down", "too_many_connections"})

# The relay's abuse limits are per connection and per capability (one sender
# and one contact). A benchmark concentrates thousands of messages per second
# on a few dozen of them, which no real contact does, so it lifts those rates
# (through the relay's --config file); everything else stays at its default.
BENCH_SETTINGS: dict[str, float | int | str | bool] = {
    "connection_rate": 1e6,
    "connection_burst": 1e6,
    "capability_rate": 1e6,
    "capability_burst": 1e6,
}


class _RelaySender:
    """The sending half of a pair: Deposit frames on an unauthenticated connection."""

    def __init__(self, transport: RelayTransport, conn: RelayConnection, index: int,
                 mailbox: bytes, cap: bytes, harness: Harness) -> None:
        self.transport = transport
        self.conn = conn
        self.index = index
        self.mailbox = mailbox
        self.cap = cap
        self.harness = harness
        self.pending: dict[int, tuple[list[bytes], int]] = {}

    async def send(self, payloads: list[bytes]) -> None:
        req = self.conn.next_req()
        self.pending[req] = (payloads, now_ns())
        await self.conn.send(frames.Deposit(
            req=req, items=[frames.DepositItem(mailbox=self.mailbox, cap=self.cap, payload=p)
                            for p in payloads]))
        self.transport.frames_out += 1

    async def reader(self) -> None:
        while True:
            frame = await self.conn.recv()
            if isinstance(frame, frames.DepositResult):
                payloads, sent = self.pending.pop(frame.req, ([], 0))
                if sent:
                    self.transport.deposit_ack_ns.append(now_ns() - sent)
                refused: dict[str, list[bytes]] = {}
                for payload, code in zip(payloads, frame.errors, strict=False):
                    if code is not None:
                        refused.setdefault(code, []).append(payload)
                for code, items in refused.items():
                    self.harness.failed(self.index, items, code, code in TRANSIENT)
            elif isinstance(frame, frames.Error):
                payloads, _ = self.pending.pop(frame.req, ([], 0)) if frame.req else ([], 0)
                self.transport.count_error(frame.code)
                if payloads:
                    self.harness.failed(self.index, payloads, frame.code,
                                        frame.code in TRANSIENT)
                if frame.req is None:
                    raise RuntimeError(f"the relay closed a sender: {frame.code}")


class RelayTransport:
    """Opens pairs against a relay: a registered owner and a depositing sender."""

    def __init__(self, url: str, fingerprint: str | None, reconnect: bool = True) -> None:
        self.url = url
        self.fingerprint = fingerprint
        self.reconnect = reconnect
        self.frames_out = 0
        self.deliver_frames = 0
        self.ack_frames = 0
        self.deposit_ack_ns: list[int] = []
        self.relay_errors: dict[str, int] = {}

    def count_error(self, code: str) -> None:
        self.relay_errors[code] = self.relay_errors.get(code, 0) + 1

    async def open_pair(self, nursery: trio.Nursery, index: int,
                        harness: Harness) -> PairSender:
        owner, _key = await open_owner(nursery, self.url, fingerprint=self.fingerprint,
                                       reconnect=self.reconnect)
        assert owner.mailbox is not None
        cap = os.urandom(32)
        await owner.cap_add(cap)
        nursery.start_soon(self._receiver, owner, harness)
        conn = await RelayConnection.connect(nursery, self.url, fingerprint=self.fingerprint)
        sender = _RelaySender(self, conn, index, owner.mailbox, cap, harness)
        nursery.start_soon(sender.reader)
        return sender

    async def _receiver(self, owner: RelayConnection, harness: Harness) -> None:
        for frame in owner.pushed:  # pushed during setup (Synced, nothing else expected)
            if isinstance(frame, frames.Deliver):
                harness.delivered([m.payload for m in frame.messages])
        while True:
            frame = await owner.recv()
            if isinstance(frame, frames.Deliver):
                self.deliver_frames += 1
                harness.delivered([m.payload for m in frame.messages])
                ids = [m.id for m in frame.messages]
                await owner.send(frames.Ack(req=owner.next_req(), ids=ids))
                self.ack_frames += 1
            elif isinstance(frame, frames.Error):
                self.count_error(frame.code)
                if frame.req is None:
                    raise RuntimeError(f"the relay closed a receiver: {frame.code}")

    def take_stats(self) -> dict[str, Any]:
        stats = {
            "deposit_frames": self.frames_out,
            "deliver_frames": self.deliver_frames,
            "ack_frames": self.ack_frames,
            "deposit_result_latency": latency_summary(self.deposit_ack_ns),
            "relay_errors": dict(self.relay_errors),
        }
        self.frames_out = self.deliver_frames = self.ack_frames = 0
        self.deposit_ack_ns = []
        self.relay_errors = {}
        return stats


# ------------------------------------------------------------ generator side


async def generate(url: str, fingerprint: str | None, params: LoadParams,
                   server_pids: list[int]) -> dict[str, Any]:
    harness = Harness(params)
    transport = RelayTransport(url, fingerprint)
    report: dict[str, Any] = await guarded(lambda: harness.run_phases(
        transport, cpu_meter(server_pids), lambda name: emit({"event": "phase", "phase": name})))
    return report


def _gen_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.relay_load gen")
    parser.add_argument("--url", required=True, help="ws://127.0.0.1:PORT/")
    parser.add_argument("--fingerprint", default=None)
    parser.add_argument("--server-pid", type=int, action="append", default=[])
    LoadParams.add_arguments(parser)
    args = parser.parse_args(argv)
    raise_nofile_limit()
    try:
        report = trio.run(generate, args.url, args.fingerprint, LoadParams.from_args(args),
                          args.server_pid)
    except Exception as exc:
        emit({"error": f"{type(exc).__name__}: {exc}"})
        return 1
    emit(report)
    return 0


# ---------------------------------------------------------- orchestrator side


def metrics_delta(t0: float, before: dict[str, float], t1: float,
                  after: dict[str, float]) -> dict[str, Any]:
    """What the relay's own /metrics counted during a phase: group commits,
    items per commit, time per commit, and frames received by type."""
    if not before or not after:
        return {"available": False}

    def d(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    seconds = max(1e-9, t1 - t0)
    commits = d("chatcli_relay_commit_seconds_count")
    frames_in = {}
    for key in after:
        if key.startswith("chatcli_relay_frames_received_total{"):
            kind = key.split('"')[1] if '"' in key else key
            if d(key):
                frames_in[kind] = int(d(key))
    return {
        "available": True,
        "commits": int(commits),
        "commits_per_s": round(commits / seconds, 1),
        "items_per_commit": round(d("chatcli_relay_commit_items_sum") / commits, 2)
        if commits else None,
        "commit_ms_mean": round(1000 * d("chatcli_relay_commit_seconds_sum") / commits, 3)
        if commits else None,
        "commit_busy_share": round(d("chatcli_relay_commit_seconds_sum") / seconds, 3),
        "deposits_stored": int(d("chatcli_relay_deposits_total")),
        "messages_delivered": int(d("chatcli_relay_messages_delivered_total")),
        "messages_acked": int(d("chatcli_relay_messages_acked_total")),
        "frames_received": frames_in,
    }


def run(config: RelayConfig, params: LoadParams, *, timeout: float | None = None,
        profile_dir: Path | None = None) -> dict[str, Any]:
    """Start a relay and a generator process; return the generator's report,
    with the relay's configuration and RSS. With ``profile_dir``, py-spy
    samples the relay during each measured phase (see :mod:`bench.profile`)."""
    budget = timeout or (120 + params.duration * 2 + params.latency_duration
                         + params.drain_timeout)
    config = config.with_settings(**{**BENCH_SETTINGS, **dict(config.settings)})
    with tempfile.TemporaryDirectory(prefix="chatcli-bench-") as tmp, \
            RelayProcess(config, metrics=True) as relay:
        rss_start = relay.rss_kib()
        args = ["gen", "--url", relay.ws_url, "--server-pid", str(relay.pid),
                *params.to_argv()]
        if relay.fingerprint:
            args += ["--fingerprint", relay.fingerprint]
        profiles: dict[str, Profiler] = {}
        scrapes: dict[str, tuple[float, dict[str, float]]] = {}
        deadline = time.monotonic() + budget
        with Worker("bench.relay_load", args, log_dir=Path(tmp), name="relay-gen") as gen:
            try:
                while True:
                    report = gen.read_json(max(1.0, deadline - time.monotonic()))
                    if report.get("event") != "phase":
                        break
                    phase = str(report["phase"])
                    scrapes[phase] = (time.monotonic(), relay.scrape())
                    if profile_dir is not None and not phase.endswith("_end"):
                        seconds = (params.duration if phase == "throughput"
                                   else params.latency_duration)
                        profiles[phase] = Profiler.start(
                            relay.pid, seconds, profile_dir / f"relay-{config.label}-{phase}")
            except BenchError as exc:
                raise BenchError(f"{exc}; relay log: {relay.log_tail()!r}") from None
            finally:
                for profiler in profiles.values():
                    profiler.wait()
        if profiles:
            report["profile"] = {phase: p.summary() for phase, p in profiles.items()}
        for phase in ("throughput", "latency"):
            if phase in scrapes and f"{phase}_end" in scrapes and phase in report:
                report[phase]["relay_metrics"] = metrics_delta(
                    *scrapes[phase], *scrapes[f"{phase}_end"])
        report["relay"] = config.describe()
        report["relay_rss_kib"] = {"start": rss_start, "end": relay.rss_kib()}
        return report


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["gen"]:
        return _gen_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m bench.relay_load",
        description="Relay end-to-end throughput and latency; prints JSON.")
    parser.add_argument("--relay", action="append", default=[], metavar="SPEC",
                        help="relay to test: sqlite, sqlite:PATH or a postgresql:// URL, "
                             "options ;workers=N ;arg=--flag=value ;set=NAME=VALUE "
                             "(repeatable)")
    parser.add_argument("--profile", metavar="DIR", type=Path,
                        help="sample the relay with py-spy during each phase; write the "
                             "stacks to DIR and add the hottest functions to the report")
    LoadParams.add_arguments(parser)
    args = parser.parse_args(argv)
    params = LoadParams.from_args(args)
    raise_nofile_limit()
    configs = [RelayConfig.parse(s) for s in args.relay] or [RelayConfig()]
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    results = [run(c, params, profile_dir=args.profile) for c in configs]
    print(json.dumps({"relays": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
