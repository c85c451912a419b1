"""Sealed values of the local database are bound to their rows and versions.

An attacker who can write ``chatcli.db`` (but not read the keystore) must not
be able to give one contact another's session or capability, nor put back an
older ratchet state of one row; a database of the first format (values bound
to their column only) is resealed once when it is opened."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatcli.client import models as db
from chatcli.client.home import Home
from chatcli.client.service import ChatClient, MessageEvent
from chatcli.client.store import (
    MANIFEST_KEY,
    SCHEMA_VERSION,
    SEALED_COLUMNS,
    SEALED_SCHEMA,
    SealingTampered,
    Store,
)
from chatcli.crypto.errors import CorruptData
from tests.client.conftest import PASS, drain, make_client, pair
from tests.client.fakerelay import FakeRelay


def texts(events: list[object]) -> list[str]:
    return [e.text for e in events if isinstance(e, MessageEvent)]


def reopen(client: ChatClient) -> ChatClient:
    home = client.home
    client.close()
    return ChatClient.unlock(Home(home.root), PASS)


def contact_id(client: ChatClient, name: str) -> int:
    with client.store.read():
        return int(db.Contact.get(db.Contact.name == name).id)


def write_raw(store: Store, sql: str, args: tuple[object, ...]) -> None:
    """What an attacker with write access to the file does (no key needed)."""
    with store.write():
        store.db.execute_sql(sql, args)  # type: ignore[no-untyped-call]


def read_raw(store: Store, sql: str, args: tuple[object, ...]) -> bytes:
    with store.read():
        return bytes(store.db.execute_sql(sql, args).fetchone()[0])  # type: ignore[no-untyped-call]


async def three(tmp_path: Path, relay: FakeRelay) -> tuple[ChatClient, ChatClient, ChatClient]:
    alice = await make_client(tmp_path, "alice", relay)
    bob = await make_client(tmp_path, "bob", relay)
    carol = await make_client(tmp_path, "carol", relay)
    await pair(alice, bob, "bob")
    await pair(alice, carol, "carol")
    return alice, bob, carol


async def test_sessions_swapped_between_contacts_are_refused(tmp_path: Path,
                                                             relay: FakeRelay) -> None:
    alice, _bob, _carol = await three(tmp_path, relay)
    bob_id, carol_id = contact_id(alice, "bob"), contact_id(alice, "carol")
    select = "SELECT state_sealed FROM session WHERE contact_id = ?"
    bob_state = read_raw(alice.store, select, (bob_id,))
    carol_state = read_raw(alice.store, select, (carol_id,))
    update = "UPDATE session SET state_sealed = ? WHERE contact_id = ?"
    write_raw(alice.store, update, (carol_state, bob_id))
    write_raw(alice.store, update, (bob_state, carol_id))
    alice.enqueue_text("bob", "for bob")
    with pytest.raises(CorruptData, match="does not belong to its row"):
        alice._encrypt_pending()
    with alice.store.read():  # nothing was lost: the message is still queued
        assert db.Outbox.select().where(db.Outbox.payload_sealed.is_null()).count() == 1


async def test_capabilities_swapped_between_contacts_are_refused(tmp_path: Path,
                                                                 relay: FakeRelay) -> None:
    alice, _bob, _carol = await three(tmp_path, relay)
    bob_id, carol_id = contact_id(alice, "bob"), contact_id(alice, "carol")
    carol_cap = read_raw(alice.store, "SELECT deposit_cap_sealed FROM contact WHERE id = ?",
                         (carol_id,))
    write_raw(alice.store, "UPDATE contact SET deposit_cap_sealed = ? WHERE id = ?",
              (carol_cap, bob_id))
    with pytest.raises(SealingTampered):
        alice.export_backup()


async def test_a_session_rolled_back_to_an_older_state_is_refused(tmp_path: Path,
                                                                  relay: FakeRelay) -> None:
    alice = await make_client(tmp_path, "alice", relay)
    bob = await make_client(tmp_path, "bob", relay)
    await pair(alice, bob)
    bob_id = contact_id(alice, "bob")
    select = "SELECT state_sealed FROM session WHERE contact_id = ?"
    old_state = read_raw(alice.store, select, (bob_id,))
    async with alice.online():
        await alice.send_text("bob", "one")
    assert read_raw(alice.store, select, (bob_id,)) != old_state
    write_raw(alice.store, "UPDATE session SET state_sealed = ? WHERE contact_id = ?",
              (old_state, bob_id))
    alice = reopen(alice)
    alice.enqueue_text("bob", "two")
    with pytest.raises(SealingTampered, match="older version"):
        alice._encrypt_pending()
    assert texts(await drain(bob)) == ["one"]


async def test_a_value_whose_version_was_removed_is_refused(tmp_path: Path,
                                                            relay: FakeRelay) -> None:
    """A row deleted and put back (its version pruned on open) does not open."""
    alice = await make_client(tmp_path, "alice", relay)
    bob = await make_client(tmp_path, "bob", relay)
    await pair(alice, bob)
    bob_id = contact_id(alice, "bob")
    row = alice.store.db.execute_sql(  # type: ignore[no-untyped-call]
        "SELECT id, contact_id, state_sealed, updated_at FROM session WHERE contact_id = ?",
        (bob_id,)).fetchone()
    write_raw(alice.store, "DELETE FROM session WHERE contact_id = ?", (bob_id,))
    alice = reopen(alice)  # prunes the versions of rows that are gone
    write_raw(alice.store, "INSERT INTO session (id, contact_id, state_sealed, updated_at) "
              "VALUES (?, ?, ?, ?)", tuple(row))
    alice.enqueue_text("bob", "after")
    with pytest.raises(SealingTampered):
        alice._encrypt_pending()


def downgrade_to_column_binding(client: ChatClient) -> None:
    """Rewrite the database as chatcli wrote it before rows were bound: every
    value sealed for its column only, no manifest, schema version 1."""
    sealer = client.sealer
    with client.store.write():
        for column, model, field, row_of in SEALED_COLUMNS:
            for row in model.select():
                data = getattr(row, field)
                if not data:
                    continue
                name = column
                if column == "message.attachment" and not row.outgoing:
                    name = "message.attachment_ref"
                value = sealer.open(bytes(data), name, row_of(row))
                model.update({field: sealer.seal_v1(value, name)}).where(
                    model._meta.primary_key == row.get_id()).execute()
        db.MetaEntry.delete().where(db.MetaEntry.key == MANIFEST_KEY).execute()
        db.MetaEntry.update(value=str(SEALED_SCHEMA - 1)).where(
            db.MetaEntry.key == "schema_version").execute()


async def test_a_database_of_the_column_bound_format_is_migrated(tmp_path: Path,
                                                                 relay: FakeRelay) -> None:
    alice = await make_client(tmp_path, "alice", relay)
    bob = await make_client(tmp_path, "bob", relay)
    await pair(alice, bob)
    async with alice.online():
        await alice.send_text("bob", "before")
    alice.enqueue_text("bob", "queued across the upgrade")
    assert texts(await drain(bob)) == ["before"]
    downgrade_to_column_binding(alice)
    alice = reopen(alice)
    with alice.store.read():
        version = db.MetaEntry.get(db.MetaEntry.key == "schema_version").value
        assert int(version) == SCHEMA_VERSION
        assert db.MetaEntry.get_or_none(db.MetaEntry.key == MANIFEST_KEY) is not None
    assert [m["text"] for m in alice.history("bob")] == ["before", "queued across the upgrade"]
    async with alice.online():
        await alice.deliver_outbox()
        await alice.send_text("bob", "after")
    assert texts(await drain(bob)) == ["queued across the upgrade", "after"]
    # Migrated values are bound to their rows from now on.
    bob_id = contact_id(alice, "bob")
    state = read_raw(alice.store, "SELECT state_sealed FROM session WHERE contact_id = ?",
                     (bob_id,))
    with alice.store.read(), pytest.raises(SealingTampered):
        alice.sealer.open(state, "session.state", bob_id + 1)


async def test_the_manifest_forgets_rows_that_are_gone(tmp_path: Path, relay: FakeRelay,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Outbox rows come and go; their versions do not pile up in the manifest."""
    from chatcli.client import store as store_module

    monkeypatch.setattr(store_module, "PRUNE_MIN", 8)
    alice = await make_client(tmp_path, "alice", relay)
    bob = await make_client(tmp_path, "bob", relay)
    await pair(alice, bob)

    def outbox_versions(client: ChatClient) -> int:
        with client.store.read():
            _text, manifest = client.sealer._read_manifest()
        return sum(key.startswith("outbox.") for key in manifest.versions)

    rounds = 4
    async with alice.online():
        for r in range(rounds):
            for n in range(10):
                alice.enqueue_text("bob", f"m{r}.{n}")
            await alice.deliver_outbox()
    # Each message had two versioned values (plaintext, payload): without
    # pruning all 80 would still be listed; a running process prunes when the
    # manifest doubles.
    assert outbox_versions(alice) < rounds * 10 * 2
    alice = reopen(alice)
    assert outbox_versions(alice) == 0  # and all of them on open
    assert len(texts(await drain(bob))) == rounds * 10
