"""Replies, reactions, edits, deletes for everyone and unsupported content in
one-to-one chats: the rules (who may do what), out-of-order arrival, and what
the local store keeps."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatcli.client import actions
from chatcli.client import messages as m
from chatcli.client import models as db
from chatcli.client.events import ActionEvent, MessageEvent
from chatcli.client.service import ChatClient
from chatcli.errors import UsageError
from chatcli.protocol import frames
from tests.client.conftest import Trio, drain, pair
from tests.client.fakerelay import FakeRelay

Clients = tuple[ChatClient, ChatClient]


class Poll(m.Content, frozen=True, tag="poll"):
    """Content of a tag this client does not know (as a newer client would send)."""

    question: str


def by_id(client: ChatClient, contact: str) -> dict[str, dict[str, object]]:
    return {entry["id"]: entry for entry in client.history(contact)}


def wal_size(client: ChatClient) -> int:
    wal = Path(str(client.store.path) + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def queue_raw(client: ChatClient, contact: str, content: m.Content) -> None:
    """Queue content as a modified client would: without the local checks."""
    row = client.get_contact(contact)
    with client.store.write():
        client._enqueue(row, content, kind="action")


async def test_reply_reaction_edit_delete_both_ways(clients: Clients) -> None:
    alice, bob = clients
    await pair(alice, bob)
    async with alice.online():
        first = await alice.send_text("bob", "first line\nsecond line")
    await drain(bob)
    async with bob.online():
        reply = await bob.send_text("alice", "answer", reply_to=first[:8])
        await bob.send_action("alice", first[:6], "reaction", "👍")
    events = await drain(alice)
    message = next(e for e in events if isinstance(e, MessageEvent))
    assert message.reply_to == {"id": first, "from": "me", "excerpt": "first line"}
    assert [(e.kind, e.id, e.emoji) for e in events if isinstance(e, ActionEvent)] == [
        ("reaction", first, "👍")]
    entry = by_id(alice, "bob")[first]
    assert entry["reactions"] == [{"emoji": "👍", "from": "bob"}]
    assert by_id(alice, "bob")[reply]["reply_to"] == {
        "id": first, "from": "me", "excerpt": "first line"}

    # A reaction is replaced by a newer one, then removed.
    async with bob.online():
        await bob.send_action("alice", first, "reaction", "🎉")
    await drain(alice)
    assert by_id(alice, "bob")[first]["reactions"] == [{"emoji": "🎉", "from": "bob"}]
    async with bob.online():
        await bob.send_action("alice", first, "reaction", "")
    await drain(alice)
    assert by_id(alice, "bob")[first]["reactions"] == []

    async with alice.online():
        await alice.send_action("bob", first, "edit", "first line, edited")
    events = await drain(bob)
    assert [(e.kind, e.text) for e in events if isinstance(e, ActionEvent)] == [
        ("edit", "first line, edited")]
    seen = by_id(bob, "alice")[first]
    assert (seen["text"], seen["edited"]) == ("first line, edited", True)
    assert by_id(alice, "bob")[first]["edited"] is True
    with bob.store.read():
        row = db.Message.get(db.Message.uuid == first)
        assert [t["text"] for t in actions.edit_history(bob.sealer, row)] == [
            "first line\nsecond line", "first line, edited"]

    async with alice.online():
        await alice.send_action("bob", first, "delete")
    events = await drain(bob)
    assert [e.kind for e in events if isinstance(e, ActionEvent)] == ["delete"]
    for client, peer in ((alice, "bob"), (bob, "alice")):
        tomb = by_id(client, peer)[first]
        assert (tomb["text"], tomb["deleted"], tomb["edited"]) == ("message deleted", True, False)
    with bob.store.read():
        row = db.Message.get(db.Message.uuid == first)
        assert bob.sealer.open_text(bytes(row.text_sealed), "message.text", first) == ""
        assert not db.MessageEdit.select().where(db.MessageEdit.message == row).exists()
    # The write that made the tombstone left nothing in the WAL.
    assert wal_size(bob) == 0
    # A deleted message is not edited again, nor replied to.
    with pytest.raises(UsageError, match="deleted"):
        alice.enqueue_action("bob", first, "edit", "again")
    with pytest.raises(UsageError, match="deleted"):
        bob.enqueue_text("alice", "re", reply_to=first)


async def test_only_the_author_edits_or_deletes(clients: Clients) -> None:
    alice, bob = clients
    await pair(alice, bob)
    async with alice.online():
        mine = await alice.send_text("bob", "alice wrote this")
    await drain(bob)
    with pytest.raises(UsageError, match="Only your own"):
        bob.enqueue_action("alice", mine, "edit", "bob's words")
    with pytest.raises(UsageError, match="Only your own"):
        bob.enqueue_action("alice", mine, "delete")
    # A modified client sends them anyway: alice ignores both.
    queue_raw(bob, "alice", m.Edit(target=mine, sent_at=1, text="forged", id="e" * 36))
    queue_raw(bob, "alice", m.Delete(target=mine, sent_at=2))
    async with bob.online():
        await bob.flush_outbox()
    events = await drain(alice)
    assert not [e for e in events if isinstance(e, ActionEvent)]
    entry = by_id(alice, "bob")[mine]
    assert (entry["text"], entry["edited"], entry["deleted"]) == ("alice wrote this", False,
                                                                  False)


async def test_message_ids_by_unique_prefix(clients: Clients) -> None:
    alice, bob = clients
    await pair(alice, bob)
    uuid = alice.enqueue_text("bob", "hello")
    with alice.store.read():
        contact = alice.get_contact("bob")
        assert actions.find_message(contact, uuid[:4].upper()).uuid == uuid
        with pytest.raises(UsageError, match="at least 4"):
            actions.find_message(contact, uuid[:3])
        with pytest.raises(UsageError, match="No message"):
            actions.find_message(contact, "zzzz")


async def test_actions_that_overtake_their_message_are_kept(
        clients: Clients, relay: FakeRelay) -> None:
    alice, bob = clients
    await pair(alice, bob)
    target = bob.enqueue_text("alice", "original")
    bob.enqueue_action("alice", target, "edit", "edited")
    bob.enqueue_action("alice", target, "reaction", "👀")
    async with bob.online():
        await bob.flush_outbox()
    queued = relay.mailboxes[bytes(alice.account().mailbox)].queue
    deliveries = [frames.Delivered(id=relay_id, payload=payload, received_at=at)
                  for relay_id, (payload, at) in sorted(queued.items())]
    # Whatever came before (bob's own answers), then the edit and the
    # reaction, and the message last.
    alice.process_deliveries(deliveries[:-3])
    early = alice.process_deliveries(deliveries[-2:])
    assert not [e for e in early if isinstance(e, MessageEvent | ActionEvent)]
    with alice.store.read():
        assert db.PendingAction.select().count() == 2
    late = alice.process_deliveries(deliveries[-3:-2])
    assert [type(e).__name__ for e in late] == ["MessageEvent", "ActionEvent", "ActionEvent"]
    entry = by_id(alice, "bob")[target]
    assert (entry["text"], entry["edited"]) == ("edited", True)
    assert entry["reactions"] == [{"emoji": "👀", "from": "bob"}]
    with alice.store.read():
        assert db.PendingAction.select().count() == 0


async def test_a_delete_that_overtakes_its_message_leaves_a_tombstone(
        clients: Clients, relay: FakeRelay) -> None:
    alice, bob = clients
    await pair(alice, bob)
    target = bob.enqueue_text("alice", "oops")
    async with bob.online():
        await bob.flush_outbox()
    bob.enqueue_action("alice", target, "delete")
    async with bob.online():
        await bob.flush_outbox()
    queued = relay.mailboxes[bytes(alice.account().mailbox)].queue
    deliveries = [frames.Delivered(id=relay_id, payload=payload, received_at=at)
                  for relay_id, (payload, at) in sorted(queued.items())]
    alice.process_deliveries(deliveries[:-2])
    alice.process_deliveries(deliveries[-1:])
    alice.process_deliveries(deliveries[-2:-1])
    entry = by_id(alice, "bob")[target]
    assert (entry["text"], entry["deleted"]) == ("message deleted", True)


async def test_an_older_reaction_arriving_late_does_not_win(clients: Clients) -> None:
    alice, bob = clients
    await pair(alice, bob)
    uuid = alice.enqueue_text("bob", "hi")
    with alice.store.write():
        row = db.Message.get(db.Message.uuid == uuid)
        key = bytes(alice.get_contact("bob").identity)
        assert actions.set_reaction(alice.sealer, row, key, "👍", 200)
        assert not actions.set_reaction(alice.sealer, row, key, "👎", 100)
        assert actions.set_reaction(alice.sealer, row, key, "", 300)
        assert not actions.set_reaction(alice.sealer, row, key, "👎", 250)
    assert by_id(alice, "bob")[uuid]["reactions"] == []


async def test_unknown_content_is_shown_as_unsupported(clients: Clients) -> None:
    alice, bob = clients
    await pair(alice, bob)
    queue_raw(bob, "alice", Poll(question="lunch?"))
    async with bob.online():
        await bob.flush_outbox()
    events = await drain(alice)
    message = next(e for e in events if isinstance(e, MessageEvent))
    assert (message.text, message.unsupported) == ("unsupported message, update chatcli", True)
    assert message.to_json()["unsupported"] is True
    (entry,) = alice.history("bob")
    assert (entry["text"], entry["unsupported"]) == ("unsupported message, update chatcli",
                                                      True)
    # A malformed known tag is still refused as malformed (not "unsupported").
    with pytest.raises(Exception, match="Expected"):
        m.decode_content(m.encode(Poll(question="x")).replace(b"poll", b"text"))


async def test_unknown_group_content_is_shown_as_unsupported(trio_of: Trio) -> None:
    from chatcli.client.groups import models as gdb
    from chatcli.client.groups import wire
    from chatcli.client.groups.service import GroupMessageEvent, GroupService
    from chatcli.crypto.sender_keys import SenderKeyState
    from tests.client.test_group_service import make_group, settle

    alice, bob, carol = trio_of
    await make_group(alice, bob, carol)
    await settle(alice, bob, carol)
    state = SenderKeyState.generate()
    service = GroupService(carol)
    with carol.store.write(), gdb.bound(carol.store):
        group = gdb.Group.get(gdb.Group.name == "team")
        service._on_sender_key(group, bob.identity.public, wire.SenderKey(
            group_id=group.group_id, distribution=state.distribution()), received_at=1)
        events = service._on_cipher(state.encrypt(m.encode(Poll(question="lunch?"))), 2)
    (event,) = [e for e in events if isinstance(e, GroupMessageEvent)]
    assert (event.contact, event.text, event.unsupported) == (
        "bob", "unsupported message, update chatcli", True)
    assert event.to_json()["unsupported"] is True
    assert [h["text"] for h in carol.history("team")][-1] == "unsupported message, update chatcli"


async def test_search_follows_edits_and_deletes_on_both_sides(clients: Clients) -> None:
    """The in-memory search index forgets a text deleted for everyone and finds
    an edited one by its new words, for the author and for the recipient."""
    alice, bob = clients
    await pair(alice, bob)
    async with alice.online():
        edited = await alice.send_text("bob", "lunch tomorrow")
        deleted = await alice.send_text("bob", "secret plan")
    await drain(bob)

    def found(client: ChatClient, text: str) -> list[str]:
        client.search_index.refresh(client.store, client.sealer)
        return [doc.uuid for doc in client.search_index.search(text, limit=10)]

    assert found(bob, "secret") == [deleted] and found(alice, "lunch") == [edited]
    async with alice.online():
        await alice.send_action("bob", edited, "edit", "dinner tonight")
        await alice.send_action("bob", deleted, "delete")
    await drain(bob)
    for client in (alice, bob):
        assert found(client, "secret") == []
        assert found(client, "dinner") == [edited]
