"""Groups in process: three clients on the in-memory relay (tests/client/fakerelay.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatcli.client import messages as m
from chatcli.client.groups import models as gdb
from chatcli.client.groups import wire
from chatcli.client.groups.service import GroupService
from chatcli.client.service import ChatClient, MessageEvent, NoticeEvent
from chatcli.crypto.envelope import open_envelope, seal_envelope
from chatcli.crypto.sender_keys import SenderKeyReceiver, SenderKeyState
from chatcli.errors import UsageError
from chatcli.protocol import frames
from tests.client.conftest import Trio, drain, make_client, pair
from tests.client.fakerelay import FakeRelay


async def texts(client: ChatClient) -> list[tuple[str | None, str, str]]:
    return [(e.group, e.contact, e.text) for e in await drain(client)
            if isinstance(e, MessageEvent)]


async def settle(*clients: ChatClient, rounds: int = 3) -> None:
    for _ in range(rounds):
        for client in clients:
            await drain(client)


async def send(client: ChatClient, group: str, text: str) -> str:
    async with client.online():
        report = await GroupService(client).send_text(group, text)
    return report.id


async def make_group(alice: ChatClient, bob: ChatClient, carol: ChatClient) -> None:
    GroupService(alice).create("team", ["bob", "carol"])
    async with alice.online():
        await alice.flush_outbox()
    await settle(bob, carol, alice, bob, carol, rounds=1)


async def test_three_members_not_all_contacts(trio_of: Trio) -> None:
    alice, bob, carol = trio_of
    await make_group(alice, bob, carol)
    for client in (alice, bob, carol):
        info = {i.name: i for i in GroupService(client).members("team")}
        assert set(info) == {"alice", "bob", "carol"}
        assert info["alice"].admin
    bob_view = {i.name: i for i in GroupService(bob).members("team")}
    assert bob_view["carol"].contact is None and bob_view["alice"].contact == "alice"

    await send(alice, "team", "hello from alice")
    await send(bob, "team", "hello from bob")
    await send(carol, "team", "hello from carol")
    assert await texts(alice) == [("team", "bob", "hello from bob"),
                                  ("team", "carol", "hello from carol")]
    assert await texts(bob) == [("team", "alice", "hello from alice"),
                                ("team", "carol", "hello from carol")]
    assert await texts(carol) == [("team", "alice", "hello from alice"),
                                  ("team", "bob", "hello from bob")]
    history = GroupService(bob).history("team")
    assert [(h["from"], h["text"]) for h in history] == [
        ("alice", "hello from alice"), ("me", "hello from bob"), ("carol", "hello from carol")]


async def test_name_clash_gets_a_distinct_local_name(trio_of: Trio) -> None:
    alice, bob, _carol = trio_of
    GroupService(bob).create("team", [])
    with pytest.raises(UsageError, match="already used"):
        GroupService(bob).create("alice", [])
    GroupService(alice).create("team", ["bob"])
    async with alice.online():
        await alice.flush_outbox()
    notices = [e.text for e in await drain(bob) if isinstance(e, NoticeEvent)]
    assert any("'team-2'" in n for n in notices)
    await settle(alice, bob)
    assert {g["name"]: g["creator_name"] for g in GroupService(bob).groups()} == {
        "team": "team", "team-2": "team"}


async def test_offline_member_catches_up_in_order(trio_of: Trio) -> None:
    alice, bob, carol = trio_of
    await make_group(alice, bob, carol)
    for i in range(3):
        await send(alice, "team", f"a{i}")
        await send(bob, "team", f"b{i}")
    got = await texts(carol)
    assert [t for _, who, t in got if who == "alice"] == ["a0", "a1", "a2"]
    assert [t for _, who, t in got if who == "bob"] == ["b0", "b1", "b2"]


async def test_message_before_its_sender_key_is_buffered(trio_of: Trio, relay: FakeRelay
                                                          ) -> None:
    alice, bob, carol = trio_of
    await make_group(alice, bob, carol)
    # Bob rolls its key by hand, then sends: carol sees the message first (we
    # reorder her mailbox), then the distribution.
    svc = GroupService(bob)
    with bob.store.write(), gdb.bound(bob.store):
        group = gdb.Group.get(gdb.Group.name == "team")
        group.sender_sealed = None
        group.save()
    await send(bob, "team", "after a new key")
    box = next(b for b in relay.mailboxes.values() if _owner(b, carol))
    items = sorted(box.queue.items())
    assert len(items) == 2  # bob's new sender key, then his message
    box.queue = dict(zip([k for k, _ in items], [p for _, p in reversed(items)], strict=True))
    got = await texts(carol)
    assert got == [("team", "bob", "after a new key")]
    assert {i.name for i in svc.members("team")} == {"alice", "bob", "carol"}


def _owner(box: object, client: ChatClient) -> bool:
    return getattr(box, "auth_key", None) == client.mailbox_key.auth_public


async def test_remove_rolls_keys_and_removed_member_cannot_decrypt(
        trio_of: Trio, relay: FakeRelay) -> None:
    alice, bob, carol = trio_of
    await make_group(alice, bob, carol)
    await send(alice, "team", "before")
    await send(carol, "team", "carol before")
    assert [t for *_, t in await texts(bob)] == ["before", "carol before"]
    await drain(carol)

    async with alice.online():
        GroupService(alice).remove("team", "bob")
        await alice.flush_outbox()
    notices = [e.text for e in await drain(bob) if isinstance(e, NoticeEvent)]
    assert any("removed from the group team" in n for n in notices)
    await settle(carol, alice)
    assert {i.name for i in GroupService(carol).members("team")} == {"alice", "carol"}

    await send(alice, "team", "secret from alice")
    await send(carol, "team", "secret from carol")
    # Bob's mailbox gets nothing new...
    assert await texts(bob) == []
    # ...and even given the very ciphertexts, his client cannot read them.
    carol_box = next(b for b in relay.mailboxes.values() if _owner(b, carol))
    alice_box = next(b for b in relay.mailboxes.values() if _owner(b, alice))
    stolen = []
    for box, owner in ((carol_box, carol), (alice_box, alice)):
        for payload, stamp in box.queue.values():
            opened = open_envelope(owner.mailbox_key, payload)
            body = m.decode_body(opened.body)
            assert isinstance(body, m.GroupBody)
            layer = wire.decode_layer(body.message)
            if isinstance(layer, wire.Cipher):
                stolen.append(frames.Delivered(
                    id=10_000 + len(stolen), received_at=stamp,
                    payload=seal_envelope(bob.mailbox_key.box_public, opened.sender,
                                          m.encode(body))))
    assert len(stolen) == 2
    events = bob.process_deliveries(stolen)
    assert not [e for e in events if isinstance(e, MessageEvent)]
    assert "secret" not in repr(events)
    assert [h["text"] for h in GroupService(bob).history("team")] == ["before", "carol before"]
    # Carol and alice read them.
    assert [t for *_, t in await texts(carol)] == ["secret from alice"]
    assert [t for *_, t in await texts(alice)] == ["secret from carol"]


async def test_leave(trio_of: Trio) -> None:
    alice, bob, carol = trio_of
    await make_group(alice, bob, carol)
    async with carol.online():
        GroupService(carol).leave("team")
        await carol.flush_outbox()
    await settle(alice, bob)
    for client in (alice, bob):
        assert {i.name for i in GroupService(client).members("team")} == {"alice", "bob"}
    assert [g["status"] for g in GroupService(carol).groups()] == ["left"]
    with pytest.raises(UsageError):
        GroupService(carol).enqueue_text("team", "still here?")
    await send(bob, "team", "after carol left")
    assert await texts(carol) == []
    assert [t for *_, t in await texts(alice)] == ["after carol left"]


async def test_forged_member_message_is_rejected(trio_of: Trio, relay: FakeRelay) -> None:
    alice, bob, carol = trio_of
    await make_group(alice, bob, carol)
    await send(bob, "team", "genuine")
    await drain(alice)
    # Carol holds bob's chain key (as every member does) but not his signing key.
    with carol.store.read(), gdb.bound(carol.store):
        row = gdb.GroupSenderKey.get(gdb.GroupSenderKey.sender == bob.identity.public.raw)
        receiver = SenderKeyReceiver.from_bytes(carol.sealer.open(
            row.state_sealed, "group.receiver", gdb.sealed_row("group.receiver", row)))
        record_cap = wire.decode_record(
            GroupService(carol)._membership(row.group).record(alice.identity.public.raw)
            or b"")
    await drain(carol)
    raw = SenderKeyReceiver.to_bytes(receiver)
    import msgspec

    fields = msgspec.msgpack.decode(raw)
    forged_state = SenderKeyState(fields[1], fields[2], fields[3], bytes(32))
    forged = forged_state.encrypt(wire.encode(wire.GroupText(
        id="00000000-0000-4000-8000-000000000000", sent_at=1, text="forged")))
    body = m.GroupBody(v=1, message=wire.encode(wire.Cipher(message=forged)))
    payload = seal_envelope(record_cap.box_key, bob.identity.public, m.encode(body))
    events = alice.process_deliveries([frames.Delivered(id=99_999, received_at=1,
                                                        payload=payload)])
    assert not [e for e in events if isinstance(e, MessageEvent)]
    assert any(isinstance(e, NoticeEvent) and "signature" in e.text for e in events)


async def test_two_relays(tmp_path: Path, relay: FakeRelay, relay2: FakeRelay) -> None:
    alice = await make_client(tmp_path, "alice", relay)
    bob = await make_client(tmp_path, "bob", relay2)
    carol = await make_client(tmp_path, "carol", relay2)
    await pair(alice, bob, "bob", "alice")
    await pair(alice, carol, "carol", "alice")
    await make_group(alice, bob, carol)
    before = relay2.deposits
    await send(alice, "team", "across")
    assert relay2.deposits == before + 2
    await send(carol, "team", "back")
    assert await texts(bob) == [("team", "alice", "across"), ("team", "carol", "back")]
    assert await texts(alice) == [("team", "carol", "back")]


async def test_hundred_members_fan_out(trio_of: Trio, relay: FakeRelay) -> None:
    """A 100-member group: alice, bob, carol and 97 members made directly (keys and
    mailboxes on the relay): one send encrypts once and makes 99 deposits."""
    import hashlib
    import os

    from chatcli.client import sessions
    from chatcli.crypto.keys import DHKeyPair, IdentityKeyPair, MailboxKeyPair
    from tests.client.fakerelay import Mailbox

    alice, bob, carol = trio_of
    await make_group(alice, bob, carol)
    svc = GroupService(alice)
    extra: list[tuple[MailboxKeyPair, bytes]] = []
    with alice.store.write(), gdb.bound(alice.store):
        group = gdb.Group.get(gdb.Group.name == "team")
        for i in range(97):
            identity, box, prekey = (IdentityKeyPair.generate(), MailboxKeyPair.generate(),
                                     DHKeyPair.generate())
            cap, mailbox = os.urandom(32), os.urandom(16)
            relay.mailboxes[mailbox] = Mailbox(box.auth_public,
                                               caps={hashlib.sha256(cap).digest()})
            extra.append((box, mailbox))
            svc._add_op(group, wire.AddOp(seq=svc._membership(group).next_seq,
                                          record=wire.MemberRecord(
                identity=identity.public.raw, name=f"m{i:02d}", relay_url=relay.url,
                mailbox=mailbox, box_key=box.box_public, cap=cap,
                restore_prekey=prekey.public,
                restore_prekey_signature=sessions.sign_restore_prekey(identity,
                                                                      prekey.public))))
    assert len(svc.members("team")) == 100
    async with alice.online():
        await GroupService(alice).deliver()  # the member list to every member
    before = relay.deposits
    await send(alice, "team", "to a hundred")
    # alice's sender key to the 97 new members first, then one copy per other member.
    assert relay.deposits - before == 97 + 99
    ciphertexts = []
    for box, mailbox in extra:
        for payload, _ in relay.mailboxes[mailbox].queue.values():
            body = m.decode_body(open_envelope(box, payload).body)
            assert isinstance(body, m.GroupBody)
            layer = wire.decode_layer(body.message)
            if isinstance(layer, wire.Cipher):
                ciphertexts.append(layer.message)
    assert len(ciphertexts) == 97
    assert len(set(ciphertexts)) == 1  # encrypted once: the same sender-key message for all
    assert [t for *_, t in await texts(bob)] == ["to a hundred"]
    assert [t for *_, t in await texts(carol)] == ["to a hundred"]


async def test_relay_reordering_and_dropping_are_visible(trio_of: Trio, relay: FakeRelay
                                                         ) -> None:
    alice, bob, carol = trio_of
    await make_group(alice, bob, carol)
    for text in ("one", "two", "three"):
        await send(alice, "team", text)
    box = next(b for b in relay.mailboxes.values() if _owner(b, carol))
    items = sorted(box.queue.items())
    assert len(items) == 3
    # The relay drops "one" and swaps "two" and "three".
    box.queue = {items[1][0]: items[2][1], items[2][0]: items[1][1]}
    events = await drain(carol)
    shown = [e.text for e in events if isinstance(e, MessageEvent)]
    notices = [e.text for e in events if isinstance(e, NoticeEvent)]
    assert shown == ["three", "two"]
    assert any("2 earlier message(s) from alice" in n for n in notices)
    assert any("arrived late" in n for n in notices)
    # A replayed deposit is refused, not shown twice.
    replay = frames.Delivered(id=77_777, payload=items[1][1][0], received_at=1)
    events = carol.process_deliveries([replay])
    assert not [e for e in events if isinstance(e, MessageEvent)]


async def test_member_added_later_reads_only_later_messages(
        trio_of: Trio, tmp_path: Path, relay: FakeRelay) -> None:
    alice, bob, carol = trio_of
    dave = await make_client(tmp_path, "dave", relay)
    await pair(alice, dave, "dave", "alice")
    await make_group(alice, bob, carol)
    await send(bob, "team", "before dave")
    async with alice.online():
        GroupService(alice).add("team", "dave")
        await alice.flush_outbox()
    await settle(dave, alice, bob, carol, dave)
    for client in (alice, bob, carol, dave):
        assert {i.name for i in GroupService(client).members("team")} == {
            "alice", "bob", "carol", "dave"}, client.account().name
    await send(bob, "team", "after dave")
    await send(carol, "team", "carol to dave")
    assert [t for *_, t in await texts(dave)] == ["after dave", "carol to dave"]
    # Removed, then added again: a member again, with fresh keys.
    async with alice.online():
        GroupService(alice).remove("team", "dave")
        await alice.flush_outbox()
    await settle(dave, bob, carol, alice)
    assert [g["status"] for g in GroupService(dave).groups()] == ["removed"]
    async with alice.online():
        GroupService(alice).add("team", "dave")
        await alice.flush_outbox()
    await settle(dave, alice, bob, carol, dave)
    assert [g["status"] for g in GroupService(dave).groups()] == ["active"]
    await send(carol, "team", "welcome back")
    assert [t for *_, t in await texts(dave)] == ["welcome back"]
    dave.close()


async def test_copies_stored_counts_a_member_whose_relay_refuses(
    trio_of: Trio, relay: FakeRelay
) -> None:
    """`chatcli send` warns from these counts when some members' relays refuse."""
    from chatcli.client.groups.service import group_copies_stored

    alice, bob, carol = trio_of
    await make_group(alice, bob, carol)
    message_id = await send(alice, "team", "to both")
    assert group_copies_stored(alice, message_id) == (2, 2)
    del relay.mailboxes[carol.account().mailbox]  # carol deleted her account
    message_id = await send(alice, "team", "carol is gone")
    assert group_copies_stored(alice, message_id) == (1, 2)
    assert group_copies_stored(alice, "not-a-group-message") is None


async def test_a_member_cannot_squat_another_members_chain_id(trio_of: Trio) -> None:
    """Alice announces bob's next chain id (with keys of her own) to carol before
    bob's real key arrives: carol still reads bob's messages, as bob's."""
    import os

    from chatcli.client.groups.service import GroupMessageEvent

    alice, bob, carol = trio_of
    await make_group(alice, bob, carol)
    await settle(alice, bob, carol)
    real = SenderKeyState.generate()
    squat = SenderKeyState(real.chain_id, 0, os.urandom(32), os.urandom(32))
    service = GroupService(carol)
    with carol.store.write(), gdb.bound(carol.store):
        group = gdb.Group.get(gdb.Group.name == "team")
        for sender, state in ((alice, squat), (bob, real)):
            service._on_sender_key(group, sender.identity.public, wire.SenderKey(
                group_id=group.group_id, distribution=state.distribution()), received_at=1)
        events = service._on_cipher(real.encrypt(wire.encode(wire.GroupText(
            id="00000000-0000-4000-8000-000000000001", sent_at=1, text="the real bob"))), 2)
        events += service._on_cipher(squat.encrypt(wire.encode(wire.GroupText(
            id="00000000-0000-4000-8000-000000000002", sent_at=1, text="alice's own"))), 3)
    shown = [(e.contact, e.text) for e in events if isinstance(e, GroupMessageEvent)]
    assert shown == [("bob", "the real bob"), ("alice", "alice's own")]


def test_old_databases_lose_the_unique_chain_id_index(tmp_path: Path) -> None:
    from chatcli.client.store import Sealer, Store

    store = Store.open(tmp_path / "old.db", Sealer(bytes(32)), create=True)
    gdb.ensure_tables(store)
    store.db.execute_sql("DROP INDEX group_sender_key_chain_id")
    store.db.execute_sql("CREATE UNIQUE INDEX group_sender_key_chain_id "
                         "ON group_sender_key (chain_id)")
    gdb._ready.discard(store)
    gdb.ensure_tables(store)
    indexes = {row[1]: row[2] for row in
               store.db.execute_sql("PRAGMA index_list(group_sender_key)").fetchall()}
    assert indexes["group_sender_key_chain_id"] == 0
    assert indexes["group_sender_key_group_id_sender_chain_id"] == 1
    store.close()


async def test_non_contact_members_are_marked_with_a_fingerprint(trio_of: Trio) -> None:
    """Bob and carol are not contacts: bob sees carol's messages under a marked
    name that no contact's name can equal; alice (a contact) under her name."""
    from chatcli.client.groups.service import GroupMessageEvent
    from chatcli.client.service import NAME_RE

    alice, bob, carol = trio_of
    await make_group(alice, bob, carol)
    await send(alice, "team", "from a contact")
    await send(carol, "team", "from a stranger")
    events = {e.text: e for e in await drain(bob) if isinstance(e, GroupMessageEvent)}
    assert events["from a contact"].display_name == "alice"
    stranger = events["from a stranger"]
    short = " ".join(carol.identity.public.fingerprint().split()[:2])
    assert not stranger.from_contact
    assert stranger.display_name == f"~carol [{short}]"
    assert not NAME_RE.fullmatch(stranger.display_name)


def _notices(events: list[object]) -> list[str]:
    return [e.text for e in events if isinstance(e, NoticeEvent)]


def _marked(client: ChatClient, name: str) -> str:
    return f"~{name} [{' '.join(client.identity.public.fingerprint().split()[:2])}]"


async def test_message_in_flight_during_a_removal_is_shown_by_everyone(trio_of: Trio) -> None:
    """Bob sends while alice removes him: carol and alice process the removal
    before bob's message arrives, and both still show it (it was sent while
    bob was a member); a message claiming a later version is refused by both."""
    alice, bob, carol = trio_of
    await make_group(alice, bob, carol)
    await settle(alice, bob, carol)
    async with alice.online():
        GroupService(alice).remove("team", "bob")
        await alice.flush_outbox()
    await settle(carol)  # carol knows bob is gone; bob has not heard of it yet
    assert {i.name for i in GroupService(carol).members("team")} == {"alice", "carol"}
    # Bob's own (hacked) view: the version after his removal, for the forgery below.
    with bob.store.read(), gdb.bound(bob.store):
        group = gdb.Group.get(gdb.Group.name == "team")
        state = GroupService(bob)._membership(group)
        key = SenderKeyState.from_bytes(bob.sealer.open(
            group.sender_sealed, "group.sender", gdb.group_row(group.group_id)))
        records = {who: wire.decode_record(state.record(c.identity.public.raw) or b"")
                   for who, c in (("alice", alice), ("carol", carol))}
        version = state.next_seq
    await send(bob, "team", "sent before bob knew")
    got_carol, got_alice = await drain(carol), await drain(alice)
    for got in (got_carol, got_alice):
        assert [e.text for e in got if isinstance(e, MessageEvent)] == ["sent before bob knew"]
    assert not [n for n in _notices(got_carol) + _notices(got_alice) if "refused" in n]
    # A message that claims to be sent after the removal (version + 1) is refused,
    # whoever receives it, with a notice that names bob (marked for carol).
    key.encrypt(b"")  # bob's client used this iteration for the message above
    forged = key.encrypt(wire.encode(wire.GroupText(
        id="00000000-0000-4000-8000-00000000000f", sent_at=1, text="after removal",
        version=version + 1)))
    body = m.encode(m.GroupBody(v=1, message=wire.encode(wire.Cipher(message=forged))))
    for who, client, shown in (("alice", alice, "bob"), ("carol", carol, _marked(bob, "bob"))):
        events = client.process_deliveries([frames.Delivered(
            id=88_000, received_at=2,
            payload=seal_envelope(records[who].box_key, bob.identity.public, body))])
        assert not [e for e in events if isinstance(e, MessageEvent)]
        assert any(f"from {shown}, sent when {shown} was not a member, was refused" in n
                   for n in _notices(events)), _notices(events)
    notices = _notices(await drain(bob))
    assert any("removed from the group team" in n for n in notices)


async def test_unknown_chain_notice_names_sender_and_group(trio_of: Trio, relay: FakeRelay
                                                           ) -> None:
    """Bob's message reaches carol before his new key: carol is told who and where
    (bob marked: he is not her contact), and the message is shown when the key comes."""
    alice, bob, carol = trio_of
    await make_group(alice, bob, carol)
    with bob.store.write(), gdb.bound(bob.store):
        group = gdb.Group.get(gdb.Group.name == "team")
        group.sender_sealed = None
        group.save()
    await send(bob, "team", "after a new key")
    box = next(b for b in relay.mailboxes.values() if _owner(b, carol))
    items = sorted(box.queue.items())
    box.queue = {items[1][0]: items[1][1]}  # the message alone first
    events = await drain(carol)
    assert [n for n in _notices(events) if "cannot be read yet" in n] == [
        f"A message from {_marked(bob, 'bob')} in team cannot be read yet: the key it needs "
        f"has not arrived. It is kept and shown if the key comes; if it does not, ask "
        f"{_marked(bob, 'bob')} to send it again."]
    box.queue = {items[0][0]: items[0][1]}
    assert await texts(carol) == [("team", "bob", "after a new key")]


async def test_member_restored_from_backup_is_told_and_gets_back_in(
        trio_of: Trio, tmp_path: Path) -> None:
    """Bob imports his backup on a new machine: group messages he cannot read
    give notices naming the sender; once alice adds him again, keys are
    re-announced both ways and everyone reads everyone."""
    import msgspec

    from chatcli.client.home import Home
    from chatcli.client.service import BackupV1
    from tests.client.conftest import PASS

    alice, bob, carol = trio_of
    await make_group(alice, bob, carol)
    await settle(alice, bob, carol)
    # A backup without the group (made before it, or by an older chatcli).
    full = msgspec.msgpack.decode(bob.export_backup(), type=BackupV1)
    assert [g.name for g in full.groups] == ["team"]
    backup = msgspec.msgpack.encode(msgspec.structs.replace(full, groups=[]))
    bob.close()
    bob2 = ChatClient.import_backup(Home(tmp_path / "bob2"), backup, PASS)
    try:
        await send(carol, "team", "carol to all")
        notices = _notices(await drain(bob2))
        # Bob's new machine does not know carol (not a contact): her fingerprint.
        unknown = f"~[{carol.identity.public.fingerprint()}]"
        assert any(f"A message from {unknown} in a group this device does "
                   "not know cannot be read" in n and "restored this identity" in n
                   for n in notices), notices
        # Bob tells alice (any message sets up a new session and gives his new prekey).
        async with bob2.online():
            await bob2.send_text("alice", "I restored my backup, add me again to team")
        await drain(alice)
        async with alice.online():
            GroupService(alice).add("team", "bob")
            await alice.flush_outbox()
        await settle(bob2, alice, carol, bob2, alice, carol)
        assert [g["status"] for g in GroupService(bob2).groups()] == ["active"]
        await send(bob2, "team", "bob is back")
        await send(carol, "team", "welcome back")
        await send(alice, "team", "hi again")
        assert [t for *_, t in await texts(bob2)] == ["welcome back", "hi again"]
        assert [t for *_, t in await texts(carol)] == ["bob is back", "hi again"]
        assert [t for *_, t in await texts(alice)] == ["bob is back", "welcome back"]
    finally:
        bob2.close()


def test_group_tables_made_in_a_rolled_back_transaction_are_made_again(
        tmp_path: Path) -> None:
    """The first group message of a new database (e.g. just restored) creates the
    tables inside the receive transaction; if that message is refused and its
    savepoint rolled back, the next one must not find the tables missing."""
    from chatcli.client.store import Sealer, Store

    store = Store.open(tmp_path / "fresh.db", Sealer(bytes(32)), create=True)
    with store.write(), pytest.raises(RuntimeError), store.db.atomic():
        gdb.ensure_tables(store)
        raise RuntimeError("the message was refused")
    with store.write(), gdb.bound(store):
        assert gdb.Group.select().count() == 0
    store.close()


async def test_member_restored_from_backup_rejoins_by_itself(
        trio_of: Trio, tmp_path: Path) -> None:
    """The backup carries the group: after the import, bob's client renews his
    record itself and tells every member, and keys are exchanged again both
    ways with nobody doing anything."""
    from chatcli.client.home import Home
    from tests.client.conftest import PASS

    alice, bob, carol = trio_of
    await make_group(alice, bob, carol)
    await settle(alice, bob, carol)
    backup = bob.export_backup()
    bob.close()
    bob2 = ChatClient.import_backup(Home(tmp_path / "bob2"), backup, PASS)
    try:
        assert [g["status"] for g in GroupService(bob2).groups()] == ["active"]
        async with bob2.online():
            await bob2.flush_outbox()   # the renewed record goes to every member
        await settle(alice, carol, bob2, alice, carol, bob2)
        assert [g["status"] for g in GroupService(bob2).groups()] == ["active"]
        assert {i.name for i in GroupService(bob2).members("team")} == {
            "alice", "bob", "carol"}
        await send(bob2, "team", "bob is back")
        await send(carol, "team", "welcome back")
        await send(alice, "team", "hi again")
        assert [t for *_, t in await texts(bob2)] == ["welcome back", "hi again"]
        assert [t for *_, t in await texts(carol)] == ["bob is back", "hi again"]
        assert [t for *_, t in await texts(alice)] == ["bob is back", "welcome back"]
    finally:
        bob2.close()


async def test_creator_restored_from_backup_renews_its_own_record(
        trio_of: Trio, tmp_path: Path) -> None:
    from chatcli.client.home import Home
    from tests.client.conftest import PASS

    alice, bob, carol = trio_of
    await make_group(alice, bob, carol)
    await settle(alice, bob, carol)
    backup = alice.export_backup()
    alice.close()
    alice2 = ChatClient.import_backup(Home(tmp_path / "alice2"), backup, PASS)
    try:
        async with alice2.online():
            await alice2.flush_outbox()
        await settle(bob, carol, alice2, bob, carol, alice2)
        await send(alice2, "team", "alice is back")
        await send(carol, "team", "carol here")
        assert [t for *_, t in await texts(bob)] == ["alice is back", "carol here"]
        assert [t for *_, t in await texts(alice2)] == ["carol here"]
    finally:
        alice2.close()


async def test_dropping_waiting_messages_beyond_the_bound_is_announced(
        trio_of: Trio, monkeypatch: pytest.MonkeyPatch) -> None:
    from chatcli.client.groups import inbox as group_service

    alice, bob, carol = trio_of
    await make_group(alice, bob, carol)
    await settle(alice, bob, carol)
    monkeypatch.setattr(group_service, "MAX_PENDING", 1)
    service = GroupService(carol)
    events: list[object] = []
    with carol.store.write(), gdb.bound(carol.store):
        for n in range(2):  # two messages on chains carol never got
            events += service._on_cipher(SenderKeyState.generate().encrypt(wire.encode(
                wire.GroupText(id=f"00000000-0000-4000-8000-00000000010{n}", sent_at=1,
                               text="lost"))), n)
    assert any("1 group message(s) waiting for their keys were dropped" in n
               for n in _notices(events)), _notices(events)


async def test_broadcast_skips_groups_whose_operations_did_not_change(
        trio_of: Trio, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every delivery pass (every one-to-one send too) runs the admin's
    broadcast of owed operations: a group whose operations did not change
    since a committed broadcast is skipped without reading its membership, and
    looked at again once an operation is added."""
    alice, bob, carol = trio_of
    await make_group(alice, bob, carol)
    service = GroupService(alice)
    service._deposits_by_relay()  # up to date, and recorded so
    looked_at: list[str] = []
    real = GroupService._membership

    def membership(self: GroupService, group: gdb.Group) -> object:
        looked_at.append(group.name)
        return real(self, group)

    monkeypatch.setattr(GroupService, "_membership", membership)
    service._deposits_by_relay()
    assert looked_at == []
    service.remove("team", "carol")  # a new operation, owed to bob
    looked_at.clear()
    owed = service._deposits_by_relay()
    assert looked_at == ["team"] and owed
    looked_at.clear()
    service._deposits_by_relay()
    assert looked_at == []


async def test_a_members_file_is_fetched_only_from_its_relay_and_kept_in_history(
        trio_of: Trio, tmp_path: Path) -> None:
    """A file's blob must live on its sender's relay: for a member who is not a
    contact, the relay of its signed member record. The history names the file,
    and where it was saved once it is."""
    from chatcli.client.attachments import download_for_event
    from chatcli.client.groups.queries import member_relay
    from chatcli.client.groups.service import GroupMessageEvent
    from chatcli.client.inbox import record_saved

    alice, bob, carol = trio_of
    await make_group(alice, bob, carol)
    carols = carol.identity.public.fingerprint()
    assert member_relay(bob, "team", carols) == carol.account().relay_url
    assert member_relay(bob, "team", alice.identity.public.fingerprint()) is not None
    assert member_relay(bob, "team", "0000 0000") is None
    assert member_relay(bob, "no such group", carols) is None

    elsewhere = m.AttachmentRef(relay_url="ws://elsewhere.example:8765/", blob=bytes(16),
                                read_cap=bytes(32), key=bytes(32), digest=bytes(32), size=5,
                                name="plan.txt")
    async with carol.online():
        await GroupService(carol).send_text("team", "the plan", attachment=elsewhere)
    (event,) = [e for e in await drain(bob) if isinstance(e, GroupMessageEvent)]
    assert not event.from_contact and event.attachment == {"name": "plan.txt", "size": 5}
    downloads = tmp_path / "downloads-of-bob"
    refused = await download_for_event(bob, event, downloads)
    assert refused.attachment is not None
    assert "other than the sender's" in refused.attachment["error"]
    assert not downloads.exists()

    for client in (bob, carol):
        (entry,) = GroupService(client).history("team")
        assert entry["attachment"] == {"name": "plan.txt", "size": 5}
    saved = tmp_path / "plan.txt"
    saved.write_bytes(b"plan!")
    record_saved(bob, event.id, saved)
    assert GroupService(bob).history("team")[0]["attachment"]["path"] == str(saved.resolve())
    saved.unlink()
    assert "path" not in GroupService(bob).history("team")[0]["attachment"]
