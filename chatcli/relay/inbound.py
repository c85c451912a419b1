"""Bounded WebSocket input: what a client can make the relay hold before a
message is complete.

trio-websocket 0.12 assembles a message from wsproto events in a list of
parts, bounded only by ``max_message_size``: one-byte fragments cost ~50
bytes each, a message may stay unfinished forever, and nothing bounds the
sum over connections. Its WebSocketConnection has no hook for this, so
:class:`GuardedWebSocket` subclasses it and replaces the one method that
assembles messages (``_handle_message_event``, same contract: it closes the
connection itself), and :class:`GuardedWebSocketServer` replaces the one
method that constructs connections (``_handle_connection``, copied from
0.12 with the class swapped and the budget released at the end). The lock
file pins trio-websocket, so these private methods cannot change under us
unnoticed: tests/relay/test_inbound.py exercises both.

Per message: at most ``max_size`` bytes (else close 1009) in at most
``max_fragments`` WebSocket frames (else close 1008), assembled in one
bytearray. Across connections: an :class:`InputBudget` counts the bytes
received and not yet taken by the relay (unfinished messages and finished
ones waiting in the queue). When it is nearly spent, a connection starting a
new message is closed (1013, try again later) before any message already in
progress; when it is spent, a message that would grow past it is closed too.
The deadline of an unfinished message and idle timeouts are kept by the
relay's connection handler, from :attr:`GuardedWebSocket.partial_since` and
:attr:`GuardedWebSocket.last_activity`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import trio
from trio_websocket import WebSocketConnection, WebSocketRequest, WebSocketServer
from trio_websocket._impl import CloseReason
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

__all__ = ["CLOSE_TOO_BIG", "CLOSE_TRY_LATER", "GuardedWebSocket", "GuardedWebSocketServer",
           "InputBudget"]

CLOSE_POLICY: Final = 1008
CLOSE_TOO_BIG: Final = 1009
CLOSE_TRY_LATER: Final = 1013
# A new message may start only while this share of the budget is free, so
# that messages in progress can finish when many connections start at once.
NEW_MESSAGE_RESERVE: Final = 0.125


class InputBudget:
    """Bytes of client input held by the relay across all connections."""

    __slots__ = ("capacity", "refused", "used")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self.refused = 0

    def take(self, amount: int, *, new_message: bool) -> bool:
        """Reserve ``amount`` bytes; a new message needs headroom to start."""
        limit = self.capacity
        if new_message:
            limit -= int(self.capacity * NEW_MESSAGE_RESERVE)
        if self.used + amount > limit:
            self.refused += 1
            return False
        self.used += amount
        return True

    def give_back(self, amount: int) -> None:
        self.used -= amount


class GuardedWebSocket(WebSocketConnection):
    """A server WebSocketConnection with bounded message assembly (module docstring)."""

    def __init__(self, stream: trio.abc.Stream, ws_connection: WSConnection, *,
                 budget: InputBudget, max_fragments: int, **kwargs: Any) -> None:
        super().__init__(stream, ws_connection, **kwargs)
        self._budget = budget
        self._max_fragments = max_fragments
        self._assembly = bytearray()
        self._fragments = 0
        self._held = 0              # bytes reserved in the budget by this connection
        self._queued: list[int] = []   # sizes of finished messages not yet taken
        #: When the unfinished message began (trio clock), or None.
        self.partial_since: float | None = None
        #: When the client last finished a message or sent a ping or pong.
        self.last_activity = trio.current_time()

    @property
    def held_bytes(self) -> int:
        """Input bytes this connection holds (for tests and metrics)."""
        return self._held

    async def get_message(self) -> str | bytes:
        message = await super().get_message()
        if self._queued:
            size = self._queued.pop(0)
            self._held -= size
            self._budget.give_back(size)
        return message

    def release_input(self) -> None:
        """Give the budget back everything held (the connection is over)."""
        self._budget.give_back(self._held)
        self._held = 0
        self._queued = []
        self._assembly = bytearray()

    async def _refuse(self, code: int, why: str) -> None:
        # As trio-websocket does for an oversized message: close, stop reading.
        self._assembly = bytearray()
        self._fragments = 0
        self.partial_since = None
        self._close_reason = CloseReason(code, why)
        await self._recv_channel.aclose()
        self._reader_running = False
        if self._wsproto.state is ConnectionState.OPEN:   # else wsproto refuses to send
            await self._send(CloseConnection(code=code, reason=why))

    async def _handle_message_event(self, event: BytesMessage | TextMessage) -> None:
        if self._close_reason is not None:
            return
        data = event.data.encode() if isinstance(event, TextMessage) else event.data
        size = len(data)
        starting = self.partial_since is None
        if starting:
            self.partial_since = trio.current_time()
        if len(self._assembly) + size > self._max_message_size:
            await self._refuse(CLOSE_TOO_BIG, "Message too big: at most "
                               f"{self._max_message_size} bytes.")
            return
        if event.frame_finished:
            self._fragments += 1
            if self._fragments > self._max_fragments:
                await self._refuse(CLOSE_POLICY, "Too many fragments: at most "
                                   f"{self._max_fragments} per message.")
                return
        if size and not self._budget.take(size, new_message=starting):
            await self._refuse(CLOSE_TRY_LATER, "The relay is busy; try again later.")
            return
        self._held += size
        self._assembly += data
        if not event.message_finished:
            return
        whole = bytes(self._assembly)
        self._assembly = bytearray()
        self._fragments = 0
        self.partial_since = None
        self.last_activity = trio.current_time()
        message: bytes | str = whole
        if isinstance(event, TextMessage):
            message = whole.decode("utf-8", "replace")
        self._queued.append(len(whole))
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            await self._send_channel.send(message)

    async def _handle_ping_event(self, event: Ping) -> None:
        self.last_activity = trio.current_time()
        await super()._handle_ping_event(event)

    async def _handle_pong_event(self, event: Pong) -> None:
        self.last_activity = trio.current_time()
        await super()._handle_pong_event(event)


class GuardedWebSocketServer(WebSocketServer):
    """A WebSocketServer whose connections are :class:`GuardedWebSocket`."""

    def __init__(self, handler: Callable[[WebSocketRequest], Awaitable[None]],
                 listeners: Sequence[Any], *, budget: InputBudget, max_fragments: int,
                 **kwargs: Any) -> None:
        super().__init__(handler, listeners, **kwargs)
        self._budget = budget
        self._max_fragments = max_fragments

    async def _handle_connection(self, stream: trio.abc.Stream) -> None:
        # trio-websocket 0.12's WebSocketServer._handle_connection, with the
        # connection class swapped and the input budget released at the end
        # (after the reader task has stopped, so that it takes nothing more).
        connection: GuardedWebSocket | None = None
        try:
            async with trio.open_nursery() as nursery:
                connection = GuardedWebSocket(
                    stream, WSConnection(ConnectionType.SERVER),
                    budget=self._budget, max_fragments=self._max_fragments,
                    message_queue_size=self._message_queue_size,
                    max_message_size=self._max_message_size,
                    receive_buffer_size=self._receive_buffer_size)
                nursery.start_soon(connection._reader_task)
                with trio.move_on_after(self._connect_timeout) as connect_scope:
                    request = await connection._get_request()
                if connect_scope.cancelled_caught:
                    nursery.cancel_scope.cancel()
                    await stream.aclose()
                    return
                try:
                    await self._handler(request)
                finally:
                    with trio.move_on_after(self._disconnect_timeout):
                        await connection.aclose()
        finally:
            if connection is not None:
                connection.release_input()
