"""Relay memory per idle authenticated connection.

Starts a relay, warms it up (a few connections opened and closed, so that
first-use allocations and lazy imports are not charged to the connections),
reads its RSS (VmRSS from /proc, summed over its process tree), then opens
idle connections from holder processes (at most ``--per-process`` sockets
each) up to each target count in turn, and reads the RSS again at each:
``(RSS_N - RSS_0) / N`` is the cost of one idle connection in KiB.

Each connection is what a real client keeps open: a mailbox registered on a
first connection (closed), then a second connection that authenticates with
Auth and stays idle. ``--no-reconnect`` keeps the registering connection
instead, which halves the set-up time.

Usage::

    python -m bench.idle_memory [--counts 1000,10000] [--relay SPEC]   # JSON on stdout
    python -m bench.idle_memory hold --url ws://... --count N          # a holder
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import trio
import trio_websocket

from bench.common import (
    BenchError,
    RelayConfig,
    RelayProcess,
    Worker,
    emit,
    raise_nofile_limit,
    tree_rss_kib,
)
from bench.loadgen import guarded
from bench.wire import RelayRefused, open_owner

WARMUP_CONNECTIONS = 20


# ---------------------------------------------------------------- holder


async def hold(url: str, fingerprint: str | None, count: int, concurrency: int,
               reconnect: bool, deadline: float, plain: bool = False) -> None:
    """Open ``count`` idle owner connections (``plain``: bare WebSockets, for
    the echo floor), report, and keep them open until stdin closes (or until
    ``deadline`` seconds have passed)."""
    conns: list[object] = []
    errors: dict[str, int] = {}
    limiter = trio.CapacityLimiter(concurrency)
    start = time.monotonic()

    async def one(nursery: trio.Nursery) -> None:
        async with limiter:
            try:
                conn: object
                if plain:
                    conn = await trio_websocket.connect_websocket_url(nursery, url)
                else:
                    conn, _key = await open_owner(nursery, url, fingerprint=fingerprint,
                                                  reconnect=reconnect)
            except RelayRefused as exc:
                errors[exc.code] = errors.get(exc.code, 0) + 1
                return
            except (OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                return
            except Exception as exc:  # a refused handshake, a closed socket
                name = type(exc).__name__
                errors[name] = errors.get(name, 0) + 1
                return
            conns.append(conn)

    async with trio.open_nursery() as nursery:
        with trio.move_on_after(deadline):
            async with trio.open_nursery() as opening:
                for _ in range(count):
                    opening.start_soon(one, nursery)
        emit({"opened": len(conns), "requested": count, "errors": errors,
              "seconds": round(time.monotonic() - start, 3)})
        # Idle until the orchestrator closes stdin; bounded by the deadline.
        with trio.move_on_after(deadline):
            await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)
        nursery.cancel_scope.cancel()


def _hold_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.idle_memory hold")
    parser.add_argument("--url", required=True)
    parser.add_argument("--fingerprint", default=None)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--no-reconnect", action="store_true")
    parser.add_argument("--plain", action="store_true", help="bare WebSockets (echo floor)")
    parser.add_argument("--deadline", type=float, default=600.0)
    args = parser.parse_args(argv)
    limit = raise_nofile_limit()
    if args.count + 100 > limit:
        emit({"error": f"the fd limit {limit} is too low for {args.count} connections"})
        return 1
    try:
        trio.run(lambda: guarded(lambda: hold(
            args.url, args.fingerprint, args.count, args.concurrency,
            not args.no_reconnect, args.deadline, args.plain)))
    except Exception as exc:
        emit({"error": f"{type(exc).__name__}: {exc}"})
        return 1
    return 0


# ----------------------------------------------------------- orchestrator


@contextlib.contextmanager
def _server(kind: str, config: RelayConfig, max_connections: int,
            log_dir: Path) -> Iterator[tuple[str, str | None, Callable[[], int], list[str]]]:
    """Start the server to measure: (url, fingerprint, rss reader, holder flags)."""
    if kind == "echo":
        with Worker("bench.echo_floor", ["serve"], log_dir=log_dir, name="echo-server") as srv:
            url = srv.read_json(30)["url"]
            yield url, None, lambda: tree_rss_kib(srv.pid), ["--plain"]
        return
    # The relay's default connection cap is 10,000: lift it above the count.
    with RelayProcess(config.with_settings(max_connections=max_connections)) as relay:
        yield relay.ws_url, relay.fingerprint, relay.rss_kib, []


def run(counts: list[int], *, config: RelayConfig | None = None, server: str = "relay",
        per_process: int = 5000, concurrency: int = 50, reconnect: bool = True,
        settle: float = 2.0, open_timeout: float = 300.0,
        warmup: int = WARMUP_CONNECTIONS) -> dict[str, Any]:
    """Measure the RSS of ``server`` ("relay" or "echo", the trio-websocket
    floor) with each count of idle connections open."""
    counts = sorted(counts)
    config = config or RelayConfig()
    holder_flags = ["--concurrency", str(concurrency), "--deadline", str(open_timeout * 3)]
    if not reconnect:
        holder_flags.append("--no-reconnect")
    points: list[dict[str, Any]] = []
    holders: list[Worker] = []
    with tempfile.TemporaryDirectory(prefix="chatcli-bench-") as tmp, \
            _server(server, config, counts[-1] + 1000, Path(tmp)) as (url, fp, rss_kib, flags):
        base_args = ["hold", "--url", url, *holder_flags, *flags]
        if fp:
            base_args += ["--fingerprint", fp]
        if warmup:
            with Worker("bench.idle_memory", [*base_args, "--count", str(warmup)],
                        log_dir=Path(tmp), name="idle-warmup") as warm:
                warm.read_json(open_timeout)
        time.sleep(settle)
        baseline = rss_kib()
        opened = 0
        errors: dict[str, int] = {}
        try:
            for target in counts:
                t0 = time.monotonic()
                sizes, remaining = [], target - opened
                while remaining > 0:
                    sizes.append(min(per_process, remaining))
                    remaining -= sizes[-1]
                new = [Worker("bench.idle_memory", [*base_args, "--count", str(n)],
                              log_dir=Path(tmp), name=f"idle-holder-{len(holders) + i}")
                       for i, n in enumerate(sizes)]
                holders.extend(new)
                for w in new:
                    report = w.read_json(open_timeout)
                    opened += int(report["opened"])
                    for code, n in report["errors"].items():
                        errors[code] = errors.get(code, 0) + n
                open_s = time.monotonic() - t0
                time.sleep(settle)
                rss = rss_kib()
                points.append({
                    "target": target,
                    "connections": opened,
                    "reached": opened >= target,
                    "open_s": round(open_s, 2),
                    "rss_kib": rss,
                    "per_connection_kib": round((rss - baseline) / opened, 2) if opened else None,
                })
                if opened < target:
                    break  # the next count cannot be reached either
        finally:
            for w in holders:
                w.close()
        return {
            "server": "relay" if server == "relay" else "trio-websocket echo",
            "relay": config.describe() if server == "relay" else None,
            "connection": ("plain WebSocket" if server == "echo" else
                           "registered, then Auth on a new connection" if reconnect else
                           "registered (the registering connection kept)"),
            "baseline_rss_kib": baseline,
            "points": points,
            "errors": errors,
            "max_connections_reached": opened,
        }


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["hold"]:
        return _hold_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m bench.idle_memory",
        description="Relay RSS per idle authenticated connection; prints JSON.")
    parser.add_argument("--counts", default="1000,10000",
                        help="connection counts to measure at (default 1000,10000)")
    parser.add_argument("--relay", default="sqlite", metavar="SPEC")
    parser.add_argument("--server", choices=["relay", "echo"], default="relay",
                        help="measure the relay, or the bare trio-websocket echo floor")
    parser.add_argument("--per-process", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--no-reconnect", action="store_true")
    args = parser.parse_args(argv)
    raise_nofile_limit()
    counts = [int(c) for c in args.counts.split(",") if c]
    try:
        report = run(counts, config=RelayConfig.parse(args.relay), server=args.server,
                     per_process=args.per_process, concurrency=args.concurrency,
                     reconnect=not args.no_reconnect)
    except BenchError as exc:
        print(json.dumps({"idle_memory": {"error": str(exc)}}))
        return 1
    print(json.dumps({"idle_memory": report}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
