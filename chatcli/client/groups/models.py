"""The group tables in a local store: created on first use, bound for a query,
and a few questions every part asks (is a name a group's?). The tables
themselves are defined in :mod:`chatcli.client.groups.tables` and handed on
from here, so that ``gdb.Group`` and ``gdb.bound`` come from one import.

The tables are created on first use (``CREATE TABLE IF NOT EXISTS``) by
:func:`ensure_tables`, so a database made before groups existed gains them without
a schema migration.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol
from weakref import WeakSet

import msgspec

from chatcli.client.groups.tables import (
    GROUP_MODELS,
    SEALED_GROUP_COLUMNS,
    Group,
    GroupAttachment,
    GroupDistributed,
    GroupInvitee,
    GroupMessage,
    GroupOp,
    GroupOpSent,
    GroupOutbox,
    GroupPeer,
    GroupPending,
    GroupSenderKey,
    GroupSession,
    group_row,
    op_row,
    sealed_row,
    sender_key_row,
    session_row,
)
from chatcli.client.store import Sealer, Store

__all__ = [
    "GROUP_MODELS",
    "SEALED_GROUP_COLUMNS",
    "Group",
    "GroupAttachment",
    "GroupDistributed",
    "GroupInvitee",
    "GroupMessage",
    "GroupOp",
    "GroupOpSent",
    "GroupOutbox",
    "GroupPeer",
    "GroupPending",
    "GroupSenderKey",
    "GroupSession",
    "HasStore",
    "bound",
    "ensure_tables",
    "group_names",
    "group_row",
    "has_tables",
    "is_group",
    "name_in_use",
    "op_row",
    "sealed_row",
    "sender_key_row",
    "session_row",
]


_ready: WeakSet[Store] = WeakSet()


def _create(store: Store) -> None:
    # Databases written before chain ids were keyed by (group, sender) have a
    # unique index on chain_id alone, with the name the plain index now takes.
    table = GroupSenderKey._meta.table_name
    for row in store.db.execute_sql(f"PRAGMA index_list({table})").fetchall():  # type: ignore[no-untyped-call]
        if row[1] == f"{table}_chain_id" and row[2]:
            store.db.execute_sql(f"DROP INDEX {row[1]}")  # type: ignore[no-untyped-call]
    with store.db.bind_ctx(GROUP_MODELS, bind_refs=False, bind_backrefs=False):
        store.db.create_tables(GROUP_MODELS, safe=True)
        # Columns added after the first release of the group tables.
        for model, column, ddl in ((GroupPeer, "refused", "BLOB"),
                                   (GroupPeer, "prekeys_seen", "BLOB"),
                                   (Group, "is_admin", "INTEGER NOT NULL DEFAULT 0")):
            table = model._meta.table_name
            columns = {row[1] for row in store.db.execute_sql(  # type: ignore[no-untyped-call]
                f"PRAGMA table_info(\"{table}\")").fetchall()}
            if column not in columns:
                store.db.execute_sql(  # type: ignore[no-untyped-call]
                    f'ALTER TABLE "{table}" ADD COLUMN {column} {ddl}')
                if column == "is_admin":
                    # Unknown until computed: the admins' pass over the active
                    # groups (GroupCore._broadcast_ops) corrects it.
                    Group.update(is_admin=True).where(Group.status == "active").execute()
        _migrate_one_way_sessions(store)


def _migrate_one_way_sessions(store: Store) -> None:
    """Databases made before two-way sessions: a peer's old incoming session is
    kept as an inactive session (its messages still in flight stay readable);
    the old outgoing one is dropped, so the next message to that member starts
    a two-way session with a fresh X3DH."""
    old = list(GroupPeer.select().where(GroupPeer.out_sealed.is_null(False)
                                        | GroupPeer.in_sealed.is_null(False)))
    if not old or store._sealer is None:
        return
    sealer = store.sealer
    for peer in old:
        if peer.in_sealed is not None and peer.in_ephemeral is not None and \
                GroupSession.get_or_none(GroupSession.peer == peer.identity,
                                         GroupSession.ephemeral == peer.in_ephemeral) is None:
            GroupSession.create(
                peer=peer.identity, ephemeral=peer.in_ephemeral, prekey=None,
                state_sealed=sealer.seal(sealer.open_v1(peer.in_sealed, "group.peer_in"),
                                         "group.session",
                                         session_row(peer.identity, peer.in_ephemeral)),
                initiator=False, confirmed=True, active=False, created_at=0)
        peer.out_sealed = peer.out_prekey = peer.out_ephemeral = None
        peer.in_sealed = peer.in_ephemeral = None
        peer.save()


def ensure_tables(store: Store) -> None:
    """Create the group tables if this database lacks them (and bring old ones up
    to date)."""
    if store in _ready:
        return
    if store.db.in_transaction():
        # Tables made inside a transaction vanish if it rolls back (a refused
        # message's savepoint): only tables that were already there count as ready.
        existed = bool(store.db.table_exists(Group._meta.table_name))
        _create(store)
        if not existed:
            return
    else:
        with store.write():
            _create(store)
    _ready.add(store)


def has_tables(store: Store) -> bool:
    return store in _ready or bool(store.db.table_exists(Group._meta.table_name))


@contextlib.contextmanager
def bound(store: Store) -> Iterator[None]:
    """Bind the group tables to ``store`` (creating them once per open store).

    Use inside ``store.write()`` or ``store.read()``; holds no transaction itself."""
    ensure_tables(store)
    with store.db.bind_ctx(GROUP_MODELS, bind_refs=False, bind_backrefs=False):
        yield


def group_names(store: Store) -> list[str]:
    """Local group names (a clear column: needs no passphrase, for shell completion)."""
    if not has_tables(store):
        return []
    with store.db.bind_ctx(GROUP_MODELS, bind_refs=False, bind_backrefs=False):
        return [g.name for g in Group.select(Group.name)]


class HasStore(Protocol):
    """Anything with a local store (an unlocked identity)."""

    store: Store


def name_in_use(client: HasStore, name: str) -> bool:
    """Whether a group is called ``name`` locally (for name uniqueness)."""
    store = client.store
    if not has_tables(store):
        return False
    with bound(store):
        return bool(Group.select().where(Group.name == name).exists())


def is_group(client: HasStore, name: str) -> bool:
    """Whether ``name`` is a group of this identity (reads the local database)."""
    with client.store.read():
        return name_in_use(client, name)


class _AttachmentInfo(msgspec.Struct, frozen=True):
    name: str
    size: int


def store_attachment(sealer: Sealer, message: GroupMessage, attachment: Any) -> None:
    """Record the name and size of a group message's file (inside ``bound``)."""
    GroupAttachment.create(message=message, info_sealed=sealer.seal(
        msgspec.json.encode(_AttachmentInfo(attachment.name, attachment.size)),
        "group.attachment", message.uuid))


def record_saved(sealer: Sealer, uuid: str, path: Path) -> None:
    """Where a group message's received file was saved (inside ``bound``, writing)."""
    row = (GroupAttachment.select().join(GroupMessage)
           .where(GroupMessage.uuid == uuid).first())
    if row is None or row.path_sealed is not None:
        return
    GroupAttachment.update(path_sealed=sealer.seal(
        os.fsencode(path.resolve()), "group.attachment_path", uuid)).where(
        GroupAttachment.message == row.__data__["message"]).execute()


def attachments(sealer: Sealer, rows: list[GroupMessage]) -> dict[int, dict[str, Any]]:
    """message id -> ``{"name", "size", "path"?}`` for those of ``rows`` with a
    file (``path`` while the saved file is there); inside ``bound``."""
    by_id = {row.id: row.uuid for row in rows}
    out: dict[int, dict[str, Any]] = {}
    for found in GroupAttachment.select().where(GroupAttachment.message.in_(list(by_id))):
        message_id = found.__data__["message"]
        uuid = by_id[message_id]
        info = msgspec.json.decode(sealer.open(bytes(found.info_sealed), "group.attachment",
                                               uuid), type=_AttachmentInfo)
        entry: dict[str, Any] = {"name": info.name, "size": info.size}
        if found.path_sealed is not None:
            path = Path(os.fsdecode(sealer.open(bytes(found.path_sealed),
                                                "group.attachment_path", uuid)))
            if path.is_file():
                entry["path"] = str(path)
        out[message_id] = entry
    return out
