"""A minimal test client speaking the relay protocol over a real WebSocket,
and helpers to run relays in tests."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import trio
from trio_websocket import WebSocketConnection, connect_websocket

from chatcli.crypto.keys import MailboxKeyPair
from chatcli.protocol import frames
from chatcli.protocol.codec import decode_relay_frame, encode
from chatcli.protocol.connection import ClientProtocol
from chatcli.relay.config import RelayConfig
from chatcli.relay.mailbox import cap_hash
from chatcli.relay.server import Relay

TIMEOUT = 10


def default_db(tmp_path: Path) -> str:
    """The ``--db`` of :func:`make_config`; the ``relay_backend`` fixture
    (conftest.py) replaces it so that server tests run on every backend."""
    return str(tmp_path / "relay.db")


def make_config(tmp_path: Path, **overrides: Any) -> RelayConfig:
    settings: dict[str, Any] = {"db": default_db(tmp_path), "host": "127.0.0.1",
                                "port": 0, "sweep_interval": 3600.0}
    settings.update(overrides)
    return RelayConfig(**settings)


class Harness:
    """A running relay, and the clients a test opened (closed at the end)."""

    def __init__(self, relay: Relay, nursery: trio.Nursery) -> None:
        self.relay = relay
        self.nursery = nursery
        self.clients: list[Client] = []

    async def connect(self, *, handshake: bool = True) -> Client:
        client = await Client.connect(self.nursery, self.relay, handshake=handshake)
        self.clients.append(client)
        return client

    async def owner(self) -> tuple[Client, bytes, bytes]:
        """A connected owner of a new mailbox with one capability: (client, mailbox, cap)."""
        client = await self.connect()
        mailbox = await client.register()
        await client.next_push(frames.Synced)
        cap = capability()
        await client.add_cap(cap)
        return client, mailbox, cap

    async def close_clients(self) -> None:
        for client in self.clients:
            await client.close()


@contextlib.asynccontextmanager
async def running_relay(config: RelayConfig, **kwargs: Any) -> AsyncIterator[Harness]:
    """Run a relay for the duration of the block (cancelled at the end)."""
    relay = Relay(config, **kwargs)
    async with trio.open_nursery() as nursery:
        await nursery.start(relay.serve)
        harness = Harness(relay, nursery)
        try:
            yield harness
        finally:
            with trio.CancelScope(shield=True):
                await harness.close_clients()
            nursery.cancel_scope.cancel()


class Client:
    """A raw protocol client: ``request`` sends a request and returns its
    answer; pushes that arrive meanwhile are kept in ``pushes``."""

    def __init__(self, ws: WebSocketConnection, proto: ClientProtocol) -> None:
        self.ws = ws
        self.proto = proto
        self.pushes: list[frames.Frame] = []
        self.mailbox: bytes | None = None
        self.key: MailboxKeyPair | None = None

    @classmethod
    async def connect(cls, nursery: trio.Nursery, relay: Relay, *,
                      handshake: bool = True) -> Client:
        assert relay.port is not None
        ws = await connect_websocket(nursery, "127.0.0.1", relay.port, "/", use_ssl=False)
        client = cls(ws, ClientProtocol(fingerprint=relay.fingerprint))
        if handshake:
            await client.ws.send_message(client.proto.start())
            (welcome,) = client.proto.receive_data(await client.raw_recv())
            assert isinstance(welcome, frames.Welcome)
        return client

    async def raw_recv(self) -> bytes:
        with trio.fail_after(TIMEOUT):
            data = await self.ws.get_message()
        assert isinstance(data, bytes)
        return data

    async def recv(self) -> frames.Frame:
        """The next frame (a push or an answer)."""
        (frame,) = self.proto.receive_data(await self.raw_recv())
        return frame

    async def recv_unchecked(self) -> frames.Frame:
        """The next frame, decoded without the client state machine (for answers
        to frames sent with :meth:`send_raw`)."""
        return decode_relay_frame(await self.raw_recv())

    async def send(self, frame: frames.ClientFrame) -> None:
        await self.ws.send_message(self.proto.send(frame))

    async def send_raw(self, data: bytes) -> None:
        await self.ws.send_message(data)

    async def request(self, frame: frames.ClientFrame) -> frames.Frame:
        await self.send(frame)
        return await self.answer(getattr(frame, "req"))  # noqa: B009

    async def answer(self, req: int) -> frames.Frame:
        while True:
            frame = await self.recv()
            if getattr(frame, "req", None) == req:
                return frame
            self.pushes.append(frame)

    def req(self) -> int:
        return self.proto.next_request_id()

    async def register(self, key: MailboxKeyPair | None = None,
                       token: str | None = None) -> bytes:
        self.key = key or MailboxKeyPair.generate()
        await self.ws.send_message(self.proto.register(self.key.auth_public, self.key.sign,
                                                       token))
        answer = await self.answer(self.proto._next_req - 1)
        assert isinstance(answer, frames.Registered), answer
        self.mailbox = answer.mailbox
        return answer.mailbox

    async def auth(self, mailbox: bytes, key: MailboxKeyPair, *,
                   installation: bytes | None = None, supersede: bool = False) -> frames.Frame:
        self.key = key
        await self.ws.send_message(self.proto.auth(mailbox, key.sign, installation=installation,
                                                   supersede=supersede))
        answer = await self.answer(self.proto._next_req - 1)
        if isinstance(answer, frames.Ok):
            self.mailbox = mailbox
        return answer

    async def add_cap(self, capability: bytes) -> None:
        answer = await self.request(frames.CapAdd(req=self.req(),
                                                  cap_hashes=[cap_hash(capability)]))
        assert isinstance(answer, frames.Ok), answer

    async def deposit(self, mailbox: bytes, capability: bytes, *payloads: bytes
                      ) -> list[str | None]:
        items = [frames.DepositItem(mailbox=mailbox, cap=capability, payload=p)
                 for p in payloads]
        answer = await self.request(frames.Deposit(req=self.req(), items=items))
        assert isinstance(answer, frames.DepositResult), answer
        return answer.errors

    async def next_push(self, kind: type[frames.Frame]) -> frames.Frame:
        for i, frame in enumerate(self.pushes):
            if isinstance(frame, kind):
                return self.pushes.pop(i)
        while True:
            frame = await self.recv()
            if isinstance(frame, kind):
                return frame
            self.pushes.append(frame)

    async def delivered(self, count: int) -> list[frames.Delivered]:
        """Read Deliver pushes until ``count`` messages arrived."""
        out: list[frames.Delivered] = []
        while len(out) < count:
            frame = await self.next_push(frames.Deliver)
            assert isinstance(frame, frames.Deliver)
            out.extend(frame.messages)
        return out

    async def close(self) -> None:
        with trio.move_on_after(2):
            await self.ws.aclose()
        # trio-websocket's aclose() returns early when the peer closed first,
        # leaving the client's TCP stream open: close it ourselves.
        await self.ws._stream.aclose()


async def eventually(predicate: Callable[[], bool]) -> None:
    """Wait until ``predicate()`` holds (polling server-side state in tests)."""
    with trio.fail_after(TIMEOUT):
        while not predicate():  # noqa: ASYNC110 - polling state that has no event
            await trio.sleep(0.01)


def capability() -> bytes:
    return os.urandom(32)


def raw_frame(frame: frames.Frame) -> bytes:
    return encode(frame)
