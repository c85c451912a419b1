"""The client service: everything a command or the interactive chat does.

:class:`ChatClient` holds an unlocked identity (keys + local store). Local
operations are plain methods; network operations are ``async`` and need the
client to be *online*::

    client = ChatClient.unlock(home, passphrase)
    async with client.online():
        uuid = await client.send_text("bob", "hello")      # stored by bob's relay
        async for event in client.events(wait=None):        # own relay, until Synced
            ...

``online()`` opens a nursery and a pool of relay connections that live until
the block ends; call it from one task. Every database change runs in one
``BEGIN IMMEDIATE`` transaction without ``await`` inside (see ``store.py``).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import math
import os
import re
import shutil
import time
import uuid as uuidlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec

from chatcli.client import messages as m
from chatcli.client import models as db
from chatcli.client import prekeys, sessions
from chatcli.client.errors import InviteRefusedError, RelayRequestError
from chatcli.client.groups.backup import BackupGroup
from chatcli.client.home import Home
from chatcli.client.keys import KeystoreSecrets, encode_secrets, read_secrets, write_keys
from chatcli.client.store import Sealer, Store, invite_row, now_ms
from chatcli.crypto.envelope import open_envelope, seal_envelope
from chatcli.crypto.errors import BadSignature, ReplayedMessage
from chatcli.crypto.keychange import KeyChange, sign_key_change, verify_key_change
from chatcli.crypto.keys import DHKeyPair, IdentityKeyPair, IdentityPublicKey, MailboxKeyPair
from chatcli.crypto.ratchet import RatchetSession
from chatcli.errors import (
    ChatcliError,
    CryptoError,
    KeyChangedError,
    RelayError,
    ReplacedError,
    StorageError,
    UsageError,
)
from chatcli.protocol import codes, frames

if TYPE_CHECKING:
    import trio

    from chatcli.client.relay_client import AnonymousConnection, OwnerConnection, RelayPool

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
DEFAULT_INVITE_SECONDS = 7 * 86400
DEPOSIT_CHUNK = 64
INSTALLATION_KEY = "installation"      # meta_entry: this installation's id (hex)
SUPERSEDE_KEY = "supersede_pending"    # meta_entry: restored, not yet announced to the relay
REPLACED_MESSAGE = (
    "This installation was replaced: the identity was restored from a backup on another "
    "machine (`chatcli keys import`), which now receives its messages, and contacts no "
    "longer read what this one sends. Use the other machine (this one's history stays "
    "readable with `chatcli messages`); to come back here, run `chatcli keys export` there "
    "and `chatcli keys import` here.")
PERMANENT_DEPOSIT_ERRORS = frozenset({codes.BAD_CAPABILITY, codes.CAPABILITY_USED,
                                      codes.UNKNOWN_MAILBOX})
PROCESSED_KEEP_MS = 400 * 86400 * 1000


def validate_name(name: str) -> str:
    """A contact or group name: 1-64 letters, digits and ``._@+-``, starting with
    a letter or digit (so it never looks like an option)."""
    if not NAME_RE.fullmatch(name):
        raise UsageError(
            f"{name[:70]!r} is not a usable name: use 1-64 letters, digits and . _ @ + -, "
            "starting with a letter or digit."
        )
    return name


def cap_hash(capability: bytes) -> bytes:
    return hashlib.sha256(capability).digest()


CONTACT_CAP_PURPOSE = "chatcli/invite/contact-capability/v1"


def invite_contact_capability(prekey_private: bytes) -> bytes:
    """The deposit capability an invite's acceptor switches to after the first
    exchange. Derived from the invite's one-time prekey, which only the inviter
    ever holds, so it is registered with the invite and needs no storage of its own."""
    from chatcli.crypto.kdf import derive

    return derive(prekey_private, CONTACT_CAP_PURPOSE)


def _retire_issued_capability(contact: db.Contact, replacement: bytes) -> None:
    """Inside a write transaction, when ``contact`` moves to a new identity key
    that gets ``replacement``: the capability issued to the previous key is to
    be revoked on our relay (by :meth:`ChatClient._retire_expired_invites`),
    so that the old key cannot deposit any more."""
    old = contact.issued_cap_hash
    if old is not None and not hmac.compare_digest(bytes(old), cap_hash(replacement)):
        db.RetiredCapability.insert(cap_hash=bytes(old), retired_at=now_ms()
                                    ).on_conflict_ignore().execute()


# ------------------------------------------------------------------ events


@dataclass(frozen=True)
class MessageEvent:
    """A new incoming chat message."""

    id: str
    contact: str
    text: str
    sent_at: int
    received_at: int
    group: str | None = None
    attachment: dict[str, Any] | None = None
    unverified_key: bool = False
    attachment_ref: m.AttachmentRef | None = field(default=None, repr=False, compare=False)

    @property
    def display_name(self) -> str:
        """How a person reads the sender's name: the contact's local name."""
        return self.contact

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "type": "message", "id": self.id, "from": self.contact, "text": self.text,
            "sent_at": self.sent_at, "received_at": self.received_at, "group": self.group,
        }
        if self.attachment is not None:
            data["attachment"] = self.attachment
        if self.unverified_key:
            data["key_changed"] = True
        return data


@dataclass(frozen=True)
class ReceiptEvent:
    contact: str
    kind: str
    ids: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"type": "receipt", "from": self.contact, "kind": self.kind, "ids": self.ids}


@dataclass(frozen=True)
class TypingEvent:
    contact: str
    active: bool

    def to_json(self) -> dict[str, Any]:
        return {"type": "typing", "from": self.contact, "active": self.active}


@dataclass(frozen=True)
class PresenceEvent:
    contact: str
    online: bool | None
    last_seen: int | None

    def to_json(self) -> dict[str, Any]:
        return {"type": "presence", "contact": self.contact, "online": self.online,
                "last_seen": self.last_seen}


@dataclass(frozen=True)
class NoticeEvent:
    """Something the user should hear about (on stderr): a new contact, a
    refused handshake, a key change, an undecryptable message."""

    text: str
    warning: bool = False
    contact: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"type": "notice", "text": self.text, "warning": self.warning,
                "contact": self.contact}


@dataclass(frozen=True)
class SyncedEvent:
    """Every message waiting at the relay when the client connected was handled."""

    def to_json(self) -> dict[str, Any]:
        return {"type": "synced"}


Event = MessageEvent | ReceiptEvent | TypingEvent | PresenceEvent | NoticeEvent | SyncedEvent


@dataclass
class DeliveryReport:
    """What one pass over the outbox achieved."""

    stored: list[str] = field(default_factory=list)        # message uuids
    refused: dict[str, str] = field(default_factory=dict)  # uuid -> reason
    unreachable: dict[str, str] = field(default_factory=dict)  # relay -> reason
    held: dict[str, str] = field(default_factory=dict)     # uuid -> why it waits
    pending: int = 0


@dataclass(frozen=True)
class PresenceInfo:
    online: bool | None
    last_seen: int | None
    known: bool  # False when the contact's relay could not be asked


class _Pending(msgspec.Struct, array_like=True, frozen=True):
    """A contact's new identity, awaiting ``verify --confirm``."""

    identity: bytes
    relay_url: str
    mailbox: bytes
    box_key: bytes
    deposit_cap: bytes
    issued_cap: bytes | None
    restore_prekey: bytes | None
    session: bytes
    # Appended later (msgspec defaults keep older records readable):
    invite_cap_hash: bytes | None = None   # the invite the new key used, revoked on --reject
    was_verified: bool = False             # the old key's verified state, back on --reject


class _AttachmentRecord(msgspec.Struct, frozen=True):
    name: str
    size: int
    path: str | None = None


# ------------------------------------------------------------------ backup


class BackupContact(msgspec.Struct, array_like=True, frozen=True):
    name: str
    identity: bytes
    relay_url: str
    mailbox: bytes
    box_key: bytes
    deposit_cap: bytes
    issued_cap: bytes | None
    verified: bool
    blocked: bool
    restore_prekey: bytes | None


class BackupV1(msgspec.Struct, array_like=True, frozen=True, tag="chatcli-backup-v1"):
    name: str
    identity: Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
    mailbox_key: Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
    mailbox: Annotated[bytes, msgspec.Meta(min_length=16, max_length=16)]
    relay_url: str
    read_receipts: bool
    presence_hidden: bool
    profile_key: bytes
    contacts: list[BackupContact]
    groups: list[BackupGroup] = []  # absent from backups made before groups were in them


# ------------------------------------------------------------------ client


class ChatClient:
    """An unlocked identity: keys, local store, and (inside :meth:`online`)
    relay connections."""

    def __init__(self, home: Home, identity: IdentityKeyPair, mailbox: MailboxKeyPair,
                 store: Store) -> None:
        self.home = home
        self.identity = identity
        self.mailbox_key = mailbox
        self.store = store
        self.sealer = store.sealer
        self._pool: RelayPool | None = None
        self._nursery: trio.Nursery | None = None
        self._own: OwnerConnection | None = None
        self._authenticated = False
        self._installation_checked = False
        self.auto_read = False  # mark incoming messages read (and say so) at once
        self._failed: dict[str, str] = {}  # message uuid -> why it cannot be sent

    # ------------------------------------------------------------ lifecycle

    @classmethod
    def unlock(cls, home: Home, passphrase: str) -> ChatClient:
        """Open the keystore with ``passphrase`` and the local database."""
        home.require()
        return cls.from_secrets(home, read_secrets(home.keystore, passphrase))

    @classmethod
    def from_secrets(cls, home: Home, secrets: KeystoreSecrets) -> ChatClient:
        """Open the local database with keys already read from the keystore."""
        store = Store.open(home.database, Sealer(secrets.local_key))
        return cls(home, IdentityKeyPair.from_private_bytes(secrets.identity),
                   MailboxKeyPair.from_private_bytes(secrets.mailbox), store)

    @classmethod
    def create(cls, home: Home, passphrase: str, *, name: str, relay_url: str,
               mailbox: bytes, identity: IdentityKeyPair, mailbox_key: MailboxKeyPair,
               profile_key: bytes | None = None) -> ChatClient:
        """Write a new keystore and database for an identity whose mailbox exists."""
        home.create()
        local_key = os.urandom(32)
        store = Store.open(home.database, Sealer(local_key), create=True)
        try:
            client = cls(home, identity, mailbox_key, store)
            restore = DHKeyPair.generate()
            with store.write():
                account_id = store.next_id(db.Account)
                db.Account.create(
                    id=account_id, name=name, relay_url=relay_url, mailbox=mailbox,
                    created_at=now_ms(),
                    restore_prekey_sealed=client.sealer.seal(restore.private_bytes(),
                                                             "account.restore_prekey", account_id),
                    restore_prekey_public=restore.public,
                    restore_prekey_signature=sessions.sign_restore_prekey(identity,
                                                                          restore.public),
                    profile_key_sealed=client.sealer.seal(profile_key or os.urandom(32),
                                                          "account.profile_key", account_id),
                )
            write_keys(home.keystore, encode_secrets(identity.private_bytes(),
                                                     mailbox_key.private_bytes(), local_key),
                       passphrase)
        except BaseException:
            store.close()
            home.database.unlink(missing_ok=True)
            for suffix in ("-wal", "-shm"):
                Path(str(home.database) + suffix).unlink(missing_ok=True)
            raise
        return client

    def close(self) -> None:
        self.store.close()

    @contextlib.asynccontextmanager
    async def online(self, *, resume: bool = False) -> AsyncIterator[ChatClient]:
        """Relay connections and background tasks for the length of the block.

        With ``resume``, a block that ends normally also delivers what is left
        in the outbox (best effort, at most 3 s): how every command that
        connects resumes the sends an earlier one could not finish."""
        import trio

        from chatcli.client.relay_client import RelayPool, unwrap

        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._pool = RelayPool(nursery)
                try:
                    yield self
                    if resume:
                        await self.flush_outbox(time_limit=3.0)
                finally:
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise unwrap(group) from None
        finally:
            self._pool = None
            self._nursery = None
            self._own = None
            self._authenticated = False
            self._installation_checked = False

    def _require_pool(self) -> RelayPool:
        if self._pool is None:
            raise RuntimeError("use `async with client.online()` for network operations")
        return self._pool

    # ------------------------------------------------------------ account

    def account(self) -> db.Account:
        with self.store.read():
            return self.store.account()

    @property
    def relay_url(self) -> str:
        return str(self.account().relay_url)

    async def own_relay(self, *, authenticate: bool = True) -> OwnerConnection:
        """The connection to this identity's relay, authenticated as the mailbox
        owner. It refuses deposits and presence queries: use :meth:`anonymous`."""
        account = self.account()
        conn = await self._require_pool().owner(account.relay_url)
        if authenticate and (conn is not self._own or not self._authenticated):
            self._own = conn
            installation, supersede = self._installation()
            try:
                await conn.authenticate(account.mailbox, self.mailbox_key.sign,
                                        installation=installation, supersede=supersede)
            except RelayRequestError as exc:
                if exc.code == codes.AUTH_FAILED:
                    raise RelayError("The relay does not know this account's mailbox "
                                     "(it was deleted, or the relay lost its data).") from None
                if exc.code == codes.INSTALLATION_REPLACED:
                    raise ReplacedError(REPLACED_MESSAGE) from None
                raise
            if supersede:
                with self.store.write():
                    db.MetaEntry.delete().where(db.MetaEntry.key == SUPERSEDE_KEY).execute()
            self._authenticated = True
        return conn

    def _installation(self) -> tuple[bytes, bool]:
        """This installation's id (made on first use) and whether it still has to
        take the mailbox over from the one it was restored from."""
        with self.store.write():
            row = db.MetaEntry.get_or_none(db.MetaEntry.key == INSTALLATION_KEY)
            if row is None:
                row = db.MetaEntry.create(key=INSTALLATION_KEY, value=os.urandom(16).hex())
            supersede = db.MetaEntry.get_or_none(db.MetaEntry.key == SUPERSEDE_KEY)
        return bytes.fromhex(row.value), supersede is not None

    async def take_over_mailbox(self) -> None:
        """Log in to the own relay once, so that an installation restored from a
        backup replaces the old one at once (see :meth:`import_backup`)."""
        async with self.online():
            await self.own_relay()

    async def _check_installation(self) -> None:
        """Before sending: fail if this installation was replaced, so that it
        does not go on sending into sessions its contacts no longer have. An
        unreachable own relay does not stop sending to other relays."""
        if self._authenticated or self._installation_checked:
            return
        self._installation_checked = True
        try:
            await self.own_relay()
        except ReplacedError:
            raise
        except RelayError:
            pass

    async def anonymous(self, url: str) -> AnonymousConnection:
        """The connection to the relay at ``url`` that never logs in: for
        deposits, presence of contacts and others' blobs (sealed sender)."""
        return await self._require_pool().anonymous(url)

    async def set_presence_hidden(self, hidden: bool) -> None:
        conn = await self.own_relay()
        await conn.request(lambda req: frames.PresenceSettings(req=req, hidden=hidden))
        with self.store.write():
            db.Account.update(presence_hidden=hidden).execute()

    def set_read_receipts(self, enabled: bool) -> None:
        with self.store.write():
            db.Account.update(read_receipts=enabled).execute()

    async def delete_account(self) -> None:
        """Delete the mailbox on the relay, then every local file of this identity."""
        conn = await self.own_relay()
        # The relay answers Ok, then closes: a failure here leaves everything in place.
        await conn.request(lambda req: frames.AccountDelete(req=req))
        self.wipe_local()

    def wipe_local(self) -> None:
        self.close()
        for path in (self.home.keystore, self.home.database,
                     Path(str(self.home.database) + "-wal"),
                     Path(str(self.home.database) + "-shm")):
            path.unlink(missing_ok=True)
        shutil.rmtree(self.home.downloads, ignore_errors=True)

    # ------------------------------------------------------------ contacts

    def name_taken(self, name: str) -> bool:
        """Whether a contact or a group already uses ``name``."""
        from chatcli.client.groups.service import name_in_use

        return bool(db.Contact.select().where(db.Contact.name == name).exists()
                    or name_in_use(self, name))

    def _unique_name(self, wanted: str) -> str:
        base = wanted if NAME_RE.fullmatch(wanted) else "contact"
        name, n = base, 2
        while self.name_taken(name):
            name, n = f"{base[:60]}-{n}", n + 1
        return name

    def get_contact(self, name: str, *, allow_key_changed: bool = False) -> db.Contact:
        """The contact called ``name``; ``UsageError`` if none, ``KeyChangedError``
        if its key changed and the change was not accepted."""
        with self.store.read():
            contact = db.Contact.get_or_none(db.Contact.name == name)
        if contact is None:
            raise UsageError(f"No contact is called {name!r}; see `chatcli contacts`.")
        if contact.key_changed and not allow_key_changed:
            raise KeyChangedError(
                f"The identity key of {name} has changed. Compare the new safety number "
                f"with them (`chatcli verify {name}`), then accept it with "
                f"`chatcli verify {name} --confirm`."
            )
        return contact

    def contacts(self) -> list[db.Contact]:
        with self.store.read():
            return list(db.Contact.select().order_by(db.Contact.name))

    def contact_names(self) -> list[str]:
        with self.store.read():
            return [c.name for c in db.Contact.select(db.Contact.name)]

    def contact_identity(self, contact: db.Contact) -> IdentityPublicKey:
        """The key verification is about: the pending new key when one is waiting."""
        if contact.key_changed and contact.pending_sealed:
            pending = self._open_pending(contact)
            return IdentityPublicKey.from_bytes(pending.identity)
        return IdentityPublicKey.from_bytes(contact.identity)

    def safety_number(self, name: str) -> tuple[str, bytes, db.Contact]:
        """(60-digit safety number, QR payload, contact) for ``name``."""
        from chatcli.crypto.safety import safety_number, safety_qr_payload

        contact = self.get_contact(name, allow_key_changed=True)
        theirs = self.contact_identity(contact)
        return (safety_number(self.identity.public, theirs),
                safety_qr_payload(self.identity.public, theirs), contact)

    def confirm_contact(self, name: str) -> bool:
        """Mark ``name`` verified, first accepting a changed key. Returns whether a
        key change was accepted."""
        contact = self.get_contact(name, allow_key_changed=True)
        accepted = False
        with self.store.write():
            contact = db.Contact.get_by_id(contact.id)
            if contact.key_changed:
                if contact.pending_sealed:
                    self._apply_pending(contact)
                    if contact.issued_cap_sealed is not None:
                        # Tell the contact where and how to reach us in the new session.
                        capability = self.sealer.open(contact.issued_cap_sealed,
                                                      "contact.issued_cap", contact.id)
                        self._enqueue(contact, self._own_info(capability), kind="info")
                contact.key_changed = False
                accepted = True
            contact.verified = True
            contact.save()
        return accepted

    async def reject_key_change(self, name: str) -> None:
        """Refuse ``name``'s pending new identity key: the old key stays, the new
        one's session is discarded, and the capabilities it was given (ours and
        its invite's) are revoked on the own relay."""
        contact = self.get_contact(name, allow_key_changed=True)
        if not contact.key_changed:
            raise UsageError(f"The identity key of {name} has not changed; there is nothing "
                             "to reject.")
        pending = self._open_pending(contact) if contact.pending_sealed else None
        if pending is not None and pending.issued_cap is not None:
            revoked = cap_hash(pending.issued_cap)
            conn = await self.own_relay()
            await conn.request(lambda req: frames.CapRevoke(req=req, cap_hashes=[revoked]))
        with self.store.write():
            contact = db.Contact.get_by_id(contact.id)
            contact.key_changed = False
            contact.pending_sealed = None
            contact.verified = bool(pending is not None and pending.was_verified)
            contact.save()
            if pending is not None and pending.invite_cap_hash is not None:
                db.Invite.update(expires_at_s=0).where(
                    db.Invite.cap_hash == pending.invite_cap_hash,
                    db.Invite.used_at.is_null(False)).execute()
        await self._retire_expired_invites()

    def _open_pending(self, contact: db.Contact) -> _Pending:
        assert contact.pending_sealed is not None
        return msgspec.msgpack.decode(
            self.sealer.open(contact.pending_sealed, "contact.pending", contact.id),
            type=_Pending)

    def _apply_pending(self, contact: db.Contact) -> None:
        pending = self._open_pending(contact)
        contact.identity = pending.identity
        contact.relay_url = pending.relay_url
        contact.mailbox = pending.mailbox
        contact.box_key = pending.box_key
        contact.deposit_cap_sealed = self.sealer.seal(pending.deposit_cap, "contact.deposit_cap",
                                                      contact.id)
        if pending.issued_cap is not None:
            _retire_issued_capability(contact, pending.issued_cap)
            contact.issued_cap_sealed = self.sealer.seal(pending.issued_cap, "contact.issued_cap",
                                                          contact.id)
            contact.issued_cap_hash = cap_hash(pending.issued_cap)
        contact.restore_prekey = pending.restore_prekey
        contact.pending_sealed = None
        db.Outbox.delete().where(db.Outbox.contact == contact).execute()
        self._save_session(contact, RatchetSession.from_bytes(pending.session))

    def _load_session(self, contact: db.Contact) -> RatchetSession | None:
        row = db.Session.get_or_none(db.Session.contact == contact)
        if row is None:
            return None
        return RatchetSession.from_bytes(self.sealer.open(row.state_sealed, "session.state",
                                                          contact.id))

    def _save_session(self, contact: db.Contact, session: RatchetSession) -> None:
        sealed = self.sealer.seal(session.to_bytes(), "session.state", contact.id)
        updated = db.Session.update(state_sealed=sealed, updated_at=now_ms()).where(
            db.Session.contact == contact).execute()
        if not updated:
            db.Session.create(contact=contact, state_sealed=sealed, updated_at=now_ms())

    def _own_info(self, capability: bytes) -> m.ContactInfo:
        account = self.store.account()
        return m.ContactInfo(
            relay_url=account.relay_url, mailbox=account.mailbox, capability=capability,
            box_key=self.mailbox_key.box_public, name=account.name,
            restore_prekey=account.restore_prekey_public,
            restore_prekey_signature=account.restore_prekey_signature,
        )

    # ------------------------------------------------------------ invites

    async def create_invite(self, label: str | None, expires_in: int = DEFAULT_INVITE_SECONDS
                            ) -> str:
        """Register a fresh capability, make a one-time prekey, return the link."""
        from chatcli.crypto.invite import create_invite

        if label is not None:
            validate_name(label)
            from chatcli.client.groups.service import name_in_use

            with self.store.read():
                if name_in_use(self, label):
                    raise UsageError(f"The name {label!r} is already used by a group; "
                                     "choose another.")
        account = self.account()
        capability = os.urandom(32)
        prekey = DHKeyPair.generate()
        expires_at = int(time.time()) + expires_in
        invite = create_invite(
            self.identity, relay_url=account.relay_url, mailbox=account.mailbox,
            capability=capability, mailbox_key=self.mailbox_key.box_public,
            prekey_public=prekey.public, expires_at=expires_at,
        )
        # The acceptor's own capability is registered now, with the invite's: it
        # must work when the acceptor switches to it after the first exchange.
        # The invite's is one-shot: the relay takes the first handshake on it
        # and refuses every later deposit (a second acceptor is told at once).
        contact_cap = invite_contact_capability(prekey.private_bytes())
        conn = await self.own_relay()
        await conn.request(lambda req: frames.CapAdd(
            req=req, cap_hashes=[cap_hash(capability)], one_shot=True))
        await conn.request(lambda req: frames.CapAdd(req=req, cap_hashes=[cap_hash(contact_cap)]))
        await self._retire_expired_invites()
        with self.store.write():
            db.Invite.create(
                invite_id=invite.invite_id, label=label,
                prekey_sealed=self.sealer.seal(prekey.private_bytes(), "invite.prekey",
                                                 invite_row(invite.invite_id)),
                capability_sealed=self.sealer.seal(capability, "invite.capability",
                                                     invite_row(invite.invite_id)),
                cap_hash=cap_hash(capability), created_at=now_ms(), expires_at_s=expires_at,
                contact_cap_hash=cap_hash(contact_cap),
            )
        return invite.to_link()

    async def _retire_expired_invites(self) -> None:
        """Revoke the capabilities of invites that expired unused (and destroy
        their prekeys), and of used invites whose acceptor switched to its own
        capability (``expires_at_s`` 0, set when its :class:`CapabilitySwitched`
        arrived or the key it brought was rejected). A revoked invite keeps
        ``capability_sealed`` empty. Also revokes the capabilities issued to
        contacts' previous identity keys (:class:`db.RetiredCapability`)."""
        with self.store.read():
            expired = list(db.Invite.select().where(
                db.Invite.expires_at_s < int(time.time()),
                db.Invite.capability_sealed != b"",
                db.Invite.used_at.is_null() | (db.Invite.expires_at_s == 0)))
            retired = [bytes(row.cap_hash) for row in db.RetiredCapability.select()]
        if not expired and not retired:
            return
        hashes = [row.cap_hash for row in expired] + retired
        for row in expired:
            if row.used_at is None and row.prekey_sealed:
                hashes.append(cap_hash(invite_contact_capability(
                    self.sealer.open(row.prekey_sealed, "invite.prekey",
                                     invite_row(row.invite_id)))))
        conn = await self.own_relay()
        for start in range(0, len(hashes), frames.MAX_BATCH):
            chunk = hashes[start:start + frames.MAX_BATCH]
            await conn.request(lambda req, c=chunk: frames.CapRevoke(  # type: ignore[misc]
                req=req, cap_hashes=c))
        from peewee import fn

        with self.store.write():
            db.Invite.update(used_at=fn.COALESCE(db.Invite.used_at, now_ms()),
                             prekey_sealed=b"", capability_sealed=b"").where(
                db.Invite.id.in_([row.id for row in expired])).execute()
            db.RetiredCapability.delete().where(
                db.RetiredCapability.cap_hash.in_(retired)).execute()

    async def accept_invite(self, link: str, name: str | None, *,
                            previous_identity: IdentityKeyPair | None = None) -> str:
        """Add the inviter as a contact and deposit the handshake; returns the
        contact's local name once its relay stored the handshake.

        With ``previous_identity`` (an identity key this person used before),
        the handshake carries that key's signed statement that the current key
        replaces it, so an inviter who knew the old key moves to the new one.

        A handshake the inviter's relay refuses (the invite was used or revoked)
        raises :class:`InviteRefusedError` and leaves no contact behind."""
        from chatcli.crypto.invite import parse_invite

        invite = parse_invite(link, now=int(time.time()))
        if invite.identity == self.identity.public:
            raise UsageError("This invite is your own; give it to the person you invite.")
        with self.store.read():
            known = db.Contact.get_or_none(db.Contact.identity == invite.identity.raw)
            if known is not None:
                raise UsageError(f"The person who made this invite is already your contact "
                                 f"{known.name}.")
            if name is not None:
                validate_name(name)
                if self.name_taken(name):
                    raise UsageError(f"The name {name!r} is already taken; choose another "
                                     "with --name.")
                final_name = name
            else:
                final_name = self._unique_name(
                    "contact-" + invite.identity.fingerprint().replace(" ", "")[:8])
        capability = os.urandom(32)
        conn = await self.own_relay()
        await conn.request(lambda req: frames.CapAdd(req=req, cap_hashes=[cap_hash(capability)]))
        with self.store.write():
            if self.name_taken(final_name):
                raise UsageError(f"The name {final_name!r} is already taken.")
            info = self._own_info(capability)
            if previous_identity is not None:
                change = sign_key_change(previous_identity, self.identity.public,
                                         now=int(time.time()))
                info = msgspec.structs.replace(info, key_change=m.KeyChangeRecord(
                    old_identity=change.old.raw, issued_at=change.issued_at,
                    signature=change.signature))
            session, body = sessions.start_from_invite(
                self.identity, invite.identity, invite.invite_id, invite.prekey, m.encode(info))
            contact_id = self.store.next_id(db.Contact)
            contact = db.Contact.create(
                id=contact_id, name=final_name, identity=invite.identity.raw,
                relay_url=invite.relay_url,
                mailbox=invite.mailbox, box_key=invite.mailbox_key,
                deposit_cap_sealed=self.sealer.seal(invite.capability, "contact.deposit_cap",
                                                    contact_id),
                issued_cap_sealed=self.sealer.seal(capability, "contact.issued_cap", contact_id),
                issued_cap_hash=cap_hash(capability), auto_named=name is None,
                created_at=now_ms(),
            )
            self._save_session(contact, session)
            payload = seal_envelope(invite.mailbox_key, self.identity.public, m.encode(body))
            outbox_id = self.store.next_id(db.Outbox)
            db.Outbox.create(id=outbox_id, contact=contact, kind="handshake", created_at=now_ms(),
                             payload_sealed=self.sealer.seal(payload, "outbox.payload", outbox_id))
        try:
            await self.deliver_until_stored(kinds={"handshake"}, contact_id=contact.id)
        except RelayError:
            with self.store.read():
                queued = db.Outbox.select().where(db.Outbox.contact == contact.id,
                                                  db.Outbox.kind == "handshake").exists()
            if not queued:
                # Refused for good: a contact nobody will ever read would look
                # usable while every message to it is lost.
                with self.store.write():
                    db.Contact.delete().where(db.Contact.id == contact.id).execute()
                with contextlib.suppress(RelayError):
                    await conn.request(lambda req: frames.CapRevoke(
                        req=req, cap_hashes=[cap_hash(capability)]))
            raise
        return final_name

    # ------------------------------------------------------------ sending

    def _enqueue(self, contact: db.Contact, content: m.Content, *, kind: str,
                 message_uuid: str | None = None) -> None:
        """Queue a content message for a contact (inside a write transaction)."""
        outbox_id = self.store.next_id(db.Outbox)
        db.Outbox.create(
            id=outbox_id, contact=contact, kind=kind, message_uuid=message_uuid,
            created_at=now_ms(),
            plaintext_sealed=self.sealer.seal(m.encode(content), "outbox.plaintext",
                                              outbox_id),
        )

    def enqueue_text(self, name: str, text: str,
                     attachment: m.AttachmentRef | None = None) -> str:
        """Store an outgoing message in history and outbox; returns its uuid."""
        from chatcli.client.groups.service import GroupService, is_group

        if is_group(self, name):
            return GroupService(self).enqueue_text(name, text, attachment).id
        contact = self.get_contact(name)
        if contact.blocked:
            raise UsageError(f"{name} is blocked; `chatcli unblock {name}` first.")
        if len(text) > m.MAX_TEXT:
            raise UsageError(f"The message is too long (the limit is {m.MAX_TEXT} characters).")
        message_id = str(uuidlib.uuid4())
        sent_at = now_ms()
        content = m.Text(id=message_id, sent_at=sent_at, text=text, attachment=attachment)
        with self.store.write():
            contact = db.Contact.get_by_id(contact.id)
            if contact.key_changed:
                raise KeyChangedError(f"The identity key of {name} has changed; run "
                                      f"`chatcli verify {name}`.")
            record = None
            if attachment is not None:
                record = self.sealer.seal(msgspec.json.encode(_AttachmentRecord(
                    name=attachment.name, size=attachment.size)), "message.attachment", message_id)
            db.Message.create(
                uuid=message_id, contact=contact, outgoing=True,
                text_sealed=self.sealer.seal_text(text, "message.text", message_id),
                attachment_sealed=record, sent_at=sent_at,
            )
            self._enqueue(contact, content, kind="text", message_uuid=message_id)
        return message_id

    async def send_text(self, name: str, text: str, *, time_limit: float = 20.0,
                        attachment: m.AttachmentRef | None = None) -> str:
        """Queue a message and return its uuid once the contact's relay stored it.
        Raises ``RelayError`` when it was refused or could not be stored in time
        (it then stays queued, unless refused)."""
        from chatcli.client.groups.service import GroupService, is_group

        if is_group(self, name):
            report = await GroupService(self).send_text(name, text, time_limit=time_limit,
                                                        attachment=attachment)
            return report.id
        message_id = self.enqueue_text(name, text, attachment)
        await self.deliver_until_stored(message_id=message_id, time_limit=time_limit)
        return message_id

    def queue_typing(self, name: str, active: bool) -> None:
        contact = self.get_contact(name)
        with self.store.write():
            self._enqueue(contact, m.Typing(active=active), kind="typing")

    def _encrypt_pending(self) -> None:
        """Encrypt every queued plaintext in order, each in one transaction with
        its ratchet update, so that a retry re-sends the very same bytes."""
        skipped: set[int] = set()
        while True:
            with self.store.write():
                query = (db.Outbox.select().join(db.Contact)
                         .where(db.Outbox.payload_sealed.is_null(),
                                db.Contact.key_changed == False)  # noqa: E712
                         .order_by(db.Outbox.id))
                if skipped:
                    query = query.where(db.Outbox.id.not_in(list(skipped)))
                row = query.first()
                if row is None:
                    return
                contact = row.contact
                plaintext = self.sealer.open(row.plaintext_sealed, "outbox.plaintext",
                                             row.id)
                session = self._load_session(contact)
                body: m.Body
                if session is None:
                    if contact.restore_prekey is None:
                        # No session and no way to start one (the contact never
                        # sent its restore prekey): the message cannot be sent.
                        if row.message_uuid:
                            db.Message.update(failed="no_session").where(
                                db.Message.uuid == row.message_uuid).execute()
                            self._failed[row.message_uuid] = (
                                f"there is no session with {contact.name} and none can be "
                                "set up; ask them for a new invite")
                        row.delete_instance()
                        continue
                    their = IdentityPublicKey.from_bytes(contact.identity)
                    session, body = sessions.start_restore(
                        self.identity, their, contact.restore_prekey[:32], plaintext)
                    # Tell the contact our (possibly new) restore prekey in the new session.
                    if contact.issued_cap_sealed is not None:
                        capability = self.sealer.open(contact.issued_cap_sealed,
                                                      "contact.issued_cap", contact.id)
                        self._enqueue(contact, self._own_info(capability), kind="info")
                elif not session.can_send:
                    skipped.add(row.id)
                    continue
                else:
                    body = m.RatchetBody(v=m.BODY_VERSION, message=session.encrypt(plaintext))
                payload = seal_envelope(contact.box_key, self.identity.public, m.encode(body))
                row.payload_sealed = self.sealer.seal(payload, "outbox.payload", row.id)
                row.plaintext_sealed = None
                row.save()
                self._save_session(contact, session)

    async def deliver_outbox(self, contact_id: int | None = None) -> DeliveryReport:
        """One pass: encrypt what is queued, deposit everything encrypted (or only
        what is for ``contact_id``), grouped by relay. Stored items leave the
        outbox; refused ones are marked failed."""
        from chatcli.client.groups.service import flush_groups

        await self._check_installation()
        await flush_groups(self)
        self._encrypt_pending()
        report = DeliveryReport()
        report.refused.update(self._failed)
        self._failed.clear()
        with self.store.read():
            query = (db.Outbox.select(db.Outbox, db.Contact).join(db.Contact)
                     .where(db.Outbox.payload_sealed.is_null(False))
                     .order_by(db.Outbox.id))
            if contact_id is not None:
                query = query.where(db.Outbox.contact == contact_id)
            rows = list(query)
        by_relay: dict[str, list[db.Outbox]] = {}
        for row in rows:
            by_relay.setdefault(row.contact.relay_url, []).append(row)
        for url, items in by_relay.items():
            try:
                conn = await self.anonymous(url)
                for start in range(0, len(items), DEPOSIT_CHUNK):
                    chunk = items[start:start + DEPOSIT_CHUNK]
                    deposit = [frames.DepositItem(
                        mailbox=row.contact.mailbox,
                        cap=self.sealer.open(row.contact.deposit_cap_sealed,
                                             "contact.deposit_cap", row.contact.id),
                        payload=self.sealer.open(row.payload_sealed or b"", "outbox.payload",
                                                  row.id),
                    ) for row in chunk]
                    answer = await conn.request(
                        lambda req, d=deposit: frames.Deposit(req=req, items=d))  # type: ignore[misc]
                    assert isinstance(answer, frames.DepositResult)
                    self._record_deposit(chunk, answer.errors, report)
            except RelayError as exc:
                if isinstance(exc, RelayRequestError) and not exc.transient:
                    raise
                self._require_pool().drop(url)
                report.unreachable[url] = str(exc)
                with self.store.write():
                    for row in items:
                        db.Outbox.update(attempts=db.Outbox.attempts + 1,
                                         last_error=str(exc)[:500]).where(
                            db.Outbox.id == row.id).execute()
        with self.store.read():
            report.pending = db.Outbox.select().count()
        return report

    def _record_deposit(self, chunk: list[db.Outbox], errors: list[str | None],
                        report: DeliveryReport) -> None:
        stamp = now_ms()
        with self.store.write():
            for row, error in zip(chunk, errors, strict=False):
                if error is None:
                    db.Outbox.delete().where(db.Outbox.id == row.id).execute()
                    if row.message_uuid:
                        db.Message.update(stored_at=stamp).where(
                            db.Message.uuid == row.message_uuid).execute()
                        report.stored.append(row.message_uuid)
                elif (error == codes.CAPABILITY_USED and row.kind != "handshake"
                      and row.kind != "typing"):
                    # Our handshake used the invite's one-shot capability; the
                    # rest waits for the inviter's answer, which brings ours.
                    db.Outbox.update(attempts=db.Outbox.attempts + 1, last_error=error).where(
                        db.Outbox.id == row.id).execute()
                    if row.message_uuid:
                        report.held[row.message_uuid] = (
                            f"{row.contact.name} has not answered your acceptance of their "
                            "invite yet; the message stays queued and goes out once their "
                            "answer arrives (any chatcli command that receives fetches it)")
                elif error in PERMANENT_DEPOSIT_ERRORS or row.kind == "typing":
                    db.Outbox.delete().where(db.Outbox.id == row.id).execute()
                    reason = (f"{row.contact.name}'s relay refused the message ({error}): "
                              "they may have blocked you or deleted their account")
                    if row.kind == "handshake" and error in (codes.BAD_CAPABILITY,
                                                             codes.CAPABILITY_USED):
                        reason = "This invite was already used or revoked; ask for a new one"
                    if row.message_uuid:
                        db.Message.update(failed=error).where(
                            db.Message.uuid == row.message_uuid).execute()
                        report.refused[row.message_uuid] = reason
                    elif row.kind == "handshake":
                        report.refused["handshake"] = reason
                else:
                    db.Outbox.update(attempts=db.Outbox.attempts + 1, last_error=error).where(
                        db.Outbox.id == row.id).execute()

    async def deliver_until_stored(self, *, message_id: str | None = None,
                                   kinds: set[str] | None = None, contact_id: int | None = None,
                                   time_limit: float = 20.0) -> None:
        """Retry the outbox with backoff until the given message (or every item of
        ``kinds`` for ``contact_id``) is stored; raise ``RelayError`` otherwise."""
        import trio

        delay = 0.25
        last = "the relay did not store it in time"
        if message_id is not None and contact_id is None:
            with self.store.read():
                row = db.Message.get_or_none(db.Message.uuid == message_id)
                contact_id = row.contact.id if row is not None and row.contact else None
        with trio.move_on_after(time_limit):
            while True:
                # Only this contact's relay: another unreachable relay must not
                # slow this send down (`flush_outbox` and later commands do the rest).
                report = await self.deliver_outbox(contact_id)
                if message_id is not None:
                    if message_id in report.refused:
                        raise RelayError(report.refused[message_id] + ".")
                    if message_id in report.held:
                        raise RelayError(report.held[message_id] + ".")
                    with self.store.read():
                        waiting = db.Outbox.select().where(
                            db.Outbox.message_uuid == message_id).exists()
                else:
                    if "handshake" in report.refused:
                        raise InviteRefusedError(report.refused["handshake"] + ".")
                    with self.store.read():
                        query = db.Outbox.select().where(db.Outbox.kind.in_(list(kinds or ())))
                        if contact_id is not None:
                            query = query.where(db.Outbox.contact == contact_id)
                        waiting = query.exists()
                if not waiting:
                    return
                if report.unreachable:
                    last = next(iter(report.unreachable.values())).rstrip(".")
                await trio.sleep(delay)
                delay = min(delay * 2, 4.0)
        raise RelayError(f"{last}; the message stays queued and the next chatcli command "
                         "that connects will send it.")

    async def flush_outbox(self, time_limit: float = 5.0) -> DeliveryReport | None:
        """Best effort: deliver what is queued, without raising for unreachable relays."""
        import trio

        with trio.move_on_after(time_limit):
            from chatcli.client.groups.service import flush_groups

            await flush_groups(self)
            with self.store.read():
                if not db.Outbox.select().exists():
                    return DeliveryReport()
            try:
                return await self.deliver_outbox()
            except RelayError:
                return None
        return None

    # ------------------------------------------------------------ receiving

    async def events(self, *, wait: float | None = None, stop_at_synced: bool = True
                     ) -> AsyncIterator[Event]:
        """Authenticate to the own relay and yield what arrives: messages,
        receipts, typing, notices, and one :class:`SyncedEvent` (presence comes
        from :meth:`presence_updates`, on another connection). Stops after
        Synced when ``stop_at_synced`` (then ``wait`` seconds more if given), or
        when the connection ends."""
        import trio

        conn = await self.own_relay()
        await self._retire_expired_invites()
        deadline: float | None = None
        while True:
            time_limit = math.inf if deadline is None else max(0.0, deadline - trio.current_time())
            frame = None
            with trio.move_on_after(time_limit):
                try:
                    frame = await conn.pushes.receive()
                except trio.EndOfChannel:
                    raise RelayError(f"The connection to the relay ended: {conn.close_reason}."
                                     ) from None
            if frame is None:
                await self.flush_outbox()
                return
            if isinstance(frame, frames.Deliver):
                await self._retire_expired_invites()
                events = self.process_deliveries(frame.messages)
                await conn.request(lambda req, f=frame: frames.Ack(  # type: ignore[misc]
                    req=req, ids=[d.id for d in f.messages]))
                # Invites whose acceptor switched to its own capability just now.
                await self._retire_expired_invites()
                for event in events:
                    yield event
                await self.flush_outbox()
            elif isinstance(frame, frames.Synced):
                yield SyncedEvent()
                if stop_at_synced:
                    if wait is None or wait <= 0:
                        await self.flush_outbox()
                        return
                    deadline = trio.current_time() + wait
            elif isinstance(frame, frames.Bye | frames.Error):
                raise RelayError(f"The relay ended the connection: {conn.close_reason}.")

    async def listen(self, *, wait: float | None = None) -> AsyncIterator[Event]:
        """:meth:`events`, and with ``wait`` seconds: stay for that long after
        catching up, reconnecting with backoff (0.5 s doubling to 10 s) when the
        relay goes away. Without ``wait``, a lost connection raises ``RelayError``."""
        import trio

        deadline = None if wait is None else trio.current_time() + wait
        delay = 0.5
        synced = False
        while True:
            remaining = None if deadline is None else deadline - trio.current_time()
            try:
                async for event in self.events(wait=remaining):
                    if isinstance(event, SyncedEvent):
                        delay = 0.5
                        if synced:
                            continue  # a reconnection's catch-up: not news
                        synced = True
                    yield event
                return
            except RelayError as exc:
                if deadline is None or trio.current_time() + delay >= deadline:
                    raise
                yield NoticeEvent(f"{exc} Reconnecting in {delay:g} s.", warning=True)
                self._authenticated = False
                await trio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def process_deliveries(self, delivered: Iterable[frames.Delivered]) -> list[Event]:
        """Open, decrypt and store a batch of deposits in one transaction.

        De-duplicates by relay message id (a delivery seen twice, e.g. by two
        processes) and by message uuid; queues receipts and handshake answers.
        """
        events: list[Event] = []
        receipts: dict[int, list[str]] = {}
        with self.store.write():
            read_receipts = self.store.account().read_receipts
            # Relay ids matter only while a delivery may come twice (two
            # processes, a lost Ack); forget them after the longest retention.
            db.Processed.delete().where(
                db.Processed.processed_at < now_ms() - PROCESSED_KEEP_MS).execute()
            for item in delivered:
                if db.Processed.get_or_none(db.Processed.relay_id == item.id) is not None:
                    continue
                db.Processed.create(relay_id=item.id, processed_at=now_ms())
                try:
                    with self.store.db.atomic():
                        events.extend(self._process_one(item, receipts))
                except ReplayedMessage:
                    # Delivery is at-least-once: a sender's retry after a lost
                    # answer deposits the same ciphertext again. It was shown once.
                    continue
                except (CryptoError, msgspec.DecodeError, msgspec.ValidationError,
                        UnicodeDecodeError) as exc:
                    reason = str(exc) if isinstance(exc, ChatcliError) else "it is malformed"
                    events.append(NoticeEvent(
                        f"A message could not be read and was dropped: {reason}", warning=True))
            kind: Literal["delivered", "read"] = (
                "read" if self.auto_read and read_receipts else "delivered")
            for contact_id, ids in receipts.items():
                contact = db.Contact.get_by_id(contact_id)
                for start in range(0, len(ids), 500):
                    self._enqueue(contact, m.Receipt(kind=kind, ids=ids[start:start + 500]),
                                  kind="receipt")
        return events

    def _process_one(self, item: frames.Delivered, receipts: dict[int, list[str]]
                     ) -> list[Event]:
        opened = open_envelope(self.mailbox_key, item.payload)
        body = m.decode_body(opened.body)
        sender = opened.sender
        if isinstance(body, m.GroupBody):
            from chatcli.client.groups.service import GroupService

            return GroupService(self).handle_body(sender, body.message, item.received_at)
        if isinstance(body, m.PrekeyBody):
            return self._handle_prekey(sender, body, item, receipts)
        contact = db.Contact.get_or_none(db.Contact.identity == sender.raw)
        if contact is not None:
            session = self._load_session(contact)
            if session is None:
                return self._no_session(contact)
            plaintext = session.decrypt(body.message)
            self._save_session(contact, session)
            return self._handle_content(contact, m.decode_content(plaintext), item, receipts)
        pending_contact = self._pending_from(sender)
        if pending_contact is not None:
            return self._decrypt_pending(pending_contact, body, item, receipts)
        return [NoticeEvent("A message from an unknown sender was dropped.", warning=True)]

    def _pending_from(self, sender: IdentityPublicKey) -> db.Contact | None:
        for contact in db.Contact.select().where(db.Contact.pending_sealed.is_null(False)):
            if self._open_pending(contact).identity == sender.raw:
                return contact
        return None

    def _decrypt_pending(self, contact: db.Contact, body: m.RatchetBody, item: frames.Delivered,
                         receipts: dict[int, list[str]]) -> list[Event]:
        pending = self._open_pending(contact)
        session = RatchetSession.from_bytes(pending.session)
        content = m.decode_content(session.decrypt(body.message))
        contact.pending_sealed = self.sealer.seal(msgspec.msgpack.encode(msgspec.structs.replace(
            pending, session=session.to_bytes())), "contact.pending", contact.id)
        contact.save()
        if isinstance(content, m.Text):
            return self._store_text(contact, content, item, None, unverified=True)
        return []

    def _no_session(self, contact: db.Contact) -> list[Event]:
        # We were restored from a backup and the contact still uses the old
        # session: start a new one so that their next messages can be read.
        if contact.issued_cap_sealed is not None and contact.restore_prekey is not None:
            capability = self.sealer.open(contact.issued_cap_sealed, "contact.issued_cap",
                                            contact.id)
            if not db.Outbox.select().where(db.Outbox.contact == contact).exists():
                self._enqueue(contact, self._own_info(capability), kind="info")
        return [NoticeEvent(
            f"A message from {contact.name} was sent in a session this device does not have "
            "(restored from a backup?); a new session is being set up: ask them to resend.",
            warning=True, contact=contact.name)]

    def _handle_prekey(self, sender: IdentityPublicKey, body: m.PrekeyBody,
                       item: frames.Delivered, receipts: dict[int, list[str]]) -> list[Event]:
        digest = sessions.handshake_digest(body)
        if db.SeenHandshake.get_or_none(db.SeenHandshake.digest == digest) is not None:
            # The same handshake deposited twice (a retry after a lost answer) or
            # replayed by the relay: it was handled the first time; nothing to say.
            return []
        if body.invite_id is None:
            return self._handle_restore(sender, body, digest, item, receipts)
        invite = db.Invite.get_or_none(db.Invite.invite_id == body.invite_id)
        if invite is None:
            return [NoticeEvent("A handshake for an unknown invite was refused.", warning=True)]
        label = f" ({invite.label})" if invite.label else ""
        # Our own clock decides, not the relay's received_at: a relay that
        # backdates a deposit must not revive an expired invite.
        if invite.expires_at_s * 1000 < now_ms():
            return [NoticeEvent(f"An expired invite{label} was used; refused.", warning=True)]
        if invite.used_at is not None:
            return [NoticeEvent(f"Someone tried to use an invite{label} a second time; "
                                "refused: they are not a contact and what they send is not "
                                "read (send them a new invite if you know them).", warning=True)]
        prekey_private = self.sealer.open(invite.prekey_sealed, "invite.prekey",
                                          invite_row(invite.invite_id))
        prekey = DHKeyPair.from_private_bytes(prekey_private)
        session, plaintext = sessions.answer_prekey(self.identity, prekey, sender, body)
        info = m.decode_content(plaintext)
        if not isinstance(info, m.ContactInfo):
            raise sessions.HandshakeRefused("A handshake did not carry the sender's address.")
        sessions.verify_restore_prekey(sender, info.restore_prekey, info.restore_prekey_signature)
        vouched = self._vouched_contact(sender, info)
        db.SeenHandshake.create(digest=digest, seen_at=now_ms())
        # One-time: the prekey's private key is destroyed now (forward secrecy).
        # The acceptor gets a capability of its own in our answer; the invite's
        # is revoked once it says it switched (CapabilitySwitched).
        issued = invite_contact_capability(prekey_private)
        if invite.contact_cap_hash is None:
            # Made by an older chatcli, which registered no contact capability:
            # the accepter keeps the invite's (as it always did).
            issued = self.sealer.open(invite.capability_sealed, "invite.capability",
                                       invite_row(invite.invite_id))
        invite.used_at = now_ms()
        invite.prekey_sealed = b""
        invite.contact_cap_hash = cap_hash(issued)
        invite.save()
        restore = info.restore_prekey + info.restore_prekey_signature
        events: list[Event] = []
        existing = db.Contact.get_or_none(db.Contact.identity == sender.raw)
        # An address is a claim, not an identity: only the invite's label (the
        # user's own word) or the old key's signature ties a new key to a contact.
        labelled = (db.Contact.get_or_none(db.Contact.name == invite.label)
                    if invite.label and existing is None and vouched is None else None)
        if existing is not None:
            contact = existing
            self._update_address(contact, info, issued)
            contact.save()
            self._save_session(contact, session)
            events.append(NoticeEvent(f"{contact.name} accepted a new invite; the session "
                                      "was renewed.", contact=contact.name))
        elif vouched is not None:
            contact = vouched
            old_fingerprint = IdentityPublicKey.from_bytes(contact.identity).fingerprint()
            contact.identity = sender.raw
            contact.key_changed = False
            contact.pending_sealed = None
            _retire_issued_capability(contact, issued)
            self._update_address(contact, info, issued)
            contact.save()
            self._reset_session(contact, session)
            events.append(NoticeEvent(
                f"{contact.name} moved to a new identity key (fingerprint "
                f"{sender.fingerprint()}); their old key ({old_fingerprint}) signed the change.",
                warning=True, contact=contact.name))
        elif labelled is not None:
            contact = labelled
            pending = _Pending(identity=sender.raw, relay_url=info.relay_url,
                               mailbox=info.mailbox, box_key=info.box_key,
                               deposit_cap=info.capability, issued_cap=issued,
                               restore_prekey=restore, session=session.to_bytes(),
                               invite_cap_hash=invite.cap_hash,
                               was_verified=bool(contact.verified and not contact.key_changed))
            contact.key_changed = True
            contact.verified = False
            contact.pending_sealed = self.sealer.seal(msgspec.msgpack.encode(pending),
                                                      "contact.pending", contact.id)
            contact.save()
            events.append(NoticeEvent(
                f"WARNING: the identity key of {contact.name} has changed. Sending to them is "
                f"blocked until you compare the new safety number (`chatcli verify "
                f"{contact.name}`) and accept it with `--confirm` (or refuse it with "
                "`--reject`).", warning=True, contact=contact.name))
            return events
        else:
            name = invite.label or self._unique_name(info.name)
            contact_id = self.store.next_id(db.Contact)
            contact = db.Contact.create(
                id=contact_id, name=name, identity=sender.raw, relay_url=info.relay_url,
                mailbox=info.mailbox,
                box_key=info.box_key,
                deposit_cap_sealed=self.sealer.seal(info.capability, "contact.deposit_cap",
                                                    contact_id),
                issued_cap_sealed=self.sealer.seal(issued, "contact.issued_cap", contact_id),
                issued_cap_hash=cap_hash(issued), restore_prekey=restore,
                auto_named=invite.label is None, created_at=now_ms(),
            )
            self._save_session(contact, session)
            lookalike = db.Contact.get_or_none(
                (db.Contact.relay_url == info.relay_url) & (db.Contact.mailbox == info.mailbox)
                & (db.Contact.id != contact.id))
            if lookalike is not None:
                events.append(NoticeEvent(
                    f"NEW contact {name} accepted your invite (fingerprint "
                    f"{sender.fingerprint()}). It gives the address of your contact "
                    f"{lookalike.name} but has a different identity key: it is a different, "
                    f"unverified contact (compare safety numbers with `chatcli verify {name}`).",
                    warning=True, contact=name))
            else:
                events.append(NoticeEvent(f"{name} accepted your invite and is now a contact "
                                          f"(fingerprint {sender.fingerprint()}).", contact=name))
        self._enqueue(contact, self._own_info(issued), kind="info")
        return events

    def _vouched_contact(self, sender: IdentityPublicKey, info: m.ContactInfo
                         ) -> db.Contact | None:
        """The contact whose old identity key signed ``info``'s key change to
        ``sender``, if it carries one that verifies; ``HandshakeRefused`` if it
        carries one that does not."""
        record = info.key_change
        if record is None:
            return None
        contact = db.Contact.get_or_none(db.Contact.identity == record.old_identity)
        if contact is None:
            return None  # about a key we never knew: no proof of anything here
        try:
            verify_key_change(KeyChange(
                old=IdentityPublicKey.from_bytes(record.old_identity), new=sender,
                issued_at=record.issued_at, signature=record.signature), now=now_ms() // 1000)
        except BadSignature as exc:
            raise sessions.HandshakeRefused(
                f"A handshake claims a key change of {contact.name} that does not verify "
                f"({exc}); refused.") from None
        return contact

    def _reset_session(self, contact: db.Contact, session: RatchetSession) -> None:
        """Replace the session; queued deposits made for the old one are failed."""
        self._save_session(contact, session)
        stale = list(db.Outbox.select().where(db.Outbox.contact == contact,
                                              db.Outbox.payload_sealed.is_null(False)))
        db.Message.update(failed="session_reset").where(
            db.Message.uuid.in_([row.message_uuid for row in stale if row.message_uuid])
        ).execute()
        db.Outbox.delete().where(db.Outbox.id.in_([row.id for row in stale])).execute()

    def _update_address(self, contact: db.Contact, info: m.ContactInfo,
                        issued: bytes | None = None) -> None:
        contact.relay_url = info.relay_url
        contact.mailbox = info.mailbox
        contact.box_key = info.box_key
        contact.deposit_cap_sealed = self.sealer.seal(info.capability, "contact.deposit_cap",
                                                      contact.id)
        contact.restore_prekey = info.restore_prekey + info.restore_prekey_signature
        if issued is not None:
            contact.issued_cap_sealed = self.sealer.seal(issued, "contact.issued_cap",
                                                          contact.id)
            contact.issued_cap_hash = cap_hash(issued)

    def _handle_restore(self, sender: IdentityPublicKey, body: m.PrekeyBody, digest: bytes,
                        item: frames.Delivered, receipts: dict[int, list[str]]) -> list[Event]:
        contact = db.Contact.get_or_none(db.Contact.identity == sender.raw)
        if contact is None:
            return [NoticeEvent("A session request from an unknown sender was refused.",
                                warning=True)]
        # The current signed prekey, or a rotated one still in its grace period.
        prekey = (prekeys.private_for(self.store, body.restore_prekey)
                  if body.restore_prekey is not None else None)
        if prekey is None:
            return [NoticeEvent(f"A session request from {contact.name} named an old prekey; "
                                "refused.", warning=True, contact=contact.name)]
        session, plaintext = sessions.answer_prekey(self.identity, prekey, sender, body)
        db.SeenHandshake.create(digest=digest, seen_at=now_ms())
        self._save_session(contact, session)
        # Queued but not yet sent messages were encrypted for the old session.
        stale = db.Outbox.select().where(db.Outbox.contact == contact,
                                         db.Outbox.payload_sealed.is_null(False))
        db.Message.update(failed="session_reset").where(
            db.Message.uuid.in_([row.message_uuid for row in stale if row.message_uuid])
        ).execute()
        db.Outbox.delete().where(db.Outbox.id.in_([row.id for row in stale])).execute()
        events: list[Event] = [NoticeEvent(
            f"{contact.name} set up a new session (restored from a backup); the safety number "
            "is unchanged.", contact=contact.name)]
        events.extend(self._handle_content(contact, m.decode_content(plaintext), item, receipts))
        return events

    def _handle_content(self, contact: db.Contact, content: m.AnyContent, item: frames.Delivered,
                        receipts: dict[int, list[str]]) -> list[Event]:
        if isinstance(content, m.Text):
            return self._store_text(contact, content, item, receipts)
        if isinstance(content, m.Receipt):
            column = db.Message.delivered_at if content.kind == "delivered" else db.Message.read_at
            updates: dict[Any, Any] = {column: item.received_at}
            if content.kind == "read":
                updates[db.Message.delivered_at] = item.received_at
            (db.Message.update(updates)
             .where(db.Message.contact == contact, db.Message.outgoing == True,  # noqa: E712
                    db.Message.uuid.in_(content.ids), column.is_null())
             .execute())
            return [ReceiptEvent(contact.name, content.kind, list(content.ids))]
        if isinstance(content, m.Typing):
            return [TypingEvent(contact.name, content.active)]
        if isinstance(content, m.ContactInfo):
            sessions.verify_restore_prekey(IdentityPublicKey.from_bytes(contact.identity),
                                           content.restore_prekey,
                                           content.restore_prekey_signature)
            previous = self.sealer.open(contact.deposit_cap_sealed, "contact.deposit_cap",
                                         contact.id)
            self._update_address(contact, content)
            if not hmac.compare_digest(previous, content.capability):
                # From now on every deposit uses the new capability: say so, so
                # that the old one (an invite's) can be revoked.
                self._enqueue(contact, m.CapabilitySwitched(replaced=cap_hash(previous)),
                              kind="capability")
            if contact.auto_named and content.name != contact.name:
                wanted = content.name
                if NAME_RE.fullmatch(wanted) and not self.name_taken(wanted):
                    old = contact.name
                    contact.name = wanted
                    contact.auto_named = False
                    contact.save()
                    return [NoticeEvent(f"{old} calls themselves {wanted}; renamed.",
                                        contact=wanted)]
            contact.save()
            return []
        if isinstance(content, m.ProfileKeyUpdate):
            contact.profile_key_sealed = self.sealer.seal(content.key, "contact.profile_key",
                                                          contact.id)
            contact.profile_ref_sealed = self.sealer.seal(m.encode(content), "contact.profile_ref",
                                                          contact.id)
            contact.profile_sealed = None
            contact.save()
            return []
        if isinstance(content, m.CapabilityUpdate):
            contact.deposit_cap_sealed = self.sealer.seal(content.capability,
                                                          "contact.deposit_cap", contact.id)
            contact.save()
            return [NoticeEvent(f"{contact.name} can be written to again.", contact=contact.name)]
        if isinstance(content, m.CapabilitySwitched):
            # Naming the hash needs the invite's capability, which only those
            # who saw its link know; a used invite is all that can be retired.
            (db.Invite.update(expires_at_s=0)
             .where(db.Invite.cap_hash == content.replaced, db.Invite.used_at.is_null(False),
                    db.Invite.capability_sealed != b"")
             .execute())
            return []
        return []

    def _store_text(self, contact: db.Contact, content: m.Text, item: frames.Delivered,
                    receipts: dict[int, list[str]] | None, *, unverified: bool = False
                    ) -> list[Event]:
        if db.Message.get_or_none(db.Message.uuid == content.id) is not None:
            return []
        if contact.blocked:
            return []
        attachment = None
        if content.attachment is not None:
            attachment = {"name": content.attachment.name, "size": content.attachment.size}
        db.Message.create(
            uuid=content.id, contact=contact, outgoing=False,
            text_sealed=self.sealer.seal_text(content.text, "message.text", content.id),
            attachment_sealed=(self.sealer.seal(msgspec.msgpack.encode(content.attachment),
                                                "message.attachment_ref", content.id)
                               if content.attachment else None),
            sent_at=content.sent_at, received_at=item.received_at,
            read_at=now_ms() if self.auto_read else None,
        )
        if receipts is not None:
            receipts.setdefault(contact.id, []).append(content.id)
        return [MessageEvent(id=content.id, contact=contact.name, text=content.text,
                             sent_at=content.sent_at, received_at=item.received_at,
                             attachment=attachment, unverified_key=unverified,
                             attachment_ref=content.attachment)]

    def mark_read(self, name: str, ids: list[str]) -> None:
        """Record that messages were shown and queue a read receipt (if enabled)."""
        if not ids:
            return
        contact = self.get_contact(name, allow_key_changed=True)
        with self.store.write():
            db.Message.update(read_at=now_ms()).where(
                db.Message.uuid.in_(ids), db.Message.read_at.is_null()).execute()
            if self.store.account().read_receipts and not contact.key_changed:
                self._enqueue(contact, m.Receipt(kind="read", ids=ids), kind="receipt")

    # ------------------------------------------------------------ history

    def history(self, name: str, limit: int = 50) -> list[dict[str, Any]]:
        """The last ``limit`` messages with ``name`` (a contact or a group), oldest first."""
        from chatcli.client.groups.service import GroupService, is_group

        if is_group(self, name):
            return GroupService(self).history(name, limit)
        contact = self.get_contact(name)
        with self.store.read():
            rows = list(db.Message.select().where(db.Message.contact == contact)
                        .order_by(db.Message.sent_at.desc(), db.Message.id.desc()).limit(limit))
        out = []
        for row in reversed(rows):
            if row.outgoing:
                state = ("failed" if row.failed else "read" if row.read_at else
                         "delivered" if row.delivered_at else "sent" if row.stored_at
                         else "queued")
            else:
                state = "read" if row.read_at else "received"
            entry: dict[str, Any] = {
                "id": row.uuid, "from": "me" if row.outgoing else contact.name,
                "to": contact.name if row.outgoing else "me",
                "direction": "out" if row.outgoing else "in",
                "text": self.sealer.open_text(row.text_sealed, "message.text",
                                                 row.uuid),
                "sent_at": row.sent_at, "received_at": row.received_at, "state": state,
                "group": None,
            }
            out.append(entry)
        return out

    # ------------------------------------------------------------ presence

    async def presence(self, names: list[str] | None = None, *, time_limit: float = 5.0
                       ) -> dict[str, PresenceInfo]:
        """Ask each contact's relay whether they are online (their capability
        proves we may ask), all relays at once. A relay that cannot be asked
        within ``time_limit`` seconds gives ``known=False``, not an error."""
        import trio

        contacts = [c for c in self.contacts() if names is None or c.name in names]
        by_relay: dict[str, list[db.Contact]] = {}
        for contact in contacts:
            by_relay.setdefault(contact.relay_url, []).append(contact)
        result: dict[str, PresenceInfo] = {
            c.name: PresenceInfo(None, None, known=False) for c in contacts}

        async def ask(url: str, group: list[db.Contact]) -> None:
            targets = [frames.PresenceTarget(
                mailbox=c.mailbox, cap=self.sealer.open(c.deposit_cap_sealed,
                                                        "contact.deposit_cap", c.id))
                for c in group]
            try:
                conn = await self.anonymous(url)
                answer = await conn.request(
                    lambda req: frames.PresenceQuery(req=req, targets=targets),
                    time_limit=time_limit)
            except RelayError:
                return
            assert isinstance(answer, frames.PresenceResult)
            by_mailbox = {entry.mailbox: entry for entry in answer.entries}
            for contact in group:
                entry = by_mailbox.get(contact.mailbox)
                if entry is not None:
                    result[contact.name] = PresenceInfo(entry.online, entry.last_seen, True)

        with trio.move_on_after(time_limit):
            async with trio.open_nursery() as nursery:
                for url, group in by_relay.items():
                    nursery.start_soon(ask, url, group)
        return result

    async def subscribe_presence(self, names: list[str]) -> dict[str, PresenceInfo]:
        """Like :meth:`presence`, and later changes arrive as :class:`PresenceEvent`
        from :meth:`presence_updates`."""
        contacts = [c for c in self.contacts() if c.name in names]
        result: dict[str, PresenceInfo] = {}
        for contact in contacts:
            target = frames.PresenceTarget(mailbox=contact.mailbox, cap=self.sealer.open(
                contact.deposit_cap_sealed, "contact.deposit_cap", contact.id))
            try:
                conn = await self.anonymous(contact.relay_url)
                answer = await conn.request(
                    lambda req, t=target: frames.PresenceSubscribe(req=req, targets=[t]),  # type: ignore[misc]
                    time_limit=5)
            except RelayError:
                result[contact.name] = PresenceInfo(None, None, False)
                continue
            assert isinstance(answer, frames.PresenceResult)
            entry = answer.entries[0] if answer.entries else None
            result[contact.name] = PresenceInfo(entry.online if entry else None,
                                                entry.last_seen if entry else None, True)
        return result

    async def presence_updates(self, name: str) -> AsyncIterator[PresenceEvent]:
        """The presence changes of contact ``name`` that its relay pushes after
        :meth:`subscribe_presence`, on the anonymous connection to that relay
        (also when it is this identity's own relay). Ends when that connection
        closes. (Added for ``chatcli chat``.)"""
        contact = self.get_contact(name, allow_key_changed=True)
        conn = await self.anonymous(contact.relay_url)
        async for frame in conn.pushes:
            if isinstance(frame, frames.PresenceUpdate):
                for event in self._presence_events(frame.entries):
                    if isinstance(event, PresenceEvent) and event.contact == name:
                        yield event

    def _presence_events(self, entries: list[frames.PresenceEntry]) -> list[Event]:
        with self.store.read():
            # Oldest first wins: a newer contact claiming the same mailbox
            # never takes over an existing contact's presence.
            by_mailbox = {c.mailbox: c.name
                          for c in db.Contact.select().order_by(db.Contact.id.desc())}
        return [PresenceEvent(by_mailbox[e.mailbox], e.online, e.last_seen)
                for e in entries if e.mailbox in by_mailbox]

    # ------------------------------------------------------------ block, remove

    def _invites_of(self, contact: db.Contact) -> list[db.Invite]:
        """Used invites whose capability ``contact`` may still deposit with
        (it has not said it switched to its own yet)."""
        if not contact.issued_cap_hash:
            return []
        with self.store.read():
            return list(db.Invite.select().where(
                db.Invite.contact_cap_hash == contact.issued_cap_hash,
                db.Invite.capability_sealed != b""))

    def _mark_invites_revoked(self, invites: list[db.Invite]) -> None:
        if invites:
            with self.store.write():
                db.Invite.update(capability_sealed=b"", expires_at_s=0).where(
                    db.Invite.id.in_([row.id for row in invites])).execute()

    async def block(self, name: str) -> None:
        """Revoke the capabilities ``name`` deposits with (its own and, before it
        switched, its invite's); their messages are refused."""
        contact = self.get_contact(name, allow_key_changed=True)
        invites = self._invites_of(contact)
        revoked = [h for h in [contact.issued_cap_hash, *(i.cap_hash for i in invites)] if h]
        if revoked:
            conn = await self.own_relay()
            await conn.request(lambda req: frames.CapRevoke(req=req, cap_hashes=revoked))
        self._mark_invites_revoked(invites)
        with self.store.write():
            db.Contact.update(blocked=True).where(db.Contact.id == contact.id).execute()
            db.Outbox.delete().where(db.Outbox.contact == contact.id,
                                     db.Outbox.kind != "text").execute()
        await self._roll_profile_key()

    async def unblock(self, name: str) -> None:
        """Issue a new capability to ``name`` and send it inside the session."""
        contact = self.get_contact(name)
        capability = os.urandom(32)
        conn = await self.own_relay()
        await conn.request(lambda req: frames.CapAdd(req=req, cap_hashes=[cap_hash(capability)]))
        with self.store.write():
            contact = db.Contact.get_by_id(contact.id)
            contact.blocked = False
            contact.issued_cap_sealed = self.sealer.seal(capability, "contact.issued_cap",
                                                      contact.id)
            contact.issued_cap_hash = cap_hash(capability)
            contact.save()
            self._enqueue(contact, m.CapabilityUpdate(capability=capability), kind="capability")
        await self.deliver_until_stored(kinds={"capability"}, contact_id=contact.id)

    async def remove_contact(self, name: str) -> None:
        """Revoke ``name``'s capability and delete the contact and its history."""
        contact = self.get_contact(name, allow_key_changed=True)
        invites = self._invites_of(contact)
        revoked = [h for h in [contact.issued_cap_hash, *(i.cap_hash for i in invites)] if h]
        if revoked:
            conn = await self.own_relay()
            with contextlib.suppress(RelayRequestError):
                await conn.request(lambda req: frames.CapRevoke(req=req, cap_hashes=revoked))
        self._mark_invites_revoked(invites)
        with self.store.write():
            db.Contact.delete().where(db.Contact.id == contact.id).execute()
        await self._roll_profile_key()

    async def _roll_profile_key(self) -> None:
        """A new profile key, with the profile re-sealed for the remaining contacts."""
        from chatcli.client.profiles import publish_profile

        await publish_profile(self, None, new_key=True)

    # ------------------------------------------------------------ backup

    def export_backup(self) -> bytes:
        """The backup payload (msgspec): keys, mailbox, contacts, groups; no sessions."""
        from chatcli.client.groups.service import export_groups

        with self.store.read():
            account = self.store.account()
            contacts = [BackupContact(
                name=c.name, identity=c.identity, relay_url=c.relay_url, mailbox=c.mailbox,
                box_key=c.box_key,
                deposit_cap=self.sealer.open(c.deposit_cap_sealed, "contact.deposit_cap",
                                             c.id),
                issued_cap=(self.sealer.open(c.issued_cap_sealed, "contact.issued_cap", c.id)
                            if c.issued_cap_sealed else None),
                verified=c.verified and not c.key_changed, blocked=c.blocked,
                restore_prekey=c.restore_prekey,
            ) for c in db.Contact.select().order_by(db.Contact.id)]
            payload = BackupV1(
                name=account.name, identity=self.identity.private_bytes(),
                mailbox_key=self.mailbox_key.private_bytes(), mailbox=account.mailbox,
                relay_url=account.relay_url, read_receipts=account.read_receipts,
                presence_hidden=account.presence_hidden,
                profile_key=self.sealer.open(account.profile_key_sealed, "account.profile_key",
                                             account.id),
                contacts=contacts,
                groups=export_groups(self),
            )
        return msgspec.msgpack.encode(payload)

    @staticmethod
    def identity_of_backup(payload: bytes) -> IdentityKeyPair:
        """The identity key pair inside a backup payload (for a signed key change)."""
        try:
            backup = msgspec.msgpack.decode(payload, type=BackupV1)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise StorageError("The backup's content is not understood by this chatcli."
                               ) from None
        return IdentityKeyPair.from_private_bytes(backup.identity)

    @classmethod
    def import_backup(cls, home: Home, payload: bytes, passphrase: str) -> ChatClient:
        """Create this home from a backup payload (the home must be empty)."""
        try:
            backup = msgspec.msgpack.decode(payload, type=BackupV1)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise StorageError("The backup's content is not understood by this chatcli."
                               ) from None
        identity = IdentityKeyPair.from_private_bytes(backup.identity)
        client = cls.create(home, passphrase, name=backup.name, relay_url=backup.relay_url,
                            mailbox=backup.mailbox, identity=identity,
                            mailbox_key=MailboxKeyPair.from_private_bytes(backup.mailbox_key),
                            profile_key=backup.profile_key)
        with client.store.write():
            # A new installation that replaces the one the backup came from:
            # its first login tells the relay (see own_relay).
            db.MetaEntry.replace(  # type: ignore[no-untyped-call]
                key=SUPERSEDE_KEY, value="1").execute()
            db.Account.update(read_receipts=backup.read_receipts,
                              presence_hidden=backup.presence_hidden).execute()
            for c in backup.contacts:
                contact_id = client.store.next_id(db.Contact)
                db.Contact.create(
                    id=contact_id, name=c.name, identity=c.identity, relay_url=c.relay_url,
                    mailbox=c.mailbox,
                    box_key=c.box_key,
                    deposit_cap_sealed=client.sealer.seal(c.deposit_cap, "contact.deposit_cap",
                                                            contact_id),
                    issued_cap_sealed=(client.sealer.seal(c.issued_cap, "contact.issued_cap",
                                                                  contact_id)
                                       if c.issued_cap else None),
                    issued_cap_hash=cap_hash(c.issued_cap) if c.issued_cap else None,
                    verified=c.verified, blocked=c.blocked, restore_prekey=c.restore_prekey,
                    created_at=now_ms(),
                )
            from chatcli.client.groups.service import restore_groups

            restore_groups(client, backup.groups)
        return client


async def create_account(home: Home, passphrase: str, *, name: str, relay_url: str,
                         token: str | None = None) -> tuple[ChatClient, bool]:
    """Register a mailbox on the relay and create the identity in ``home``.

    Returns the client and whether the relay key was trusted on first use
    (the URL had no fingerprint: the caller warns; the key is pinned)."""
    from chatcli.client.relay_client import connect
    from chatcli.crypto.keys import relay_fingerprint
    from chatcli.protocol.address import parse_relay_url

    validate_name(name)
    home.require_empty()
    address = parse_relay_url(relay_url)
    identity = IdentityKeyPair.generate()
    mailbox_key = MailboxKeyPair.generate()
    async with connect(address) as conn:
        mailbox = await conn.register(mailbox_key.auth_public, mailbox_key.sign, token)
        pinned = address.with_fingerprint(relay_fingerprint(conn.relay_key)).display()
    client = ChatClient.create(home, passphrase, name=name, relay_url=pinned, mailbox=mailbox,
                               identity=identity, mailbox_key=mailbox_key)
    return client, address.fingerprint is None
