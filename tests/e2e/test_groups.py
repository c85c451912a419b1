"""Group chats end to end: real relay processes and the real `chatcli`.

alice knows bob and carol; bob and carol are not each other's contacts.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.e2e.conftest import PASSPHRASE, RelayProcess, Snapshot, User, connect, own_relay

pytestmark = pytest.mark.slow


def group_texts(user: User) -> list[tuple[str, str, str]]:
    return [(m["group"], m["from"], m["text"]) for m in user.receive()
            if m.get("type", "message") == "message" and m.get("group")]


def make_group(alice: User, bob: User, carol: User, name: str = "team") -> None:
    alice.run("group", "create", name, "--member", "bob", "--member", "carol")
    bob.receive()            # joins: answers the invitation
    carol.receive()
    alice.receive()          # orders the joins, tells every member
    bob.receive()            # learns the member list, sends its group key
    carol.receive()
    alice.receive()          # collects the group keys
    for user in (alice, bob, carol):
        names = {m["name"] for m in user.json("group", "members", name)}
        assert names == {"alice", "bob", "carol"}, user.name


@pytest.fixture(scope="module")
def saved_trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Snapshot, Snapshot]]:
    """alice, bob and carol on a relay of their own, saved twice: once
    connected (alice knows bob and carol), once more with the group team made."""
    root = tmp_path_factory.mktemp("trio")
    relay = own_relay(root)
    try:
        alice, bob, carol = (User(name, root / "build" / name)
                             for name in ("alice", "bob", "carol"))
        for user in (alice, bob, carol):
            user.init(relay)
        connect(alice, bob)
        connect(alice, carol)
        bob.receive()
        carol.receive()
        connected = Snapshot(relay, [alice, bob, carol], root / "connected")
        make_group(alice, bob, carol)
        yield connected, Snapshot(relay, [alice, bob, carol], root / "team")
    finally:
        relay.stop()


@pytest.fixture
def trio_users(saved_trio: tuple[Snapshot, Snapshot], tmp_path: Path) -> tuple[User, User, User]:
    """alice, bob and carol, connected: alice knows bob and carol."""
    alice, bob, carol = saved_trio[0].restore(tmp_path)
    return alice, bob, carol


@pytest.fixture
def team(saved_trio: tuple[Snapshot, Snapshot], tmp_path: Path) -> tuple[User, User, User]:
    """alice, bob and carol as `make_group` leaves them, in the group team."""
    alice, bob, carol = saved_trio[1].restore(tmp_path)
    return alice, bob, carol


def test_three_members_not_all_contacts_all_directions(
        trio_users: tuple[User, User, User]) -> None:
    alice, bob, carol = trio_users
    make_group(alice, bob, carol)
    members = {m["name"]: m for m in bob.json("group", "members", "team")}
    assert members["carol"]["contact"] is None and members["alice"]["contact"] == "alice"
    assert members["alice"]["admin"] and members["bob"]["me"]
    assert [g["name"] for g in carol.json("group", "list")] == ["team"]

    sent = alice.json("send", "team", "hello from alice")
    assert sent["stored"] is True
    bob.run("send", "team", "hello from bob")
    carol.run("send", "team", "-", input="hello from carol\n")
    assert group_texts(alice) == [("team", "bob", "hello from bob"),
                                  ("team", "carol", "hello from carol")]
    got_bob = group_texts(bob)
    assert got_bob == [("team", "alice", "hello from alice"), ("team", "carol", "hello from carol")]
    assert group_texts(carol) == [("team", "alice", "hello from alice"),
                                  ("team", "bob", "hello from bob")]
    # Non-contacts can compare safety numbers.
    number_bc = bob.json("group", "verify", "team", "carol")["safety_number"]
    number_cb = carol.json("group", "verify", "team", "bob")["safety_number"]
    assert number_bc == number_cb and len(number_bc) == 60
    # `chatcli verify` also knows members who are not contacts.
    via_verify = bob.json("verify", "carol", "--confirm")
    assert via_verify["safety_number"] == number_bc and via_verify["group"] == "team"
    assert {m["name"]: m["verified"] for m in bob.json("group", "members", "team")}["carol"]
    # The group name is unique among contacts and groups.
    clash = alice.run("group", "create", "bob", check=False)
    assert clash.returncode == 2 and "already used" in clash.stderr


def test_offline_member_catches_up_in_order(team: tuple[User, User, User]) -> None:
    alice, bob, carol = team
    for i in range(3):
        alice.run("send", "team", f"a{i}")
        bob.run("send", "team", f"b{i}")
    got = group_texts(carol)
    assert [t for _, who, t in got if who == "alice"] == ["a0", "a1", "a2"]
    assert [t for _, who, t in got if who == "bob"] == ["b0", "b1", "b2"]
    history = carol.lines("group", "messages", "team")
    assert len(history) == 6


def test_a_file_in_a_group_stays_in_its_history(team: tuple[User, User, User],
                                                tmp_path: Path) -> None:
    alice, _bob, carol = team
    plan = tmp_path / "plan.txt"
    plan.write_bytes(b"meet at the harbour")
    alice.run("send", "team", "--file", str(plan), "the plan")
    got = [m for m in carol.receive() if m.get("group") == "team"]
    saved = Path(got[-1]["attachment"]["path"])
    assert saved.read_bytes() == b"meet at the harbour"
    # The group's history names the file: with where it was saved on carol's
    # side (while it is there), with its name and size on alice's.
    mine = alice.lines("group", "messages", "team")[-1]
    assert (mine["text"], mine["attachment"]) == ("the plan", {"name": "plan.txt", "size": 19})
    theirs = carol.lines("group", "messages", "team")[-1]
    assert theirs["attachment"] == {"name": "plan.txt", "size": 19,
                                    "path": str(saved.resolve())}
    saved.unlink()
    assert "path" not in carol.lines("group", "messages", "team")[-1]["attachment"]


def test_remove_then_leave(team: tuple[User, User, User]) -> None:
    alice, bob, carol = team
    alice.run("send", "team", "before")
    assert [t for *_, t in group_texts(bob)] == ["before"]

    alice.run("group", "remove", "team", "bob")
    removed = bob.run("receive")
    assert "removed from the group team" in removed.stderr
    carol.receive()          # applies the removal, makes a new group key
    alice.receive()
    assert {m["name"] for m in carol.json("group", "members", "team")} == {"alice", "carol"}
    alice.run("send", "team", "after removal")
    carol.run("send", "team", "carol after removal")
    assert group_texts(bob) == []
    assert bob.run("send", "team", "let me in", check=False).returncode == 2
    assert [t for *_, t in group_texts(carol)] == ["after removal"]
    assert [t for *_, t in group_texts(alice)] == ["carol after removal"]

    carol.run("group", "leave", "team")
    alice.receive()
    assert {m["name"] for m in alice.json("group", "members", "team")} == {"alice"}
    assert [g["status"] for g in carol.json("group", "list")] == ["left"]


def test_forged_member_message_rejected(team: tuple[User, User, User],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    alice, bob, carol = team
    bob.run("send", "team", "genuine")
    assert group_texts(alice) == [("team", "bob", "genuine")]
    carol.receive()
    # Carol has bob's chain key, not his signing key: she writes "as bob".
    monkeypatch.setenv("CHATCLI_INSECURE_FAST_KDF", "1")  # carol's keystore, unlocked here
    trio.run(_forge_as, carol.home, "bob", "alice")
    events = alice.events()
    assert not [e for e in events if e["type"] == "message" and e["text"] == "forged"]
    notices = [e["text"] for e in events if e["type"] == "notice" and e["warning"]]
    assert [n for n in notices if "signature" in n], events


async def _forge_as(home: Path, victim: str, target: str) -> None:
    import msgspec

    from chatcli.client import messages as m
    from chatcli.client.groups import models as gdb
    from chatcli.client.groups import wire
    from chatcli.client.groups.service import GroupService
    from chatcli.client.home import Home
    from chatcli.client.service import ChatClient
    from chatcli.crypto.envelope import seal_envelope
    from chatcli.crypto.sender_keys import SenderKeyState
    from chatcli.protocol import frames

    client = ChatClient.unlock(Home(home), PASSPHRASE)
    try:
        service = GroupService(client)
        with client.store.read(), gdb.bound(client.store):
            group = gdb.Group.get(gdb.Group.name == "team")
            state = service._membership(group)
            by_name = {wire.decode_record(state.record(mid) or b"").name: mid
                       for mid in state.members()}
            victim_id = by_name[victim]
            row = gdb.GroupSenderKey.select().where(
                gdb.GroupSenderKey.sender == victim_id).order_by(
                gdb.GroupSenderKey.id.desc()).first()
            fields = msgspec.msgpack.decode(client.sealer.open(
                row.state_sealed, "group.receiver", gdb.sealed_row("group.receiver", row)))
            record = wire.decode_record(state.record(by_name[target]) or b"")
        forged = SenderKeyState(fields[1], fields[2], fields[3], os.urandom(32)).encrypt(
            wire.encode(wire.GroupText(id="00000000-0000-4000-8000-000000000001",
                                       sent_at=1, text="forged")))
        from chatcli.crypto.keys import IdentityPublicKey

        body = m.GroupBody(v=m.BODY_VERSION, message=wire.encode(wire.Cipher(message=forged)))
        payload = seal_envelope(record.box_key, IdentityPublicKey.from_bytes(victim_id),
                                m.encode(body))
        async with client.online():
            conn = await client.anonymous(record.relay_url)
            answer = await conn.request(lambda req: frames.Deposit(req=req, items=[
                frames.DepositItem(mailbox=record.mailbox, cap=record.cap, payload=payload)]))
            assert isinstance(answer, frames.DepositResult) and answer.errors == [None]
    finally:
        client.close()


def test_group_over_two_relays(tmp_path: Path, relay: RelayProcess, users: Any) -> None:
    other = RelayProcess(tmp_path / "relay2.db").start()
    try:
        alice, bob, carol = users("alice", "bob", "carol")
        alice.init(relay)
        bob.init(other)
        carol.init(other)
        connect(alice, bob)
        connect(alice, carol)
        bob.receive()
        carol.receive()
        make_group(alice, bob, carol)
        alice.run("send", "team", "from relay one")
        carol.run("send", "team", "from relay two")
        assert group_texts(bob) == [("team", "alice", "from relay one"),
                                    ("team", "carol", "from relay two")]
        assert group_texts(alice) == [("team", "carol", "from relay two")]
    finally:
        other.stop()


def test_group_send_benchmark_runs() -> None:
    """`python -m bench.group_send` with a tiny group, so that it cannot rot."""
    import json
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-m", "bench.group_send", "--members", "4",
                           "--messages", "2"], cwd=repo, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["members"] == 4 and report["received_by_all"] is True
    load = report["relay_load_per_message"]
    assert load["deposits"] == 3 and load["deposit_frames"] == 1
    assert report["relay_metrics_per_message"]["deposits"] == 3
    assert report["send_ms"]["median"] > 0


def test_group_chat_in_a_pty(tmp_path: Path, team: tuple[User, User, User]) -> None:
    from tests.e2e.test_chat_pty import expect, leave, spawn_chat

    alice, bob, carol = team
    carol.run("send", "team", "earlier from carol")
    with (tmp_path / "screens.log").open("w", encoding="utf-8") as log:
        chat = spawn_chat(bob, "team", log)
        try:
            expect(chat, "chat in group team")
            expect(chat, "]: earlier from carol")  # shown as ~carol [abcd 1234]: not a contact
            alice.run("send", "team", "live from alice")
            expect(chat, "alice: live from alice")
            chat.send("hello from the group chat\r")
            expect(chat, "me: hello from the group chat")
        finally:
            assert leave(chat) == 0
    assert ("team", "bob", "hello from the group chat") in group_texts(carol)


def test_message_in_flight_during_removal_is_shown_by_everyone(
        team: tuple[User, User, User]) -> None:
    """Bob sends before he hears of his removal; carol and alice applied the
    removal first, and both show bob's message all the same."""
    alice, bob, carol = team
    alice.run("group", "remove", "team", "bob")
    carol.receive()          # applies the removal before bob's message arrives
    assert {m["name"] for m in carol.json("group", "members", "team")} == {"alice", "carol"}
    bob.run("send", "team", "sent while still a member")
    for user in (carol, alice):
        assert group_texts(user) == [("team", "bob", "sent while still a member")], user.name
    removed = bob.run("receive")
    assert "removed from the group team" in removed.stderr
    assert bob.run("send", "team", "after removal", check=False).returncode == 2


def test_member_restored_from_backup_is_told_and_rejoins_by_itself(
        team: tuple[User, User, User], users: Any, tmp_path: Path) -> None:
    """Bob moves to a new machine with `keys export` / `keys import`: a group
    message sent on his lost keys is a notice naming its sender (marked: carol
    is not his contact) and the group, not silence; his client rejoins the group
    by itself and all three read each other again."""
    alice, bob, carol = team
    backup = tmp_path / "bob.chatkey"
    bob.run("keys", "export", str(backup))
    (moved,) = users("bob-new")
    moved.name = "bob"
    moved.run("keys", "import", str(backup))
    carol.run("send", "team", "carol to all")
    notices = " ".join(moved.run("receive").stderr.split())  # notices go to stderr
    carol_fp = next(m["fingerprint"] for m in carol.json("group", "members", "team")
                    if m["me"])
    marked = f"~carol [{' '.join(carol_fp.split()[:2])}]"
    assert f"A message from {marked} in team cannot be read yet" in notices, notices
    assert f"ask {marked} to send it again" in notices
    alice.receive()          # renews bob's record (his join went out with that receive)
    carol.receive()          # gives bob her key again
    moved.receive()          # active again; announces his new key
    alice.receive()
    carol.receive()
    moved.run("send", "team", "bob is back")
    carol.run("send", "team", "welcome back")
    assert [t for *_, t in group_texts(moved)] == ["welcome back"]
    assert [t for *_, t in group_texts(carol)] == ["bob is back"]
    assert [t for *_, t in group_texts(alice)] == ["bob is back", "welcome back"]


def test_creator_restored_from_backup_keeps_its_role_and_the_group(
        team: tuple[User, User, User], users: Any, tmp_path: Path) -> None:
    """Alice, the creator, moves with `keys export` / `keys import`: the group,
    its profile and her admin role come along; once her renewed record went
    round she adds a new member (dave, on a second relay) and sends, and bob,
    carol and dave read her; she reads them."""
    alice, bob, carol = team
    alice.run("group", "set", "team", "--name", "The Team")
    bob.receive()
    carol.receive()
    backup = tmp_path / "alice.chatkey"
    alice.run("keys", "export", str(backup))
    (moved, dave) = users("alice-new", "dave")
    moved.name = "alice"
    moved.run("keys", "import", str(backup))
    info = moved.json("group", "info", "team")
    assert info["is_admin"] is True and info["title"] == "The Team", info
    other = own_relay(tmp_path / "second")
    try:
        dave.init(other)
        connect(moved, dave)
        moved.receive()          # sends her renewed record to every member
        bob.receive()            # renew alice's record, give her their keys again
        carol.receive()
        moved.receive()
        moved.run("group", "add", "team", "dave")
        dave.receive()           # accepts: his record goes to every member
        for user in (moved, bob, carol, dave, moved, bob, carol, dave):
            user.receive()
        members = moved.json("group", "members", "team")
        assert len(members) == 4, members
        assert next(m["role"] for m in members if m["me"]) == "creator", members
        moved.run("send", "team", "alice on her new machine")
        for user in (bob, carol, dave):
            assert [t for *_, t in group_texts(user)] == ["alice on her new machine"], user.name
        bob.run("send", "team", "bob to the moved alice")
        assert [t for *_, t in group_texts(moved)] == ["bob to the moved alice"]
    finally:
        other.stop()
