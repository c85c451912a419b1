"""Key changes need proof, and invite capabilities do not outlive the first
exchange (security review, findings 3 and 4), with real relays and `chatcli`."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import Pair, RelayProcess, User

pytestmark = pytest.mark.slow


def test_verify_reject_refuses_a_changed_key(pair: Pair) -> None:
    relay, alice, bob = pair
    alice.run("verify", "bob", "--confirm")
    before = alice.json("verify", "bob")["safety_number"]
    # Someone with a new key accepts an invite alice labelled "bob".
    impostor = User("bob", bob.home.parent / "bob-impostor")
    impostor.init(relay)
    link = alice.run("invite", "--name", "bob").stdout.strip()
    impostor.run("accept", link, "--name", "alice")
    assert "changed" in alice.run("receive").stderr
    assert alice.run("send", "bob", "hm?", check=False).returncode == 4
    refused = alice.json("verify", "bob", "--reject")
    assert refused["key_changed"] is False and refused["verified"] is True
    assert refused["safety_number"] == before
    # The old bob is back, and the refused key can no longer deposit.
    alice.run("send", "bob", "that was not you")
    assert bob.texts() == ["that was not you"]
    blocked = impostor.run("send", "alice", "let me in", check=False)
    assert blocked.returncode == 3 and "refused" in blocked.stderr
    assert [c["name"] for c in alice.json("contacts", "--offline")] == ["bob"]
    nothing = alice.run("verify", "bob", "--reject", check=False)
    assert nothing.returncode == 2 and "nothing to reject" in nothing.stderr


def test_invite_capability_retired_and_used_invite_fails_loudly(
        relay: RelayProcess, users: Any) -> None:
    alice, bob, carol = users("alice", "bob", "carol")
    for user in (alice, bob, carol):
        user.init(relay)
    link = alice.run("invite", "--name", "bob").stdout.strip()
    bob.run("accept", link, "--name", "alice")
    early = bob.run("send", "alice", "early", check=False)  # the invite's capability is used
    assert early.returncode == 3 and "not answered your acceptance" in early.stderr
    assert alice.texts() == []                # bob's handshake; alice answers
    assert bob.texts() == []                  # alice's answer: bob switches, "early" goes
    bob.run("send", "alice", "switched")
    assert alice.texts() == ["early", "switched"]  # bob's switch arrives: the invite is retired
    # The invite's capability is revoked on the relay: a second acceptor fails loudly.
    late = carol.run("accept", link, "--name", "alice", check=False)
    assert late.returncode == 3
    assert "already used or revoked; ask for a new one" in late.stderr
    assert late.stderr.count("\n") == 1 and "Traceback" not in late.stderr
    assert carol.json("contacts", "--offline") == []
    # The contact keeps chatting both ways.
    alice.run("send", "bob", "still here")
    assert bob.texts() == ["still here"]
    bob.run("send", "alice", "me too")
    assert alice.texts() == ["me too"]


def test_key_change_signed_by_the_old_key_is_accepted(pair: Pair) -> None:
    relay, alice, bob = pair
    old_keys = bob.home.parent / "bob-old.chatkey"
    bob.run("keys", "export", str(old_keys))
    # Bob moves to a new identity and proves it with his old key.
    new_bob = User("bob", bob.home.parent / "bob-new")
    new_bob.init(relay)
    link = alice.run("invite").stdout.strip()
    new_bob.run("accept", link, "--name", "alice", "--previous-keys", str(old_keys))
    notice = alice.run("receive")
    assert "signed the change" in notice.stderr
    assert [c["name"] for c in alice.json("contacts", "--offline")] == ["bob"]
    assert alice.json("verify", "bob")["safety_number"] == \
        new_bob.json("verify", "alice")["safety_number"]
    alice.run("send", "bob", "nice new key")      # no exit 4: nothing to confirm
    assert new_bob.texts() == ["nice new key"]
