"""Groups without their creator, with admins and a profile: real relay
processes and the real `chatcli` (issue 15)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import RelayProcess, User, connect
from tests.e2e.test_groups import group_texts

pytestmark = pytest.mark.slow

PNG = b"\x89PNG\r\n\x1a\n" + bytes(100)


def roles(user: User, group: str = "team") -> dict[str, str]:
    return {m["fingerprint"]: m["role"] for m in user.json("group", "members", group)}


def test_a_new_member_joins_and_sends_while_the_creators_relay_is_down(
        tmp_path: Path, users: Any) -> None:
    """alice (the creator) on relay one; bob and carol on relay two. alice
    invites carol, then her relay goes down: carol receives the invitation and
    sends at once (the first-user story of issue 15), bob reads her and she
    reads bob; alice gets it all once her relay is back."""
    one = RelayProcess(tmp_path / "one.db").start()
    two = RelayProcess(tmp_path / "two.db").start()
    try:
        alice, bob, carol = users("alice", "bob", "carol")
        alice.init(one)
        bob.init(two)
        carol.init(two)
        connect(alice, bob)
        connect(alice, carol)
        bob.receive()
        carol.receive()
        alice.run("group", "create", "team", "--member", "bob")
        bob.receive()
        alice.receive()
        alice.run("group", "add", "team", "carol")
        one.stop()
        # carol: receive, then send, as a new user would; nobody else acts first.
        events = carol.events()
        assert any("You are now a member of the group team" in e.get("text", "")
                   for e in events), events
        sent = carol.run("send", "team", "hi, carol here", check=False)
        assert "not a member" not in sent.stderr
        # alice's relay is down: her copy stays queued (exit 3), bob's is stored.
        assert sent.returncode == 3, sent.stderr
        assert group_texts(bob) == [("team", "carol", "hi, carol here")]
        bob.run("send", "team", "welcome, carol", check=False)
        assert group_texts(carol) == [("team", "bob", "welcome, carol")]
        assert roles(bob) == roles(carol)
        one.start_again()
        carol.receive()   # retries what stayed queued for alice
        bob.receive()
        assert sorted(t for *_, t in group_texts(alice)) == ["hi, carol here",
                                                             "welcome, carol"]
        assert roles(alice) == roles(bob)
    finally:
        one.stop()
        two.stop()


def test_two_admins_acting_at_once_converge(tmp_path: Path, users: Any) -> None:
    """alice makes bob an admin; then, at the same moment, alice takes the role
    back while bob makes carol an admin: alice is more senior, so the demotion
    comes first and bob's promotion is refused, on every member alike. The
    profile an admin sets reaches everyone."""
    relay = RelayProcess(tmp_path / "relay.db").start()
    try:
        alice, bob, carol = users("alice", "bob", "carol")
        for user in (alice, bob, carol):
            user.init(relay)
        connect(alice, bob)
        connect(alice, carol)
        bob.receive()
        carol.receive()
        alice.run("group", "create", "team", "--member", "bob", "--member", "carol")
        bob.receive()
        carol.receive()
        alice.receive()
        alice.run("group", "admin", "team", "bob")
        bob.receive()
        carol.receive()
        assert bob.json("group", "info", "team")["is_admin"] is True
        with ThreadPoolExecutor(2) as pool:
            demote = pool.submit(alice.run, "group", "admin", "team", "bob", "--remove")
            promote = pool.submit(bob.run, "group", "admin", "team", "carol")
            demote.result()
            promote.result()
        for _ in range(2):
            for user in (alice, bob, carol):
                user.receive()
        views = [roles(user) for user in (alice, bob, carol)]
        assert views[0] == views[1] == views[2]
        assert sorted(views[0].values()) == ["creator", "member", "member"]
        image = tmp_path / "team.png"
        image.write_bytes(PNG)
        alice.run("group", "set", "team", "--name", "Climbers", "--description",
                  "Saturdays at ten", "--avatar", str(image))
        refused = bob.run("group", "set", "team", "--name", "mine", check=False)
        assert refused.returncode == 2 and "Only the admins of team" in refused.stderr
        carol.receive()
        info = carol.json("group", "info", "team", "--avatar-out", str(tmp_path / "got.png"))
        assert (info["title"], info["description"], info["avatar_bytes"]) == (
            "Climbers", "Saturdays at ten", len(PNG))
        assert (tmp_path / "got.png").read_bytes() == PNG
        shown = carol.run("group", "info", "team").stdout
        assert shown.startswith("Climbers  (here: team)\nSaturdays at ten\n")
    finally:
        relay.stop()


def test_the_last_admin_leaves_with_a_successor(tmp_path: Path, users: Any) -> None:
    relay = RelayProcess(tmp_path / "relay.db").start()
    try:
        alice, bob, carol = users("alice", "bob", "carol")
        for user in (alice, bob, carol):
            user.init(relay)
        connect(alice, bob)
        connect(alice, carol)
        bob.receive()
        carol.receive()
        alice.run("group", "create", "team", "--member", "bob", "--member", "carol")
        bob.receive()
        carol.receive()
        refused = alice.run("group", "leave", "team", "--successor", "carol", check=False)
        assert refused.returncode == 2 and "has not joined team yet" in refused.stderr
        alice.receive()   # carol's and bob's joining
        left = alice.run("group", "leave", "team", "--successor", "carol")
        assert "carol is an admin now" in left.stderr
        bob.receive()
        carol.receive()
        for user in (bob, carol):
            assert sorted(roles(user).values()) == ["admin", "member"]
        carol_fp = next(m["fingerprint"] for m in carol.json("group", "members", "team")
                        if m["me"])
        assert roles(bob)[carol_fp] == "admin"
        # The new admin removes bob; bob is told.
        carol.run("group", "remove", "team", "bob")
        events = bob.events()
        assert any("You were removed from the group team" in e.get("text", "")
                   for e in events), events
    finally:
        relay.stop()
