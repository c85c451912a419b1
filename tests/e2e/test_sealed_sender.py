"""Sealed sender end to end: on one real relay, which refuses deposits and
presence queries on logged-in connections (``anonymous_only``), two users still
chat both ways, get receipts, see each other's presence, and talk in a group."""

from __future__ import annotations

import subprocess

import pytest

from tests.e2e.conftest import CHATCLI, Pair, _env, next_message

pytestmark = pytest.mark.slow


def test_chat_receipts_presence_and_group_on_one_relay(pair: Pair) -> None:
    _relay, alice, bob = pair

    assert alice.json("send", "bob", "hello bob")["stored"] is True
    assert bob.texts("--read-receipts") == ["hello bob"]  # bob's read receipt goes out here
    bob.run("send", "alice", "hi alice")
    assert alice.texts() == ["hi alice"]         # alice also takes in bob's receipt
    first = alice.lines("messages", "bob")[0]
    assert (first["direction"], first["state"]) == ("out", "read")

    # Presence: bob is online while his `receive --wait` holds his owner connection.
    env = _env({"CHATCLI_HOME": str(bob.home), "CHATCLI_PASSPHRASE": bob.passphrase})
    proc = subprocess.Popen([CHATCLI, "receive", "--json", "--wait", "30"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        alice.run("send", "bob", "are you there?")
        assert next_message(proc.stdout)["text"] == "are you there?"
        listed = alice.json("contacts")[0]
        assert listed["name"] == "bob" and listed["online"] is True
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    listed = alice.json("contacts")[0]
    assert listed["online"] is False and isinstance(listed["last_seen"], int)

    # A group of the two: fan-out deposits and the group handshake.
    alice.run("group", "create", "pair", "--member", "bob")
    for user in (bob, alice, bob, alice):
        user.receive()
    bob.run("send", "pair", "in the group")
    got = [(m["group"], m["from"], m["text"]) for m in alice.receive()
           if m.get("type", "message") == "message" and m.get("group")]
    assert got == [("pair", "bob", "in the group")]
