"""The floor: a bare trio-websocket echo server under the relay's load pattern.

The server returns every message unchanged on the connection it came in on:
no decoding, no storage, no logic. The generator (a separate process, like the
relay's) runs exactly the phases of :mod:`bench.loadgen` with the same
parameters: the same number of pairs, windows and batches, and the same frames
- a real encoded ``Deposit`` of ``batch`` padded payloads, which the client
decodes on the way back as the relay benchmark's receivers decode ``Deliver``.
So the relay's figures can be read as a fraction of what trio-websocket itself
moves on this machine in this run.

Usage::

    python -m bench.echo_floor [load flags]          # serve + generate, JSON on stdout
    python -m bench.echo_floor serve                 # prints {"url": ...}
    python -m bench.echo_floor gen --url ws://...    # the generator
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import trio
import trio_websocket

from bench.common import LOOPBACK, BenchError, Worker, emit, raise_nofile_limit
from bench.loadgen import Harness, LoadParams, PairSender, cpu_meter, guarded
from chatcli.protocol import codec, frames

MESSAGE_QUEUE = 64


# ----------------------------------------------------------------- server


async def _echo(request: trio_websocket.WebSocketRequest) -> None:
    try:
        ws = await request.accept()
        while True:
            await ws.send_message(await ws.get_message())
    except (trio_websocket.ConnectionClosed, trio.BrokenResourceError, OSError):
        pass  # a handler must not raise: trio-websocket would end the server


async def serve(port: int = 0, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(lambda task_status: trio_websocket.serve_websocket(
            _echo, LOOPBACK, port, ssl_context=None, handler_nursery=nursery,
            message_queue_size=MESSAGE_QUEUE, task_status=task_status))
        task_status.started(f"ws://{LOOPBACK}:{server.port}/")


async def _serve_main(port: int) -> None:
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve, port)
        emit({"url": url, "pid": os.getpid()})
        # Stop when the orchestrator closes our stdin (bounded: it always does).
        await trio.to_thread.run_sync(sys.stdin.read)
        nursery.cancel_scope.cancel()


# -------------------------------------------------------------- generator


class _EchoSender:
    def __init__(self, transport: EchoTransport, ws: trio_websocket.WebSocketConnection) -> None:
        self.transport = transport
        self.ws = ws
        self.req = 0

    async def send(self, payloads: list[bytes]) -> None:
        self.req += 1
        await self.ws.send_message(codec.encode(frames.Deposit(
            req=self.req, items=[frames.DepositItem(mailbox=self.transport.mailbox,
                                                    cap=self.transport.cap, payload=p)
                                 for p in payloads])))
        self.transport.frames_out += 1


class EchoTransport:
    """One connection per pair to the echo server: the sender's frames come
    back on it and are decoded like deliveries."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.mailbox = os.urandom(16)
        self.cap = os.urandom(32)
        self.frames_out = 0
        self.frames_in = 0

    async def open_pair(self, nursery: trio.Nursery, index: int,
                        harness: Harness) -> PairSender:
        ws = await trio_websocket.connect_websocket_url(nursery, self.url,
                                                        message_queue_size=MESSAGE_QUEUE)
        nursery.start_soon(self._receiver, ws, harness)
        return _EchoSender(self, ws)

    async def _receiver(self, ws: trio_websocket.WebSocketConnection, harness: Harness) -> None:
        while True:
            data = await ws.get_message()
            assert isinstance(data, bytes)
            frame = codec.decode_client_frame(data)
            assert isinstance(frame, frames.Deposit)
            self.frames_in += 1
            harness.delivered([item.payload for item in frame.items])

    def take_stats(self) -> dict[str, Any]:
        stats = {"frames_out": self.frames_out, "frames_in": self.frames_in}
        self.frames_out = self.frames_in = 0
        return stats


async def generate(url: str, params: LoadParams, server_pids: list[int]) -> dict[str, Any]:
    harness = Harness(params)
    report: dict[str, Any] = await guarded(
        lambda: harness.run_phases(EchoTransport(url), cpu_meter(server_pids)))
    return report


def _gen_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.echo_floor gen")
    parser.add_argument("--url", required=True)
    parser.add_argument("--server-pid", type=int, action="append", default=[])
    LoadParams.add_arguments(parser)
    args = parser.parse_args(argv)
    raise_nofile_limit()
    try:
        report = trio.run(generate, args.url, LoadParams.from_args(args), args.server_pid)
    except Exception as exc:
        emit({"error": f"{type(exc).__name__}: {exc}"})
        return 1
    emit(report)
    return 0


# ----------------------------------------------------------- orchestrator


def run(params: LoadParams) -> dict[str, Any]:
    """Start an echo server process and a generator process; return the report."""
    budget = 120 + params.duration * 2 + params.latency_duration + params.drain_timeout
    with tempfile.TemporaryDirectory(prefix="chatcli-bench-") as tmp, \
            Worker("bench.echo_floor", ["serve"], log_dir=Path(tmp), name="echo-server") as srv:
        started = srv.read_json(30)
        args = ["gen", "--url", started["url"], "--server-pid", str(srv.pid),
                *params.to_argv()]
        with Worker("bench.echo_floor", args, log_dir=Path(tmp), name="echo-gen") as gen:
            try:
                return gen.read_json(budget)
            except BenchError as exc:
                raise BenchError(f"{exc}; echo server log: {srv.log_tail()!r}") from None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        raise_nofile_limit()
        trio.run(_serve_main, 0)
        return 0
    if argv[:1] == ["gen"]:
        return _gen_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m bench.echo_floor",
        description="Bare trio-websocket echo under the relay benchmark's load; prints JSON.")
    LoadParams.add_arguments(parser)
    params = LoadParams.from_args(parser.parse_args(argv))
    raise_nofile_limit()
    print(json.dumps({"echo_floor": run(params)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
