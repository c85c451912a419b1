"""Durable sending: a crash at any point loses nothing and shows nothing twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatcli.client import models as db
from chatcli.client.home import Home
from chatcli.client.service import ChatClient, MessageEvent
from tests.client.conftest import PASS, drain, make_client, pair
from tests.client.fakerelay import FakeRelay


def texts(events: list[object]) -> list[str]:
    return [e.text for e in events if isinstance(e, MessageEvent)]


def reopen(client: ChatClient) -> ChatClient:
    """What the next command sees after the process died."""
    home = client.home
    client.close()
    return ChatClient.unlock(Home(home.root), PASS)


async def test_crash_before_encryption(tmp_path: Path, relay: FakeRelay) -> None:
    alice = await make_client(tmp_path, "alice", relay)
    bob = await make_client(tmp_path, "bob", relay)
    await pair(alice, bob)
    alice.enqueue_text("bob", "queued only")
    alice = reopen(alice)
    async with alice.online():
        report = await alice.deliver_outbox()
    assert len(report.stored) == 1
    assert texts(await drain(bob)) == ["queued only"]


async def test_crash_after_encryption_resends_same_bytes(tmp_path: Path, relay: FakeRelay
                                                         ) -> None:
    alice = await make_client(tmp_path, "alice", relay)
    bob = await make_client(tmp_path, "bob", relay)
    await pair(alice, bob)
    alice.enqueue_text("bob", "encrypted, not sent")
    alice._encrypt_pending()
    with alice.store.read():
        payload = alice.sealer.open(db.Outbox.get().payload_sealed, "outbox.payload",
                                    db.Outbox.get().id)
    alice = reopen(alice)
    alice._encrypt_pending()  # nothing new to encrypt: the payload is kept
    with alice.store.read():
        assert alice.sealer.open(db.Outbox.get().payload_sealed, "outbox.payload",
                                    db.Outbox.get().id) == payload
    async with alice.online():
        await alice.deliver_outbox()
    assert texts(await drain(bob)) == ["encrypted, not sent"]


async def test_crash_after_deposit_before_bookkeeping(
    tmp_path: Path, relay: FakeRelay, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await make_client(tmp_path, "alice", relay)
    bob = await make_client(tmp_path, "bob", relay)
    await pair(alice, bob)
    alice.enqueue_text("bob", "deposited twice")

    def crash(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(ChatClient, "_record_deposit", crash)
    with pytest.raises(KeyboardInterrupt):
        async with alice.online():
            await alice.deliver_outbox()
    monkeypatch.undo()
    alice = reopen(alice)
    async with alice.online():
        report = await alice.deliver_outbox()
    assert len(report.stored) == 1
    assert relay.deposits >= 2 + 2  # handshake + answer, then the same message twice
    got = await drain(bob)
    assert texts(got) == ["deposited twice"]
    assert [h["text"] for h in bob.history("alice")] == ["deposited twice"]
    with alice.store.read():
        assert db.Outbox.select().count() == 0


async def test_unreachable_relay_keeps_message_queued(tmp_path: Path, relay: FakeRelay) -> None:
    from chatcli.errors import RelayError

    alice = await make_client(tmp_path, "alice", relay)
    bob = await make_client(tmp_path, "bob", relay)
    await pair(alice, bob)
    with alice.store.write():
        db.Contact.update(relay_url="ws://127.0.0.1:9/#" + "a" * 52).execute()
    async with alice.online():
        with pytest.raises(RelayError):
            await alice.send_text("bob", "later", time_limit=0.5)
    with alice.store.read():
        assert db.Outbox.select().count() == 1
    assert alice.history("bob")[-1]["state"] == "queued"
