"""The client service against an in-memory relay: handshake, messages, receipts,
dedupe, key changes, restore."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatcli.client import models as db
from chatcli.client.home import Home
from chatcli.client.service import ChatClient, MessageEvent, NoticeEvent, ReceiptEvent
from chatcli.errors import KeyChangedError, UsageError
from chatcli.protocol import frames
from tests.client.conftest import PASS, drain, make_client, pair
from tests.client.fakerelay import FakeRelay


def texts(events: list[object]) -> list[str]:
    return [e.text for e in events if isinstance(e, MessageEvent)]


async def test_handshake_and_messages_both_ways(clients: tuple[ChatClient, ChatClient]) -> None:
    alice, bob = clients
    await pair(alice, bob)
    assert alice.contact_names() == ["bob"]
    assert bob.contact_names() == ["alice"]
    async with bob.online():
        await bob.send_text("alice", "hello alice")
    async with alice.online():
        await alice.send_text("bob", "hi bob")
    got = await drain(alice)
    assert texts(got) == ["hello alice"]
    assert texts(await drain(bob)) == ["hi bob"]
    # Bob got Alice's delivery receipt.
    await drain(bob)
    history = bob.history("alice")
    assert [h["text"] for h in history] == ["hello alice", "hi bob"]
    assert history[0]["state"] in {"delivered", "read"}
    assert history[1]["direction"] == "in"


async def test_receipts_and_read(clients: tuple[ChatClient, ChatClient]) -> None:
    alice, bob = clients
    await pair(alice, bob)
    async with alice.online():
        await alice.send_text("bob", "one")
    bob.auto_read = True
    await drain(bob)
    events = await drain(alice)
    receipts = [e for e in events if isinstance(e, ReceiptEvent)]
    assert receipts and receipts[0].kind == "read"
    assert alice.history("bob")[-1]["state"] == "read"


async def test_marking_read_twice_tells_the_contact_once(
        clients: tuple[ChatClient, ChatClient]) -> None:
    """Two chat windows on one conversation both mark what they show read: one
    read receipt goes out (and none for an unknown or an own message's id)."""
    alice, bob = clients
    await pair(alice, bob)
    async with alice.online():
        await alice.send_text("bob", "one")
    await drain(bob)
    incoming = bob.history("alice")[-1]["id"]

    def queued_receipts() -> int:
        with bob.store.read():
            return db.Outbox.select().where(db.Outbox.kind == "receipt").count()

    before = queued_receipts()
    bob.mark_read("alice", [incoming])
    assert queued_receipts() == before + 1
    bob.mark_read("alice", [incoming, "no-such-id"])
    assert queued_receipts() == before + 1
    assert bob.history("alice")[-1]["state"] == "read"


async def test_invite_reuse_refused(tmp_path: Path, relay: FakeRelay) -> None:
    alice = await make_client(tmp_path, "alice", relay)
    bob = await make_client(tmp_path, "bob", relay)
    carol = await make_client(tmp_path, "carol", relay)
    async with alice.online():
        link = await alice.create_invite("bob")
    # A relay that does not keep one-shot capabilities (an older one) lets the
    # second handshake through: alice's client refuses it on its own.
    relay.mailboxes[alice.account().mailbox].one_shot.clear()
    async with bob.online():
        await bob.accept_invite(link, "alice")
    async with carol.online():
        await carol.accept_invite(link, "alice")
    events = await drain(alice)
    assert alice.contact_names() == ["bob"]
    notices = [e.text for e in events if isinstance(e, NoticeEvent) and e.warning]
    assert any("second time" in n for n in notices)


async def test_accept_retries_a_handshake_whose_answer_was_lost(tmp_path: Path,
                                                               relay: FakeRelay) -> None:
    """The inviter's relay stores Bob's handshake but the answer is lost (the
    connection drops): Bob's retry of the same deposit on the used one-shot
    capability is answered as stored, so accept succeeds and both keep the
    contact; the handshake is stored once."""
    alice = await make_client(tmp_path, "alice", relay)
    bob = await make_client(tmp_path, "bob", relay)
    async with alice.online():
        link = await alice.create_invite("bob")
    inbox = alice.account().mailbox
    relay.lose_deposit_answers = 1
    async with bob.online():
        assert await bob.accept_invite(link, "alice") == "alice"
    assert relay.lose_deposit_answers == 0   # the first answer was lost
    assert sum(s.frame == "Deposit" for s in relay.seen) >= 2   # and the deposit retried
    assert len([p for mailbox, p in relay.recorded if mailbox == inbox]) == 1
    await drain(alice)
    await drain(bob)
    assert alice.contact_names() == ["bob"]
    assert bob.contact_names() == ["alice"]
    async with bob.online():
        await bob.send_text("alice", "made it")
    assert texts(await drain(alice)) == ["made it"]
    async with alice.online():
        await alice.send_text("bob", "so did the answer")
    assert texts(await drain(bob)) == ["so did the answer"]
    alice.close()
    bob.close()


async def test_duplicate_delivery_shown_once(
    clients: tuple[ChatClient, ChatClient], relay: FakeRelay
) -> None:
    alice, bob = clients
    await pair(alice, bob)
    async with alice.online():
        await alice.send_text("bob", "once")
    # The deposit as the relay would deliver it, handled twice (two processes).
    box = relay.mailboxes[bob.account().mailbox]
    items = [frames.Delivered(id=i, payload=p, received_at=t)
             for i, (p, t) in sorted(box.queue.items())]
    first = bob.process_deliveries(items)
    second = bob.process_deliveries(items)
    assert texts(first) == ["once"] and texts(second) == []
    # Even under a new relay id (a re-deposit of the same bytes) it is not shown again.
    again = [frames.Delivered(id=i + 1000, payload=p, received_at=t)
             for i, (p, t) in sorted(box.queue.items())]
    repeated = bob.process_deliveries(again)
    assert texts(repeated) == []
    # ...and silently: a retried deposit is normal at-least-once delivery.
    assert not [e for e in repeated if isinstance(e, NoticeEvent) and e.warning]


async def test_key_change_blocks_until_confirmed(tmp_path: Path, relay: FakeRelay) -> None:
    alice = await make_client(tmp_path, "alice", relay)
    bob = await make_client(tmp_path, "bob", relay)
    await pair(alice, bob)
    # Bob starts over with a new identity and accepts a new invite labelled "bob".
    bob2 = await make_client(tmp_path, "bob2", relay)
    async with alice.online():
        link = await alice.create_invite("bob")
    async with bob2.online():
        await bob2.accept_invite(link, "alice")
    events = await drain(alice)
    assert any(isinstance(e, NoticeEvent) and "changed" in e.text for e in events)
    with pytest.raises(KeyChangedError):
        alice.enqueue_text("bob", "still there?")
    old_number = alice.safety_number("bob")[0]
    assert alice.confirm_contact("bob") is True
    assert alice.safety_number("bob")[0] != "" and old_number == alice.safety_number("bob")[0]
    async with alice.online():
        await alice.send_text("bob", "welcome back")
    assert texts(await drain(bob2))[-1] == "welcome back"


async def test_export_import_and_session_restore(tmp_path: Path, relay: FakeRelay) -> None:
    alice = await make_client(tmp_path, "alice", relay)
    bob = await make_client(tmp_path, "bob", relay)
    await pair(alice, bob)
    async with alice.online():
        await alice.send_text("bob", "before")
    await drain(bob)
    await drain(alice)
    number = alice.safety_number("bob")[0]
    payload = alice.export_backup()
    alice.close()
    restored = ChatClient.import_backup(Home(tmp_path / "alice-new"), payload, PASS)
    assert restored.safety_number("bob")[0] == number
    async with restored.online():
        await restored.send_text("bob", "after restore")
    assert texts(await drain(bob)) == ["after restore"]
    async with bob.online():
        await bob.send_text("alice", "got it")
    assert texts(await drain(restored)) == ["got it"]


async def test_two_relays(tmp_path: Path, relay: FakeRelay, relay2: FakeRelay) -> None:
    alice = await make_client(tmp_path, "alice", relay)
    bob = await make_client(tmp_path, "bob", relay2)
    await pair(alice, bob)
    async with bob.online():
        await bob.send_text("alice", "across relays")
    assert texts(await drain(alice)) == ["across relays"]


async def test_unknown_contact_is_usage_error(clients: tuple[ChatClient, ChatClient]) -> None:
    alice, _ = clients
    with pytest.raises(UsageError):
        alice.enqueue_text("nobody", "x")


async def test_sealed_columns_hold_no_plaintext(clients: tuple[ChatClient, ChatClient]) -> None:
    alice, bob = clients
    await pair(alice, bob)
    async with alice.online():
        await alice.send_text("bob", "very secret words")
    await drain(bob)
    for client in (alice, bob):
        assert b"very secret words" not in _database_bytes(client)
    with bob.store.read():
        assert db.Message.select().count() == 1


def _database_bytes(client: ChatClient) -> bytes:
    raw = client.home.database.read_bytes()
    wal = Path(str(client.home.database) + "-wal")
    if wal.exists():
        raw += wal.read_bytes()
    return raw


async def test_presence_known_and_unreachable(tmp_path: Path, relay: FakeRelay) -> None:
    alice = await make_client(tmp_path, "alice", relay)
    bob = await make_client(tmp_path, "bob", relay)
    carol = await make_client(tmp_path, "carol", relay)
    await pair(alice, bob)
    await pair(alice, carol, label="carol")
    with alice.store.write():  # carol's relay goes away
        db.Contact.update(relay_url="ws://127.0.0.1:9/#" + "a" * 52).where(
            db.Contact.name == "carol").execute()
    async with bob.online():
        await bob.own_relay()  # bob is connected
        async with alice.online():
            seen = await alice.presence()
    assert seen["bob"].known and seen["bob"].online is True
    assert not seen["carol"].known and seen["carol"].online is None


async def test_block_unblock_remove(clients: tuple[ChatClient, ChatClient]) -> None:
    from chatcli.errors import RelayError

    alice, bob = clients
    await pair(alice, bob)
    key_before = alice.account().profile_key_sealed
    async with alice.online():
        await alice.block("bob")
    assert alice.account().profile_key_sealed != key_before  # the profile key rolled
    async with bob.online():
        with pytest.raises(RelayError, match="refused"):
            await bob.send_text("alice", "let me in")
    assert bob.history("alice")[-1]["state"] == "failed"
    async with alice.online():
        await alice.unblock("bob")
    await drain(bob)  # the new capability
    async with bob.online():
        await bob.send_text("alice", "thanks")
    assert texts(await drain(alice)) == ["thanks"]
    async with alice.online():
        await alice.remove_contact("bob")
    assert alice.contact_names() == []
    with alice.store.read():
        assert db.Message.select().count() == 0 and db.Session.select().count() == 0


async def test_invite_expiry_follows_the_local_clock_and_expired_invites_are_retired(
    tmp_path: Path, relay: FakeRelay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The handshake reached the relay in time (its received_at says so), but by
    our clock the invite has expired: refused, and the invite is retired."""
    import time

    alice = await make_client(tmp_path, "alice", relay)
    bob = await make_client(tmp_path, "bob", relay)
    async with alice.online():
        link = await alice.create_invite("bob", expires_in=60)
    async with bob.online():
        await bob.accept_invite(link, "alice")
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 120)
    events = await drain(alice)
    assert any(isinstance(e, NoticeEvent) and "expired" in e.text for e in events)
    with alice.store.read():
        assert not db.Contact.select().exists()
        invite = db.Invite.get()
        assert invite.used_at is not None and invite.prekey_sealed == b""
    alice.close()
    bob.close()


async def test_messages_are_handed_out_before_the_ack_and_never_twice(
        clients: tuple[ChatClient, ChatClient], relay: FakeRelay) -> None:
    """A delivered message is shown as soon as it is stored, before the Ack's
    round trip (the daemon's event latency); if the Ack never happens, the
    relay delivers it again and it is skipped by its relay id."""
    alice, bob = clients
    await pair(alice, bob)
    async with alice.online():
        await alice.send_text("bob", "hello")
    box = relay.mailboxes[bytes(bob.account().mailbox)]
    async with bob.online():
        events = bob.events()
        first = await events.__anext__()
        assert isinstance(first, MessageEvent) and first.text == "hello"
        assert len(box.queue) == 1  # not acknowledged yet
        await events.aclose()  # the consumer goes away before the Ack
    assert len(box.queue) == 1
    again = await drain(bob)
    assert not [e for e in again if isinstance(e, MessageEvent)]
    assert not box.queue
