"""Failures that used to look like something else, with real relays and the
real `chatcli` command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

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
