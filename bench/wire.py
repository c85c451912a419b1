"""A minimal relay client for load generation, straight on the wire contract.

It uses :mod:`chatcli.protocol.codec` and :mod:`chatcli.protocol.frames` and
nothing of the client library, so the benchmark measures the relay, not the
client: one WebSocket, Hello/Welcome (with the relay's signature checked
against the fingerprint), then Register, Auth and CapAdd as plain requests.
The load loops take over the connection afterwards (``send``/``recv``).
"""

from __future__ import annotations

import hashlib
import os
import urllib.parse
from typing import Any

import nacl.exceptions
import nacl.signing
import trio
import trio_websocket

from chatcli.crypto.keys import relay_fingerprint
from chatcli.protocol import codec, frames, transcripts

# Large enough for a full Deliver batch; the relay bounds frames at MAX_FRAME_SIZE.
MESSAGE_QUEUE = 64
REQUEST_TIMEOUT = 60.0


class RelayRefused(RuntimeError):
    """The relay answered a setup request with an Error frame."""

    def __init__(self, what: str, error: frames.Error) -> None:
        super().__init__(f"{what}: {error.code}: {error.message}")
        self.code = error.code


class RelayConnection:
    """One connection to a relay, after a verified Hello/Welcome."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, welcome: frames.Welcome) -> None:
        self.ws = ws
        self.welcome = welcome
        self._next_req = 1
        self.mailbox: bytes | None = None
        self.pushed: list[frames.RelayFrame] = []

    @classmethod
    async def connect(cls, nursery: trio.Nursery, url: str, *,
                      fingerprint: str | None = None,
                      connect_timeout: float = 30.0,
                      source: str | None = None) -> RelayConnection:
        """Open a WebSocket in ``nursery`` and do the handshake; from the local
        address ``source`` if given (e.g. 127.0.0.2, to be another client
        address than a flooder's on loopback)."""
        with trio.fail_after(connect_timeout):
            if source is None:
                ws = await trio_websocket.connect_websocket_url(
                    nursery, url, message_queue_size=MESSAGE_QUEUE)
            else:
                parsed = urllib.parse.urlsplit(url)
                assert parsed.hostname is not None and parsed.port is not None
                stream = await trio.open_tcp_stream(parsed.hostname, parsed.port,
                                                    local_address=source)
                ws = await trio_websocket.wrap_client_stream(
                    nursery, stream, parsed.hostname, "/", message_queue_size=MESSAGE_QUEUE)
            nonce = os.urandom(32)
            await ws.send_message(codec.encode(frames.Hello(versions=[frames.PROTOCOL_VERSION],
                                                            nonce=nonce)))
            data = await ws.get_message()
        if isinstance(data, str):
            raise RuntimeError("the relay sent a text message")
        first = codec.decode_relay_frame(data)
        if isinstance(first, frames.Error):
            raise RelayRefused("hello", first)
        if not isinstance(first, frames.Welcome):
            raise RuntimeError(f"expected Welcome, got {type(first).__name__}")
        if fingerprint is not None:
            if relay_fingerprint(first.relay_key) != fingerprint:
                raise RuntimeError("the relay key does not match the fingerprint")
            signed = transcripts.relay_hello(first.relay_key, nonce, first.challenge,
                                             first.version)
            try:
                nacl.signing.VerifyKey(first.relay_key).verify(signed, first.signature)
            except nacl.exceptions.BadSignatureError:
                raise RuntimeError("the relay's Welcome signature is invalid") from None
        return cls(ws, first)

    # ----------------------------------------------------------- raw frames

    def next_req(self) -> int:
        req = self._next_req
        self._next_req += 1
        return req

    async def send(self, frame: frames.Frame) -> None:
        await self.ws.send_message(codec.encode(frame))

    async def send_raw(self, data: bytes) -> None:
        await self.ws.send_message(data)

    async def recv(self) -> frames.RelayFrame:
        data = await self.ws.get_message()
        if isinstance(data, str):
            raise RuntimeError("the relay sent a text message")
        return codec.decode_relay_frame(data)

    async def request(self, frame: Any, what: str) -> frames.RelayFrame:
        """Send a request frame and wait (at most ``REQUEST_TIMEOUT`` seconds)
        for the frame answering its ``req``; frames pushed meanwhile are kept
        in ``pushed``."""
        await self.send(frame)
        with trio.fail_after(REQUEST_TIMEOUT):
            while True:
                answer = await self.recv()
                if getattr(answer, "req", None) == frame.req:
                    if isinstance(answer, frames.Error):
                        raise RelayRefused(what, answer)
                    return answer
                if isinstance(answer, frames.Error) and answer.req is None:
                    raise RelayRefused(what, answer)
                self.pushed.append(answer)

    # -------------------------------------------------------------- requests

    async def register(self, key: nacl.signing.SigningKey) -> bytes:
        auth_key = bytes(key.verify_key)
        signed = transcripts.register(self.welcome.relay_key, self.welcome.challenge, auth_key)
        answer = await self.request(
            frames.Register(req=self.next_req(), auth_key=auth_key,
                            signature=key.sign(signed).signature), "register")
        if not isinstance(answer, frames.Registered):
            raise RuntimeError(f"expected Registered, got {type(answer).__name__}")
        self.mailbox = answer.mailbox
        return answer.mailbox

    async def auth(self, key: nacl.signing.SigningKey, mailbox: bytes) -> None:
        signed = transcripts.auth(self.welcome.relay_key, self.welcome.challenge, mailbox)
        await self.request(frames.Auth(req=self.next_req(), mailbox=mailbox,
                                       signature=key.sign(signed).signature), "auth")
        self.mailbox = mailbox

    async def cap_add(self, cap: bytes) -> None:
        await self.request(frames.CapAdd(req=self.next_req(),
                                         cap_hashes=[hashlib.sha256(cap).digest()]), "cap_add")

    async def aclose(self) -> None:
        await self.ws.aclose()


async def open_owner(nursery: trio.Nursery, url: str, *, fingerprint: str | None,
                     reconnect: bool = True) -> tuple[RelayConnection, nacl.signing.SigningKey]:
    """A new mailbox and an authenticated connection to it.

    With ``reconnect`` (what a real client does after ``init``), the mailbox is
    registered on one connection, which is closed, and a second connection
    authenticates with Auth; otherwise the registering connection is kept.
    """
    key = nacl.signing.SigningKey.generate()
    conn = await RelayConnection.connect(nursery, url, fingerprint=fingerprint)
    mailbox = await conn.register(key)
    if not reconnect:
        return conn, key
    await conn.aclose()
    conn = await RelayConnection.connect(nursery, url, fingerprint=fingerprint)
    await conn.auth(key, mailbox)
    return conn, key
