"""The relay under attack (issue 16): a well-behaved user's latency beside
each flood, and the relay's memory under the partial-message attack.

Latency: a real relay process; a well-behaved user (a sender depositing one
small message at a time to a contact, and that contact's owner connection
acknowledging) measures each deposit's round trip (Deposit -> DepositResult,
i.e. through the durable group commit), first alone, then while a flooder
process runs each flood:

- ``badcaps``: a stranger sends Deposit frames of 256 items with random
  (invalid) capabilities, pipelined;
- ``bigdeposits``: a registered user floods its own mailbox with 64 KB
  messages (15 per frame, pipelined), acknowledging what it receives.

The per-connection and per-capability rate limits are lifted (as in
bench.relay_load) so that each flood is as strong as one connection can make it.

Memory: holder processes open N connections that each send Hello and then an
unfinished 1 MiB message (one 64 KiB first fragment, the rest never sent),
and the relay's RSS is read at N = 1,000 and 10,000.

Usage::

    python -m bench.flood [--samples 300] [--counts 1000,10000]   # JSON on stdout
    python -m bench.flood flood --url ws://... --kind badcaps      # a flooder
    python -m bench.flood partial --url ws://... --count N         # a holder
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
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, Request

from bench.common import (
    RelayConfig,
    RelayProcess,
    Worker,
    emit,
    latency_summary,
    now_ns,
    raise_nofile_limit,
)
from bench.loadgen import guarded
from bench.wire import RelayConnection, open_owner
from chatcli.protocol import codec, frames

FLOOD_SETTINGS: dict[str, float | int | str | bool] = {
    "connection_rate": 1e6, "connection_burst": 1e6,
    "capability_rate": 1e6, "capability_burst": 1e6,
    "mailbox_max_bytes": 1024 * 1024 * 1024, "mailbox_max_messages": 1_000_000,
}
PIPELINE = 16          # flood frames in flight
PARTIAL_FIRST = 64 * 1024


# ---------------------------------------------------------------- flooder


async def flood(url: str, fingerprint: str | None, kind: str, seconds: float) -> None:
    async with trio.open_nursery() as nursery:
        if kind == "badcaps":
            owner, _ = await open_owner(nursery, url, fingerprint=fingerprint)
            assert owner.mailbox is not None
            target = owner.mailbox
            conn = await RelayConnection.connect(nursery, url, fingerprint=fingerprint)

            def items() -> list[frames.DepositItem]:
                return [frames.DepositItem(mailbox=target, cap=os.urandom(32), payload=b"x" * 64)
                        for _ in range(256)]
        else:
            conn, _ = await open_owner(nursery, url, fingerprint=fingerprint, reconnect=False)
            cap = os.urandom(32)
            await conn.cap_add(cap)
            assert conn.mailbox is not None
            own = conn.mailbox
            payload = os.urandom(64 * 1000)

            def items() -> list[frames.DepositItem]:
                return [frames.DepositItem(mailbox=own, cap=cap, payload=payload)] * 15
        window = trio.Semaphore(PIPELINE)
        sent = answered = 0

        async def reader() -> None:
            nonlocal answered
            while True:
                frame = await conn.recv()
                if isinstance(frame, frames.DepositResult | frames.Error):
                    answered += 1
                    window.release()
                elif isinstance(frame, frames.Deliver):
                    await conn.send(frames.Ack(req=conn.next_req(),
                                               ids=[m.id for m in frame.messages]))

        nursery.start_soon(reader)
        emit({"ready": True})
        with trio.move_on_after(seconds):
            while True:
                await window.acquire()
                await conn.send(frames.Deposit(req=conn.next_req(), items=items()))
                sent += 1
        emit({"frames_sent": sent, "frames_answered": answered})
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------- holder


def _partial_header(length: int) -> bytes:
    # A client binary frame, FIN unset, 64-bit length, mask key 0 (payload as is).
    return bytes([0x02, 0x80 | 127]) + length.to_bytes(8, "big") + b"\0\0\0\0"


async def hold_partials(url: str, count: int, seconds: float) -> None:
    host, _, port = url.removeprefix("ws://").split("/")[0].rpartition(":")
    streams: list[trio.SocketStream] = []
    errors: dict[str, int] = {}
    limiter = trio.CapacityLimiter(100)
    body = _partial_header(PARTIAL_FIRST) + b"\0" * PARTIAL_FIRST
    hello = frames.Hello(versions=[frames.PROTOCOL_VERSION], nonce=os.urandom(32))

    async def one() -> None:
        async with limiter:
            try:
                stream = await trio.open_tcp_stream(host, int(port))
                ws = WSConnection(ConnectionType.CLIENT)
                await stream.send_all(ws.send(Request(host=host, target="/")))
                accepted = False
                while not accepted:
                    data = await stream.receive_some(65536)
                    if not data:
                        raise ConnectionError("closed during the handshake")
                    ws.receive_data(data)
                    accepted = any(isinstance(e, AcceptConnection) for e in ws.events())
                await stream.send_all(ws.send(BytesMessage(data=codec.encode(hello))))
                with trio.move_on_after(5):
                    await stream.send_all(body)
                streams.append(stream)
            except (OSError, ConnectionError, trio.BrokenResourceError) as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

    start = time.monotonic()
    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(one)
    seconds_open = round(time.monotonic() - start, 2)
    await trio.sleep(2.0)
    # How many the relay closed already (refused past its input budget).
    closed = 0
    for stream in streams:
        with trio.move_on_after(0.005):
            try:
                while await stream.receive_some(65536):
                    pass
                closed += 1
            except (OSError, trio.BrokenResourceError):
                closed += 1
    emit({"opened": len(streams), "closed_by_relay": closed, "errors": errors,
          "seconds": seconds_open})
    with trio.move_on_after(seconds):
        await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)


# ----------------------------------------------------------- orchestrator


VICTIM_SOURCE = "127.0.0.2"   # another client address than the flooder's 127.0.0.1


async def victim_latency(url: str, fingerprint: str | None, samples: int) -> list[int]:
    """Deposit round trips of a well-behaved user on another address than the
    flooder's, one message at a time; each must be stored."""
    async with trio.open_nursery() as nursery:
        owner, _ = await open_owner(nursery, url, fingerprint=fingerprint)
        cap = os.urandom(32)
        await owner.cap_add(cap)
        assert owner.mailbox is not None
        sender = await RelayConnection.connect(nursery, url, fingerprint=fingerprint,
                                               source=VICTIM_SOURCE)

        async def acker() -> None:
            while True:
                frame = await owner.recv()
                if isinstance(frame, frames.Deliver):
                    await owner.send(frames.Ack(req=owner.next_req(),
                                                ids=[m.id for m in frame.messages]))

        nursery.start_soon(acker)
        out: list[int] = []
        for _ in range(samples):
            t0 = now_ns()
            answer = await sender.request(frames.Deposit(req=sender.next_req(), items=[
                frames.DepositItem(mailbox=owner.mailbox, cap=cap, payload=os.urandom(200))]),
                "deposit")
            if not isinstance(answer, frames.DepositResult) or answer.errors != [None]:
                raise RuntimeError(f"the victim's deposit was not stored: {answer}")
            out.append(now_ns() - t0)
            await trio.sleep(0.005)
        nursery.cancel_scope.cancel()
        return out


def latency_run(samples: int, seconds: float, log_dir: Path,
                kinds: tuple[str, ...] = ("badcaps", "bigdeposits"),
                extra: dict[str, float | int | str | bool] | None = None) -> dict[str, Any]:
    config = RelayConfig().with_settings(**FLOOD_SETTINGS, **(extra or {}))
    report: dict[str, Any] = {}
    with RelayProcess(config) as relay:
        fp = relay.fingerprint
        url = relay.ws_url
        report["unloaded"] = latency_summary(trio.run(victim_latency, url, fp, samples))
        for kind in kinds:
            args = ["flood", "--url", url, "--kind", kind, "--seconds", str(seconds)]
            if fp:
                args += ["--fingerprint", fp]
            with Worker("bench.flood", args, log_dir=log_dir, name=f"flood-{kind}") as flooder:
                flooder.read_json(60)
                time.sleep(1.0)   # the flood is under way
                loaded = latency_summary(trio.run(victim_latency, url, fp, samples))
                report[kind] = {"victim": loaded, "flooder": flooder.read_json(seconds + 60)}
        report["relay_rss_kib"] = relay.rss_kib()
    return report


def memory_run(counts: list[int], log_dir: Path, per_process: int = 5000) -> list[dict[str, Any]]:
    points: list[dict[str, Any]] = []
    for count in counts:
        config = RelayConfig().with_settings(max_connections=count + 100)
        holders: list[Worker] = []
        with RelayProcess(config) as relay:
            time.sleep(1.0)
            baseline = relay.rss_kib()
            opened = closed = 0
            errors: dict[str, int] = {}
            try:
                sizes, remaining = [], count
                while remaining > 0:
                    sizes.append(min(per_process, remaining))
                    remaining -= sizes[-1]
                for i, n in enumerate(sizes):
                    holders.append(Worker("bench.flood", [
                        "partial", "--url", relay.ws_url, "--count", str(n)],
                        log_dir=log_dir, name=f"partial-{count}-{i}"))
                for w in holders:
                    report = w.read_json(600)
                    opened += int(report["opened"])
                    closed += int(report["closed_by_relay"])
                    for k, v in report["errors"].items():
                        errors[k] = errors.get(k, 0) + v
                time.sleep(2.0)
                rss = relay.rss_kib()
            finally:
                for w in holders:
                    w.close()
            points.append({
                "connections": count, "opened": opened, "closed_by_relay": closed,
                "open_errors": errors, "relay_rss_baseline_kib": baseline,
                "relay_rss_kib": rss,
                "per_connection_kib": round((rss - baseline) / max(opened, 1), 2),
            })
    return points


def main(argv: list[str]) -> int:
    if argv and argv[0] == "flood":
        parser = argparse.ArgumentParser(prog="python -m bench.flood flood")
        parser.add_argument("--url", required=True)
        parser.add_argument("--fingerprint", default=None)
        parser.add_argument("--kind", choices=["badcaps", "bigdeposits"], required=True)
        parser.add_argument("--seconds", type=float, default=20.0)
        args = parser.parse_args(argv[1:])
        trio.run(lambda: guarded(lambda: flood(args.url, args.fingerprint, args.kind,
                                                args.seconds)))
        return 0
    if argv and argv[0] == "partial":
        parser = argparse.ArgumentParser(prog="python -m bench.flood partial")
        parser.add_argument("--url", required=True)
        parser.add_argument("--count", type=int, required=True)
        parser.add_argument("--seconds", type=float, default=600.0)
        args = parser.parse_args(argv[1:])
        raise_nofile_limit()
        trio.run(lambda: guarded(lambda: hold_partials(args.url, args.count, args.seconds)))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.flood")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each flood")
    parser.add_argument("--counts", default="1000,10000")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--floods", default="badcaps,bigdeposits")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a relay setting for the latency runs (e.g. commit_bytes=4MiB)")
    args = parser.parse_args(argv)
    extra: dict[str, float | int | str | bool] = {}
    for item in args.set:
        name, _, value = item.partition("=")
        extra[name] = int(value) if value.isdigit() else value
    raise_nofile_limit()
    report: dict[str, Any] = {"bench": "flood"}
    with tempfile.TemporaryDirectory(prefix="chatcli-bench-") as tmp:
        if not args.skip_latency:
            report["latency"] = latency_run(args.samples, args.seconds, Path(tmp),
                                            tuple(args.floods.split(",")), extra)
        if not args.skip_memory:
            counts = [int(c) for c in args.counts.split(",") if c]
            report["partial_message_memory"] = memory_run(counts, Path(tmp))
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

