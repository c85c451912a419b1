"""The relay's Trio shell: WebSocket connections in, protocol frames to the
mailbox, presence and blob logic, answers and pushes out.

Start it in tests with ``port = await nursery.start(serve_relay, config)``
(port 0 binds an ephemeral port), or keep the :class:`Relay` object to read
its address and ask for a graceful :meth:`Relay.shutdown`.

Per connection: the handler task reads frames and dispatches them; one
sender task owns every write (answers from a bounded queue first, then
deliveries), so a connection that does not read is cut off instead of
growing memory (``slow_consumer``). Every handler is guarded: an error in one
connection closes that connection only, because trio-websocket ends the
whole server when a handler raises.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import json
import logging
import os
import ssl
import time
from collections.abc import Callable
from typing import Any, Final

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest

from chatcli.crypto.keys import RelayKeyPair
from chatcli.errors import StorageError
from chatcli.protocol import State, codes, frames
from chatcli.protocol.address import RelayAddress
from chatcli.protocol.codec import LocalProtocolError, RemoteProtocolError, encode
from chatcli.protocol.connection import RelayProtocol
from chatcli.relay.badcaps import BadCapabilities
from chatcli.relay.blobs import Blobs
from chatcli.relay.budget import StorageBudget
from chatcli.relay.commit import AckJob, DepositJob, GroupCommitter
from chatcli.relay.config import RelayConfig
from chatcli.relay.delivery import Router
from chatcli.relay.errors import Refused
from chatcli.relay.inbound import GuardedWebSocketServer, InputBudget
from chatcli.relay.limits import KeyedBuckets, TokenBucket
from chatcli.relay.mailbox import AckBatch, DepositBatch, DepositItem, Mailboxes, Quota, cap_hash
from chatcli.relay.metrics import RelayMetrics, serve_metrics
from chatcli.relay.notify import LocalHub, make_hub
from chatcli.relay.presence import Presence, entry_for
from chatcli.relay.storage import StorageWorker, Worker
from chatcli.relay.storage_process import StorageProcess
from chatcli.relay.store import make_store
from chatcli.relay.store.base import Store, StoredMessage
from chatcli.relay.wsclose import install as _install_ws_close_codes

__all__ = ["Connection", "Relay", "serve_relay"]

log = logging.getLogger("chatcli.relay")
_install_ws_close_codes()   # 1007 for a non-UTF-8 text message, not a silent drop

# WebSocket close codes.
CLOSE_NORMAL: Final = 1000
CLOSE_GOING_AWAY: Final = 1001
CLOSE_POLICY: Final = 1008
CLOSE_TRY_LATER: Final = 1013

LIVE_QUEUE: Final = 256          # pushed messages held per connection before re-reading
OUTBOX_BYTES: Final = 4 * 1024 * 1024
# trio-websocket closes (1009) on messages over max_frame + WS_SLACK without
# buffering more; frames between max_frame and that get a typed frame_too_large.
WS_SLACK: Final = 64 * 1024
STATUS_KEY: Final = "status"     # meta row with live counters, for `chatcli relay stats`
STATUS_INTERVAL: Final = 10.0
_ids = itertools.count(1)


def source_key(peer: str) -> bytes:
    """What per-address limits count by: an IPv4 address, or an IPv6 /64 (one
    host usually has a whole /64 to pick addresses from)."""
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return peer.encode()
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is None:
        return ipaddress.IPv6Network((address, 64), strict=False).network_address.packed
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.packed
    return address.packed


class Connection:
    """One client connection (see the module docstring)."""

    __slots__ = ("_dispatching", "_scope", "_wake", "bucket", "close_code", "cursor",
                 "fetch_needed", "finished", "id", "inflight", "installation", "live",
                 "mailbox", "outbox", "outbox_bytes", "peer", "proto", "recv_scope", "relay",
                 "rewind", "source", "stopping", "subscriptions", "synced", "wakes", "ws")

    def __init__(self, relay: Relay, ws: WebSocketConnection) -> None:
        cfg = relay.config
        assert relay.key is not None
        self.relay = relay
        self.ws = ws
        self.id = next(_ids)
        remote = ws.remote
        self.peer = str(getattr(remote, "address", remote))
        self.source = source_key(self.peer)
        self.proto = RelayProtocol(relay.key.public.raw, relay.key.sign,
                                   max_frame=cfg.max_frame, max_payload=cfg.max_payload,
                                   max_blob=cfg.max_blob_size)
        self.outbox: list[bytes] = []
        self.outbox_bytes = 0
        self._wake = trio.Event()
        self.finished = False
        self.stopping = False
        self._dispatching = False
        self.close_code = CLOSE_NORMAL
        self._scope: trio.CancelScope | None = None
        self.recv_scope = trio.CancelScope()
        self.bucket = TokenBucket(cfg.connection_rate, cfg.connection_burst,
                                  trio.current_time())
        self.mailbox: bytes | None = None
        self.installation: bytes | None = None  # named in Auth (None: not named)
        self.cursor = 0
        self.fetch_needed = False
        self.synced = False
        self.live: list[StoredMessage] | None = None
        # Several processes (notify.py): a wake-up may name messages below the
        # cursor (committed before a local commit that was pushed first).
        # ``rewind`` is where to re-read from; ``inflight`` the ids sent and
        # not yet acknowledged, not sent twice; ``wakes`` counts wake-ups.
        self.rewind: int | None = None
        self.inflight: set[int] | None = set() if relay.multi_process else None
        self.wakes = 0
        self.subscriptions: set[bytes] | None = None

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        log.debug("connection opened", extra={"fields": {"conn": self.id, "peer": self.peer}})
        try:
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                nursery.start_soon(self._sender)
                with self.recv_scope:
                    await self._receive_loop()
                if not self.stopping:
                    self.finish()
        finally:
            self._cleanup()
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await self.ws.aclose(self.close_code)
            log.debug("connection closed", extra={"fields": {
                "conn": self.id, "close_code": self.close_code}})

    def _cleanup(self) -> None:
        relay = self.relay
        if self.subscriptions:
            relay.presence.unsubscribe(self, self.subscriptions)
            self.subscriptions = None
        if self.mailbox is not None:
            relay.router.unregister(self.mailbox, self)
            relay.metrics.authenticated.dec()
            now = relay.now_ms()
            if relay.presence.disconnected(self.mailbox, now):
                relay.committer.note_last_seen(self.mailbox, now)
            self.live = None

    def finish(self, code: int = CLOSE_NORMAL) -> None:
        """Nothing more will be queued: send what is queued, then close."""
        if not self.finished:
            self.finished = True
            self.close_code = code
            self._wake.set()

    def stop(self) -> None:
        """Shutdown, step 1: stop reading frames (after the current one)."""
        self.stopping = True
        if not self._dispatching:
            self.recv_scope.cancel()

    def goodbye(self) -> None:
        """Shutdown, step 2 (after the last commit): Bye, then close with 1001."""
        self.send_frame(frames.Bye(code=codes.SHUTTING_DOWN))
        self.finish(CLOSE_GOING_AWAY)

    def abort(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

    # ------------------------------------------------------------ outgoing

    def send_frame(self, frame: frames.RelayFrame) -> None:
        """Queue an answer or push; cut the connection off if its queue is full."""
        if self.finished:
            return
        try:
            data = self.proto.send(frame)
        except LocalProtocolError:
            return
        if isinstance(frame, frames.Error):
            self.relay.metrics.errors.labels(frame.code).inc()
        if (len(self.outbox) >= self.relay.config.send_queue
                or self.outbox_bytes + len(data) > OUTBOX_BYTES):
            self._slow_consumer("send queue full")
            return
        self.outbox.append(data)
        self.outbox_bytes += len(data)
        self._wake.set()

    def send_error(self, req: int | None, code: str, message: str) -> None:
        self.send_frame(frames.Error(req=req, code=code, message=message[:frames.MAX_TEXT]))

    def _slow_consumer(self, why: str) -> None:
        self.relay.metrics.refused_connections.labels("slow_consumer").inc()
        log.info("connection cut off: slow consumer",
                 extra={"fields": {"conn": self.id, "why": why}})
        self.finished = True
        self.close_code = CLOSE_POLICY
        self.outbox = []
        self.abort()

    async def _send(self, data: bytes) -> None:
        with trio.move_on_after(self.relay.config.send_timeout) as scope:
            await self.ws.send_message(data)
        if scope.cancelled_caught:
            self._slow_consumer("send stalled")
            await trio.lowlevel.checkpoint()

    async def _sender(self) -> None:
        try:
            while True:
                if self.outbox:
                    data = self.outbox.pop(0)
                    self.outbox_bytes -= len(data)
                    await self._send(data)
                elif (self.mailbox is not None and not self.finished
                      and (self.fetch_needed or self.live)):
                    await self._deliver_step()
                elif self.finished:
                    break
                else:
                    await self._wake.wait()
                    self._wake = trio.Event()
        except ConnectionClosed:
            pass
        finally:
            self.abort()

    # ------------------------------------------------------------ delivery

    def push_message(self, message: StoredMessage) -> None:
        """A message for this owner was committed (called in id order)."""
        if self.live is None:
            return
        if len(self.live) >= LIVE_QUEUE:
            self.live = []
            self.fetch_needed = True
        else:
            self.live.append(message)
        self._wake.set()

    def fetch_more(self) -> None:
        """Re-read the mailbox from the store after the cursor."""
        if self.live is None:
            return
        self.wakes += 1
        self.fetch_needed = True
        self._wake.set()

    def fetch_from(self, first_id: int | None) -> None:
        """Another process stored messages from ``first_id`` on: read them,
        going back below the cursor if need be. None (the listener
        reconnected: wake-ups may have been lost, for ids below the cursor
        too) re-reads the whole mailbox; what is in flight is not sent twice."""
        if self.live is None:
            return
        back = 0 if first_id is None else first_id - 1
        if back < self.cursor:
            self.rewind = back if self.rewind is None else min(self.rewind, back)
        self.fetch_more()

    async def _deliver_step(self) -> None:
        assert self.mailbox is not None
        relay = self.relay
        batch_size = relay.config.deliver_batch
        if self.fetch_needed:
            if self.rewind is not None:
                self.cursor = min(self.cursor, self.rewind)
                self.rewind = None
            wakes = self.wakes
            try:
                messages = await relay.worker.run(relay.mailboxes.pending, self.mailbox,
                                                  self.cursor, batch_size)
            except StorageError:
                await trio.sleep(1.0)   # storage down: keep fetch_needed, retry
                return
            if len(messages) < batch_size and wakes == self.wakes:
                self.fetch_needed = False   # (a wake-up during the read reads again)
            if messages:
                self.cursor = max(self.cursor, messages[-1].id)
                if self.inflight is not None:
                    messages = [m for m in messages if m.id not in self.inflight]
                if messages:
                    await self._send_deliveries(messages)
            if not self.fetch_needed and not self.synced:
                self.synced = True
                await self._push(frames.Synced())
            return
        live = self.live or []
        self.live = []
        fresh = [m for m in live if m.id > self.cursor]
        if fresh:
            self.cursor = fresh[-1].id
            await self._send_deliveries(fresh)

    async def _send_deliveries(self, messages: list[StoredMessage]) -> None:
        if self.inflight is not None:
            self.inflight.update(m.id for m in messages)
        budget = self.proto.max_frame - 64
        batch: list[frames.Delivered] = []
        used = 0
        for message in messages:
            cost = len(message.payload) + 32
            if batch and (used + cost > budget or len(batch) >= frames.MAX_BATCH):
                await self._push(frames.Deliver(messages=batch))
                batch, used = [], 0
            batch.append(frames.Delivered(id=message.id, payload=message.payload,
                                          received_at=message.received_at))
            used += cost
        if batch:
            await self._push(frames.Deliver(messages=batch))

    async def _push(self, frame: frames.Deliver | frames.Synced) -> None:
        """Send a push directly (deliveries bypass the answer queue)."""
        if self.finished:
            return
        try:
            data = self.proto.send(frame)
        except LocalProtocolError:   # closed meanwhile (account deleted)
            return
        await self._send(data)
        if isinstance(frame, frames.Deliver):
            self.relay.metrics.delivered.inc(len(frame.messages))

    def mailbox_deleted(self) -> None:
        """The mailbox was deleted through another connection (of this or
        another relay process): say so and close; nothing more is read."""
        self.send_error(None, codes.UNKNOWN_MAILBOX, "The mailbox was deleted.")
        self.live = None
        self.finish(CLOSE_NORMAL)
        if not self._dispatching:
            self.recv_scope.cancel()

    # ------------------------------------------------------------ callbacks

    def deposit_done(self, req: int, errors: list[str | None]) -> None:
        self.send_frame(frames.DepositResult(req=req, errors=errors))

    def ack_done(self, req: int) -> None:
        self.send_frame(frames.Ok(req=req))

    def request_failed(self, req: int, code: str, message: str) -> None:
        self.send_error(req, code, message)

    def presence_changed(self, entry: frames.PresenceEntry) -> None:
        self.send_frame(frames.PresenceUpdate(entries=[entry]))

    # ------------------------------------------------------------ incoming

    async def _receive_loop(self) -> None:
        try:
            with trio.move_on_after(self.relay.config.handshake_timeout) as handshake:
                data = await self.ws.get_message()
            if handshake.cancelled_caught:
                self.send_error(None, codes.HANDSHAKE_TIMEOUT,
                                "No Hello within the handshake timeout.")
                self.finish(CLOSE_POLICY)
                return
            while await self._on_message(data) and not self.stopping:
                next_data = await self._next_message()
                if next_data is None:
                    return
                data = next_data
        except ConnectionClosed:
            self.finished = True
            self.outbox = []
            self.abort()

    async def _next_message(self) -> bytes | str | None:
        """The next message, or None after closing a connection that took too
        long to finish a message or stayed idle past its window."""
        cfg = self.relay.config
        ws = self.ws
        while True:
            since = getattr(ws, "partial_since", None)
            idle = cfg.idle_timeout if self.mailbox is None else cfg.keepalive_timeout
            deadline = getattr(ws, "last_activity", trio.current_time()) + idle
            if since is not None:
                deadline = min(deadline, since + cfg.message_timeout)
            else:
                # A message begun while waiting is noticed at the next look:
                # its deadline holds to within half of message_timeout.
                deadline = min(deadline, trio.current_time() + cfg.message_timeout / 2)
            with trio.move_on_at(deadline):
                return await ws.get_message()
            since = getattr(ws, "partial_since", None)
            now = trio.current_time()
            if since is not None and now >= since + cfg.message_timeout:
                self.relay.metrics.refused_connections.labels(codes.MESSAGE_TIMEOUT).inc()
                self.send_error(None, codes.MESSAGE_TIMEOUT,
                                "A message was not finished in time.")
                self.finish(CLOSE_POLICY)
                return None
            if now >= getattr(ws, "last_activity", now) + idle:
                self.relay.metrics.refused_connections.labels(codes.IDLE_TIMEOUT).inc()
                self.send_error(None, codes.IDLE_TIMEOUT,
                                "The connection was idle too long.")
                self.finish(CLOSE_NORMAL)
                return None

    async def _on_message(self, data: bytes | str) -> bool:
        """Handle one message; False when the connection must end."""
        relay = self.relay
        if isinstance(data, str):
            self.send_error(None, codes.BAD_FRAME, "Frames are binary WebSocket messages.")
            self.finish(CLOSE_POLICY)
            return False
        try:
            frame = self.proto.receive_data(data)
        except RemoteProtocolError as exc:
            self.send_frame(exc.error_frame())
            if exc.fatal:
                self.finish(CLOSE_POLICY)
                return False
            return True
        relay.metrics.frames.labels(type(frame).__name__).inc()
        req: int | None = getattr(frame, "req", None)
        if not self.bucket.take(trio.current_time()):
            if isinstance(frame, frames.Register | frames.Auth):
                self.proto.login_failed()
            self.send_error(req, codes.RATE_LIMITED, "Too many frames; slow down.")
            return True
        self._dispatching = True
        try:
            await self._dispatch(frame)
        except Refused as exc:
            self.send_error(req, exc.code, str(exc))
        except StorageError as exc:
            self.send_error(req, codes.TRY_AGAIN, str(exc))
        except Exception:
            log.exception("request failed", extra={"fields": {
                "conn": self.id, "frame": type(frame).__name__}})
            self.send_error(req, codes.INTERNAL_ERROR, "The relay failed on this request.")
        finally:
            self._dispatching = False
            if self.proto.state is State.AUTHENTICATING:
                self.proto.login_failed()
        return not self.finished

    async def _dispatch(self, frame: frames.ClientFrame) -> None:
        relay = self.relay
        if isinstance(frame, frames.Hello):
            data = self.proto.accept_hello()
            self.outbox.append(data)
            self.outbox_bytes += len(data)
            self._wake.set()
        elif isinstance(frame, frames.Register):
            transcript = self.proto.register_transcript(frame.auth_key)
            if not relay.registration_buckets.take(self.source, trio.current_time()):
                raise Refused(codes.RATE_LIMITED,
                              "Too many new mailboxes from this address; try again later.")
            mailbox = await relay.worker.run(relay.mailboxes.register, frame.auth_key,
                                             frame.signature, transcript, frame.token,
                                             relay.now_ms())
            self.proto.login_succeeded(mailbox)
            self.send_frame(frames.Registered(req=frame.req, mailbox=mailbox))
            self._become_owner(mailbox, hidden=False)
            log.info("mailbox registered", extra={"fields": {"conn": self.id}})
        elif isinstance(frame, frames.Auth):
            transcript = self.proto.auth_transcript(frame.mailbox, frame.installation,
                                                    frame.supersede)
            await relay.worker.run(relay.mailboxes.authenticate, frame.mailbox,
                                   frame.signature, transcript, frame.installation,
                                   frame.supersede)
            records = await relay.worker.run(relay.store.presence_records, [frame.mailbox])
            record = records.get(frame.mailbox)
            self.proto.login_succeeded(frame.mailbox)
            self.installation = frame.installation
            if frame.supersede and frame.installation is not None:
                self._close_replaced(frame.mailbox, frame.installation)
            self.send_frame(frames.Ok(req=frame.req))
            self._become_owner(frame.mailbox, hidden=bool(record and record.hidden))
        elif isinstance(frame, frames.Deposit):
            await self._deposit(frame)
        elif isinstance(frame, frames.Ack):
            assert self.mailbox is not None
            if self.inflight is not None:
                self.inflight.difference_update(frame.ids)
            await relay.committer.submit(AckJob(self, frame.req,
                                                AckBatch(self.mailbox, list(frame.ids))))
        elif isinstance(frame, frames.CapAdd):
            assert self.mailbox is not None
            await relay.worker.run(relay.mailboxes.add_caps, self.mailbox,
                                   set(frame.cap_hashes), relay.now_ms(), frame.one_shot)
            relay.bad_caps.forget(self.mailbox, frame.cap_hashes)
            self.send_frame(frames.Ok(req=frame.req))
        elif isinstance(frame, frames.CapRevoke):
            assert self.mailbox is not None
            hashes = set(frame.cap_hashes)
            await relay.worker.run(relay.mailboxes.revoke_caps, self.mailbox, hashes,
                                   relay.now_ms())
            relay.presence.revoke(self.mailbox, hashes)
            self.send_frame(frames.Ok(req=frame.req))
        elif isinstance(frame, frames.AccountDelete):
            await self._delete_account(frame)
        elif isinstance(frame, frames.PresenceQuery | frames.PresenceSubscribe):
            await self._presence_query(frame)
        elif isinstance(frame, frames.PresenceSettings):
            assert self.mailbox is not None
            record = await relay.worker.run(relay.mailboxes.set_hidden, self.mailbox,
                                            frame.hidden)
            relay.presence.set_hidden(self.mailbox, frame.hidden, record.last_seen)
            self.send_frame(frames.Ok(req=frame.req))
        elif isinstance(frame, frames.BlobPut):
            assert self.mailbox is not None
            await relay.worker.run(relay.blobs.put, self.mailbox, frame.blob, frame.offset,
                                   frame.data, frame.final, frame.read_cap_hash, frame.ttl,
                                   relay.now_ms())
            self.send_frame(frames.Ok(req=frame.req))
        elif isinstance(frame, frames.BlobGet):
            length = min(frame.length, self.proto.max_frame - 128)
            data, size = await relay.worker.run(relay.blobs.get, frame.blob, frame.read_cap,
                                                frame.offset, length, relay.now_ms())
            self.send_frame(frames.BlobData(req=frame.req, data=data, size=size))
        elif isinstance(frame, frames.BlobDelete):
            assert self.mailbox is not None
            await relay.worker.run(relay.blobs.delete, self.mailbox, frame.blob)
            self.send_frame(frames.Ok(req=frame.req))
        elif isinstance(frame, frames.Ping):
            self.send_frame(frames.Pong(req=frame.req))
        else:  # pragma: no cover - the decoder admits only the frames above
            raise Refused(codes.UNEXPECTED_FRAME, "This frame is not handled.")

    def _become_owner(self, mailbox: bytes, *, hidden: bool) -> None:
        relay = self.relay
        self.mailbox = mailbox
        self.live = []
        self.cursor = 0
        self.fetch_needed = True
        self.synced = False
        relay.router.register(mailbox, self)
        relay.presence.connected(mailbox, hidden)
        relay.metrics.authenticated.inc()
        self._wake.set()

    async def _deposit(self, frame: frames.Deposit) -> None:
        relay = self.relay
        if not relay.bad_caps.admits(self.source, trio.current_time()):
            # This address just had too many unknown capabilities refused (a
            # random-capability flood): wait for a token of its budget (this
            # connection stalls, not the others), then refuse the frame whole.
            await trio.sleep(relay.bad_caps.delay(self.source, trio.current_time()))
            relay.bad_caps.refuse_frame(self.source, trio.current_time())
            refused_all: list[str | None] = [codes.RATE_LIMITED] * len(frame.items)
            relay.metrics.deposits_refused.labels(codes.RATE_LIMITED).inc(len(frame.items))
            self.deposit_done(frame.req, refused_all)
            return
        items: list[DepositItem] = []
        hashes: dict[bytes, bytes] = {}   # a frame's items mostly share one capability
        for item in frame.items:
            hashed = hashes.get(item.cap)
            if hashed is None:
                hashed = hashes[item.cap] = cap_hash(item.cap)
            items.append(DepositItem(item.mailbox, hashed, item.payload))
        # Capabilities refused moments ago are refused again without storage
        # work. The per-capability rate limit is applied in the commit, once
        # the capability is known to be valid (Mailboxes.cap_limits).
        refused = relay.bad_caps.check(items, trio.current_time())
        if all(code is not None for code in refused):
            for code in refused:
                relay.metrics.deposits_refused.labels(code).inc()
            self.deposit_done(frame.req, refused)
            return
        await relay.committer.submit(DepositJob(self, frame.req, DepositBatch(items, refused)))

    def _close_replaced(self, mailbox: bytes, installation: bytes) -> None:
        """Close this process's connections of the installation just superseded,
        so that it stops fetching (and acknowledging) the new one's messages.
        Other relay processes' connections learn it at their next login."""
        for other in self.relay.router.connections(mailbox):
            if (other is not self and isinstance(other, Connection)
                    and other.installation != installation):
                other.send_error(None, codes.INSTALLATION_REPLACED,
                                 "This installation was replaced by another one.")
                other.finish(CLOSE_NORMAL)

    async def _delete_account(self, frame: frames.AccountDelete) -> None:
        relay = self.relay
        mailbox = self.mailbox
        assert mailbox is not None
        await relay.worker.run(relay.mailboxes.delete_account, mailbox)
        # The deleted rows' old pages leave the SQLite WAL too (if this fails,
        # housekeeping's next checkpoint does it).
        with contextlib.suppress(StorageError):
            await relay.worker.run(relay.store.checkpoint)
        log.info("mailbox deleted", extra={"fields": {"conn": self.id}})
        self.send_frame(frames.Ok(req=frame.req))
        # Other processes close their connections to it when they hear of it (notify.py).
        relay.presence.forget(mailbox)
        for other in relay.router.connections(mailbox):
            if other is not self:
                other.mailbox_deleted()
        self.proto.close()
        self.finish(CLOSE_NORMAL)

    async def _presence_query(self, frame: frames.PresenceQuery | frames.PresenceSubscribe
                              ) -> None:
        relay = self.relay
        targets = [(t.mailbox, cap_hash(t.cap)) for t in frame.targets]
        valid, records = await relay.worker.run(relay.mailboxes.presence_lookup, targets)
        if isinstance(frame, frames.PresenceSubscribe):
            current = self.subscriptions or set()
            new = {mb for mb, h in targets if (mb, h) in valid and mb not in current}
            if len(current) + len(new) > relay.config.max_subscriptions:
                raise Refused(codes.BAD_REQUEST,
                              f"At most {relay.config.max_subscriptions} presence "
                              "subscriptions per connection.")
            if self.subscriptions is None:
                self.subscriptions = set()
            for mb, h in targets:
                if (mb, h) in valid:
                    relay.presence.subscribe(self, mb, h)
                    self.subscriptions.add(mb)
        entries = [entry_for(mb, valid=(mb, h) in valid, online=relay.presence.is_online(mb),
                             record=records.get(mb)) for mb, h in targets]
        self.send_frame(frames.PresenceResult(req=frame.req, entries=entries))


class Relay:
    """A relay server: its store, key, connections and background tasks.

    ``await nursery.start(relay.serve)`` returns the bound port once clients
    can connect; :attr:`address` is then the ``ws://HOST:PORT/#FINGERPRINT``
    to give clients. :meth:`shutdown` stops it gracefully.
    """

    def __init__(self, config: RelayConfig, *, store: Store | None = None,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.store = store if store is not None else make_store(config.db)
        self.wall_clock = wall_clock
        self.metrics = RelayMetrics()
        # Wake-ups and presence across the processes sharing a PostgreSQL
        # database; one process alone (SQLite) keeps presence in memory.
        self.hub = make_hub(self.store)
        self.multi_process = not isinstance(self.hub, LocalHub)
        self.presence: Presence = self.hub.presence
        self.router = Router()
        budget = StorageBudget(self.store, config.storage_budget)
        self.mailboxes = Mailboxes(self.store,
                                   quota=Quota(config.mailbox_max_messages,
                                               config.mailbox_max_bytes),
                                   retention_ms=int(config.retention * 1000),
                                   invite_only=config.invite_only, budget=budget,
                                   capability_rate=config.capability_rate,
                                   capability_burst=config.capability_burst)
        self.blobs = Blobs(self.store, max_blob_size=config.max_blob_size,
                           owner_quota=config.blob_quota,
                           max_ttl_ms=int(config.max_blob_ttl * 1000), budget=budget)
        # A store handed in (tests) is used in a thread; otherwise the
        # database work runs in a child process with its own copies.
        self.storage_process: StorageProcess | None = None
        self.worker: Worker
        if store is None and config.storage_process:
            self.storage_process = StorageProcess(
                config, {"store": self.store, "mailboxes": self.mailboxes, "blobs": self.blobs},
                origin=getattr(self.store, "origin", None))
            self.worker = self.storage_process
        else:
            self.worker = StorageWorker(self.store)
        self.storage_failure: str | None = None
        self.bad_caps = BadCapabilities(strike_rate=config.bad_capability_rate,
                                        strike_burst=config.bad_capability_burst)
        self.committer = GroupCommitter(self.worker, self.mailboxes, self.router, self.metrics,
                                        max_items=config.commit_batch,
                                        max_bytes=config.commit_bytes, now_ms=self.now_ms,
                                        bad_caps=self.bad_caps)
        self.input_budget = InputBudget(config.input_budget)
        self.registration_buckets = KeyedBuckets(config.registration_rate,
                                                 config.registration_burst)
        self.per_address: dict[bytes, int] = {}   # open connections per source
        self.connections: set[Connection] = set()
        self.key: RelayKeyPair | None = None
        self.port: int | None = None
        self.metrics_port: int | None = None
        self.stopping = False
        self._stop = trio.Event()
        self._stopped = trio.Event()

    def now_ms(self) -> int:
        return int(self.wall_clock() * 1000)

    @property
    def fingerprint(self) -> str:
        if self.key is None:
            raise RuntimeError("the relay is not started")
        return self.key.fingerprint()

    @property
    def address(self) -> str:
        """``ws://HOST:PORT/#FINGERPRINT`` (``wss://`` with TLS), once started."""
        if self.port is None:
            raise RuntimeError("the relay is not started")
        scheme = "wss" if self.config.tls else "ws"
        host = self.config.host.strip("[]")
        return RelayAddress(scheme, host, self.port, self.fingerprint).display()

    def shutdown(self) -> None:
        """Stop gracefully: stop accepting, finish commits, Bye and close everyone."""
        self._stop.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    def healthy(self) -> bool:
        return self.port is not None and not self.stopping

    async def _open_store(self) -> None:
        if self.storage_process is not None:
            await self.storage_process.start()
        await self.worker.run(self.store.open, self.now_ms())
        seed = await self.worker.run(self.store.load_or_store_relay_seed, os.urandom(32))
        self.key = RelayKeyPair.from_private_bytes(seed)

    async def _listeners(self) -> list[Any]:
        cfg = self.config
        if cfg.tls:
            assert cfg.tls_cert is not None and cfg.tls_key is not None
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(cfg.tls_cert, cfg.tls_key)
            return list(await trio.open_ssl_over_tcp_listeners(cfg.port, context,
                                                                host=cfg.host))
        return list(await trio.open_tcp_listeners(cfg.port, host=cfg.host))

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        """Run the relay until cancelled or :meth:`shutdown`; started() with the port."""
        cfg = self.config
        try:
            await self._open_store()
            async with trio.open_nursery() as root:
                await root.start(self.hub.run, self.router)
                if self.storage_process is not None:
                    root.start_soon(self._watch_storage, self.storage_process)
                root.start_soon(self.committer.run)
                root.start_soon(self._housekeeping)
                if cfg.metrics_port is not None:
                    self.metrics_port = await root.start(serve_metrics, self.metrics,
                                                         cfg.metrics_host, cfg.metrics_port,
                                                         self.healthy)
                async with trio.open_nursery() as handlers:
                    listeners = await self._listeners()
                    sock = getattr(listeners[0], "transport_listener", listeners[0]).socket
                    self.port = int(sock.getsockname()[1])
                    server = GuardedWebSocketServer(
                        self._handle, listeners, handler_nursery=handlers,
                        budget=self.input_budget, max_fragments=cfg.max_fragments,
                        max_message_size=cfg.max_frame + WS_SLACK,
                        connect_timeout=cfg.handshake_timeout, disconnect_timeout=2.0)
                    listen_scope = trio.CancelScope()

                    async def listen() -> None:
                        with listen_scope:
                            await server.run()

                    handlers.start_soon(listen)
                    log.info("relay listening", extra={"fields": {
                        "address": self.address, "store": self.store.description}})
                    task_status.started(self.port)
                    await self._stop.wait()
                    log.info("relay shutting down", extra={"fields": {
                        "connections": len(self.connections)}})
                    self.stopping = True
                    listen_scope.cancel()
                    for conn in list(self.connections):
                        conn.stop()
                    with trio.move_on_after(cfg.shutdown_grace):
                        await self.committer.close()
                    for conn in list(self.connections):
                        conn.goodbye()
                    handlers.cancel_scope.deadline = trio.current_time() + cfg.shutdown_grace
                if self.stopping:
                    with trio.move_on_after(cfg.shutdown_grace):
                        await self.committer.flush()
                root.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                if self.port is not None:
                    with contextlib.suppress(StorageError):
                        await self._write_status(stopped=True)
                with contextlib.suppress(StorageError):
                    await self.worker.run(self.store.close)
                if self.storage_process is not None:
                    await self.storage_process.aclose()
            self._stopped.set()
            log.info("relay stopped")
        if self.storage_failure is not None:
            raise StorageError(self.storage_failure)

    async def _watch_storage(self, process: StorageProcess) -> None:
        """A relay cannot work without its storage process: if it dies, stop
        (with an error, so that a supervisor restarts the relay)."""
        status = await process.wait_exit()
        if not self.stopping:
            self.storage_failure = (f"The relay's storage process stopped unexpectedly "
                                    f"(exit status {status}).")
            log.error("storage process stopped", extra={"fields": {"status": status}})
            self.shutdown()

    async def _handle(self, request: WebSocketRequest) -> None:
        """The trio-websocket handler: guarded, so it never raises."""
        try:
            ws = await request.accept()
        except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return
        except Exception:
            log.exception("websocket accept failed")
            return
        try:
            if self.stopping or len(self.connections) >= self.config.max_connections:
                await self._refuse(ws)
                return
            conn = Connection(self, ws)
            if self.per_address.get(conn.source, 0) >= self.config.max_connections_per_address:
                await self._refuse(ws, per_address=True)
                return
            self.per_address[conn.source] = self.per_address.get(conn.source, 0) + 1
            self.connections.add(conn)
            self.metrics.connections.set(len(self.connections))
            try:
                await conn.run()
            finally:
                self.connections.discard(conn)
                left = self.per_address.pop(conn.source, 1) - 1
                if left > 0:
                    self.per_address[conn.source] = left
                self.metrics.connections.set(len(self.connections))
        except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception:
            log.exception("connection handler failed")

    async def _refuse(self, ws: WebSocketConnection, *, per_address: bool = False) -> None:
        code = codes.SHUTTING_DOWN if self.stopping else codes.TOO_MANY_CONNECTIONS
        self.metrics.refused_connections.labels(code).inc()
        if self.stopping:
            message = "The relay is shutting down."
        elif per_address:
            message = "Too many connections from this address; close some and try again."
        else:
            message = "The relay is full; try again later."
        frame = frames.Error(req=None, code=code, message=message)
        with trio.move_on_after(2):
            try:
                await ws.send_message(encode(frame))
                await ws.aclose(CLOSE_TRY_LATER)
            except ConnectionClosed:
                pass

    async def _housekeeping(self) -> None:
        """Expiry sweeps and the status row, periodically."""
        next_sweep = trio.current_time()
        while True:
            try:
                if trio.current_time() >= next_sweep:
                    next_sweep = trio.current_time() + self.config.sweep_interval
                    now = self.now_ms()
                    expired = await self.worker.run(self.mailboxes.expire, now)
                    blobs = await self.worker.run(self.blobs.expire, now)
                    self.metrics.expired.inc(expired)
                    if expired or blobs:
                        log.info("expired", extra={"fields": {"messages": expired,
                                                              "blobs": blobs}})
                await self._write_status()
                # Acknowledged and expired messages' old pages leave the WAL.
                await self.worker.run(self.store.checkpoint)
            except StorageError:
                pass
            except Exception:
                log.exception("housekeeping failed")
            online, subscriptions = self.presence.counts()
            self.metrics.online_mailboxes.set(online)
            self.metrics.subscriptions.set(subscriptions)
            await trio.sleep(min(STATUS_INTERVAL, self.config.sweep_interval))

    async def _write_status(self, *, stopped: bool = False) -> None:
        online, _ = self.presence.counts()
        status = {"pid": os.getpid(), "updated_at": self.now_ms(), "stopped": stopped,
                  "connections": len(self.connections),
                  "authenticated": sum(1 for c in self.connections if c.mailbox is not None),
                  "online_mailboxes": online, "address": self.address}
        await self.worker.run(self.store.put_meta, STATUS_KEY,
                              json.dumps(status).encode())


async def serve_relay(config: RelayConfig, *,
                      task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Run a relay for ``config`` until cancelled; ``nursery.start`` returns the port."""
    await Relay(config).serve(task_status=task_status)
