"""The tables of the client's local database (peewee, SQLite).

Columns whose names end in ``_sealed`` hold :class:`chatcli.crypto.localseal.LocalSealer`
ciphertexts (message text, ratchet state, prekey privates, capabilities,
profiles): a copy of ``chatcli.db`` without the passphrase reveals contact
names, identity public keys and timestamps, but no message, key or capability.
Times are integer milliseconds since the epoch unless the name says ``_s``.
"""

from __future__ import annotations

import peewee

database = peewee.DatabaseProxy()


class BaseModel(peewee.Model):
    class Meta:
        database = database
        legacy_table_names = False


class MetaEntry(BaseModel):
    """Key/value facts about the database itself (``schema_version``)."""

    key = peewee.TextField(primary_key=True)
    value = peewee.TextField()


class Account(BaseModel):
    """The one row describing this identity's own mailbox and settings."""

    id = peewee.AutoField()
    name = peewee.TextField()
    relay_url = peewee.TextField()          # ws://host:port/#fingerprint (pinned)
    mailbox = peewee.BlobField()            # 16-byte mailbox id on that relay
    created_at = peewee.IntegerField()
    read_receipts = peewee.BooleanField(default=True)
    presence_hidden = peewee.BooleanField(default=False)
    restore_prekey_sealed = peewee.BlobField()   # X25519 private of the signed restore prekey
    restore_prekey_public = peewee.BlobField()
    restore_prekey_signature = peewee.BlobField()
    profile_key_sealed = peewee.BlobField()
    profile_sealed = peewee.BlobField(null=True)     # own Profile (msgspec)
    profile_ref_sealed = peewee.BlobField(null=True)  # where the sealed profile blob lives


class Contact(BaseModel):
    """A person this identity talks to. ``name`` is local and unique."""

    id = peewee.AutoField()
    name = peewee.TextField(unique=True)
    identity = peewee.BlobField()           # Ed25519 identity public key (32)
    relay_url = peewee.TextField()
    mailbox = peewee.BlobField()
    box_key = peewee.BlobField()            # X25519 key deposits are sealed to
    deposit_cap_sealed = peewee.BlobField()       # capability they issued to us
    issued_cap_sealed = peewee.BlobField(null=True)  # capability we issued to them
    issued_cap_hash = peewee.BlobField(null=True)
    verified = peewee.BooleanField(default=False)
    key_changed = peewee.BooleanField(default=False)
    pending_sealed = peewee.BlobField(null=True)  # new identity + session awaiting --confirm
    blocked = peewee.BooleanField(default=False)
    restore_prekey = peewee.BlobField(null=True)  # their restore prekey (32) + its signature (64)
    profile_key_sealed = peewee.BlobField(null=True)
    profile_ref_sealed = peewee.BlobField(null=True)
    profile_sealed = peewee.BlobField(null=True)
    auto_named = peewee.BooleanField(default=False)  # take the name the contact announces
    created_at = peewee.IntegerField()


class Session(BaseModel):
    """The Double Ratchet state with one contact."""

    id = peewee.AutoField()
    contact = peewee.ForeignKeyField(Contact, unique=True, on_delete="CASCADE")
    state_sealed = peewee.BlobField()
    updated_at = peewee.IntegerField()


class Invite(BaseModel):
    """An invite this identity issued; a one-time prekey and a capability."""

    id = peewee.AutoField()
    invite_id = peewee.BlobField(unique=True)
    label = peewee.TextField(null=True)
    prekey_sealed = peewee.BlobField()
    capability_sealed = peewee.BlobField()
    cap_hash = peewee.BlobField()
    created_at = peewee.IntegerField()
    expires_at_s = peewee.IntegerField()
    used_at = peewee.IntegerField(null=True)
    # SHA-256 of the capability the accepter gets in exchange (registered with
    # the invite; NULL for invites of older versions, whose accepter keeps the
    # invite's): blocking that contact also revokes this invite's capability.
    contact_cap_hash = peewee.BlobField(null=True)


class Message(BaseModel):
    """One message of the history, in either direction."""

    id = peewee.AutoField()
    uuid = peewee.TextField(unique=True)
    contact = peewee.ForeignKeyField(Contact, null=True, on_delete="CASCADE")
    outgoing = peewee.BooleanField()
    text_sealed = peewee.BlobField()
    attachment_sealed = peewee.BlobField(null=True)
    sent_at = peewee.IntegerField()
    received_at = peewee.IntegerField(null=True)
    stored_at = peewee.IntegerField(null=True)       # outgoing: the relay stored it
    delivered_at = peewee.IntegerField(null=True)    # outgoing: delivery receipt came
    read_at = peewee.IntegerField(null=True)         # outgoing: read receipt came / incoming: shown
    failed = peewee.TextField(null=True)             # outgoing: why the relay refused it
    # Schema 7 (message kinds): "unsupported" for content of an unknown tag;
    # the sealed Quote of a reply; when it was last edited / deleted for everyone.
    kind = peewee.TextField(null=True)
    reply_sealed = peewee.BlobField(null=True)
    edited_at = peewee.IntegerField(null=True)
    deleted_at = peewee.IntegerField(null=True)


class Outbox(BaseModel):
    """A client message waiting to reach a contact's relay.

    ``plaintext_sealed`` is set until the message is encrypted; then the
    deposit payload replaces it in the same transaction as the ratchet update,
    so a retry deposits exactly the same bytes."""

    id = peewee.AutoField()
    contact = peewee.ForeignKeyField(Contact, on_delete="CASCADE")
    kind = peewee.TextField()
    message_uuid = peewee.TextField(null=True)
    plaintext_sealed = peewee.BlobField(null=True)
    payload_sealed = peewee.BlobField(null=True)
    created_at = peewee.IntegerField()
    attempts = peewee.IntegerField(default=0)
    next_attempt_at = peewee.IntegerField(default=0)
    last_error = peewee.TextField(null=True)


class Processed(BaseModel):
    """Relay message ids already handled (dedupe of a delivery seen twice)."""

    relay_id = peewee.IntegerField(primary_key=True)
    processed_at = peewee.IntegerField()


class SeenHandshake(BaseModel):
    """Ephemeral keys of prekey messages already accepted (replay refusal)."""

    digest = peewee.BlobField(primary_key=True)
    seen_at = peewee.IntegerField()


class RetiredCapability(BaseModel):
    """A capability we issued to a contact's previous identity key, replaced
    after a key change (which may be accepted offline): revoked on our relay,
    then deleted, by the next command that connects to it and receives."""

    cap_hash = peewee.BlobField(primary_key=True)   # SHA-256, as the relay knows it
    retired_at = peewee.IntegerField()


class SavedAttachment(BaseModel):
    """Where a received attachment was saved (``downloads/`` or ``--save-dir``),
    so that the history can point at it: the path sealed, bound to the message."""

    message = peewee.ForeignKeyField(Message, primary_key=True, on_delete="CASCADE")
    path_sealed = peewee.BlobField()


class MessageEdit(BaseModel):
    """One earlier text of an edited message (the edit history, kept locally):
    the text an edit replaced, sealed and bound to the edit's uuid."""

    id = peewee.AutoField()
    message = peewee.ForeignKeyField(Message, on_delete="CASCADE", index=True)
    edit_uuid = peewee.TextField(unique=True)
    text_sealed = peewee.BlobField()
    sent_at = peewee.IntegerField()


class MessageReaction(BaseModel):
    """A person's one reaction to a message; ``author`` is their identity key
    (ours for our own). The emoji is sealed, bound to message, author and time."""

    id = peewee.AutoField()
    message = peewee.ForeignKeyField(Message, on_delete="CASCADE", index=True)
    author = peewee.BlobField()
    emoji_sealed = peewee.BlobField()
    sent_at = peewee.IntegerField()

    class Meta:
        indexes = ((("message", "author"), True),)


class PendingAction(BaseModel):
    """A reaction, edit or delete that arrived before its target message (the
    ratchet allows out-of-order delivery): applied when the target arrives."""

    id = peewee.AutoField()
    contact = peewee.ForeignKeyField(Contact, on_delete="CASCADE")
    target = peewee.TextField(index=True)
    content_sealed = peewee.BlobField()
    sent_at = peewee.IntegerField()
    received_at = peewee.IntegerField()


class BlobToDelete(BaseModel):
    """An attachment blob of ours on the own relay whose message was deleted
    for everyone: deleted there by the next delivery pass that reaches it."""

    blob = peewee.BlobField(primary_key=True)
    queued_at = peewee.IntegerField()


ALL_MODELS: list[type[BaseModel]] = [
    MetaEntry, Account, Contact, Session, Invite, Message, Outbox, Processed, SeenHandshake,
    RetiredCapability, SavedAttachment, MessageEdit, MessageReaction, PendingAction,
    BlobToDelete,
]
