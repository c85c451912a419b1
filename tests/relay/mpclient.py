"""Relay processes and reconnecting clients for the multi-process tests.

The clients here behave as a real chatcli client must with several relay
processes behind one address: when a connection breaks (its process was
killed) they reconnect (the kernel hands the new connection to a live
process), authenticate again, and carry on. Delivery is at-least-once on the
wire; :class:`Owner` de-duplicates by message id, so the application sees
each message once. :class:`Sender` re-sends a deposit until the relay
acknowledges it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
from trio_websocket import ConnectionClosed, HandshakeError, WebSocketConnection, wrap_client_stream

from chatcli.crypto.keys import MailboxKeyPair
from chatcli.protocol import codes, frames
from chatcli.protocol.connection import ClientProtocol
from chatcli.relay.mailbox import cap_hash

CHATCLI = [sys.executable, "-c", "from chatcli.cli.main import cli; cli()"]
ADDRESS_RE = re.compile(r"relay address: ws://([^:/]+):(\d+)/#(\w+)")
_BROKEN = (ConnectionClosed, HandshakeError, OSError, trio.BrokenResourceError,
           trio.ClosedResourceError)


def _reraise_unless_broken(exc: BaseException) -> None:
    """Connection failures (possibly inside exception groups) mean reconnect;
    anything else is a test failure."""
    if isinstance(exc, BaseExceptionGroup):
        _, rest = exc.split(_BROKEN)
        if rest is not None:
            raise exc
    elif not isinstance(exc, _BROKEN):
        raise exc


class RelayProcess:
    """``chatcli relay serve`` (or ``--workers N``) in a child process."""

    def __init__(self, db: str, *, workers: int = 1, port: int = 0,
                 log_path: Path | None = None, extra: list[str] | None = None) -> None:
        self.argv = [*CHATCLI, "relay", "serve",
                     "--host", "127.0.0.1", "--port", str(port), "--db", db,
                     *(["--workers", str(workers)] if workers != 1 else []), *(extra or [])]
        self.log_path = log_path
        self.proc: subprocess.Popen[str] | None = None
        self.host = "127.0.0.1"
        self.port = 0
        self.fingerprint = ""

    def start(self, timeout: float = 30.0) -> RelayProcess:
        if self.log_path is not None:
            with open(self.log_path, "a") as log:
                self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=log,
                                             text=True, start_new_session=True)
        else:
            self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE,
                                         stderr=subprocess.DEVNULL, text=True,
                                         start_new_session=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = ADDRESS_RE.search(line)
        if not match:
            self.stop()
            raise RuntimeError(f"relay did not start: {line!r}")
        self.host, self.port, self.fingerprint = match[1], int(match[2]), match[3]
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def children(self) -> list[int]:
        """The worker processes of a ``--workers`` parent."""
        out: list[int] = []
        task_dir = Path(f"/proc/{self.pid}/task")
        for task in task_dir.iterdir():
            text = (task / "children").read_text().split()
            out.extend(int(pid) for pid in text)
        return out

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode


class Conn:
    """One websocket connection with the client protocol state machine."""

    def __init__(self, ws: WebSocketConnection, proto: ClientProtocol) -> None:
        self.ws = ws
        self.proto = proto

    @classmethod
    async def open(cls, nursery: trio.Nursery, host: str, port: int, fingerprint: str
                   ) -> Conn:
        # Our own TCP stream, so that it is closed whatever fails (a process
        # dying during the websocket handshake, say).
        stream = await trio.open_tcp_stream(host, port)
        try:
            ws = await wrap_client_stream(nursery, stream, host, "/")
            conn = cls(ws, ClientProtocol(fingerprint=fingerprint))
            await ws.send_message(conn.proto.start())
            frame = await conn.recv()
            assert isinstance(frame, frames.Welcome), frame
        except BaseException:
            with trio.CancelScope(shield=True):
                await stream.aclose()
            raise
        return conn

    async def recv(self) -> frames.Frame:
        while True:
            data = await self.ws.get_message()
            assert isinstance(data, bytes)
            got = self.proto.receive_data(data)
            if got:
                (frame,) = got
                return frame

    async def send(self, frame: frames.ClientFrame) -> None:
        await self.ws.send_message(self.proto.send(frame))

    async def close(self) -> None:
        with trio.move_on_after(1):
            await self.ws.aclose()
        await self.ws._stream.aclose()


class Owner:
    """A mailbox owner that stays connected: receives, de-duplicates, acks."""

    def __init__(self, host: str, port: int, fingerprint: str) -> None:
        self.address = (host, port, fingerprint)
        self.key = MailboxKeyPair.generate()
        self.mailbox: bytes | None = None
        self.cap = os.urandom(32)
        self.received: dict[int, bytes] = {}      # message id -> payload (deduplicated)
        self.wire_duplicates = 0
        self.connections = 0
        self.presence: list[frames.PresenceEntry] = []
        self.ready = trio.Event()
        self.changed = trio.Event()
        self.conn: Conn | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        started = False
        while True:
            try:
                async with trio.open_nursery() as nursery:
                    conn = await Conn.open(nursery, *self.address)
                    self.conn = conn
                    try:
                        await self._login(conn)
                        self.connections += 1
                        if not started:
                            started = True
                            task_status.started()
                        await self._receive(conn)
                    finally:
                        with trio.CancelScope(shield=True):
                            await conn.close()
                        nursery.cancel_scope.cancel()
            except (*_BROKEN, BaseExceptionGroup) as exc:
                _reraise_unless_broken(exc)
            self.conn = None
            await trio.sleep(0.05)

    async def _login(self, conn: Conn) -> None:
        if self.mailbox is None:
            await conn.ws.send_message(conn.proto.register(self.key.auth_public, self.key.sign))
            frame = await conn.recv()
            assert isinstance(frame, frames.Registered), frame
            self.mailbox = frame.mailbox
            req = conn.proto.next_request_id()
            await conn.send(frames.CapAdd(req=req, cap_hashes=[cap_hash(self.cap)]))
            while not isinstance(frame, frames.Ok):   # a new mailbox: only Synced before
                frame = await conn.recv()
                assert isinstance(frame, frames.Ok | frames.Synced), frame
        else:
            await conn.ws.send_message(conn.proto.auth(self.mailbox, self.key.sign))
            frame = await conn.recv()
            if not isinstance(frame, frames.Ok):
                raise ConnectionClosed(None)   # try_again while the store recovers: retry
        self.ready.set()

    async def _receive(self, conn: Conn) -> None:
        while True:
            frame = await conn.recv()
            if isinstance(frame, frames.Deliver):
                for message in frame.messages:
                    if message.id in self.received:
                        self.wire_duplicates += 1
                    else:
                        self.received[message.id] = message.payload
                await conn.send(frames.Ack(req=conn.proto.next_request_id(),
                                           ids=[m.id for m in frame.messages]))
                self._changed()
            elif isinstance(frame, frames.PresenceUpdate | frames.PresenceResult):
                self.presence.extend(frame.entries)
                self._changed()
            elif isinstance(frame, frames.Bye):
                return

    def _changed(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def wait_until(self, predicate: Callable[[], bool], seconds: float = 10.0) -> None:
        with trio.fail_after(seconds):
            while not predicate():
                await self.changed.wait()

    def payloads(self) -> set[bytes]:
        return set(self.received.values())


class Sender:
    """Deposits payloads into a mailbox until each is acknowledged, reconnecting
    and re-sending what was not acknowledged when a connection breaks."""

    def __init__(self, host: str, port: int, fingerprint: str) -> None:
        self.address = (host, port, fingerprint)
        self.acked: list[bytes] = []
        self.try_again = 0
        self.reconnects = 0

    async def send_all(self, mailbox: bytes, cap: bytes, payloads: list[bytes], *,
                       batch: int = 10, pause: float = 0.0) -> None:
        todo = list(payloads)
        while todo:
            try:
                async with trio.open_nursery() as nursery:
                    conn = await Conn.open(nursery, *self.address)
                    try:
                        while todo:
                            chunk = todo[:batch]
                            errors = await self._deposit(conn, mailbox, cap, chunk)
                            if errors is None:    # try again (e.g. storage down)
                                await trio.sleep(0.05)
                                continue
                            assert all(e is None for e in errors), errors
                            self.acked.extend(chunk)
                            del todo[:len(chunk)]
                            if pause:
                                await trio.sleep(pause)
                    finally:
                        await conn.close()
                        nursery.cancel_scope.cancel()
            except (*_BROKEN, BaseExceptionGroup) as exc:
                _reraise_unless_broken(exc)
                self.reconnects += 1
                await trio.sleep(0.05)

    async def _deposit(self, conn: Conn, mailbox: bytes, cap: bytes, chunk: list[bytes]
                       ) -> list[str | None] | None:
        req = conn.proto.next_request_id()
        await conn.send(frames.Deposit(req=req, items=[
            frames.DepositItem(mailbox=mailbox, cap=cap, payload=p) for p in chunk]))
        while True:
            frame = await conn.recv()
            if getattr(frame, "req", None) != req:
                continue
            if isinstance(frame, frames.Error):
                assert frame.code in codes.TRANSIENT, frame
                self.try_again += 1
                return None
            assert isinstance(frame, frames.DepositResult), frame
            return list(frame.errors)


async def request(conn: Conn, frame: Any) -> frames.Frame:
    """Send a request on a connection nobody else reads, and return its answer."""
    await conn.send(frame)
    while True:
        answer = await conn.recv()
        if getattr(answer, "req", None) == frame.req:
            return answer
