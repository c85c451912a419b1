"""The daemon's Unix socket server: JSON-RPC 2.0 lines, peer uid check, subscriptions.

The JSON-RPC dispatch does not depend on the transport: a
:class:`Session` is one client's conversation (requests answered in order,
``subscribe`` and ``unsubscribe`` served from the :class:`EventHub`, every
other method sent to the API object's ``call``), fed by a transport:
:func:`serve_lines` here (one message per line on the Unix socket), or the
loopback WebSocket of :mod:`chatcli.daemon.websocket`. On the Unix socket, a
connection that sends an oversized line gets a ``request_too_large`` error
and is closed; one from another uid is closed before anything is read.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import trio

from chatcli.client.agent import socket_address
from chatcli.daemon import jsonrpc
from chatcli.daemon.hub import EventHub
from chatcli.errors import ChatcliError

UCRED = struct.Struct("3i")
RECEIVE_CHUNK = 65536


class CallApi(Protocol):
    async def call(self, method: str, params: dict[str, Any]) -> Any: ...


class RpcFailure(Exception):
    """Raised by an API object to answer with this exact JSON-RPC error."""

    def __init__(self, error: jsonrpc.RpcError) -> None:
        super().__init__(error.message)
        self.error = error


def error_kind(exc: ChatcliError) -> str:
    """The stable snake_case name of an error: its ``kind`` or its class name."""
    kind = getattr(exc, "kind", None)
    if isinstance(kind, str):
        return kind
    name = type(exc).__name__.removesuffix("Error") or "Chatcli"
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


def rpc_error(exc: Exception) -> jsonrpc.RpcError:
    from chatcli.api.errors import ApiError

    if isinstance(exc, RpcFailure):
        return exc.error
    if isinstance(exc, ApiError):
        return jsonrpc.RpcError(exc.code, exc.message, exc.error, exc.exit_code, exc.extra)
    if isinstance(exc, ChatcliError):
        return jsonrpc.application_error(error_kind(exc), str(exc), exc.exit_code)
    return jsonrpc.standard_error(jsonrpc.INTERNAL_ERROR, "Internal error in the daemon.")


def peer_uid(stream: trio.SocketStream) -> int:
    raw = stream.socket.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, UCRED.size)
    return int(UCRED.unpack(raw)[1])


Send = Callable[[dict[str, Any] | list[dict[str, Any]]], Awaitable[None]]
"""How a session hands one answer (or batch, or notification) to its transport."""

Receive = Callable[[], Awaitable[bytes | None]]
"""The next received message (one JSON-RPC message or batch), None at the end."""


class Session:
    """One client's JSON-RPC conversation, whatever carries it.

    The transport (a line on the Unix socket, a text message on the
    WebSocket) gives :meth:`run` a ``receive`` function and the session a
    ``send`` function; the session answers requests in order, serves
    ``subscribe``/``unsubscribe`` from the hub and forwards events as
    ``event`` notifications. ``gone`` names the exceptions with which the
    transport says that the peer went away: raised by ``receive`` or
    ``send``, they end the session quietly. So does the hub dropping a
    subscriber that does not read. Every subscription ends with the session.
    """

    def __init__(self, server: DaemonServer, send: Send,
                 gone: tuple[type[BaseException], ...] = (trio.BrokenResourceError,
                                                          trio.ClosedResourceError)) -> None:
        self.server = server
        self._send = send
        self.gone = gone
        self.send_lock = trio.Lock()
        self.subscriptions: set[int] = set()
        self.cancel = trio.CancelScope()

    async def send(self, value: dict[str, Any] | list[dict[str, Any]]) -> None:
        """Send one value; a peer that went away ends the session instead."""
        try:
            async with self.send_lock:
                await self._send(value)
        except self.gone:
            self.cancel.cancel()

    async def run(self, receive: Receive) -> None:
        with self.cancel:
            async with trio.open_nursery() as nursery:
                try:
                    while (message := await receive()) is not None:
                        await self.handle(message, nursery)
                except self.gone:
                    pass
                finally:
                    nursery.cancel_scope.cancel()
                    for sub_id in self.subscriptions:
                        self.server.hub.unsubscribe(sub_id)
                    self.subscriptions.clear()

    async def handle(self, raw: bytes, nursery: trio.Nursery) -> None:
        """Answer one received message or batch (blank ones are ignored)."""
        if not raw.strip():
            return
        parsed = jsonrpc.parse_line(raw)
        answers = []
        for message in parsed.messages:
            answer = await self.answer(message, nursery)
            if answer is not None:
                answers.append(answer)
        if parsed.batch and answers:
            await self.send(answers)
        elif answers:
            await self.send(answers[0])

    async def answer(self, message: jsonrpc.Message,
                     nursery: trio.Nursery) -> dict[str, Any] | None:
        if isinstance(message, jsonrpc.Invalid):
            return jsonrpc.error_object(message.id, message.error)
        try:
            if not isinstance(message.params, dict):
                raise RpcFailure(jsonrpc.standard_error(
                    jsonrpc.INVALID_PARAMS, "Params must be an object of named values."))
            result = await self.dispatch(message.method, message.params, nursery)
        except Exception as exc:  # every failure becomes an error answer
            if isinstance(message, jsonrpc.Notification):
                return None
            return jsonrpc.error_object(message.id, rpc_error(exc))
        if isinstance(message, jsonrpc.Notification):
            return None
        return jsonrpc.result_object(message.id, result)

    async def dispatch(self, method: str, params: dict[str, Any],
                       nursery: trio.Nursery) -> Any:
        if method == "subscribe":
            types = params.get("types")
            if types is not None and not (
                isinstance(types, list) and all(isinstance(t, str) for t in types)
            ):
                raise RpcFailure(jsonrpc.standard_error(
                    jsonrpc.INVALID_PARAMS, "types must be a list of event type names."))
            consumer = params.get("consumer", False)
            backlog = params.get("backlog", False)
            if not isinstance(consumer, bool) or not isinstance(backlog, bool):
                raise RpcFailure(jsonrpc.standard_error(
                    jsonrpc.INVALID_PARAMS, "consumer and backlog must be true or false."))
            contact = params.get("contact")
            if contact is not None and not (isinstance(contact, str) and contact):
                raise RpcFailure(jsonrpc.standard_error(
                    jsonrpc.INVALID_PARAMS, "contact must be a contact's or group's name."))
            if backlog and self.server.caught_up is not None:
                # What waits on the relay comes first, as in direct mode.
                await self.server.caught_up()
            sub = self.server.hub.subscribe(types, on_drop=self.cancel.cancel,
                                            consumer=consumer or backlog, backlog=backlog,
                                            contact=contact)
            self.subscriptions.add(sub.id)
            nursery.start_soon(self.forward, sub.id, sub.events)
            return {"subscription": sub.id, "replayed": sub.replayed}
        if method == "unsubscribe":
            sub_id = params.get("subscription")
            if not isinstance(sub_id, int) or sub_id not in self.subscriptions:
                raise RpcFailure(jsonrpc.standard_error(
                    jsonrpc.INVALID_PARAMS, "No such subscription on this connection."))
            self.subscriptions.discard(sub_id)
            self.server.hub.unsubscribe(sub_id)
            return True
        return await self.server.api.call(method, params)

    async def forward(self, sub_id: int,
                      events: trio.MemoryReceiveChannel[dict[str, Any]]) -> None:
        async for event in events:
            params = {"subscription": sub_id, "event": event}
            await self.send(jsonrpc.notification_object("event", params))


async def serve_lines(stream: trio.abc.Stream, server: DaemonServer) -> None:
    """The Unix socket's transport: one JSON-RPC message or batch per line.

    An oversized line is answered with ``request_too_large`` and ends the
    connection."""

    async def send(value: dict[str, Any] | list[dict[str, Any]]) -> None:
        await stream.send_all(jsonrpc.encode(value))

    session = Session(server, send)
    splitter = jsonrpc.LineSplitter()
    ready: deque[bytes] = deque()

    async def receive() -> bytes | None:
        while not ready:
            data = await stream.receive_some(RECEIVE_CHUNK)
            if not data:
                return None
            for line in splitter.feed(bytes(data)):
                if isinstance(line, jsonrpc.Oversized):
                    await session.send(jsonrpc.error_object(None, jsonrpc.request_too_large()))
                    return None
                ready.append(line)
        return ready.popleft()

    await session.run(receive)


class DaemonServer:
    """Serves ``api`` and ``hub`` on a Unix socket only the daemon's uid may use."""

    def __init__(self, api: CallApi, hub: EventHub,
                 caught_up: Callable[[], Awaitable[None]] | None = None) -> None:
        self.api = api
        self.hub = hub
        self.caught_up = caught_up
        """Awaited before a subscription takes the backlog: the daemon has
        fetched what waited on its relay (or gave up trying for now)."""

    async def handle(self, stream: trio.SocketStream) -> None:
        try:
            if peer_uid(stream) != os.getuid():
                return
            await serve_lines(stream, self)
        finally:
            with trio.move_on_after(1) as cleanup:
                cleanup.shield = True
                await stream.aclose()

    async def serve_unix(self, path: Path, *,
                         task_status: trio.TaskStatus[list[trio.SocketListener]]
                         = trio.TASK_STATUS_IGNORED) -> None:
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            with socket_address(path) as address:
                await sock.bind(address)
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        sock.listen(64)
        listener = trio.SocketListener(sock)
        try:
            await trio.serve_listeners(self.handle, [listener], task_status=task_status)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
