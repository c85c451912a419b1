"""The group tables' sealed values are bound to their rows and versions, like
the core tables' (tests/client/test_sealing.py): someone who can write
``chatcli.db`` cannot give one member another's session or sender key, nor put
back an older state; a schema-3 database (group values bound to their column
only) is resealed once when it is opened."""

from __future__ import annotations

import pytest

from chatcli.client import models as db
from chatcli.client.groups import models as gdb
from chatcli.client.groups.pairwise import PairwiseSessions
from chatcli.client.groups.service import GroupService
from chatcli.client.service import ChatClient
from chatcli.client.store import GROUP_SEALED_SCHEMA, SCHEMA_VERSION, SealingTampered, Store
from tests.client.conftest import Trio
from tests.client.test_group_service import make_group, send, texts
from tests.client.test_sealing import reopen


def raw_rows(store: Store, table: str, field: str) -> list[tuple[int, bytes]]:
    with store.read():
        return [(int(i), bytes(v)) for i, v in store.db.execute_sql(  # type: ignore[no-untyped-call]
            f"SELECT id, {field} FROM {table} ORDER BY id").fetchall()]  # noqa: S608


def write_raw(store: Store, table: str, field: str, row_id: int, value: bytes) -> None:
    """What an attacker with write access to the file does (no key needed)."""
    with store.write():
        store.db.execute_sql(  # type: ignore[no-untyped-call]
            f"UPDATE {table} SET {field} = ? WHERE id = ?", (value, row_id))  # noqa: S608


def load_sessions(client: ChatClient) -> None:
    with client.store.read(), gdb.bound(client.store):
        pairwise = PairwiseSessions(client.store, client.identity)
        for row in gdb.GroupSession.select():
            pairwise._load(row)


def open_receivers(client: ChatClient) -> None:
    with client.store.read(), gdb.bound(client.store):
        for row in gdb.GroupSenderKey.select():
            client.sealer.open(row.state_sealed, "group.receiver",
                               gdb.sealed_row("group.receiver", row))


SESSIONS = gdb.GroupSession._meta.table_name
SENDER_KEYS = gdb.GroupSenderKey._meta.table_name


async def test_group_sessions_swapped_between_members_are_refused(trio_of: Trio) -> None:
    alice, bob, carol = trio_of
    await make_group(alice, bob, carol)
    load_sessions(alice)  # all open as they are
    rows = raw_rows(alice.store, SESSIONS, "state_sealed")
    assert len(rows) >= 2
    (first, a), (second, b) = rows[0], rows[1]
    write_raw(alice.store, SESSIONS, "state_sealed", first, b)
    write_raw(alice.store, SESSIONS, "state_sealed", second, a)
    with pytest.raises(SealingTampered, match="does not belong to its row"):
        load_sessions(alice)


async def test_sender_keys_swapped_between_members_are_refused(trio_of: Trio) -> None:
    alice, bob, carol = trio_of
    await make_group(alice, bob, carol)
    await send(alice, "team", "from alice")
    await send(carol, "team", "from carol")
    await texts(bob)
    open_receivers(bob)
    rows = raw_rows(bob.store, SENDER_KEYS, "state_sealed")
    assert len(rows) >= 2
    (first, a), (second, b) = rows[0], rows[1]
    write_raw(bob.store, SENDER_KEYS, "state_sealed", first, b)
    write_raw(bob.store, SENDER_KEYS, "state_sealed", second, a)
    with pytest.raises(SealingTampered):
        open_receivers(bob)


async def test_a_group_session_rolled_back_is_refused(trio_of: Trio) -> None:
    alice, bob, carol = trio_of
    await make_group(alice, bob, carol)
    before = dict(raw_rows(alice.store, SESSIONS, "state_sealed"))
    # A membership change travels in the pairwise sessions.
    GroupService(alice).remove("team", "carol")
    after = dict(raw_rows(alice.store, SESSIONS, "state_sealed"))
    changed = [i for i in after if i in before and after[i] != before[i]]
    assert changed
    write_raw(alice.store, SESSIONS, "state_sealed", changed[0], before[changed[0]])
    alice = reopen(alice)
    with pytest.raises(SealingTampered, match="older version"):
        load_sessions(alice)


async def test_a_sender_key_rolled_back_is_refused(trio_of: Trio) -> None:
    alice, bob, carol = trio_of
    await make_group(alice, bob, carol)
    await send(alice, "team", "one")
    await texts(bob)
    before = dict(raw_rows(bob.store, SENDER_KEYS, "state_sealed"))
    await send(alice, "team", "two")
    assert [t for _g, _c, t in await texts(bob)] == ["two"]
    after = dict(raw_rows(bob.store, SENDER_KEYS, "state_sealed"))
    changed = [i for i in after if i in before and after[i] != before[i]]
    assert changed
    write_raw(bob.store, SENDER_KEYS, "state_sealed", changed[0], before[changed[0]])
    with pytest.raises(SealingTampered, match="older version"):
        open_receivers(bob)


def downgrade_group_tables(client: ChatClient) -> None:
    """Rewrite the group tables as schema 3 had them: bound to their column only."""
    sealer = client.sealer
    with client.store.write(), gdb.bound(client.store):
        for column, model, field, row_of in gdb.SEALED_GROUP_COLUMNS:
            for row in model.select():
                data = getattr(row, field)
                if not data:
                    continue
                value = sealer.open(bytes(data), column, row_of(row))
                model.update({field: sealer.seal_v1(value, column)}).where(
                    model._meta.primary_key == row.get_id()).execute()
        db.MetaEntry.update(value=str(GROUP_SEALED_SCHEMA - 1)).where(
            db.MetaEntry.key == "schema_version").execute()


async def test_a_schema_3_database_with_groups_is_migrated(trio_of: Trio) -> None:
    alice, bob, carol = trio_of
    await make_group(alice, bob, carol)
    await send(alice, "team", "before")
    await send(bob, "team", "from bob")
    assert [t for _g, _c, t in await texts(carol)] == ["before", "from bob"]
    await texts(alice)
    await texts(bob)
    clients = []
    for client in (alice, carol):
        downgrade_group_tables(client)
        client = reopen(client)
        with client.store.read():
            version = db.MetaEntry.get(db.MetaEntry.key == "schema_version").value
        assert int(version) == SCHEMA_VERSION
        load_sessions(client)
        open_receivers(client)
        clients.append(client)
    alice, carol = clients
    assert [m["text"] for m in GroupService(alice).history("team")] == ["before", "from bob"]
    await send(alice, "team", "after")
    await send(carol, "team", "carol after")
    await send(bob, "team", "bob after")
    assert [t for _g, _c, t in await texts(carol)] == ["after", "bob after"]
    assert [t for _g, _c, t in await texts(alice)] == ["carol after", "bob after"]
    assert [t for _g, _c, t in await texts(bob)] == ["after", "carol after"]
    # Resealing again (a migration interrupted and run twice) changes nothing.
    from chatcli.client.store import _reseal_group_rows
    with alice.store.write():
        _reseal_group_rows(alice.store.db, alice.sealer)
    load_sessions(alice)
    open_receivers(alice)
