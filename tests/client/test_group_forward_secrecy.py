"""Forward secrecy of the group pairwise sessions (security review, issue 10,
finding 2): a member's keys taken later, with everything the relay recorded,
do not open earlier sender-key distributions or group messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from chatcli.client import messages as m
from chatcli.client import prekeys
from chatcli.client.groups import models as gdb
from chatcli.client.groups import wire
from chatcli.client.groups.service import GroupService
from chatcli.client.service import ChatClient, MessageEvent, NoticeEvent
from chatcli.client.store import now_ms
from chatcli.crypto import x3dh
from chatcli.crypto.envelope import open_envelope
from chatcli.crypto.keys import DHKeyPair, IdentityKeyPair, IdentityPublicKey, MailboxKeyPair
from chatcli.crypto.ratchet import RatchetSession
from chatcli.crypto.sender_keys import SenderKeyReceiver
from chatcli.errors import CryptoError
from tests.client.conftest import Trio, drain, make_client, pair
from tests.client.fakerelay import FakeRelay


async def settle(*clients: ChatClient, rounds: int = 3) -> None:
    for _ in range(rounds):
        for client in clients:
            await drain(client)


async def texts(client: ChatClient) -> list[str]:
    return [e.text for e in await drain(client) if isinstance(e, MessageEvent)]


async def send(client: ChatClient, text: str) -> None:
    async with client.online():
        await GroupService(client).send_text("team", text)


async def make_group(alice: ChatClient, bob: ChatClient, carol: ChatClient) -> None:
    GroupService(alice).create("team", ["bob", "carol"])
    async with alice.online():
        await alice.flush_outbox()
    await settle(bob, carol, alice, bob, carol, rounds=1)
    await settle(alice, bob, carol)


@dataclass
class Stolen:
    """Everything key-like a member's keystore and local database hold."""

    identity: IdentityKeyPair
    mailbox_key: MailboxKeyPair
    prekeys: list[DHKeyPair] = field(default_factory=list)
    sessions: list[bytes] = field(default_factory=list)
    receivers: list[bytes] = field(default_factory=list)


def steal(client: ChatClient) -> Stolen:
    stolen = Stolen(client.identity, client.mailbox_key)
    sealer = client.sealer
    with client.store.read(), gdb.bound(client.store), prekeys.bound(client.store):
        account = client.store.account()
        stolen.prekeys.append(DHKeyPair.from_private_bytes(
            sealer.open(account.restore_prekey_sealed, "account.restore_prekey",
                        account.id)))
        stolen.prekeys += [DHKeyPair.from_private_bytes(
            sealer.open(row.private_sealed, "own_prekey.private", row.public.hex()))
            for row in prekeys.OwnPrekey.select()]
        stolen.sessions += [sealer.open(row.state_sealed, "group.session",
                                        gdb.session_row(row.peer, row.ephemeral))
                            for row in gdb.GroupSession.select()]
        stolen.receivers += [sealer.open(row.state_sealed, "group.receiver",
                                         gdb.sealed_row("group.receiver", row))
                             for row in gdb.GroupSenderKey.select()]
    return stolen


def attack(stolen: Stolen, deposits: list[tuple[bytes, bytes]]
           ) -> tuple[list[wire.SenderKey], list[str]]:
    """Open what can be opened of ``deposits`` with ``stolen``: sender-key
    distributions and group texts."""
    directs: list[wire.Direct] = []
    ciphers: list[bytes] = []
    for _, payload in deposits:
        try:
            body = m.decode_body(open_envelope(stolen.mailbox_key, payload).body)
        except (CryptoError, msgspec.DecodeError, msgspec.ValidationError):
            continue
        if isinstance(body, m.GroupBody):
            layer = wire.decode_layer(body.message)
            if isinstance(layer, wire.Direct):
                directs.append(layer)
            else:
                ciphers.append(layer.message)
    distributions: list[wire.SenderKey] = []
    for layer in directs:
        candidates: list[RatchetSession] = [RatchetSession.from_bytes(s)
                                            for s in stolen.sessions]
        for prekey in stolen.prekeys:
            try:
                result = x3dh.respond(stolen.identity, prekey,
                                      IdentityPublicKey.from_bytes(layer.identity),
                                      layer.ephemeral)
            except CryptoError:
                continue
            candidates.append(RatchetSession.responder(result.shared_secret, prekey,
                                                       result.associated_data))
        for session in candidates:
            try:
                content = wire.decode_direct(session.decrypt(layer.message))
            except CryptoError:
                continue
            if isinstance(content, wire.SenderKey):
                distributions.append(content)
    receivers = [SenderKeyReceiver.from_bytes(r) for r in stolen.receivers]
    found: list[str] = []
    for message in ciphers:
        for receiver in [*receivers, *(SenderKeyReceiver.from_distribution(d.distribution)
                                       for d in distributions)]:
            try:
                found.append(wire.decode_cipher(receiver.decrypt(message)).text)
                break
            except CryptoError:
                continue
    return distributions, found


async def test_member_keys_taken_later_do_not_open_earlier_group_traffic(
        trio_of: Trio, relay: FakeRelay) -> None:
    alice, bob, carol = trio_of
    await make_group(alice, bob, carol)
    await send(carol, "before the compromise")
    await send(alice, "also before")
    assert await texts(bob) == ["before the compromise", "also before"]
    await send(bob, "bob answers")  # the sessions move on in both directions
    await settle(alice, carol, bob)

    # Bob's signed prekey is rotated; four weeks later the old private key goes.
    with bob.store.read(), prekeys.bound(bob.store):
        created = prekeys.OwnPrekey.get(prekeys.OwnPrekey.retired_at.is_null()).created_at
    with bob.store.write():
        assert prekeys.rotate(bob, now=created + prekeys.ROTATE_AFTER_MS)
    with bob.store.write():
        prekeys.rotate(bob, now=created + prekeys.ROTATE_AFTER_MS + prekeys.GRACE_MS)

    with bob.store.read():
        account = bob.store.account()
    recorded = [(box, payload) for box, payload in relay.recorded if box == account.mailbox]
    stolen = steal(bob)
    distributions, found = attack(stolen, recorded)
    assert distributions == []
    assert found == []

    # The attack is real: what is sent after the theft, before the sessions heal,
    # is read with the stolen state (post-compromise, not forward, secrecy).
    await send(carol, "after the compromise")
    later = [(box, p) for box, p in relay.recorded if box == account.mailbox]
    _, found = attack(stolen, later[len(recorded):])
    assert found == ["after the compromise"]


async def test_simultaneous_sessions_converge_on_the_smaller_identity(trio_of: Trio) -> None:
    alice, bob, carol = trio_of
    await make_group(alice, bob, carol)
    b, c = bob.identity.public.raw, carol.identity.public.raw
    views = {}
    for client, peer in ((bob, c), (carol, b)):
        with client.store.read(), gdb.bound(client.store):
            rows = list(gdb.GroupSession.select().where(gdb.GroupSession.peer == peer))
            active = [r for r in rows if r.active]
            assert len(active) == 1
            views[client.identity.public.raw] = (len(rows), bytes(active[0].ephemeral),
                                                 active[0].initiator)
    # Both started a session before seeing the other's (each sent its sender key).
    assert views[b][0] == views[c][0] == 2
    assert views[b][1] == views[c][1]
    smaller = min(b, c)
    assert views[smaller][2] and not views[max(b, c)][2]
    await send(bob, "to carol")
    await send(carol, "to bob")
    assert "to carol" in await texts(carol)
    assert "to bob" in await texts(bob)


async def test_rotation_deletes_the_old_private_key_after_the_grace_period(
        trio_of: Trio) -> None:
    alice, bob, _ = trio_of
    with alice.store.write():
        prekeys.rotate(alice, now=now_ms())
    with alice.store.read(), prekeys.bound(alice.store):
        created = prekeys.OwnPrekey.get(prekeys.OwnPrekey.retired_at.is_null()).created_at
    with alice.store.read():
        old = alice.store.account().restore_prekey_public
    with alice.store.write():
        assert not prekeys.rotate(alice, now=created + prekeys.ROTATE_AFTER_MS - 1)
    rotated_at = created + prekeys.ROTATE_AFTER_MS
    with alice.store.write():
        assert prekeys.rotate(alice, now=rotated_at)
    with alice.store.read():
        account = alice.store.account()
    new = account.restore_prekey_public
    assert new != old
    alice.identity.public.verify(b"chatcli/restore-prekey/v1" + new,
                                 account.restore_prekey_signature)
    with alice.store.read():
        assert prekeys.private_for(alice.store, old) is not None  # in its grace period
        assert prekeys.private_for(alice.store, new) is not None
    with alice.store.write():  # the schedule goes on: ``new`` is retired in turn
        assert prekeys.rotate(alice, now=rotated_at + prekeys.GRACE_MS - 1)
    with alice.store.read():
        assert prekeys.private_for(alice.store, old) is not None
        current = alice.store.account().restore_prekey_public
    with alice.store.write():
        prekeys.rotate(alice, now=rotated_at + prekeys.GRACE_MS)
    with alice.store.read(), prekeys.bound(alice.store):
        assert prekeys.private_for(alice.store, old) is None
        assert prekeys.OwnPrekey.get_or_none(prekeys.OwnPrekey.public == old) is None
        assert prekeys.private_for(alice.store, new) is not None  # retired later
    # Contacts are told the new signed prekey in their session.
    async with alice.online():
        await alice.flush_outbox()
    await drain(bob)
    with bob.store.read():
        contact = bob.get_contact("alice")
    assert contact.restore_prekey is not None and contact.restore_prekey[:32] == current


async def test_a_member_record_with_a_deleted_prekey_still_gets_a_session(
        trio_of: Trio) -> None:
    """Bob joins late; Carol's signed prekey in her member record was rotated and
    deleted long ago, so Bob's handshake to it cannot be opened: Carol's own
    session replaces it and both read each other."""
    alice, bob, carol = trio_of
    GroupService(alice).create("team", ["carol"])
    async with alice.online():
        await alice.flush_outbox()
    await settle(carol, alice, carol)
    with carol.store.read(), prekeys.bound(carol.store):
        created = prekeys.OwnPrekey.get(prekeys.OwnPrekey.retired_at.is_null()).created_at
    for later in (prekeys.ROTATE_AFTER_MS, prekeys.ROTATE_AFTER_MS + prekeys.GRACE_MS):
        with carol.store.write():
            prekeys.rotate(carol, now=created + later)

    GroupService(alice).add("team", "bob")
    async with alice.online():
        await alice.flush_outbox()
    notices: list[str] = []
    for client in (bob, alice, bob, carol, bob, carol, bob, carol):
        notices += [e.text for e in await drain(client) if isinstance(e, NoticeEvent)]
    assert any("expired prekey" in text for text in notices)
    await send(carol, "hello bob")
    await send(bob, "hello carol")
    assert "hello bob" in await texts(bob)
    assert "hello carol" in await texts(carol)
    b, c = bob.identity.public.raw, carol.identity.public.raw
    with bob.store.read(), gdb.bound(bob.store):
        bob_active = GroupService(bob).pairwise.active_session_id(c)
    with carol.store.read(), gdb.bound(carol.store):
        carol_active = GroupService(carol).pairwise.active_session_id(b)
    assert bob_active is not None and bob_active == carol_active


async def test_a_database_with_one_way_sessions_is_migrated(trio_of: Trio) -> None:
    """A database made before two-way sessions: the peer's incoming session is
    kept (messages in flight stay readable), the outgoing one is dropped, and
    the next message starts a two-way session."""
    alice, bob, carol = trio_of
    await make_group(alice, bob, carol)
    b, c = bob.identity.public.raw, carol.identity.public.raw
    service = GroupService(carol)
    with carol.store.write(), gdb.bound(carol.store):  # in flight in the session Carol has
        group = service._group("team")
        record = service._record(service._membership(group), b)
        service._send_direct(record, wire.Ops(group_id=group.group_id, ops=[]))
    store, sealer = bob.store, bob.sealer
    with store.write(), gdb.bound(store):
        row = gdb.GroupSession.get(gdb.GroupSession.peer == c, gdb.GroupSession.active == True)  # noqa: E712
        # Rewrite Bob's side as the old schema had it: in_* / out_* columns only.
        state = sealer.open(row.state_sealed, "group.session",
                            gdb.session_row(row.peer, row.ephemeral))
        gdb.GroupPeer.update(in_sealed=sealer.seal_v1(state, "group.peer_in"),
                             in_ephemeral=row.ephemeral,
                             out_sealed=sealer.seal_v1(state, "group.peer_out"),
                             out_prekey=row.prekey, out_ephemeral=row.ephemeral).where(
            gdb.GroupPeer.identity == c).execute()
        gdb.GroupSession.delete().where(gdb.GroupSession.peer == c).execute()
        store.db.execute_sql(f"ALTER TABLE {gdb.GroupPeer._meta.table_name} DROP COLUMN refused")
    gdb._ready.discard(store)  # as when an old database is opened
    with store.write():
        gdb.ensure_tables(store)
    with store.read(), gdb.bound(store):
        peer = gdb.GroupPeer.get(gdb.GroupPeer.identity == c)
        assert peer.in_sealed is None and peer.out_sealed is None and peer.refused is None
        kept = list(gdb.GroupSession.select().where(gdb.GroupSession.peer == c))
        assert [(r.active, r.initiator) for r in kept] == [(False, False)]
    async with carol.online():
        await carol.flush_outbox()
    events = await drain(bob)  # read in the kept session: no refusal, no replay
    assert not [e for e in events if isinstance(e, NoticeEvent) and e.warning]
    with store.read(), gdb.bound(store):
        assert gdb.GroupSession.get_by_id(kept[0].id).state_sealed != kept[0].state_sealed
    await send(bob, "after the upgrade")
    assert "after the upgrade" in await texts(carol)


async def test_a_restored_contact_may_use_a_rotated_prekey_within_its_grace_period(
        tmp_path: Path, relay: FakeRelay) -> None:
    from chatcli.client.home import Home
    from tests.client.conftest import PASS

    alice = await make_client(tmp_path, "alice", relay)
    bob = await make_client(tmp_path, "bob", relay)
    await pair(alice, bob)
    payload = alice.export_backup()  # holds Bob's current signed prekey
    alice.close()
    with bob.store.write():
        prekeys.rotate(bob, now=now_ms())
    with bob.store.read(), prekeys.bound(bob.store):
        created = prekeys.OwnPrekey.get(prekeys.OwnPrekey.retired_at.is_null()).created_at
    with bob.store.write():
        assert prekeys.rotate(bob, now=created + prekeys.ROTATE_AFTER_MS)
    restored = ChatClient.import_backup(Home(tmp_path / "alice-new"), payload, PASS)
    try:
        async with restored.online():
            await restored.send_text("bob", "after restore")
        assert [e.text for e in await drain(bob) if isinstance(e, MessageEvent)] == [
            "after restore"]
    finally:
        restored.close()
        bob.close()


async def test_a_forged_handshake_does_not_displace_a_working_session(trio_of: Trio) -> None:
    """Envelope senders are not authenticated: a handshake "from Carol" naming an
    unknown prekey must not replace the session Carol writes in."""
    import os

    alice, bob, carol = trio_of
    await make_group(alice, bob, carol)
    b, c = bob.identity.public.raw, carol.identity.public.raw
    service = GroupService(carol)
    with carol.store.write(), gdb.bound(carol.store):  # Carol writes in the active session
        group = service._group("team")
        record = service._record(service._membership(group), b)
        service._send_direct(record, wire.Ops(group_id=group.group_id, ops=[]))
    async with carol.online():
        await carol.flush_outbox()
    await drain(bob)
    with bob.store.read(), gdb.bound(bob.store):
        before = GroupService(bob).pairwise.active_session_id(c)
        assert gdb.GroupSession.get(gdb.GroupSession.ephemeral == before).confirmed
    forged = wire.Direct(identity=c, restore_prekey=os.urandom(32), ephemeral=os.urandom(32),
                         message=os.urandom(100))
    with bob.store.write():
        events = GroupService(bob).handle_body(carol.identity.public, wire.encode(forged), 0)
    assert any(isinstance(e, NoticeEvent) and "expired prekey" in e.text for e in events)
    with bob.store.read(), gdb.bound(bob.store):
        assert GroupService(bob).pairwise.active_session_id(c) == before
        assert gdb.GroupOutbox.select().count() == 0  # nothing sent again
    await send(carol, "still here")
    assert await texts(bob) == ["still here"]


async def test_a_record_with_a_new_prekey_starts_a_new_session(trio_of: Trio) -> None:
    """A member whose record names a signed prekey never seen (restored from a
    backup, added again) gets a new session; records seen before do not
    restart it (an older group record after a contact's newer address)."""
    from chatcli.client import sessions

    alice, bob, carol = trio_of
    await make_group(alice, bob, carol)
    c = carol.identity.public.raw
    service = GroupService(bob)
    with bob.store.write(), gdb.bound(bob.store):
        record = service._record(service._membership(service._group("team")), c)
        first = service.pairwise.active_session_id(c)
        service.pairwise.seal(record, b"x", now=now_ms())
        assert service.pairwise.active_session_id(c) == first
        fresh = DHKeyPair.generate()
        renewed = msgspec.structs.replace(
            record, restore_prekey=fresh.public,
            restore_prekey_signature=sessions.sign_restore_prekey(carol.identity,
                                                                  fresh.public))
        direct = service.pairwise.seal(renewed, b"x", now=now_ms())
        second = service.pairwise.active_session_id(c)
        assert second != first and direct.ephemeral == second
        assert direct.restore_prekey == fresh.public
        service.pairwise.seal(record, b"x", now=now_ms())  # seen before: no restart
        assert service.pairwise.active_session_id(c) == second
