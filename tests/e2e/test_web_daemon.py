"""`chatcli web` and `chatcli daemon --web` end to end, without a browser: real
relay, real daemons, the page's login and its WebSocket over loopback."""

from __future__ import annotations

import http.client
import json
import subprocess
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import trio
from trio_websocket import open_websocket

from tests.e2e.conftest import CHATCLI, Pair, RelayProcess, User, _env
from tests.e2e.test_daemon import DaemonProcess, no_passphrase

pytestmark = pytest.mark.slow


def web_json(user: User, *args: str, passphrase: bool = False) -> dict[str, Any]:
    extra = {"CHATCLI_HOME": str(user.home)}
    if passphrase:
        extra["CHATCLI_PASSPHRASE"] = user.passphrase
    result = subprocess.run([CHATCLI, "web", "--no-browser", "--json", *args],
                            env=_env(extra), stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def status(user: User) -> dict[str, Any]:
    result = no_passphrase(user, "daemon", "status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def open_login(url: str) -> tuple[int, str]:
    """GET the login link as a browser would: the status and the session cookie."""
    split = urlsplit(url)
    conn = http.client.HTTPConnection(split.hostname, split.port, timeout=10)
    try:
        conn.request("GET", f"{split.path}?{split.query}")
        response = conn.getresponse()
        response.read()
        cookie = (response.getheader("Set-Cookie") or "").split(";", 1)[0]
        return response.status, cookie
    finally:
        conn.close()


@pytest.fixture
def stop_daemons() -> Iterator[list[User]]:
    users: list[User] = []
    yield users
    for user in users:
        no_passphrase(user, "daemon", "stop")


def test_chatcli_web_starts_a_daemon_and_logs_in_once(
    relay: RelayProcess, users: Any, stop_daemons: list[User]
) -> None:
    (alice,) = users("alice")
    alice.init(relay)
    stop_daemons.append(alice)
    first = web_json(alice, passphrase=True)
    assert first["opened"] is False
    page = first["page"]
    assert page.startswith("http://127.0.0.1:") and first["url"].startswith(page + "login?token=")
    running = status(alice)
    assert running["web"] == page
    assert "token" not in json.dumps(running)

    code, cookie = open_login(first["url"])
    assert code == 303 and cookie.startswith("chatcli_session=")
    assert open_login(first["url"])[0] == 403  # used once

    # Again, with no passphrase: the same daemon and page, a new link.
    second = web_json(alice)
    assert second["page"] == page and second["url"] != first["url"]
    assert status(alice)["pid"] == running["pid"]
    assert open_login(second["url"])[0] == 303
    log = (alice.home / "daemon.log").read_text()
    assert "token" not in log and page in log


def test_a_daemon_without_web_serves_it_when_asked(
    relay: RelayProcess, users: Any
) -> None:
    (alice,) = users("alice")
    alice.init(relay)
    daemon = DaemonProcess(alice)
    try:
        assert status(alice)["web"] is None
        opened = web_json(alice)
        assert status(alice)["web"] == opened["page"]
        assert open_login(opened["url"])[0] == 303
    finally:
        daemon.stop()


def test_the_page_sees_what_the_cli_and_contacts_do(pair: Pair) -> None:
    _relay, alice, bob = pair
    daemon = DaemonProcess(alice, "--web", "0")
    try:
        login = web_json(alice)
        code, cookie = open_login(login["url"])
        assert code == 303
        port = urlsplit(login["page"]).port
        assert port is not None

        async def page() -> list[dict[str, Any]]:
            events: list[dict[str, Any]] = []
            async with open_websocket(
                "127.0.0.1", port, "/ws", use_ssl=False,
                extra_headers=[(b"Origin", f"http://127.0.0.1:{port}".encode()),
                               (b"Cookie", cookie.encode())],
            ) as ws:
                await ws.send_message(json.dumps(
                    {"jsonrpc": "2.0", "id": 1, "method": "subscribe", "params": {}}))
                answer = json.loads(await ws.get_message())
                assert answer["result"] == {"subscription": 1}
                # A command in a terminal (through the daemon), then a contact.
                sent = await trio.run_process(
                    [CHATCLI, "send", "bob", "from the terminal"], capture_stdout=True,
                    capture_stderr=True, env=_env({"CHATCLI_HOME": str(alice.home)}))
                assert sent.returncode == 0
                await trio.to_thread.run_sync(lambda: bob.run("send", "alice", "to the page"))
                with trio.fail_after(20):
                    while len([e for e in events if e["type"] in ("sent", "message")]) < 2:
                        note = json.loads(await ws.get_message())
                        events.append(note["params"]["event"])
            return events

        events = trio.run(page)
        assert [(e["type"], e["text"]) for e in events if e["type"] in ("sent", "message")] == [
            ("sent", "from the terminal"), ("message", "to the page")]
        # The page took the message: it does not wait for `chatcli receive`.
        assert status(alice)["backlog"] == 0
    finally:
        daemon.stop()


def raw_get(port: int, path: str, headers: dict[str, str]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_host=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_the_daemons_page_refuses_other_hosts_origins_and_strangers(
    relay: RelayProcess, users: Any
) -> None:
    (alice,) = users("alice")
    alice.init(relay)
    daemon = DaemonProcess(alice, "--web", "0")
    try:
        login = web_json(alice)
        port = urlsplit(login["page"]).port
        assert port is not None
        here = f"127.0.0.1:{port}"
        upgrade = {"Upgrade": "websocket", "Connection": "Upgrade",
                   "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                   "Sec-WebSocket-Version": "13"}
        # No token, a made-up token, no cookie.
        assert raw_get(port, "/", {"Host": here}) == 401
        assert raw_get(port, "/login?token=made-up", {"Host": here}) == 403
        assert raw_get(port, "/ws", {"Host": here, "Origin": f"http://{here}", **upgrade}) == 401
        # A DNS name rebound to 127.0.0.1, another site's page.
        split = urlsplit(login["url"])
        target = f"{split.path}?{split.query}"
        assert raw_get(port, target, {"Host": f"evil.example:{port}"}) == 421
        assert raw_get(port, target, {"Host": here, "Origin": "http://evil.example"}) == 403
        assert raw_get(port, target, {"Host": here, "Sec-Fetch-Site": "cross-site"}) == 403
        # The token survived the refused attempts; with it, the WebSocket
        # still needs our own Origin.
        code, cookie = open_login(login["url"])
        assert code == 303
        assert raw_get(port, "/", {"Host": here, "Cookie": cookie}) == 200
        assert raw_get(port, "/ws", {"Host": here, "Cookie": cookie, **upgrade}) == 403
        assert raw_get(port, "/ws", {"Host": here, "Cookie": cookie,
                                     "Origin": "http://localhost:1", **upgrade}) == 403
    finally:
        daemon.stop()


def test_a_locked_daemon_over_its_socket(pair: Pair) -> None:
    from chatcli.api.errors import ApiChatcliError
    from chatcli.daemon.sync_client import find

    _relay, alice, bob = pair
    started = no_passphrase(alice, "daemon", "--detach", "--locked")
    assert started.returncode == 0, started.stderr
    try:
        assert status(alice)["locked"] is True
        refused = no_passphrase(alice, "send", "bob", "while locked")
        assert refused.returncode == 1
        assert "daemon is locked" in refused.stderr
        api = find(alice.home)
        assert api is not None
        with pytest.raises(ApiChatcliError) as wrong:
            api.call("unlock", {"passphrase": "not it"})
        assert wrong.value.exit_code == 1 and "passphrase is wrong" in str(wrong.value)
        unlocked = api.call("unlock", {"passphrase": alice.passphrase})
        assert unlocked["state"] == "unlocked" and unlocked["name"] == "alice"
        sent = no_passphrase(alice, "send", "bob", "unlocked now")
        assert sent.returncode == 0, sent.stderr
        assert bob.texts() == ["unlocked now"]
        assert api.call("lock")["state"] == "locked"
        assert no_passphrase(alice, "contacts").returncode == 1
        # Locked again, nothing is received: bob's message waits at the relay.
        bob.run("send", "alice", "while locked again")
        api.call("unlock", {"passphrase": alice.passphrase})
        texts = [e["text"] for e in json_lines(no_passphrase(alice, "receive", "--json"))
                 if e["type"] == "message"]
        assert texts == ["while locked again"]
    finally:
        no_passphrase(alice, "daemon", "stop")
    log = (alice.home / "daemon.log").read_text()
    assert alice.passphrase not in log and "not it" not in log
    assert "unlock refused" in log and "locked" in log


def test_account_create_refuses_short_passphrases_and_existing_identities(
    relay: RelayProcess, users: Any
) -> None:
    from chatcli.api.errors import ApiChatcliError
    from chatcli.daemon.sync_client import find

    (erin,) = users("erin")
    started = no_passphrase(erin, "daemon", "--detach", "--locked")
    assert started.returncode == 0, started.stderr
    try:
        refused = no_passphrase(erin, "contacts")
        assert refused.returncode == 2 and "There is no identity in" in refused.stderr
        api = find(erin.home)
        assert api is not None
        with pytest.raises(ApiChatcliError) as short:
            api.call("account.create", {"name": "erin", "relay": relay.url,
                                        "passphrase": "short"})
        assert "at least 8" in str(short.value)
        with pytest.raises(ApiChatcliError) as bad_address:
            api.call("account.create", {"name": "erin", "relay": "http://nowhere",
                                        "passphrase": erin.passphrase})
        assert bad_address.value.exit_code == 2
        created = api.call("account.create", {"name": "erin", "relay": relay.url,
                                               "passphrase": erin.passphrase})
        assert created["name"] == "erin" and created["pinned_on_first_use"] is False
        with pytest.raises(ApiChatcliError) as again:
            api.call("account.create", {"name": "erin2", "relay": relay.url,
                                        "passphrase": erin.passphrase})
        assert "already exists" in str(again.value)
        assert status(erin)["identity"] is True
    finally:
        no_passphrase(erin, "daemon", "stop")


def json_lines(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
