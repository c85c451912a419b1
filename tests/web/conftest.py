"""A web server on a loopback port in front of a small recording API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import h11
import pytest
import trio

from chatcli.errors import KeyChangedError
from chatcli.web import WebServer


class _ApiError(Exception):
    """An error that knows its JSON-RPC error object, as chatcli.api's ApiError does."""

    def to_json(self) -> dict[str, Any]:
        return {"code": 1001, "message": "chatcli is locked.",
                "data": {"error": "locked", "exit": 1}}


class RecordingApi:
    """The API surface the web server forwards to: it records calls and plays events.

    ``call`` answers ``{"method", "params"}``; ``status`` fails as a locked
    identity's does; the method ``send`` to a contact
    named ``changed`` raises the CLI's KeyChangedError, as the real API does.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.event_send, self._event_receive = trio.open_memory_channel[dict[str, Any]](16)

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        self.calls.append((method, params))
        if method == "status":
            raise _ApiError()
        if method == "send" and params.get("to") == "changed":
            raise KeyChangedError("changed's key changed: run `chatcli verify changed`.")
        return {"method": method, "params": params}

    async def events(
        self, *, wait: float | None, read_receipts: bool
    ) -> AsyncIterator[dict[str, Any]]:
        async for event in self._event_receive:
            yield event


class Web:
    def __init__(self, server: WebServer, api: RecordingApi, downloads: Path) -> None:
        self.server = server
        self.api = api
        self.downloads = downloads

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def headers(self, **extra: str) -> list[tuple[str, str]]:
        """Headers of a request the server's own page would make."""
        base = {"Host": f"127.0.0.1:{self.port}"}
        base.update({k.replace("_", "-"): v for k, v in extra.items()})
        return list(base.items())

    async def login(self) -> str:
        """A session cookie value, from a fresh one-time token."""
        token = self.server.login_url().split("token=", 1)[1]
        response, _ = await http(self.port, "GET", f"/login?token={token}", self.headers())
        assert response.status_code == 303
        cookie = dict(response.headers)[b"set-cookie"].decode()
        return cookie.split(";", 1)[0].split("=", 1)[1]


async def http(
    port: int,
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes = b"",
) -> tuple[h11.Response, bytes]:
    """One plain HTTP/1.1 request on loopback: the response and its body."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    conn = h11.Connection(h11.CLIENT)
    all_headers = [*headers, ("Content-Length", str(len(body)))] if method != "GET" else headers
    data = conn.send(h11.Request(method=method, target=target, headers=all_headers))
    if method != "GET":
        data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
    else:
        data += conn.send(h11.EndOfMessage())
    # A capped wait: a server that wrongly accepts a WebSocket upgrade would
    # otherwise keep this request waiting for a plain HTTP answer.
    with trio.fail_after(10):
        return await _exchange(stream, conn, data)


async def _exchange(
    stream: trio.SocketStream, conn: h11.Connection, data: bytes
) -> tuple[h11.Response, bytes]:
    async with stream:
        await stream.send_all(data)
        response: h11.Response | None = None
        chunks = []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
    assert response is not None
    return response, b"".join(chunks)


@pytest.fixture
async def web(tmp_path: Path) -> AsyncIterator[Web]:
    api = RecordingApi()
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    server = WebServer(api, upload_dir=tmp_path / "uploads", download_dir=downloads)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        yield Web(server, api, downloads)
        nursery.cancel_scope.cancel()
