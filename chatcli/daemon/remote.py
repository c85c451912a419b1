"""RemoteApi: the API's ``call``/``events`` surface over the daemon's Unix socket.

Errors come back as :class:`RemoteError`, a :class:`ChatcliError` whose message
and exit code are the daemon's, so the CLI prints and exits exactly as in
direct mode.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import trio

from chatcli.client.agent import socket_address
from chatcli.daemon import jsonrpc
from chatcli.errors import ChatcliError

RECEIVE_CHUNK = 65536


class RemoteError(ChatcliError):
    """An error answered by the daemon; ``kind`` is its stable ``data.error``."""

    def __init__(self, error: jsonrpc.RpcError) -> None:
        super().__init__(error.message)
        self.exit_code = error.exit
        self.kind = error.kind


class DaemonGoneError(ChatcliError):
    """The daemon closed the connection or answered something that is not JSON-RPC."""


class _Line:
    """One connection: send a message, read messages line by line."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.splitter = jsonrpc.LineSplitter()
        self.pending: list[bytes] = []

    async def send(self, message: dict[str, Any]) -> None:
        await self.stream.send_all(jsonrpc.encode(message))

    async def receive(self) -> jsonrpc.Response | jsonrpc.Notification:
        while not self.pending:
            data = await self.stream.receive_some(RECEIVE_CHUNK)
            if not data:
                raise DaemonGoneError("The chatcli daemon closed the connection.")
            for line in self.splitter.feed(data):
                if isinstance(line, jsonrpc.Oversized):
                    raise DaemonGoneError("The chatcli daemon sent an oversized answer.")
                self.pending.append(line)
        try:
            return jsonrpc.parse_incoming(self.pending.pop(0))
        except ValueError:
            raise DaemonGoneError("The chatcli daemon sent a malformed answer.") from None

    async def answer(self, request_id: int) -> Any:
        while True:
            message = await self.receive()
            if isinstance(message, jsonrpc.Response) and message.id == request_id:
                if message.error is not None:
                    raise RemoteError(message.error)
                return message.result


class RemoteApi:
    """Same call surface as LocalApi; one socket connection per call or stream."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._ids = itertools.count(1)

    async def _open(self) -> _Line:
        with socket_address(self.path) as address:
            return _Line(await trio.open_unix_socket(address))

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        line = await self._open()
        async with line.stream:
            request_id = next(self._ids)
            await line.send(jsonrpc.request_object(request_id, method, params))
            return await line.answer(request_id)

    async def subscribe(self, types: list[str] | None = None, *, contact: str | None = None,
                        consumer: bool = False, backlog: bool = False) -> RemoteSubscription:
        """A subscription, open once the daemon answered (so nothing published
        after this returns is missed); read it with ``async for``, end it with
        ``aclose``."""
        params: dict[str, Any] = {}
        if types is not None:
            params["types"] = types
        if contact is not None:
            params["contact"] = contact
        if consumer:
            params["consumer"] = True
        if backlog:
            params["backlog"] = True
        line = await self._open()
        try:
            request_id = next(self._ids)
            await line.send(jsonrpc.request_object(request_id, "subscribe", params))
            result = await line.answer(request_id)
        except BaseException:
            await line.stream.aclose()
            raise
        return RemoteSubscription(line, int(result.get("replayed", 0)))

    async def events(self, types: list[str] | None = None) -> AsyncIterator[dict[str, Any]]:
        """Every event the daemon publishes from now on, as ``receive --json`` objects."""
        sub = await self.subscribe(types)
        async with sub:
            async for event in sub:
                yield event


class RemoteSubscription:
    """The events of one ``subscribe``; ``replayed`` came from the backlog first.
    Iterating raises :class:`DaemonGoneError` when the daemon goes away."""

    def __init__(self, line: _Line, replayed: int) -> None:
        self._line = line
        self.replayed = replayed

    async def receive(self) -> dict[str, Any]:
        while True:
            message = await self._line.receive()
            if isinstance(message, jsonrpc.Notification) and message.method == "event":
                params = message.params if isinstance(message.params, dict) else {}
                event = params.get("event")
                if isinstance(event, dict):
                    return event

    def __aiter__(self) -> RemoteSubscription:
        return self

    async def __anext__(self) -> dict[str, Any]:
        return await self.receive()

    async def aclose(self) -> None:
        await self._line.stream.aclose()

    async def __aenter__(self) -> RemoteSubscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def connect(path: Path) -> RemoteApi | None:
    """A RemoteApi when a daemon answers on ``path``, else None (use direct mode)."""
    try:
        with socket_address(path) as address:
            stream = await trio.open_unix_socket(address)
    except OSError:
        return None
    await stream.aclose()
    return RemoteApi(path)
