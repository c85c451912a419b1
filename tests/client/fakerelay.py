"""A small in-memory relay for the client's in-process tests.

It speaks the real wire protocol (``RelayProtocol`` over trio-websocket on a
loopback port) with just enough mailbox logic for the client: register, auth,
capabilities, deposits pushed to online owners, acks, presence. The real relay
is exercised by the end-to-end tests in ``tests/e2e``.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
from dataclasses import dataclass, field

import trio
import trio_websocket

from chatcli.crypto.errors import BadSignature
from chatcli.crypto.keys import RelayKeyPair, SigningPublicKey
from chatcli.protocol import codes, frames
from chatcli.protocol.codec import RemoteProtocolError, decode_client_frame
from chatcli.protocol.connection import RelayProtocol


@dataclass(frozen=True)
class Seen:
    """One client frame as the relay saw it: on which connection, and whether
    that connection had sent Register or Auth before it (sealed-sender checks)."""

    conn: int
    frame: str
    after_login: bool
    refused: str | None = None


class _LostAnswer(Exception):
    """Raised to drop a connection instead of answering its deposit."""


@dataclass
class Mailbox:
    auth_key: bytes
    caps: set[bytes] = field(default_factory=set)
    one_shot: set[bytes] = field(default_factory=set)  # caps for one deposit each
    # One-shot caps that took their deposit -> the SHA-256 of its payload.
    used: dict[bytes, bytes] = field(default_factory=dict)
    queue: dict[int, tuple[bytes, int]] = field(default_factory=dict)
    online: list[trio.MemorySendChannel[frames.Frame]] = field(default_factory=list)
    hidden: bool = False
    last_seen: int = 0


class FakeRelay:
    def __init__(self) -> None:
        self.key = RelayKeyPair.generate()
        self.mailboxes: dict[bytes, Mailbox] = {}
        self.ids = itertools.count(1)
        self.port = 0
        self.deposits = 0
        # Every stored deposit (mailbox, payload), as a relay could record them.
        self.recorded: list[tuple[bytes, bytes]] = []
        self.seen: list[Seen] = []
        # Deposit frames to handle (store) and then leave unanswered, dropping
        # the depositor's connection instead, as a lost answer.
        self.lose_deposit_answers = 0
        self._conn_ids = itertools.count(1)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/#{self.key.fingerprint()}"

    async def serve(self, *, task_status: trio.TaskStatus[FakeRelay] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(trio_websocket.serve_websocket, self._handle,
                                         "127.0.0.1", 0, None)
            self.port = server.port
            task_status.started(self)

    async def _handle(self, request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        proto = RelayProtocol(self.key.public.raw, self.key.sign)
        out_send, out_recv = trio.open_memory_channel[frames.Frame](1000)
        owned: Mailbox | None = None
        conn_id = next(self._conn_ids)
        logged_in = False

        async def writer() -> None:
            async for frame in out_recv:
                await ws.send_message(proto.send(frame))  # type: ignore[arg-type]

        try:
            async with trio.open_nursery() as nursery:
                data = await ws.get_message()
                proto.receive_data(data)  # type: ignore[arg-type]
                await ws.send_message(proto.accept_hello())
                nursery.start_soon(writer)
                while True:
                    data = await ws.get_message()
                    try:
                        frame = proto.receive_data(data)  # type: ignore[arg-type]
                    except RemoteProtocolError as exc:
                        with contextlib.suppress(RemoteProtocolError):
                            name = type(decode_client_frame(data)).__name__  # type: ignore[arg-type]
                            self.seen.append(Seen(conn_id, name, logged_in, exc.code))
                        await out_send.send(exc.error_frame())
                        continue
                    self.seen.append(Seen(conn_id, type(frame).__name__, logged_in))
                    logged_in = logged_in or isinstance(frame, frames.Register | frames.Auth)
                    owned = await self._dispatch(proto, frame, out_send, owned)
        except* _LostAnswer:
            await ws.aclose()
        except* (trio_websocket.ConnectionClosed, trio.BrokenResourceError):
            pass
        finally:
            if owned is not None and out_send in owned.online:
                owned.online.remove(out_send)
                owned.last_seen = int(trio.current_time() * 1000)

    async def _dispatch(self, proto: RelayProtocol, frame: frames.Frame,
                        out: trio.MemorySendChannel[frames.Frame], owned: Mailbox | None
                        ) -> Mailbox | None:
        if isinstance(frame, frames.Register):
            try:
                SigningPublicKey(frame.auth_key).verify(
                    proto.register_transcript(frame.auth_key), frame.signature)
            except BadSignature:
                proto.login_failed()
                await out.send(frames.Error(req=frame.req, code=codes.AUTH_FAILED, message="no"))
                return owned
            mailbox_id = os.urandom(16)
            owned = self.mailboxes[mailbox_id] = Mailbox(frame.auth_key)
            proto.login_succeeded(mailbox_id)
            owned.online.append(out)
            await out.send(frames.Registered(req=frame.req, mailbox=mailbox_id))
        elif isinstance(frame, frames.Auth):
            box = self.mailboxes.get(frame.mailbox)
            try:
                if box is None:
                    raise BadSignature()
                SigningPublicKey(box.auth_key).verify(
                    proto.auth_transcript(frame.mailbox, frame.installation, frame.supersede),
                    frame.signature)
            except BadSignature:
                proto.login_failed()
                await out.send(frames.Error(req=frame.req, code=codes.AUTH_FAILED, message="no"))
                return owned
            proto.login_succeeded(frame.mailbox)
            owned = box
            await out.send(frames.Ok(req=frame.req))
            waiting = [frames.Delivered(id=i, payload=p, received_at=t)
                       for i, (p, t) in sorted(box.queue.items())]
            if waiting:
                await out.send(frames.Deliver(messages=waiting))
            await out.send(frames.Synced())
            box.online.append(out)
        elif isinstance(frame, frames.CapAdd | frames.CapRevoke):
            assert owned is not None
            for h in frame.cap_hashes:
                if isinstance(frame, frames.CapAdd):
                    owned.caps.add(h)
                    if frame.one_shot:
                        owned.one_shot.add(h)
                else:
                    owned.caps.discard(h)
            await out.send(frames.Ok(req=frame.req))
        elif isinstance(frame, frames.Deposit):
            errors: list[str | None] = []
            for item in frame.items:
                box = self.mailboxes.get(item.mailbox)
                hashed = hashlib.sha256(item.cap).digest()
                if box is None:
                    errors.append(codes.UNKNOWN_MAILBOX)
                elif hashed not in box.caps:
                    errors.append(codes.BAD_CAPABILITY)
                elif hashed in box.used:
                    # The deposit that used it, again: stored already (as the relay).
                    same = box.used[hashed] == hashlib.sha256(item.payload).digest()
                    errors.append(None if same else codes.CAPABILITY_USED)
                else:
                    if hashed in box.one_shot:
                        box.used[hashed] = hashlib.sha256(item.payload).digest()
                    msg_id = next(self.ids)
                    stamp = int(trio.current_time() * 1000) + 1
                    box.queue[msg_id] = (item.payload, stamp)
                    self.deposits += 1
                    self.recorded.append((item.mailbox, item.payload))
                    errors.append(None)
                    for conn in list(box.online):
                        conn.send_nowait(frames.Deliver(messages=[frames.Delivered(
                            id=msg_id, payload=item.payload, received_at=stamp)]))
            if self.lose_deposit_answers:
                self.lose_deposit_answers -= 1
                raise _LostAnswer()
            await out.send(frames.DepositResult(req=frame.req, errors=errors))
        elif isinstance(frame, frames.Ack):
            assert owned is not None
            for i in frame.ids:
                owned.queue.pop(i, None)
            await out.send(frames.Ok(req=frame.req))
        elif isinstance(frame, frames.PresenceQuery | frames.PresenceSubscribe):
            entries = []
            for t in frame.targets:
                box = self.mailboxes.get(t.mailbox)
                ok = (box is not None and hashlib.sha256(t.cap).digest() in box.caps
                      and hashlib.sha256(t.cap).digest() not in box.used)
                if box is None or not ok or box.hidden:
                    entries.append(frames.PresenceEntry(mailbox=t.mailbox, online=None,
                                                        last_seen=None))
                else:
                    entries.append(frames.PresenceEntry(mailbox=t.mailbox,
                                                        online=bool(box.online),
                                                        last_seen=box.last_seen or None))
            await out.send(frames.PresenceResult(req=frame.req, entries=entries))
        elif isinstance(frame, frames.PresenceSettings):
            assert owned is not None
            owned.hidden = frame.hidden
            await out.send(frames.Ok(req=frame.req))
        elif isinstance(frame, frames.AccountDelete):
            assert owned is not None
            for key, box in list(self.mailboxes.items()):
                if box is owned:
                    del self.mailboxes[key]
            await out.send(frames.Ok(req=frame.req))
        elif isinstance(frame, frames.Ping):
            await out.send(frames.Pong(req=frame.req))
        else:
            await out.send(frames.Error(req=getattr(frame, "req", None), code=codes.BAD_REQUEST,
                                        message="not supported by the fake relay"))
        return owned
