"""The group tables of the client's local database (peewee models) and their
sealed columns.

They live in the same ``chatcli.db`` as ``chatcli.client.models`` and follow
its rules: ``_sealed`` columns are ``LocalSealer`` ciphertexts (sender keys,
Double Ratchet states, capabilities, member records, message texts); names,
identity public keys, group ids and timestamps are in the clear. The store
(``chatcli.client.store``) reads :data:`SEALED_GROUP_COLUMNS` when it
migrates a database; :mod:`chatcli.client.groups.models` creates and binds
the tables.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import peewee

from chatcli.client.models import BaseModel


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
    # Whether this identity is one of its admins (kept by _reconcile), so that
    # the admins' pass over operations owed to members skips the other groups.
    is_admin = peewee.BooleanField(default=False)


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


class GroupAttachment(BaseModel):
    """The file of a group message: ``{"name", "size"}`` sealed, and where a
    received one was saved (``path_sealed``, once it is). A table of its own,
    so that databases made before it only gain a table."""

    message = peewee.ForeignKeyField(GroupMessage, primary_key=True, on_delete="CASCADE")
    info_sealed = peewee.BlobField()
    path_sealed = peewee.BlobField(null=True)


GROUP_MODELS: list[type[BaseModel]] = [
    Group, GroupOp, GroupOpSent, GroupInvitee, GroupSenderKey, GroupDistributed, GroupPeer,
    GroupSession, GroupPending, GroupMessage, GroupOutbox, GroupAttachment,
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
