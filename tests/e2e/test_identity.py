"""Invites, passphrases, key changes, backups, blocking and account deletion."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.e2e.conftest import Pair, RelayProcess, User

pytestmark = pytest.mark.slow


def test_invite_reuse_refused(relay: RelayProcess, users: Any) -> None:
    alice, bob, mallory = users("alice", "bob", "mallory")
    for user in (alice, bob, mallory):
        user.init(relay)
    link = alice.run("invite", "--name", "bob").stdout.strip()
    # Both accept before alice runs anything: the invite's capability is
    # one-shot on the relay, so the second acceptor is refused at once.
    bob.run("accept", link, "--name", "alice")
    late = mallory.run("accept", link, "--name", "alice", check=False)
    assert late.returncode == 3
    assert "already used or revoked; ask for a new one" in late.stderr
    assert late.stderr.count("\n") == 1 and "Traceback" not in late.stderr
    assert mallory.json("contacts", "--offline") == []
    # Bob's message waits for alice's answer (it brings his own capability).
    held = bob.run("send", "alice", "before your answer", check=False)
    assert held.returncode == 3 and "stays queued" in held.stderr
    alice.run("receive")
    assert [c["name"] for c in alice.json("contacts", "--offline")] == ["bob"]
    assert bob.texts() == []                     # alice's answer: the queue goes out
    assert alice.texts() == ["before your answer"]
    # The first contact works both ways.
    alice.run("send", "bob", "only you")
    assert bob.texts() == ["only you"]


def test_tampered_and_expired_invites(relay: RelayProcess, users: Any) -> None:
    alice, bob = users("alice", "bob")
    alice.init(relay)
    bob.init(relay)
    link = alice.run("invite").stdout.strip()
    middle = len(link) // 2
    tampered = link[:middle] + ("A" if link[middle] != "A" else "B") + link[middle + 1:]
    result = bob.run("accept", tampered, check=False)
    assert result.returncode == 1
    assert "not valid" in result.stderr and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    short = alice.run("invite", "--expires", "1s").stdout.strip()
    time.sleep(1.2)
    result = bob.run("accept", short, check=False)
    assert result.returncode == 1 and "expired" in result.stderr
    assert bob.json("contacts", "--offline") == []


def test_wrong_passphrase(relay: RelayProcess, users: Any) -> None:
    (alice,) = users("alice")
    alice.init(relay)
    result = alice.run("contacts", "--offline", check=False, env={"CHATCLI_PASSPHRASE": "nope"})
    assert result.returncode == 1
    assert result.stderr.startswith("chatcli: error:") and "passphrase" in result.stderr
    # A passphrase file works too.
    pw = alice.home / "pw"
    pw.write_text(alice.passphrase + "\n")
    ok = alice.run("contacts", "--offline", "--passphrase-file", str(pw), "--json",
                   env={"CHATCLI_PASSPHRASE": ""})
    assert ok.stdout.strip() == "[]"


def test_key_change_blocks_sending_until_confirmed(pair: Pair) -> None:
    relay, alice, bob = pair
    before = alice.json("verify", "bob")["safety_number"]
    # Bob loses his laptop and starts over with a new identity; Alice invites
    # "bob" again and the new key claims the existing contact.
    new_bob = User("bob", bob.home.parent / "bob-new")
    new_bob.init(relay)
    link = alice.run("invite", "--name", "bob").stdout.strip()
    new_bob.run("accept", link, "--name", "alice")
    warned = alice.run("receive")
    assert "changed" in warned.stderr
    refused = alice.run("send", "bob", "are you really bob?", check=False)
    assert refused.returncode == 4 and "verify bob" in refused.stderr
    assert alice.run("messages", "bob", check=False).returncode == 4
    shown = alice.json("verify", "bob")
    assert shown["key_changed"] is True and shown["safety_number"] != before
    assert shown["safety_number"] == new_bob.json("verify", "alice")["safety_number"]
    confirmed = alice.json("verify", "bob", "--confirm")
    assert confirmed["key_changed"] is False and confirmed["verified"] is True
    alice.run("send", "bob", "welcome back")
    assert new_bob.texts() == ["welcome back"]


def test_export_import_and_messaging_goes_on(pair: Pair) -> None:
    _relay, alice, bob = pair
    alice.run("send", "bob", "before the move")
    assert bob.texts() == ["before the move"]
    alice.run("verify", "bob", "--confirm")
    number = alice.json("verify", "bob")["safety_number"]
    backup = alice.home.parent / "alice.chatkey"
    alice.run("keys", "export", str(backup))
    assert backup.read_text().startswith("-----BEGIN CHATCLI KEY BACKUP-----")
    assert (backup.stat().st_mode & 0o777) == 0o600
    # A wrong passphrase or a damaged file is refused clearly.
    moved = User("alice", alice.home.parent / "alice-laptop2")
    bad = moved.run("keys", "import", str(backup), check=False, env={"CHATCLI_PASSPHRASE": "x"})
    assert bad.returncode == 1 and "passphrase" in bad.stderr
    restored = moved.json("keys", "import", str(backup))
    assert restored["contacts"] == ["bob"]
    contacts = moved.json("contacts", "--offline")
    assert contacts[0]["verified"] is True
    assert moved.json("verify", "bob")["safety_number"] == number
    # Messaging goes on in both directions without a new invite.
    moved.run("send", "bob", "from my new laptop")
    got = bob.events()
    assert [e for e in got if e["type"] == "message" and e["text"] == "from my new laptop"]
    assert [e for e in got if e["type"] == "notice" and "new session" in e["text"]], got
    bob.run("send", "alice", "welcome to the new laptop")
    assert moved.texts() == ["welcome to the new laptop"]
    assert bob.json("verify", "alice")["safety_number"] == number


def test_block_unblock_and_remove(pair: Pair) -> None:
    _relay, alice, bob = pair
    alice.run("block", "bob")
    refused = bob.run("send", "alice", "let me in", check=False)
    assert refused.returncode == 3 and "refused" in refused.stderr
    alice.run("unblock", "bob")
    bob.run("receive")
    bob.run("send", "alice", "thanks")
    assert alice.texts() == ["thanks"]
    alice.run("contact", "remove", "bob")
    assert alice.json("contacts", "--offline") == []
    assert bob.run("send", "alice", "hello?", check=False).returncode == 3


def test_account_deletion(pair: Pair) -> None:
    relay, alice, bob = pair
    bob.run("account", "delete", "--yes")
    assert not (bob.home / "identity.keystore").exists()
    assert not (bob.home / "chatcli.db").exists()
    gone = alice.run("send", "bob", "anyone there?", check=False)
    assert gone.returncode == 3
    assert bob.run("contacts", check=False).returncode == 2  # no identity any more
    bob.init(relay)  # the home can be used again
