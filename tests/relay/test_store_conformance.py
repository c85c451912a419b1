"""The Store contract, method by method, against every backend.

Each test runs on SQLite and on PostgreSQL through the ``store_factory``
fixture (tests/relay/conftest.py), so that the backends behave the same.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import peewee
import pytest

from chatcli.errors import StorageError
from chatcli.relay.store import schema
from chatcli.relay.store.base import BlobInfo, NewMessage, PresenceRecord, Store, Usage
from tests.relay.conftest import StoreFactory

NOW = 1_700_000_000_000


def mb() -> bytes:
    return os.urandom(16)


def h() -> bytes:
    return os.urandom(32)


@pytest.fixture
def store(store_factory: StoreFactory) -> Iterator[Store]:
    s = store_factory()
    s.open(NOW)
    try:
        yield s
    finally:
        s.close()


def make_mailbox(store: Store) -> bytes:
    mailbox = mb()
    store.create_mailbox(mailbox, os.urandom(32), NOW)
    return mailbox


# ------------------------------------------------------------------ lifecycle


def test_open_creates_schema_and_reopens(store_factory: StoreFactory) -> None:
    s = store_factory()
    s.open(NOW)
    assert s.schema_version() == schema.SCHEMA_VERSION
    mailbox = make_mailbox(s)
    s.close()
    s.open(NOW + 1)   # the same object opens again
    assert s.mailbox_auth_key(mailbox) is not None
    s.close()
    other = store_factory()   # and another store on the same database sees the data
    other.open(NOW + 2)
    try:
        assert other.mailbox_auth_key(mailbox) is not None
        assert other.schema_version() == schema.SCHEMA_VERSION
    finally:
        other.close()


def test_description_names_backend_without_secrets(store: Store) -> None:
    text = store.description
    assert text
    assert "SQLite" in text or "PostgreSQL" in text


def test_newer_schema_refused(store_factory: StoreFactory) -> None:
    s = store_factory()
    s.open(NOW)
    with s.transaction():
        schema.SchemaMigration.create(version=schema.SCHEMA_VERSION + 1,
                                      description="from the future", applied_at=NOW)
    s.close()
    again = store_factory()
    with pytest.raises(StorageError, match="newer"):
        again.open(NOW)
    again.close()


def test_transaction_rolls_back_everything(store: Store) -> None:
    mailbox = make_mailbox(store)
    with pytest.raises(RuntimeError), store.transaction():
        store.insert_messages([NewMessage(mailbox, b"x", NOW)])
        store.add_caps(mailbox, [h()], NOW)
        raise RuntimeError("abort")
    assert store.fetch_messages(mailbox, 0, 10) == []
    assert store.mailbox_usage([mailbox]) == {mailbox: Usage(0, 0)}


def test_nested_transactions_join_the_outer_one(store: Store) -> None:
    mailbox = make_mailbox(store)
    with pytest.raises(RuntimeError), store.transaction():
        with store.transaction():
            store.insert_messages([NewMessage(mailbox, b"x", NOW)])
        raise RuntimeError("abort")
    assert store.fetch_messages(mailbox, 0, 10) == []


def test_integrity_error_inside_transaction_leaves_store_usable(store: Store) -> None:
    mailbox = make_mailbox(store)
    with pytest.raises(peewee.IntegrityError), store.transaction():
        store.create_mailbox(mailbox, os.urandom(32), NOW)
    assert store.mailbox_auth_key(mailbox) is not None
    store.insert_messages([NewMessage(mailbox, b"after", NOW)])
    assert len(store.fetch_messages(mailbox, 0, 10)) == 1


# ------------------------------------------------------------------ relay key


def test_relay_seed_stored_once(store_factory: StoreFactory) -> None:
    first, second = os.urandom(32), os.urandom(32)
    s = store_factory()
    s.open(NOW)
    assert s.load_or_store_relay_seed(first) == first
    assert s.load_or_store_relay_seed(second) == first
    s.close()
    other = store_factory()
    other.open(NOW)
    try:
        assert other.load_or_store_relay_seed(second) == first
    finally:
        other.close()


# ------------------------------------------------------------------ tokens


def test_tokens_uses_and_expiry(store: Store) -> None:
    two, once, expiring = h(), h(), h()
    store.add_token(two, 2, None, NOW)
    store.add_token(once, 1, NOW + 10_000, NOW)
    store.add_token(expiring, 5, NOW + 10, NOW)
    assert store.stats().tokens == 3
    assert store.consume_token(two, NOW)
    assert store.consume_token(two, NOW)
    assert not store.consume_token(two, NOW)
    assert store.consume_token(once, NOW + 9_999)
    assert not store.consume_token(once, NOW)
    assert not store.consume_token(expiring, NOW + 10)
    assert not store.consume_token(h(), NOW)
    assert store.stats().tokens == 1   # only the expired one has uses left


# ------------------------------------------------------------------ mailboxes


def test_mailbox_create_lookup_duplicate(store: Store) -> None:
    mailbox, key = mb(), os.urandom(32)
    store.create_mailbox(mailbox, key, NOW)
    assert store.mailbox_auth_key(mailbox) == key
    assert store.mailbox_auth_key(mb()) is None
    with pytest.raises(peewee.IntegrityError):
        store.create_mailbox(mailbox, os.urandom(32), NOW)
    assert store.mailbox_auth_key(mailbox) == key


def test_delete_mailbox_removes_everything_tied_to_it(store: Store) -> None:
    mailbox, other = make_mailbox(store), make_mailbox(store)
    cap = h()
    store.add_caps(mailbox, [cap], NOW)
    store.insert_messages([NewMessage(mailbox, b"a", NOW), NewMessage(other, b"b", NOW)])
    blob = mb()
    store.create_blob(BlobInfo(blob, mailbox, h(), 0, False, NOW + 1000), NOW)
    store.append_blob_chunk(blob, 0, b"data", True)
    kept_blob = mb()
    store.create_blob(BlobInfo(kept_blob, other, h(), 0, False, NOW + 1000), NOW)
    assert store.delete_mailbox(mailbox)
    assert not store.delete_mailbox(mailbox)
    assert store.mailbox_auth_key(mailbox) is None
    assert store.fetch_messages(mailbox, 0, 10) == []
    assert store.valid_caps([(mailbox, cap)]) == set()
    assert store.get_blob(blob) is None
    assert store.read_blob(blob, 0, 10) == b""
    assert store.get_blob(kept_blob) is not None
    assert len(store.fetch_messages(other, 0, 10)) == 1
    assert store.stats().mailboxes == 1


def test_mailbox_usage_only_existing(store: Store) -> None:
    a, b = make_mailbox(store), make_mailbox(store)
    store.insert_messages([NewMessage(a, b"12345", NOW), NewMessage(a, b"678", NOW)])
    assert store.mailbox_usage([a, b, mb()]) == {a: Usage(2, 8), b: Usage(0, 0)}
    assert store.mailbox_usage([]) == {}


def test_mailbox_usage_many(store: Store) -> None:
    boxes = [make_mailbox(store) for _ in range(5)]
    unknown = [mb() for _ in range(1200)]   # more than one IN (...) chunk
    assert set(store.mailbox_usage(boxes + unknown)) == set(boxes)


# ------------------------------------------------------------------ capabilities


def test_caps_add_revoke_readd(store: Store) -> None:
    mailbox, other = make_mailbox(store), make_mailbox(store)
    c1, c2, c3 = h(), h(), h()
    store.add_caps(mailbox, [c1, c2], NOW)
    store.add_caps(mailbox, [c1], NOW)   # idempotent
    assert store.valid_caps([(mailbox, c1), (mailbox, c2), (mailbox, c3), (other, c1)]) == {
        (mailbox, c1), (mailbox, c2)}
    store.revoke_caps(mailbox, [c1, c3], NOW)   # c3 never added: refused in advance
    assert store.valid_caps([(mailbox, c1), (mailbox, c2)]) == {(mailbox, c2)}
    store.add_caps(mailbox, [c3], NOW)
    assert store.valid_caps([(mailbox, c3)]) == {(mailbox, c3)}
    store.add_caps(mailbox, [c1], NOW)
    assert store.valid_caps([(mailbox, c1)]) == {(mailbox, c1)}
    assert store.valid_caps([]) == set()


def test_valid_caps_many(store: Store) -> None:
    mailbox = make_mailbox(store)
    caps = [h() for _ in range(1100)]
    store.add_caps(mailbox, caps, NOW)
    assert len(store.valid_caps([(mailbox, c) for c in caps])) == 1100


def test_one_shot_caps_consumed_with_the_deposit_hash(store: Store) -> None:
    mailbox = make_mailbox(store)
    invite, ordinary, fresh = h(), h(), h()
    store.add_caps(mailbox, [invite, fresh], NOW, one_shot=True)
    store.add_caps(mailbox, [ordinary], NOW)
    pairs = [(mailbox, invite), (mailbox, ordinary), (mailbox, fresh), (mb(), invite)]
    assert store.cap_used_by(pairs) == {}
    assert store.cap_uses(pairs) == {(mailbox, invite): 1, (mailbox, ordinary): None,
                                     (mailbox, fresh): 1}
    deposit = h()
    with store.transaction():
        assert store.consume_caps({(mailbox, invite): deposit}) == {(mailbox, invite)}
    with store.transaction():   # used up: no second use, the first deposit's hash kept
        assert store.consume_caps({(mailbox, invite): h(), (mailbox, ordinary): h()}) == set()
    assert store.cap_uses(pairs)[(mailbox, invite)] == 0
    assert store.cap_used_by(pairs) == {(mailbox, invite): deposit}
    assert store.cap_used_by([]) == {}
    store.add_caps(mailbox, [invite], NOW, one_shot=True)   # re-adding keeps it used
    assert store.cap_used_by(pairs) == {(mailbox, invite): deposit}
    store.revoke_caps(mailbox, [invite], NOW)
    assert store.cap_used_by(pairs) == {}


def test_schema_3_database_migrated_with_its_data(store_factory: StoreFactory) -> None:
    """A relay database of schema version 3 (before ``capability.used_by``):
    opening it migrates it, keeping mailboxes, messages and capabilities; a
    one-shot capability used before is still used, with no deposit known (its
    retry is refused as before); one used after keeps its deposit's hash."""
    from chatcli.relay.mailbox import DepositItem, Mailboxes, Quota, payload_hash

    s = store_factory()
    s.open(NOW)
    mailbox, ordinary, invite, unused = make_mailbox(s), h(), h(), h()
    s.add_caps(mailbox, [ordinary], NOW)
    s.add_caps(mailbox, [invite, unused], NOW, one_shot=True)
    mb_old = Mailboxes(s, quota=Quota(10, 10_000), retention_ms=10**9)
    assert mb_old.deposit([DepositItem(mailbox, invite, b"handshake"),
                           DepositItem(mailbox, ordinary, b"text")], NOW) == [None, None]
    with s.transaction():   # back to schema 3, as a relay of that version left it
        s.db.execute_sql('ALTER TABLE "capability" DROP COLUMN "used_by"')  # type: ignore[attr-defined]
        s.db.execute_sql('DELETE FROM "schema_migration" WHERE "version" = 4')  # type: ignore[attr-defined]
    assert s.schema_version() == 3
    s.close()

    again = store_factory()
    again.open(NOW + 1)
    assert again.schema_version() == schema.SCHEMA_VERSION == 4
    assert again.stats().schema_version == 4
    pending = again.fetch_messages(mailbox, 0, 10)
    assert [m.payload for m in pending] == [b"handshake", b"text"]
    assert again.mailbox_usage([mailbox]) == {mailbox: Usage(2, len(b"handshaketext"))}
    pairs = [(mailbox, ordinary), (mailbox, invite), (mailbox, unused)]
    assert again.cap_uses(pairs) == {(mailbox, ordinary): None, (mailbox, invite): 0,
                                     (mailbox, unused): 1}
    assert again.cap_used_by(pairs) == {(mailbox, invite): None}
    mb_new = Mailboxes(again, quota=Quota(10, 10_000), retention_ms=10**9)
    assert mb_new.deposit([DepositItem(mailbox, invite, b"handshake")], NOW + 2) == [
        "capability_used"]
    # The one-shot capability unused at the upgrade works as this version's do.
    hs = DepositItem(mailbox, unused, b"other handshake")
    assert mb_new.deposit([hs], NOW + 3) == [None]
    assert again.cap_used_by(pairs)[(mailbox, unused)] == payload_hash(b"other handshake")
    assert mb_new.deposit([hs, DepositItem(mailbox, unused, b"x")], NOW + 4) == [
        None, "capability_used"]
    assert len(again.fetch_messages(mailbox, 0, 10)) == 3
    again.close()


# ------------------------------------------------------------------ messages


def test_insert_fetch_in_order_with_ids(store: Store) -> None:
    a, b = make_mailbox(store), make_mailbox(store)
    msgs = [NewMessage(a if i % 2 else b, f"m{i}".encode(), NOW + i) for i in range(10)]
    ids = store.insert_messages(msgs)
    assert len(ids) == 10
    assert ids == sorted(ids) and len(set(ids)) == 10
    got = store.fetch_messages(a, 0, 100)
    assert [m.payload for m in got] == [f"m{i}".encode() for i in range(1, 10, 2)]
    assert [m.id for m in got] == [ids[i] for i in range(1, 10, 2)]
    assert [m.received_at for m in got] == [NOW + i for i in range(1, 10, 2)]
    assert store.fetch_messages(a, got[1].id, 2) == got[2:4]
    assert store.fetch_messages(a, got[-1].id, 10) == []
    assert store.insert_messages([]) == []


def test_large_batch_insert(store: Store) -> None:
    mailbox = make_mailbox(store)
    ids = store.insert_messages([NewMessage(mailbox, os.urandom(40), NOW)
                                 for _ in range(2500)])
    assert ids == sorted(ids) and len(set(ids)) == 2500
    assert store.mailbox_usage([mailbox])[mailbox] == Usage(2500, 100_000)
    assert [m.id for m in store.fetch_messages(mailbox, 0, 5000)] == ids


def test_ids_never_reused(store_factory: StoreFactory) -> None:
    s = store_factory()
    s.open(NOW)
    mailbox = make_mailbox(s)
    (first,) = s.insert_messages([NewMessage(mailbox, b"a", NOW)])
    assert s.delete_messages(mailbox, [first]) == 1
    s.close()
    s = store_factory()
    s.open(NOW)
    try:
        (second,) = s.insert_messages([NewMessage(mailbox, b"b", NOW)])
        assert second > first
    finally:
        s.close()


def test_delete_messages_counts_and_ownership(store: Store) -> None:
    a, b = make_mailbox(store), make_mailbox(store)
    ids_a = store.insert_messages([NewMessage(a, b"xx", NOW), NewMessage(a, b"yyy", NOW)])
    ids_b = store.insert_messages([NewMessage(b, b"z", NOW)])
    assert store.delete_messages(a, [ids_a[0], ids_b[0], 10**12]) == 1   # b's id ignored
    assert store.mailbox_usage([a, b]) == {a: Usage(1, 3), b: Usage(1, 1)}
    assert store.delete_messages(a, [ids_a[0]]) == 0
    assert store.delete_messages(a, []) == 0
    assert store.delete_messages(a, [ids_a[1], ids_a[1]]) == 1
    assert store.mailbox_usage([a]) == {a: Usage(0, 0)}


def test_delete_messages_many_counts_ownership_and_usage(store: Store) -> None:
    a, b = make_mailbox(store), make_mailbox(store)
    ids = store.insert_messages([NewMessage(box, b"x" * n, NOW) for box, n in
                                 [(a, 1), (a, 2), (b, 4), (a, 8), (b, 16)]])
    a1, a2, b1, a3, b2 = ids
    # Ids of another mailbox (b1 acknowledged as a's), unknown ids, repeats (within one
    # list and across two entries of one mailbox) and a mailbox that does not exist (a2
    # acknowledged as its) are ignored; each deleted message counts once.
    deleted = store.delete_messages_many([(a, [a1, b1, a1, 10**12]), (b, [b2, b2, 10**12]),
                                          (a, [a3, a1]), (mb(), [a2])])
    assert deleted == 3
    assert store.mailbox_usage([a, b]) == {a: Usage(1, 2), b: Usage(1, 4)}
    assert [m.id for m in store.fetch_messages(a, 0, 10)] == [a2]
    assert [m.id for m in store.fetch_messages(b, 0, 10)] == [b1]
    assert store.delete_messages_many([]) == 0
    assert store.delete_messages_many([(a, [a1])]) == 0
    # A large batch (several chunks of the SQL statements).
    many = store.insert_messages([NewMessage(a, b"y", NOW) for _ in range(700)])
    assert store.delete_messages_many([(a, many[:350]), (a, many[350:])]) == 700
    assert store.mailbox_usage([a]) == {a: Usage(1, 2)}


def test_expire_messages(store: Store) -> None:
    a, b = make_mailbox(store), make_mailbox(store)
    store.insert_messages([NewMessage(a, b"old", NOW), NewMessage(b, b"old2", NOW + 5),
                           NewMessage(a, b"new", NOW + 10)])
    assert store.expire_messages(NOW + 10) == 2
    assert [m.payload for m in store.fetch_messages(a, 0, 10)] == [b"new"]
    assert store.fetch_messages(b, 0, 10) == []
    assert store.mailbox_usage([a, b]) == {a: Usage(1, 3), b: Usage(0, 0)}
    assert store.expire_messages(NOW + 10) == 0


# ------------------------------------------------------------------ presence


def test_presence_records(store: Store) -> None:
    a, b = make_mailbox(store), make_mailbox(store)
    assert store.presence_records([a, mb()]) == {a: PresenceRecord(False, None)}
    store.set_last_seen(a, NOW + 7)
    store.set_presence_hidden(b, True)
    assert store.presence_records([a, b]) == {a: PresenceRecord(False, NOW + 7),
                                              b: PresenceRecord(True, None)}
    store.set_presence_hidden(b, False)
    assert store.presence_records([b]) == {b: PresenceRecord(False, None)}
    store.set_last_seen(mb(), NOW)   # unknown mailbox: nothing happens
    assert store.presence_records([]) == {}


# ------------------------------------------------------------------ blobs


def test_blob_lifecycle(store: Store) -> None:
    owner = make_mailbox(store)
    blob, read_cap = mb(), h()
    info = BlobInfo(blob, owner, read_cap, 0, False, NOW + 1000)
    store.create_blob(info, NOW)
    assert store.get_blob(blob) == info
    assert store.get_blob(mb()) is None
    data = os.urandom(2500)
    store.append_blob_chunk(blob, 0, data[:1000], False)
    store.append_blob_chunk(blob, 1000, data[1000:2000], False)
    assert store.get_blob(blob) == BlobInfo(blob, owner, read_cap, 2000, False, NOW + 1000)
    store.append_blob_chunk(blob, 2000, data[2000:], True)
    assert store.get_blob(blob) == BlobInfo(blob, owner, read_cap, 2500, True, NOW + 1000)
    assert store.read_blob(blob, 0, 5000) == data
    assert store.read_blob(blob, 999, 2) == data[999:1001]
    assert store.read_blob(blob, 1500, 1000) == data[1500:2500]
    assert store.read_blob(blob, 2500, 10) == b""
    assert store.owner_blob_bytes(owner) == 2500
    assert store.owner_blob_bytes(mb()) == 0
    assert store.stats().blobs == 1 and store.stats().blob_bytes == 2500
    assert store.delete_blob(blob)
    assert not store.delete_blob(blob)
    assert store.read_blob(blob, 0, 10) == b""
    assert store.owner_blob_bytes(owner) == 0


def test_empty_final_chunk(store: Store) -> None:
    owner = make_mailbox(store)
    blob = mb()
    store.create_blob(BlobInfo(blob, owner, h(), 0, False, NOW + 1000), NOW)
    store.append_blob_chunk(blob, 0, b"abc", False)
    store.append_blob_chunk(blob, 3, b"", True)
    info = store.get_blob(blob)
    assert info is not None and info.complete and info.size == 3
    assert store.read_blob(blob, 0, 10) == b"abc"


def test_duplicate_blob_refused(store: Store) -> None:
    owner = make_mailbox(store)
    blob = mb()
    store.create_blob(BlobInfo(blob, owner, h(), 0, False, NOW + 1000), NOW)
    with pytest.raises(peewee.IntegrityError):
        store.create_blob(BlobInfo(blob, owner, h(), 0, False, NOW + 1000), NOW)


def test_expire_blobs(store: Store) -> None:
    owner = make_mailbox(store)
    old, new = mb(), mb()
    store.create_blob(BlobInfo(old, owner, h(), 0, False, NOW + 10), NOW)
    store.append_blob_chunk(old, 0, b"old", True)
    store.create_blob(BlobInfo(new, owner, h(), 0, False, NOW + 20), NOW)
    assert store.expire_blobs(NOW + 10) == 1
    assert store.get_blob(old) is None and store.read_blob(old, 0, 3) == b""
    assert store.get_blob(new) is not None
    assert store.expire_blobs(NOW + 10) == 0


# ------------------------------------------------------------------ stats


def test_stats(store: Store) -> None:
    empty = store.stats()
    assert (empty.mailboxes, empty.messages, empty.message_bytes, empty.blobs,
            empty.blob_bytes, empty.tokens) == (0, 0, 0, 0, 0, 0)
    assert empty.schema_version == schema.SCHEMA_VERSION
    a, b = make_mailbox(store), make_mailbox(store)
    store.insert_messages([NewMessage(a, b"1234", NOW), NewMessage(b, b"56", NOW)])
    store.add_token(h(), 1, None, NOW)
    stats = store.stats()
    assert (stats.mailboxes, stats.messages, stats.message_bytes, stats.tokens) == (2, 2, 6, 1)
