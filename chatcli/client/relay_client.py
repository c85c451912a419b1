"""Connections from the client to relays (trio-websocket + ``ClientProtocol``).

:func:`connect` opens one connection, runs the handshake (the relay proves it
holds the key that the address's fingerprint names) and starts one reader
task that hands answers to the request that waits for them (by request id)
and everything else (Deliver, Synced, PresenceUpdate, Bye) to
:attr:`RelayConnection.pushes`. Sends go through one lock.

Sealed sender: there are two kinds of connection, and a frame goes only on the
kind made for it. An :class:`OwnerConnection` logs in as this identity's
mailbox and fetches, acknowledges and manages it (capabilities, presence
settings, own blobs). An :class:`AnonymousConnection` never logs in; it carries
every frame that names someone else's mailbox (deposits, receipts being
deposits, presence queries and subscriptions) and reads others' blobs. Were
they one connection, the relay would see which mailbox writes to which.

:class:`RelayPool` keeps, for the length of a command (or a ``chat``
session), one owner connection to the own relay and one anonymous connection
per relay, so that deposits to many contacts on one relay share it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar

import trio
import trio_websocket

from chatcli.client.errors import RelayRequestError
from chatcli.errors import ChatcliError, RelayError
from chatcli.protocol import codes, frames
from chatcli.protocol._state import CLIENT_FRAME_KIND, Kind
from chatcli.protocol.address import RelayAddress, parse_relay_url
from chatcli.protocol.codec import LocalProtocolError, RemoteProtocolError
from chatcli.protocol.connection import ClientProtocol

CONNECT_TIMEOUT = 10.0
REQUEST_TIMEOUT = 30.0
# WebSocket pings keep an idle connection open: relays close connections
# silent for longer than their idle window (60 s by default before login).
KEEPALIVE_INTERVAL = 25.0

F = TypeVar("F", bound=frames.Frame)

__all__ = ["AnonymousConnection", "OwnerConnection", "RelayConnection", "RelayPool",
           "RelayRequestError", "connect", "connect_anonymous", "unwrap"]


_FRIENDLY = {
    codes.REGISTRATION_CLOSED: "the relay does not accept new accounts without an invitation token",
    codes.BAD_TOKEN: "the registration token is not valid",
    codes.AUTH_FAILED: "the relay does not know this mailbox (was the account deleted?)",
    codes.RATE_LIMITED: "too many requests; try again shortly",
    codes.QUOTA_EXCEEDED: "the mailbox is full",
    codes.RELAY_FULL: "the relay's storage is full; try again later",
    codes.TOO_MANY_CONNECTIONS: "the relay has too many connections; try again shortly",
    codes.SHUTTING_DOWN: "the relay is shutting down; try again shortly",
    codes.TRY_AGAIN: "the relay is temporarily unavailable; try again shortly",
    codes.INSTALLATION_REPLACED: "this installation was replaced by a backup restored on "
                                 "another machine",
    codes.IDLE_TIMEOUT: "the connection was idle too long",
    codes.MESSAGE_TIMEOUT: "a message took too long to send",
}


def describe_code(code: str) -> str:
    return _FRIENDLY.get(code, code.replace("_", " "))


@dataclass
class _Waiter:
    event: trio.Event = field(default_factory=trio.Event)
    frame: frames.Frame | None = None


class RelayConnection:
    """One handshaken connection. Use :meth:`request` for request/answer pairs,
    and read :attr:`pushes` for frames the relay sends unasked. Use one of the
    two subclasses: each sends only the kinds of frame in its ``KINDS``."""

    KINDS: ClassVar[frozenset[Kind]] = frozenset()

    def __init__(self, ws: trio_websocket.WebSocketConnection, proto: ClientProtocol,
                 address: RelayAddress) -> None:
        self.ws = ws
        self.proto = proto
        self.address = address
        self._send_lock = trio.Lock()
        self._waiters: dict[int, _Waiter] = {}
        self._push_send, self.pushes = trio.open_memory_channel[frames.Frame](math.inf)
        self.closed = trio.Event()
        self.close_reason = "the connection was closed"

    @property
    def relay_key(self) -> bytes:
        assert self.proto.relay_key is not None
        return self.proto.relay_key

    async def _send(self, data: bytes) -> None:
        async with self._send_lock:
            try:
                await self.ws.send_message(data)
            except trio_websocket.ConnectionClosed:
                raise RelayError(f"The relay at {self.address} closed the connection.") from None

    async def reader(self) -> None:
        """Dispatch every incoming frame until the connection closes."""
        try:
            while True:
                try:
                    data = await self.ws.get_message()
                except trio_websocket.ConnectionClosed:
                    break
                if isinstance(data, str):
                    self.close_reason = "the relay sent a text message"
                    break
                try:
                    received = self.proto.receive_data(data)
                except RemoteProtocolError as exc:
                    self.close_reason = f"the relay broke the protocol ({exc})"
                    break
                for frame in received:
                    req = getattr(frame, "req", None)
                    if req is not None and req in self._waiters:
                        waiter = self._waiters.pop(req)
                        waiter.frame = frame
                        waiter.event.set()
                    else:
                        if isinstance(frame, frames.Error | frames.Bye):
                            self.close_reason = (
                                f"the relay closed the connection ({describe_code(frame.code)})"
                            )
                        self._push_send.send_nowait(frame)
        finally:
            self.closed.set()
            self._push_send.close()
            for waiter in self._waiters.values():
                waiter.event.set()
            self._waiters.clear()
            with contextlib.suppress(Exception):
                await self.ws.aclose()

    async def keepalive(self) -> None:
        """Ping the relay every KEEPALIVE_INTERVAL seconds until the connection closes."""
        while not self.closed.is_set():
            await trio.sleep(KEEPALIVE_INTERVAL)
            try:
                await self.ws.ping()
            except (trio_websocket.ConnectionClosed, trio.BrokenResourceError,
                    trio.ClosedResourceError):
                return

    async def request(self, make: Callable[[int], F] | frames.Frame,
                      time_limit: float = REQUEST_TIMEOUT) -> frames.Frame:
        """Send a request (a frame, or a function of the request id that builds
        one) and return its answer; an :class:`~frames.Error` answer raises
        :class:`RelayRequestError`."""
        if self.closed.is_set():
            raise RelayError(f"The connection to the relay at {self.address} is closed: "
                             f"{self.close_reason}.")
        frame = make if isinstance(make, frames.Frame) else make(self.proto.next_request_id())
        if CLIENT_FRAME_KIND[type(frame)] not in self.KINDS:
            # A bug, not a user error: it would tell the relay who writes to whom.
            raise LocalProtocolError(f"A {type(frame).__name__} frame must not be sent on "
                                     f"{self.describe()}.")
        data = self.proto.send(frame)  # type: ignore[arg-type]
        req: int = getattr(frame, "req")  # noqa: B009
        waiter = _Waiter()
        self._waiters[req] = waiter
        await self._send(data)
        with trio.move_on_after(time_limit):
            await waiter.event.wait()
        self._waiters.pop(req, None)
        answer = waiter.frame
        if answer is None:
            if self.closed.is_set():
                raise RelayError(f"The relay at {self.address} closed the connection: "
                                 f"{self.close_reason}.")
            raise RelayError(f"The relay at {self.address} did not answer in time.")
        if isinstance(answer, frames.Error):
            raise RelayRequestError(
                f"The relay at {self.address} refused the request: {describe_code(answer.code)}.",
                answer.code,
            )
        return answer

    def describe(self) -> str:
        return "this connection"


class AnonymousConnection(RelayConnection):
    """A connection that never logs in: deposits (messages and receipts),
    presence queries and subscriptions, reading others' blobs."""

    KINDS = frozenset({Kind.ANONYMOUS, Kind.OPEN})

    def describe(self) -> str:
        return "an anonymous connection (it never logs in)"


class OwnerConnection(RelayConnection):
    """The connection that logs in as the own mailbox: fetch, acknowledge,
    capabilities, presence settings, own blobs. Never a deposit or a
    presence query: those would link this mailbox to the recipient's."""

    KINDS = frozenset({Kind.LOGIN, Kind.OWNER, Kind.OPEN})

    def describe(self) -> str:
        return "the mailbox owner's connection"

    async def authenticate(self, mailbox: bytes, sign: Callable[[bytes], bytes], *,
                           installation: bytes | None = None, supersede: bool = False) -> None:
        """Prove ownership of ``mailbox`` as ``installation`` (taking it over from
        any other with ``supersede``); the relay then pushes its deposits."""
        from chatcli.protocol import transcripts

        assert self.proto.challenge is not None
        signature = sign(transcripts.auth(self.relay_key, self.proto.challenge, mailbox,
                                          installation, supersede))
        await self.request(lambda req: frames.Auth(
            req=req, mailbox=mailbox, signature=signature, installation=installation,
            supersede=supersede))

    async def register(self, auth_key: bytes, sign: Callable[[bytes], bytes],
                       token: str | None = None) -> bytes:
        """Create a mailbox; the connection is then authenticated as its owner."""
        from chatcli.protocol import transcripts

        assert self.proto.challenge is not None
        signature = sign(transcripts.register(self.relay_key, self.proto.challenge, auth_key))
        answer = await self.request(
            lambda req: frames.Register(req=req, auth_key=auth_key, signature=signature,
                                        token=token))
        assert isinstance(answer, frames.Registered)
        return answer.mailbox


def _why(exc: BaseException) -> str:
    """A short reason for a failed connection, from the innermost OS error."""
    seen = exc
    while seen.__cause__ is not None or seen.__context__ is not None:
        seen = seen.__cause__ or seen.__context__  # type: ignore[assignment]
        if isinstance(seen, OSError):
            break
    if isinstance(seen, OSError):
        if seen.strerror:
            return seen.strerror.lower()
        if "all attempts to connect" in str(seen):
            return "the connection was refused"
        return str(seen) or "the connection failed"
    if isinstance(exc, trio_websocket.ConnectionRejected):
        return f"it rejected the WebSocket connection (HTTP {exc.status_code})"
    return str(exc) or "the connection failed"


def _unreachable(address: RelayAddress, why: str) -> RelayError:
    return RelayError(f"The relay at {address.url_without_fragment} cannot be reached: {why}.")


C = TypeVar("C", bound=RelayConnection)


def connect(address: RelayAddress | str, *, relay_key: bytes | None = None,
            time_limit: float = CONNECT_TIMEOUT
            ) -> contextlib.AbstractAsyncContextManager[OwnerConnection]:
    """Open a verified connection to a relay for the duration of the block,
    to log in (or register) as a mailbox owner.

    The relay's key is checked against ``relay_key`` when given, else against
    the address's fingerprint; with neither it is accepted (the caller warns
    and pins ``conn.relay_key``)."""
    return _open(address, OwnerConnection, relay_key, time_limit)


def connect_anonymous(address: RelayAddress | str, *, relay_key: bytes | None = None,
                      time_limit: float = CONNECT_TIMEOUT
                      ) -> contextlib.AbstractAsyncContextManager[AnonymousConnection]:
    """Like :func:`connect`, for a connection that never logs in."""
    return _open(address, AnonymousConnection, relay_key, time_limit)


@contextlib.asynccontextmanager
async def _open(address: RelayAddress | str, cls: type[C], relay_key: bytes | None,
                time_limit: float) -> AsyncIterator[C]:
    if isinstance(address, str):
        address = parse_relay_url(address)
    proto = ClientProtocol(relay_key=relay_key, fingerprint=address.fingerprint)
    try:
        async with contextlib.AsyncExitStack() as stack:
            opened: list[trio_websocket.WebSocketConnection] = []
            # Runs after open_websocket's exit: its aclose() returns early when
            # the peer closed first (or on cancellation), leaving the TCP
            # stream open; a client holds two connections per relay, so close it.
            stack.push_async_callback(_close_streams, opened)
            try:
                ws = await stack.enter_async_context(trio_websocket.open_websocket(
                    address.host, address.port, "/", use_ssl=address.tls,
                    max_message_size=frames.MAX_FRAME_SIZE + 1024,
                    connect_timeout=time_limit, disconnect_timeout=2,
                    message_queue_size=64))
                opened.append(ws)
                with trio.fail_after(time_limit):
                    await ws.send_message(proto.start())
                    data = await ws.get_message()
                    if isinstance(data, str):
                        raise _unreachable(address, "it is not a chatcli relay")
                    for frame in proto.receive_data(data):
                        if isinstance(frame, frames.Error | frames.Bye):
                            raise RelayRequestError(
                                f"The relay at {address.url_without_fragment} refused the "
                                f"connection: {describe_code(frame.code)}.", frame.code)
            except (trio.TooSlowError, trio_websocket.ConnectionTimeout):
                raise _unreachable(address, "it did not answer in time") from None
            except (OSError, trio_websocket.HandshakeError) as exc:
                raise _unreachable(address, _why(exc)) from None
            except trio_websocket.ConnectionClosed:
                raise _unreachable(address, "it closed the connection") from None
            except RemoteProtocolError as exc:
                raise _unreachable(address, f"it does not speak the chatcli protocol ({exc})"
                                   ) from None
            conn = cls(ws, proto, address)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(conn.reader)
                    nursery.start_soon(conn.keepalive)
                    try:
                        yield conn
                    finally:
                        nursery.cancel_scope.cancel()
            except BaseExceptionGroup as group:
                raise unwrap(group) from None
    except trio_websocket.ConnectionClosed:
        raise RelayError(f"The relay at {address} closed the connection.") from None
    except BaseExceptionGroup as group:
        raise unwrap(group) from None


async def _close_streams(opened: list[trio_websocket.WebSocketConnection]) -> None:
    for ws in opened:
        await trio.aclose_forcefully(ws._stream)


def unwrap(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one interesting exception of a nursery's group: a lone leaf, else the
    first chatcli error, else the group itself."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    if len(leaves) == 1:
        return leaves[0]
    for leaf in leaves:
        if isinstance(leaf, ChatcliError):
            return leaf
    for leaf in leaves:
        if not isinstance(leaf, trio.Cancelled):
            return leaf
    return group


class RelayPool:
    """Connections per relay URL, opened on first use by a task of ``nursery``
    (so callers may sit in any cancel scope), closed with it: at most one owner
    connection and one anonymous connection per relay.

    One anonymous connection per relay for the length of the block, not a
    fresh one per deposit: a fresh connection would come from the same IP
    address moments later, so it would hide little from the relay, and cost a
    handshake each time. What it does not hide is written in
    docs/threat-model.md ("What the relay learns")."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._owners: dict[str, OwnerConnection] = {}
        self._anonymous: dict[str, AnonymousConnection] = {}
        self._locks: dict[tuple[str, bool], trio.Lock] = {}

    async def owner(self, url: str, relay_key: bytes | None = None) -> OwnerConnection:
        """The connection on which to log in as the own mailbox (the caller
        logs in: see ``ChatClient.own_relay``)."""
        return await self._get(url, relay_key, self._owners, OwnerConnection)

    async def anonymous(self, url: str, relay_key: bytes | None = None
                        ) -> AnonymousConnection:
        """The connection for deposits, presence and others' blobs on ``url``."""
        return await self._get(url, relay_key, self._anonymous, AnonymousConnection)

    async def _get(self, url: str, relay_key: bytes | None, conns: dict[str, C],
                   cls: type[C]) -> C:
        address = parse_relay_url(url)
        key = address.url_without_fragment
        # One lock per relay and kind: a slow relay does not hold up the others.
        async with self._locks.setdefault((key, cls is OwnerConnection), trio.Lock()):
            conn = conns.get(key)
            if conn is None or conn.closed.is_set():
                conn = await self._nursery.start(self._hold, address, relay_key, cls)
                conns[key] = conn
            return conn

    @staticmethod
    async def _hold(address: RelayAddress, relay_key: bytes | None, cls: type[C],
                    task_status: trio.TaskStatus[C] = trio.TASK_STATUS_IGNORED) -> None:
        async with _open(address, cls, relay_key, CONNECT_TIMEOUT) as conn:
            task_status.started(conn)
            await conn.closed.wait()

    def drop(self, url: str) -> None:
        """Forget the anonymous connection to ``url`` (after an error) so that
        the next :meth:`anonymous` reconnects."""
        self._anonymous.pop(parse_relay_url(url).url_without_fragment, None)
