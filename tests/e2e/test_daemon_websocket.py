"""`chatcli daemon --websocket 0` end to end: real relay, real daemon processes,
JSON-RPC over a loopback WebSocket with the bearer token; refusals before the
upgrade; an oversized message closes only its connection."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from tests.e2e import test_daemon
from tests.e2e.conftest import CHATCLI, User, _env
from tests.e2e.test_daemon import DaemonProcess, no_passphrase

pytestmark = pytest.mark.slow

pair = test_daemon.pair
daemons = test_daemon.daemons
"""The fixtures of tests/e2e/test_daemon.py: alice and bob connected; daemons
stopped at the end."""

ONE_MIB = 1024 * 1024


def websocket_of(user: User) -> tuple[str, str, Path]:
    """The daemon's WebSocket URL, its token and the token's file, from `daemon status`."""
    status = no_passphrase(user, "daemon", "status", "--json")
    assert status.returncode == 0, status.stderr
    found = json.loads(status.stdout)["websocket"]
    path = Path(found["token_file"])
    assert path == user.home / "daemon.token"
    return found["url"], path.read_text().strip(), path


def handshake(url: str, *headers: str) -> tuple[int, bytes]:
    """An upgrade request by hand: the HTTP status and the whole response, read
    until the daemon hangs up (or the upgrade's headers, for a 101)."""
    host, port = url.removeprefix("ws://").rstrip("/").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        request = ["GET / HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket",
                   "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                   "Sec-WebSocket-Version: 13", *headers]
        sock.sendall("\r\n".join(request).encode() + b"\r\n\r\n")
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
            if response.startswith(b"HTTP/1.1 101 ") and b"\r\n\r\n" in response:
                break
    return int(response.split(b" ", 2)[1]), response


async def call(ws: WebSocketConnection, request_id: int, method: str,
               params: dict[str, Any] | None = None) -> Any:
    """A request and its answer (event notifications meanwhile are kept aside)."""
    await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method,
                                      "params": params or {}}))
    while True:
        message = json.loads(await ws.get_message())
        if message.get("id") == request_id:
            return message


async def next_event(ws: WebSocketConnection, kind: str) -> dict[str, Any]:
    while True:
        message = json.loads(await ws.get_message())
        event = message.get("params", {}).get("event")
        if message.get("method") == "event" and event["type"] == kind:
            return event  # type: ignore[no-any-return]


def bearer(token: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", b"Bearer " + token.encode())]


def test_version_send_and_subscribe_over_the_websocket(
        pair: tuple[User, User], daemons: list[DaemonProcess]) -> None:
    alice, bob = pair
    daemons.append(DaemonProcess(alice, "--websocket", "0"))
    url, token, path = websocket_of(alice)
    assert url.startswith("ws://127.0.0.1:") and url.endswith("/")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(token) == 43

    async def session() -> None:
        with trio.fail_after(60):
            async with open_websocket_url(url, extra_headers=bearer(token)) as ws:
                version = await call(ws, 1, "version")
                assert version["result"]["api"] >= 1
                subscribed = await call(ws, 2, "subscribe", {"types": ["message", "sent"]})
                assert subscribed["result"]["subscription"] > 0
                await trio.to_thread.run_sync(bob.run, "send", "alice", "to the websocket")
                event = await next_event(ws, "message")
                assert (event["from"], event["text"]) == ("bob", "to the websocket")
                sent = await call(ws, 3, "send", {"to": "bob", "text": "from the websocket"})
                assert sent["result"]["stored"] is True
                own = await next_event(ws, "sent")
                assert (own["to"], own["text"]) == ("bob", "from the websocket")
                missing = await call(ws, 4, "send", {"to": "nobody", "text": "x"})
                assert missing["error"]["data"]["exit"] == 2

    trio.run(session)
    assert bob.texts() == ["from the websocket"]


def test_refused_without_the_token_or_from_a_browser_and_the_token_dies_with_the_daemon(
        pair: tuple[User, User]) -> None:
    alice, _bob = pair
    started = alice.run("daemon", "--detach", "--websocket", "0")
    assert "daemon started" in started.stderr
    try:
        url, token, path = websocket_of(alice)
        assert handshake(url)[0] == 401
        wrong = "A" * 43 if token != "A" * 43 else "B" * 43
        status, response = handshake(url, f"Authorization: Bearer {wrong}")
        assert status == 401 and b"www-authenticate: bearer" in response.lower()
        assert handshake(url, f"Authorization: Basic {token}")[0] == 401
        # A browser is refused even with the right token.
        assert handshake(url, f"Authorization: Bearer {token}",
                         "Origin: http://127.0.0.1:8000")[0] == 403
        assert handshake(url, f"Authorization: Bearer {token}")[0] == 101
        human = no_passphrase(alice, "daemon", "status")
        assert f"WebSocket API on {url}" in human.stderr
    finally:
        no_passphrase(alice, "daemon", "stop")
    assert not path.exists()
    log = (alice.home / "daemon.log").read_text()
    assert f"WebSocket API on {url}" in log and token not in log

    # The next daemon has another token; the old one opens nothing.
    started = alice.run("daemon", "--detach", "--websocket", "0")
    try:
        url, new_token, _ = websocket_of(alice)
        assert new_token != token
        assert handshake(url, f"Authorization: Bearer {token}")[0] == 401
        assert handshake(url, f"Authorization: Bearer {new_token}")[0] == 101
    finally:
        no_passphrase(alice, "daemon", "stop")


def test_a_locked_daemon_is_unlocked_over_the_websocket(pair: tuple[User, User]) -> None:
    alice, _bob = pair
    alice.run("daemon", "--detach", "--locked", "--websocket", "0")
    try:
        url, token, _ = websocket_of(alice)

        async def session() -> None:
            with trio.fail_after(60):
                async with open_websocket_url(url, extra_headers=bearer(token)) as ws:
                    assert (await call(ws, 1, "daemon.status"))["result"]["state"] == "locked"
                    refused = await call(ws, 2, "contacts.list")
                    assert refused["error"]["data"]["error"] == "locked"
                    wrong = await call(ws, 3, "unlock", {"passphrase": "not it"})
                    assert "error" in wrong
                    unlocked = await call(ws, 4, "unlock", {"passphrase": alice.passphrase})
                    assert unlocked["result"]["state"] == "unlocked"
                    names = [c["name"] for c in (await call(ws, 5, "contacts.list"))["result"]]
                    assert names == ["bob"]

        trio.run(session)
    finally:
        no_passphrase(alice, "daemon", "stop")


def test_an_oversized_message_closes_that_connection_only(
        pair: tuple[User, User], daemons: list[DaemonProcess]) -> None:
    alice, _bob = pair
    daemons.append(DaemonProcess(alice, "--websocket", "0"))
    url, token, _ = websocket_of(alice)

    async def session() -> None:
        with trio.fail_after(60):
            async with open_websocket_url(url, extra_headers=bearer(token)) as good:
                async with open_websocket_url(url, extra_headers=bearer(token),
                                              max_message_size=4 * ONE_MIB) as big:
                    await big.send_message(
                        '{"jsonrpc":"2.0","id":1,"method":"version","params":{"x":"'
                        + "a" * ONE_MIB + '"}}')
                    with pytest.raises(ConnectionClosed) as closed:
                        await big.get_message()
                    assert closed.value.reason is not None
                    assert closed.value.reason.code == 1009
                    # trio-websocket's client keeps its stream when the server
                    # closed first (tests/relay/helpers.py): close it.
                    await big._stream.aclose()
                # The Unix socket and the other WebSocket keep serving.
                status = await trio.to_thread.run_sync(
                    no_passphrase, alice, "daemon", "status", "--json")
                assert status.returncode == 0 and json.loads(status.stdout)["pid"] > 0
                assert "api" in (await call(good, 2, "version"))["result"]

    trio.run(session)


def test_a_busy_port_stops_the_daemon_with_a_clear_error(pair: tuple[User, User]) -> None:
    alice, _bob = pair
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = alice.run("daemon", "--websocket", str(port), check=False, timeout=30)
    assert result.returncode == 1
    assert result.stderr.strip().endswith(
        f"chatcli: error: Cannot serve the WebSocket API on 127.0.0.1:{port}: "
        "Address already in use.")
    assert not (alice.home / "daemon.token").exists()
    assert no_passphrase(alice, "daemon", "status").returncode == 1


def websocket_client_source() -> str:
    """The WebSocket client of docs/api.md, exactly as printed there."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text(encoding="utf-8")
    section = doc[doc.index("### A WebSocket client"):]
    start = section.index("```python\n") + len("```python\n")
    return section[start:section.index("```", start)]


def test_the_websocket_client_of_the_api_docs_answers(
        pair: tuple[User, User], daemons: list[DaemonProcess]) -> None:
    alice, bob = pair
    daemons.append(DaemonProcess(alice, "--websocket", "0"))
    source = websocket_client_source()
    assert len(source.splitlines()) <= 32
    path = os.pathsep.join([str(Path(CHATCLI).parent), os.environ.get("PATH", "")])
    bot = subprocess.Popen([sys.executable, "-c", source],
                           env=_env({"CHATCLI_HOME": str(alice.home), "PATH": path}),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while json.loads(no_passphrase(alice, "daemon", "status", "--json").stdout)[
                "subscribers"] < 1:
            assert bot.poll() is None, bot.stderr.read() if bot.stderr else ""
            assert time.monotonic() < deadline, "the client never subscribed"
            time.sleep(0.1)
        bob.run("send", "alice", "ping")
        texts: list[str] = []
        while "ws echo: ping" not in texts:
            assert time.monotonic() < deadline + 20, texts
            texts += bob.texts()
            time.sleep(0.2)
    finally:
        bot.kill()
        bot.wait()
        if bot.stderr is not None:
            bot.stderr.close()
