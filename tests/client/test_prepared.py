"""Prepared statements (chatcli.client.prepared) and what the lean send path
keeps: the same rows as peewee's own queries, the sealer's cached manifest
never ahead of the database, and a send's statements counted."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatcli.client import models as db
from chatcli.client import prepared
from chatcli.client.prepared import Prepared, param
from chatcli.client.store import Sealer, SealingTampered, Store
from tests.client.conftest import make_client, pair
from tests.client.fakerelay import FakeRelay


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(tmp_path / "chatcli.db", Sealer(b"k" * 32), create=True)
    yield opened
    opened.close()


def _contact(name: str, **extra: object) -> db.Contact:
    return db.Contact.create(name=name, identity=name.encode() * 8, relay_url="ws://r/#f",
                             mailbox=b"m" * 16, box_key=b"b" * 32, deposit_cap_sealed=b"c",
                             created_at=1, **extra)


def test_rows_are_the_models_peewee_makes(store: Store) -> None:
    with store.write():
        _contact("bob", verified=True)
        _contact("carol")
    with store.read():
        mine = prepared.CONTACT_BY_NAME.first(name="bob")
        theirs = db.Contact.get(db.Contact.name == "bob")
        assert prepared.CONTACT_BY_NAME.first(name="nobody") is None
    assert mine is not None
    assert mine.__data__ == theirs.__data__
    assert mine.verified is True and mine.blocked is False  # converted as peewee does
    assert not mine.is_dirty()


def test_constants_stay_and_slots_take_each_value(store: Store) -> None:
    unblocked = Prepared(db.Contact, lambda: db.Contact.select(db.Contact.name).where(
        db.Contact.blocked == False, db.Contact.id > param("after"))  # noqa: E712
        .order_by(db.Contact.id))
    with store.write():
        ids = [_contact(name, blocked=name == "carol").id for name in ("bob", "carol", "dave")]
    with store.read():
        assert [c.name for c in unblocked.rows(after=0)] == ["bob", "dave"]
        assert [c.name for c in unblocked.rows(after=ids[0])] == ["dave"]
        with pytest.raises(KeyError):
            unblocked.rows()


def test_updates_and_deletes_report_their_rows(store: Store) -> None:
    with store.write():
        contact = _contact("bob")
        db.Session.create(contact=contact, state_sealed=b"s1", updated_at=1)
        assert prepared.SESSION_UPDATE.execute(state=b"s2", now=2, contact=contact.id
                                               ).rowcount == 1
        assert prepared.SESSION_UPDATE.execute(state=b"s3", now=3, contact=contact.id + 1
                                               ).rowcount == 0
        assert bytes(prepared.SESSION_STATE.scalar(contact=contact.id)) == b"s2"


def test_the_cached_manifest_follows_a_savepoint_rolled_back(store: Store) -> None:
    """A value sealed inside a savepoint that is rolled back takes its version
    back with it: the value sealed before it still opens in the same transaction."""
    sealer = store.sealer
    with store.write():
        first = sealer.seal(b"one", "session.state", 1)
        with pytest.raises(RuntimeError), store.db.atomic():
            sealer.seal(b"two", "session.state", 1)
            raise RuntimeError
        assert sealer.open(first, "session.state", 1) == b"one"
        second = sealer.seal(b"three", "session.state", 1)
        with pytest.raises(SealingTampered):
            sealer.open(first, "session.state", 1)
    with store.read():
        assert sealer.open(second, "session.state", 1) == b"three"


def test_the_cached_manifest_is_read_again_in_the_next_transaction(store: Store) -> None:
    """Another writer (another process) may have sealed between two transactions."""
    sealer = store.sealer
    with store.write():
        old = sealer.seal(b"one", "contact.deposit_cap", 7)
    other = Sealer(b"k" * 32)
    other.attach(store.db)
    with store.write():
        new = other.seal(b"two", "contact.deposit_cap", 7)
    with store.read():
        assert sealer.open(new, "contact.deposit_cap", 7) == b"two"
        with pytest.raises(SealingTampered):
            sealer.open(old, "contact.deposit_cap", 7)


async def test_a_send_runs_few_statements(tmp_path: Path, relay: FakeRelay) -> None:
    """The send path's statement count as the daemon runs it (one WAL
    checkpoint per request); it was 66: a regression here is a cost on every
    message."""
    alice = await make_client(tmp_path, "alice", relay)
    bob = await make_client(tmp_path, "bob", relay)
    await pair(alice, bob)
    statements: collections.Counter[str] = collections.Counter()
    async with alice.online():
        await alice.send_text("bob", "warm-up")
        connection = alice.store.db.connection()
        connection.set_trace_callback(lambda sql: statements.update([sql.split()[0]]))
        try:
            with alice.store.deferred_scrub():
                await alice.send_text("bob", "counted")
        finally:
            connection.set_trace_callback(None)
    total = sum(statements.values())
    assert total <= 36, statements
    alice.close()
    bob.close()
