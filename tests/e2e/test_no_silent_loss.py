"""Failures that used to look like something else, with real relays and the
real `chatcli` command."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_websocket

from chatcli.protocol import frames
from chatcli.protocol.codec import ProtocolError, decode_client_frame, decode_relay_frame
from tests.e2e.conftest import Pair, RelayProcess, User, connect

pytestmark = pytest.mark.slow


def test_attachment_over_the_relay_limit_exits_5_at_once(users: Any, tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text('max_blob_size = "64KiB"\n')
    relay = RelayProcess(tmp_path / "relay.db", "--config", str(config)).start()
    try:
        alice, bob = users("alice", "bob")
        alice.init(relay)
        bob.init(relay)
        connect(alice, bob)
        big = tmp_path / "holiday.bin"
        big.write_bytes(b"x" * (200 * 1024))
        result = alice.run("send", "bob", "--file", str(big), "look", check=False)
        assert result.returncode == 5, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1
        assert "holiday.bin" in lines[0] and "64 KiB" in lines[0]
        assert bob.texts() == []  # nothing half-sent
        small = tmp_path / "note.bin"
        small.write_bytes(b"y" * 1000)
        alice.run("send", "bob", "--file", str(small), "this one fits")
        assert bob.texts() == ["this one fits"]
    finally:
        relay.stop()


def test_the_installation_a_restored_backup_replaced_exits_6(pair: Pair) -> None:
    _relay, alice, bob = pair
    alice.run("send", "bob", "before the move")
    assert bob.texts() == ["before the move"]
    backup = alice.home.parent / "alice.chatkey"
    alice.run("keys", "export", str(backup))
    moved = User("alice", alice.home.parent / "alice-new-laptop")
    moved.json("keys", "import", str(backup))  # tells the relay at once
    for command in (("send", "bob", "from the old laptop"), ("receive",)):
        old = alice.run(*command, check=False)
        assert old.returncode == 6, old.stderr
        lines = old.stderr.strip().splitlines()
        assert len(lines) == 1 and "replaced" in lines[0] and "keys import" in lines[0]
    assert bob.texts() == []  # nothing reached bob from the old laptop...
    history = alice.lines("messages", "bob")  # ...and the old history is still there,
    assert [m["text"] for m in history] == ["before the move", "from the old laptop"]
    assert history[-1]["state"] == "queued"  # never shown as sent
    # The new installation goes on in both directions.
    moved.run("send", "bob", "from the new laptop")
    assert bob.texts() == ["from the new laptop"]
    bob.run("send", "alice", "hello new laptop")
    assert moved.texts() == ["hello new laptop"]


class AnswerLosingProxy:
    """A WebSocket proxy in front of a relay, run in a thread of its own: it
    forwards every message both ways, except the answer to the first
    ``lose`` deposit frames: it drops the depositor's connection instead (the
    relay has stored the deposit; its answer is lost on the way)."""

    def __init__(self, relay_port: int, lose: int = 1) -> None:
        self.relay_port = relay_port
        self.lose = lose
        self.lost = 0
        self.port = 0
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)

    def __enter__(self) -> AnswerLosingProxy:
        self._thread.start()
        assert self._started.wait(10), "the proxy did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._token is not None and self._scope is not None
        trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)
        self._thread.join(10)

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as self._scope:
            async with trio.open_nursery() as nursery:
                server = await nursery.start(trio_websocket.serve_websocket, self._handle,
                                             "127.0.0.1", 0, None)
                self.port = server.port
                self._started.set()

    async def _handle(self, request: trio_websocket.WebSocketRequest) -> None:
        client = await request.accept()
        deposits: set[int] = set()
        try:
            async with trio_websocket.open_websocket(
                    "127.0.0.1", self.relay_port, "/", use_ssl=False) as relay, \
                    trio.open_nursery() as nursery:

                async def upstream() -> None:
                    while True:
                        data = await client.get_message()
                        with contextlib.suppress(ProtocolError):
                            frame = decode_client_frame(data)  # type: ignore[arg-type]
                            if isinstance(frame, frames.Deposit):
                                deposits.add(frame.req)
                        await relay.send_message(data)

                nursery.start_soon(upstream)
                while True:
                    data = await relay.get_message()
                    with contextlib.suppress(ProtocolError):
                        answer = decode_relay_frame(data)  # type: ignore[arg-type]
                        if (isinstance(answer, frames.DepositResult) and answer.req in deposits
                                and self.lost < self.lose):
                            self.lost += 1
                            await client.aclose()
                            nursery.cancel_scope.cancel()
                            return
                    await client.send_message(data)
        except* (trio_websocket.ConnectionClosed, trio.BrokenResourceError, OSError):
            pass   # either side went away: so does the other


def test_accept_whose_handshake_answer_was_lost_keeps_the_contact(
        relay: RelayProcess, users: Any) -> None:
    """Alice's relay stores Bob's handshake, but its answer never reaches Bob:
    `accept` retries the same handshake on a new connection, the relay answers
    it as stored (the invite's one-shot capability is used by it), so accept
    exits 0 and both keep the contact; Alice gets the handshake once."""
    alice, bob = users("alice", "bob")
    with AnswerLosingProxy(relay.port) as proxy:
        # Alice's relay address (in her invites) is the proxy's.
        alice.run("init", "--name", "alice", "--relay",
                  relay.url.replace(f":{relay.port}/", f":{proxy.port}/"))
        bob.init(relay)
        link = alice.run("invite", "--name", "bob").stdout.strip()
        accepted = bob.run("accept", link, "--name", "alice", check=False)
        assert proxy.lost == 1   # the first deposit's answer was lost
        assert accepted.returncode == 0, accepted.stderr
        assert [c["name"] for c in bob.json("contacts", "--offline")] == ["alice"]
        events = alice.events()
        assert not [e for e in events if e["type"] == "notice" and "second time" in str(e)]
        assert [c["name"] for c in alice.json("contacts", "--offline")] == ["bob"]
        assert bob.texts() == []          # alice's answer: bob gets his own capability
        bob.run("send", "alice", "made it")
        assert alice.texts() == ["made it"]
        alice.run("send", "bob", "both of us")
        assert bob.texts() == ["both of us"]
