"""The daemon's loopback WebSocket API in-process: handshake checks, token file,
the JSON-RPC session over real loopback WebSockets (the API below is a tiny echo)."""

from __future__ import annotations

import json
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, open_websocket_url

from chatcli.daemon import jsonrpc
from chatcli.daemon.hub import EventHub
from chatcli.daemon.server import DaemonServer
from chatcli.daemon.websocket import (
    BROWSER,
    HOST,
    MAX_MESSAGE,
    UNAUTHORIZED,
    WebSocketApi,
    check_handshake,
    new_token,
    write_token,
)
from chatcli.errors import ChatcliError
from tests.daemon.test_server import EchoApi

TOKEN = "t" * 43


def bearer(token: str = TOKEN) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {token}".encode())]


def test_handshake_checks() -> None:
    assert check_handshake(bearer(), TOKEN) is None
    assert check_handshake([(b"Authorization", b"bearer  " + TOKEN.encode())], TOKEN) is None
    assert check_handshake([], TOKEN) is UNAUTHORIZED
    assert check_handshake(bearer("x" * 43), TOKEN) is UNAUTHORIZED
    assert check_handshake(bearer(TOKEN[:-1]), TOKEN) is UNAUTHORIZED
    assert check_handshake(bearer(""), TOKEN) is UNAUTHORIZED
    assert check_handshake([(b"authorization", b"Basic " + TOKEN.encode())], TOKEN) \
        is UNAUTHORIZED
    assert check_handshake([(b"authorization", TOKEN.encode())], TOKEN) is UNAUTHORIZED
    assert check_handshake(bearer() * 2, TOKEN) is UNAUTHORIZED
    # A browser is refused even with the right token.
    assert check_handshake([(b"origin", b"http://127.0.0.1:1"), *bearer()], TOKEN) is BROWSER
    assert check_handshake([(b"Origin", b"null")], TOKEN) is BROWSER
    assert (UNAUTHORIZED.status, BROWSER.status) == (401, 403)
    assert (b"www-authenticate", b'Bearer realm="chatcli daemon"') in UNAUTHORIZED.headers()


def test_tokens_are_fresh_and_their_file_private(tmp_path: Path) -> None:
    first, second = new_token(), new_token()
    assert first != second and len(first) == 43  # 256 bits, URL-safe base64
    path = tmp_path / "daemon.token"
    path.write_text("stale, and readable by all\n")
    path.chmod(0o644)
    write_token(path, first)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == first + "\n"
    write_token(path, second)
    assert path.read_text().strip() == second
    assert sorted(p.name for p in tmp_path.iterdir()) == ["daemon.token"]


class Served:
    def __init__(self, api: WebSocketApi, hub: EventHub) -> None:
        self.api, self.hub = api, hub


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    hub = EventHub(queue_limit=4)
    api = WebSocketApi(DaemonServer(EchoApi(), hub), TOKEN)
    async with trio.open_nursery() as nursery:
        await nursery.start(api.serve, 0)
        yield Served(api, hub)
        nursery.cancel_scope.cancel()


async def call(ws: Any, request_id: int, method: str, params: Any = None) -> Any:
    await ws.send_message(json.dumps(jsonrpc.request_object(request_id, method, params or {})))
    return json.loads(await ws.get_message())


async def test_calls_and_events_with_the_token(served: Served) -> None:
    assert served.api.url == f"ws://{HOST}:{served.api.port}/" and served.api.port > 0
    with trio.fail_after(10):
        async with open_websocket_url(served.api.url, extra_headers=bearer()) as ws:
            assert await call(ws, 1, "echo", {"a": "é"}) == {
                "jsonrpc": "2.0", "id": 1, "result": {"a": "é"}}
            await ws.send_message('[{"jsonrpc":"2.0","id":2,"method":"echo"},'
                                  '{"jsonrpc":"2.0","id":3,"method":"nope"}]')
            batch = json.loads(await ws.get_message())
            assert batch[0]["result"] == {} and batch[1]["error"]["code"] == -32601
            sub = (await call(ws, 4, "subscribe", {"types": ["message"]}))["result"]
            served.hub.publish({"type": "message", "text": "over the websocket"})
            note = json.loads(await ws.get_message())
            assert note == {"jsonrpc": "2.0", "method": "event", "params": {
                "subscription": sub["subscription"],
                "event": {"type": "message", "text": "over the websocket"}}}
            assert len(served.hub) == 1
        await trio.testing.wait_all_tasks_blocked()
        assert len(served.hub) == 0  # the closed connection took its subscription along


async def raw_handshake(port: int, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
    """An HTTP upgrade request by hand: the status and everything until the
    server hangs up (so the test fails if it keeps the connection)."""
    stream = await trio.open_tcp_stream(HOST, port)
    async with stream:
        lines = [b"GET / HTTP/1.1", b"Host: 127.0.0.1", b"Upgrade: websocket",
                 b"Connection: Upgrade", b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                 b"Sec-WebSocket-Version: 13", *(k + b": " + v for k, v in headers)]
        await stream.send_all(b"\r\n".join(lines) + b"\r\n\r\n")
        response = b""
        while data := await stream.receive_some(65536):
            response += data
            if response.startswith(b"HTTP/1.1 101 ") and b"\r\n\r\n" in response:
                break  # upgraded: a WebSocket now, which stays open
    return int(response.split(b" ", 2)[1]), response


@pytest.mark.parametrize(("headers", "status"), [
    ([], 401),
    (bearer("wrong" + TOKEN[5:]), 401),
    ([(b"authorization", b"Basic " + TOKEN.encode())], 401),
    ([(b"origin", b"http://localhost:8000"), *bearer()], 403),
])
async def test_refused_before_the_upgrade(served: Served, headers: list[tuple[bytes, bytes]],
                                          status: int) -> None:
    with trio.fail_after(10):
        got, response = await raw_handshake(served.api.port, headers)
    assert got == status
    assert b"upgrade" not in response.lower().split(b"\r\n\r\n")[0]
    assert TOKEN.encode() not in response
    with trio.fail_after(10):  # and the right token opens it
        assert (await raw_handshake(served.api.port, bearer()))[0] == 101


async def test_oversized_and_binary_messages_close_only_that_connection(
        served: Served) -> None:
    with trio.fail_after(20):
        async with open_websocket_url(served.api.url, extra_headers=bearer()) as good:
            async with open_websocket_url(served.api.url, extra_headers=bearer(),
                                          max_message_size=4 * MAX_MESSAGE) as big:
                await big.send_message('{"jsonrpc":"2.0","id":1,"method":"echo","params":{"x":"'
                                       + "a" * MAX_MESSAGE + '"}}')
                with pytest.raises(ConnectionClosed) as closed:
                    await big.get_message()
                assert closed.value.reason is not None and closed.value.reason.code == 1009
                # trio-websocket's client leaves its TCP stream open when the
                # server closed first (see tests/relay/helpers.py): close it.
                await big._stream.aclose()
            async with open_websocket_url(served.api.url, extra_headers=bearer()) as binary:
                await binary.send_message(b'{"jsonrpc":"2.0","id":1,"method":"echo"}')
                with pytest.raises(ConnectionClosed) as closed:
                    await binary.get_message()
                assert closed.value.reason is not None and closed.value.reason.code == 1003
                await binary._stream.aclose()
            assert (await call(good, 9, "echo", {"still": True}))["result"] == {"still": True}


async def test_a_websocket_subscriber_that_does_not_read_is_dropped(served: Served) -> None:
    with trio.fail_after(30):
        async with open_websocket_url(served.api.url, extra_headers=bearer(),
                                      message_queue_size=1) as stuck:
            await call(stuck, 1, "subscribe")
            big = "x" * 60000
            n = 0
            while len(served.hub):  # far more than the socket buffers and the queue
                served.hub.publish({"type": "message", "n": n, "text": big})
                n += 1
                await trio.sleep(0.001)
            assert n > 4


async def test_a_busy_port_is_a_clear_error(served: Served) -> None:
    other = WebSocketApi(served.api.server, TOKEN)
    with pytest.raises(ChatcliError, match=r"Cannot serve the WebSocket API on 127\.0\.0\.1:"):
        await other.serve(served.api.port)


class VanishingRequest:
    """A handshake whose client hung up before the answer could be sent."""

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.headers = headers

    async def reject(self, *args: Any, **kwargs: Any) -> None:
        raise ConnectionClosed(None)

    async def accept(self, *args: Any, **kwargs: Any) -> None:
        raise trio.BrokenResourceError


async def test_a_client_gone_mid_handshake_does_not_stop_the_server(served: Served) -> None:
    for headers in ([], bearer()):
        await served.api.handle(VanishingRequest(headers))  # type: ignore[arg-type]
    with trio.fail_after(10):
        async with open_websocket_url(served.api.url, extra_headers=bearer()) as ws:
            assert (await call(ws, 1, "echo", {}))["result"] == {}
