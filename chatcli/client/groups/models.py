"""The group tables of the client's local database (peewee, SQLite).

They live in the same ``chatcli.db`` as ``chatcli.client.models`` and follow
its rules: ``_sealed`` columns are ``LocalSealer`` ciphertexts (sender keys,
Double Ratchet states, capabilities, member records, message texts); names,
identity public keys, group ids and timestamps are in the clear.

The tables are created on first use (``CREATE TABLE IF NOT EXISTS``) by
:func:`ensure_tables`, so a database made before groups existed gains them without
a schema migration.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, Protocol
from weakref import WeakSet

import peewee

from chatcli.client.models import BaseModel
from chatcli.client.store import Store


class Group(BaseModel):
    """A group this identity belongs (or belonged) to. ``name`` is local."""

    id = peewee.AutoField()
    group_id = peewee.BlobField(unique=True)   # 16 random bytes chosen by the creator
    name = peewee.TextField(unique=True)
    creator_name = peewee.TextField()          # the name the creator gave it
    admin = peewee.BlobField()                 # the creator's identity key
    status = peewee.TextField()                # joining, active, left, removed
    own_cap_sealed = peewee.BlobField()        # capability issued to the members
    own_cap_registered = peewee.BooleanField(default=False)
    sender_sealed = peewee.BlobField(null=True)  # own SenderKeyState
    sender_roster = peewee.BlobField(null=True)  # members when that key was made
    created_at = peewee.IntegerField()


class GroupOp(BaseModel):
    """A signed membership operation (verified before it was stored)."""

    id = peewee.AutoField()
    group = peewee.ForeignKeyField(Group, on_delete="CASCADE")
    digest = peewee.BlobField()
    signed_sealed = peewee.BlobField()

    class Meta:
        indexes = ((("group", "digest"), True),)


class GroupInvitee(BaseModel):
    """Admin side: a contact invited and not yet joined."""

    id = peewee.AutoField()
    group = peewee.ForeignKeyField(Group, on_delete="CASCADE")
    identity = peewee.BlobField()


class GroupOpSent(BaseModel):
    """Admin side: the last operation (``GroupOp.id``) sent to ``member``."""

    id = peewee.AutoField()
    group = peewee.ForeignKeyField(Group, on_delete="CASCADE")
    member = peewee.BlobField()
    last_op = peewee.IntegerField()

    class Meta:
        indexes = ((("group", "member"), True),)


class GroupSenderKey(BaseModel):
    """A member's sender-key chain, as received: one row per (group, sender,
    chain id). The chain id alone is chosen by the sender and seen by every
    member, so it must not decide whose chain a message belongs to: another
    member could announce someone else's chain id first (squatting)."""

    id = peewee.AutoField()
    group = peewee.ForeignKeyField(Group, on_delete="CASCADE")
    sender = peewee.BlobField()                # identity key of the chain's owner
    chain_id = peewee.BlobField()
    state_sealed = peewee.BlobField()
    created_at = peewee.IntegerField()

    class Meta:
        indexes = (
            (("chain_id",), False),
            (("group", "sender", "chain_id"), True),
        )


class GroupDistributed(BaseModel):
    """Own chain ``chain_id`` was sent to ``member``."""

    id = peewee.AutoField()
    group = peewee.ForeignKeyField(Group, on_delete="CASCADE")
    member = peewee.BlobField()
    chain_id = peewee.BlobField()


class GroupPeer(BaseModel):
    """Another member, whether or not a contact: its announced name and whether
    it was verified. Its sessions are :class:`GroupSession` rows.

    ``out_*`` and ``in_*`` held the one-way sessions of databases made before
    two-way sessions; :func:`ensure_tables` moves them out (see there)."""

    id = peewee.AutoField()
    identity = peewee.BlobField(unique=True)
    name = peewee.TextField()                  # the name the member announced
    out_sealed = peewee.BlobField(null=True)
    out_prekey = peewee.BlobField(null=True)
    out_ephemeral = peewee.BlobField(null=True)
    in_sealed = peewee.BlobField(null=True)
    in_ephemeral = peewee.BlobField(null=True)
    verified = peewee.BooleanField(default=False)
    # The peer's session this side could not open (its signed prekey was gone):
    # named by the next session this side starts to the peer.
    refused = peewee.BlobField(null=True)
    # The signed prekeys seen in this member's records (32 bytes each, newest
    # last): a record naming one never seen means the member may have lost its
    # sessions (restored from a backup), so the next message starts a new one.
    prekeys_seen = peewee.BlobField(null=True)


class GroupSession(BaseModel):
    """A two-way Double Ratchet session with another member (``docs/protocol.md``,
    "Group pairwise sessions"), named by the X3DH that started it: the
    responder's signed prekey and the initiator's ephemeral key.

    At most one per peer is ``active`` (sent on); the others are kept, a few per
    peer, to read messages still in flight in them."""

    id = peewee.AutoField()
    peer = peewee.BlobField(index=True)          # the member's identity key
    ephemeral = peewee.BlobField()               # the initiator's X3DH ephemeral key
    prekey = peewee.BlobField(null=True)         # the responder's signed prekey used
    state_sealed = peewee.BlobField()
    initiator = peewee.BooleanField()            # this identity started it
    confirmed = peewee.BooleanField()            # a message of the peer was read in it
    active = peewee.BooleanField()
    refused = peewee.BlobField(null=True)        # a session of the peer this one replaces
    created_at = peewee.IntegerField()

    class Meta:
        indexes = ((("peer", "ephemeral"), True),)


class GroupPending(BaseModel):
    """A group message that cannot be read yet: its sender key has not arrived,
    or its sender is not (yet) known as a member."""

    id = peewee.AutoField()
    chain_id = peewee.BlobField(index=True)
    iteration = peewee.IntegerField()
    message_sealed = peewee.BlobField()
    received_at = peewee.IntegerField()


class GroupMessage(BaseModel):
    """The history of a group, both directions."""

    id = peewee.AutoField()
    uuid = peewee.TextField(unique=True)
    group = peewee.ForeignKeyField(Group, on_delete="CASCADE")
    sender = peewee.BlobField()
    outgoing = peewee.BooleanField()
    text_sealed = peewee.BlobField()
    sent_at = peewee.IntegerField()
    received_at = peewee.IntegerField(null=True)
    recipients = peewee.IntegerField(default=0)  # outgoing: deposits made
    stored = peewee.IntegerField(default=0)      # outgoing: deposits stored


class GroupOutbox(BaseModel):
    """A sealed group deposit waiting for its relay. The payload is final, so a
    retry deposits exactly the same bytes."""

    id = peewee.AutoField()
    relay_url = peewee.TextField()
    mailbox = peewee.BlobField()
    cap_sealed = peewee.BlobField()
    payload_sealed = peewee.BlobField()
    message_uuid = peewee.TextField(null=True, index=True)
    kind = peewee.TextField()                  # text, direct
    created_at = peewee.IntegerField()
    attempts = peewee.IntegerField(default=0)
    last_error = peewee.TextField(null=True)


GROUP_MODELS: list[type[BaseModel]] = [
    Group, GroupOp, GroupOpSent, GroupInvitee, GroupSenderKey, GroupDistributed, GroupPeer,
    GroupSession, GroupPending, GroupMessage, GroupOutbox,
]

def group_row(group_id: bytes) -> str:
    """The row identity a group's sealed values are bound to (its group id)."""
    return group_id.hex()


def op_row(group: int, digest: bytes) -> str:
    return f"{group}:{digest.hex()}"


def sender_key_row(group: int, sender: bytes, chain_id: bytes) -> str:
    return f"{group}:{sender.hex()}:{chain_id.hex()}"


def session_row(peer: bytes, ephemeral: bytes) -> str:
    return f"{peer.hex()}:{ephemeral.hex()}"


# Every sealed column of the group tables, as ``store.SEALED_COLUMNS``: its
# context name, the model, the field, and the row identity it is bound to (a
# natural key or a primary key assigned before sealing; never changes).
SEALED_GROUP_COLUMNS: list[tuple[str, type[BaseModel], str, Callable[[Any], object]]] = [
    ("group.own_cap", Group, "own_cap_sealed", lambda r: group_row(r.group_id)),
    ("group.sender", Group, "sender_sealed", lambda r: group_row(r.group_id)),
    ("group.op", GroupOp, "signed_sealed", lambda r: op_row(r.__data__["group"], r.digest)),
    ("group.receiver", GroupSenderKey, "state_sealed",
     lambda r: sender_key_row(r.__data__["group"], r.sender, r.chain_id)),
    ("group.session", GroupSession, "state_sealed", lambda r: session_row(r.peer, r.ephemeral)),
    ("group.pending", GroupPending, "message_sealed", lambda r: r.id),
    ("group.message_text", GroupMessage, "text_sealed", lambda r: r.uuid),
    ("group.outbox_cap", GroupOutbox, "cap_sealed", lambda r: r.id),
    ("group.outbox_payload", GroupOutbox, "payload_sealed", lambda r: r.id),
]



def sealed_row(column: str, row: BaseModel) -> object:
    """The row identity ``column``'s value in ``row`` is bound to."""
    for name, _model, _field, row_of in SEALED_GROUP_COLUMNS:
        if name == column:
            return row_of(row)
    raise KeyError(column)


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
        peers = GroupPeer._meta.table_name
        columns = {row[1] for row in store.db.execute_sql(  # type: ignore[no-untyped-call]
            f"PRAGMA table_info({peers})").fetchall()}
        for column in ("refused", "prekeys_seen"):
            if column not in columns:
                store.db.execute_sql(  # type: ignore[no-untyped-call]
                    f"ALTER TABLE {peers} ADD COLUMN {column} BLOB")
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
