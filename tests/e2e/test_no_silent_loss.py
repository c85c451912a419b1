"""Failures that used to look like something else, with real relays and the
real `chatcli` command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.e2e.conftest import RelayProcess, connect


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
