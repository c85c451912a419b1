"""Replies, reactions, edits and deletes for everyone through the real
`chatcli` and a real relay, and content from a newer client shown as
unsupported."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import Pair, _env

pytestmark = pytest.mark.slow


def blob_count(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM blob").fetchone()[0])


def test_reply_react_edit_delete(pair: Pair, tmp_path: Path) -> None:
    relay, alice, bob = pair
    photo = tmp_path / "photo.txt"
    photo.write_text("not really a photo")
    first = alice.json("send", "bob", "lunch at noon?\nor later", "--file", str(photo))["id"]
    assert blob_count(relay.db) == 1
    bob.receive()
    # Bob sees short ids in the text history and replies by one of them.
    text = bob.run("messages", "alice").stdout
    assert f"#{first[:8]} alice: lunch at noon?" in text
    reply = bob.json("send", "alice", "yes!", "--reply-to", first[:8])["id"]
    bob.run("react", "alice", first[:8], "👍")
    events = alice.events()
    message = next(e for e in events if e["type"] == "message")
    assert message["id"] == reply
    assert message["reply_to"] == {"id": first, "from": "me", "excerpt": "lunch at noon?"}
    assert [(e["id"], e["emoji"]) for e in events if e["type"] == "reaction"] == [
        (first, "👍")]
    history = {h["id"]: h for h in alice.lines("messages", "bob")}
    assert history[first]["reactions"] == [{"emoji": "👍", "from": "bob"}]
    shown = alice.run("messages", "bob").stdout
    assert "  > me: lunch at noon?" in shown and "👍 1 (bob)" in shown

    # Only the author edits: bob may not edit alice's message (exit 2, usage).
    refused = bob.run("edit", "alice", first[:8], "mine now", check=False)
    assert refused.returncode == 2 and "Only your own" in refused.stderr
    alice.run("edit", "bob", first[:8], "lunch at one?")
    edits = [e for e in bob.events() if e["type"] == "edit"]
    assert [(e["id"], e["text"]) for e in edits] == [(first, "lunch at one?")]
    assert f"#{first[:8]} alice: lunch at one? (edited)" in bob.run("messages", "alice").stdout

    # Delete for everyone: a tombstone on both sides, the blob gone from the relay.
    alice.run("delete", "bob", first[:8])
    assert blob_count(relay.db) == 0
    deletes = [e for e in bob.events() if e["type"] == "delete"]
    assert [e["id"] for e in deletes] == [first]
    for user, peer in ((alice, "bob"), (bob, "alice")):
        entry = {h["id"]: h for h in user.lines("messages", peer)}[first]
        assert (entry["text"], entry["deleted"], entry.get("attachment")) == (
            "message deleted", True, None)
    again = alice.run("edit", "bob", first[:8], "too late", check=False)
    assert again.returncode == 2 and "deleted" in again.stderr
    # The reply still shows its quote.
    entry = {h["id"]: h for h in alice.lines("messages", "bob")}[reply]
    assert entry["reply_to"]["excerpt"] == "lunch at noon?"


def test_reactions_are_changed_and_removed(pair: Pair) -> None:
    _relay, alice, bob = pair
    first = alice.json("send", "bob", "hello")["id"]
    bob.receive()
    bob.run("react", "alice", first, "👍")
    bob.run("react", "alice", first, "🎉")
    alice.events()
    assert {h["id"]: h for h in alice.lines("messages", "bob")}[first]["reactions"] == [
        {"emoji": "🎉", "from": "bob"}]
    bob.run("react", "alice", first, "--remove")
    removed = [e for e in alice.events() if e["type"] == "reaction"]
    assert [e["emoji"] for e in removed] == [""]
    assert {h["id"]: h for h in alice.lines("messages", "bob")}[first]["reactions"] == []
    unknown = bob.run("react", "alice", "ffffffff", "👍", check=False)
    assert unknown.returncode == 2 and "No message" in unknown.stderr


def test_content_from_a_newer_client_is_shown_as_unsupported(pair: Pair) -> None:
    _relay, alice, bob = pair
    subprocess.run([sys.executable, "-m", "tests.e2e.newer_client", "alice"], check=True,
                   env=_env({"CHATCLI_HOME": str(bob.home),
                             "CHATCLI_PASSPHRASE": bob.passphrase}), timeout=60)
    (event,) = alice.receive()
    assert (event["from"], event["text"], event["unsupported"]) == (
        "bob", "unsupported message, update chatcli", True)
    (entry,) = alice.lines("messages", "bob")
    assert entry["unsupported"] is True
    assert "bob: unsupported message, update chatcli" in alice.run("messages", "bob").stdout
