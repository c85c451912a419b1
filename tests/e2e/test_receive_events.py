"""`chatcli receive --json` prints every event as a JSON object on stdout:
messages, receipts, notices and key changes (issue 11). Read receipts go out
only with --read-receipts; the old --no-read-receipts is accepted."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.conftest import RelayProcess, User

pytestmark = pytest.mark.slow


def _json_lines(result: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_receive_json_events(relay: RelayProcess, users: Any) -> None:
    alice, bob = users("alice", "bob")
    alice.init(relay)
    bob.init(relay)
    link = alice.run("invite", "--name", "bob").stdout.strip()
    bob.run("accept", link, "--name", "alice")
    # The new contact is a notice object on stdout, and nothing goes to stderr.
    joined = alice.run("receive", "--json")
    notices = [e for e in _json_lines(joined) if e["type"] == "notice"]
    assert [(n["contact"], n["warning"]) for n in notices] == [("bob", False)]
    assert "bob" in notices[0]["text"] and joined.stderr == ""

    # A script's receive sends a delivery receipt, not a read receipt.
    sent = alice.json("send", "bob", "one")
    assert [m["text"] for m in bob.receive()] == ["one"]
    receipts = [e for e in alice.events() if e["type"] == "receipt"]
    assert receipts == [{"type": "receipt", "from": "bob", "kind": "delivered",
                         "ids": [sent["id"]]}]
    assert alice.lines("messages", "bob")[-1]["state"] == "delivered"
    assert bob.lines("messages", "alice")[-1]["state"] == "received"
    # The old flag still works (and changes nothing); --read-receipts says "read".
    second = alice.json("send", "bob", "two")
    assert [m["text"] for m in bob.receive("--no-read-receipts")] == ["two"]
    third = alice.json("send", "bob", "three")
    assert [m["text"] for m in bob.receive("--read-receipts")] == ["three"]
    kinds = {(e["kind"], tuple(e["ids"])) for e in alice.events() if e["type"] == "receipt"}
    assert kinds == {("delivered", (second["id"],)), ("read", (third["id"],))}

    # A key change is a key_change object; in text mode it stays a line on stderr.
    impostor = User("bob", bob.home.parent / "bob-impostor")
    new_key = impostor.init(relay)["fingerprint"]
    link = alice.run("invite", "--name", "bob").stdout.strip()
    impostor.run("accept", link, "--name", "alice")
    changed = alice.run("receive", "--json")
    events = _json_lines(changed)
    changes = [e for e in events if e["type"] == "key_change"]
    assert len(changes) == 1, events
    assert (changes[0]["contact"], changes[0]["pending"]) == ("bob", True)
    assert changes[0]["fingerprint"] == new_key
    assert "CHANGED" not in changed.stderr and "changed" in changes[0]["text"]
    assert alice.run("send", "bob", "hm?", check=False).returncode == 4
