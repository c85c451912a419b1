"""`chatcli search` end to end: real relay, real commands, direct mode and
through a daemon (whose index lives as long as it does)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Snapshot, User
from tests.e2e.test_daemon import DaemonProcess, no_passphrase

pytestmark = pytest.mark.slow


@pytest.fixture
def pair(saved_pair: Snapshot, tmp_path: Path) -> Iterator[tuple[User, User]]:
    alice, bob = saved_pair.restore(tmp_path)
    yield alice, bob


def test_search_direct_and_through_the_daemon(pair: tuple[User, User]) -> None:
    alice, bob = pair
    sent = alice.json("send", "bob", "Lunch at the Café tomorrow?")
    bob.run("send", "alice", "yes, LUNCH tomorrow works")
    bob.run("send", "alice", "unrelated words")
    alice.receive()

    hits = alice.lines("search", "lunch TOM")
    assert [(h["from"], h["conversation"], h["snippet"]) for h in hits] == [
        ("bob", "bob", "yes, LUNCH tomorrow works"),
        ("me", "bob", "Lunch at the Café tomorrow?")]
    assert hits[1]["id"] == sent["id"]
    assert [h["snippet"] for h in alice.lines("search", "café", "--contact", "bob",
                                              "--limit", "1")] == [
        "Lunch at the Café tomorrow?"]
    text = alice.run("search", "works").stdout.splitlines()
    assert len(text) == 1 and text[0].endswith(
        "bob · bob: yes, LUNCH tomorrow works  " + hits[0]["id"])
    none = alice.run("search", "dinner")
    assert none.stdout == "" and none.stderr.strip() == "No message matches."
    # Bad input: one line, documented exit code, nothing lost.
    unknown = alice.run("search", "lunch", "--contact", "carol", check=False)
    assert unknown.returncode == 2 and unknown.stderr.startswith("chatcli: error: No contact")
    empty = alice.run("search", "  ?! ", check=False)
    assert empty.returncode == 2 and "at least one word" in empty.stderr
    # The database holds no search table and no readable text.
    assert b"LUNCH" not in (alice.home / "chatcli.db").read_bytes()

    daemon = DaemonProcess(alice)
    try:
        through = no_passphrase(alice, "search", "lunch tom", "--json")
        assert [json.loads(line)["id"] for line in through.stdout.splitlines()] == [
            h["id"] for h in hits]
        # A message that arrives at the daemon (pushed by the relay) is found by
        # the next search of the same index.
        bob.run("send", "alice", "lunch moved to noon")
        deadline = time.monotonic() + 20
        while not (found := no_passphrase(alice, "search", "noon", "--json")).stdout:
            assert time.monotonic() < deadline, "the daemon did not index the message"
            time.sleep(0.1)
        assert json.loads(found.stdout)["snippet"] == "lunch moved to noon"
    finally:
        daemon.stop()
