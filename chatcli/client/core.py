"""The local core of an unlocked identity: keys, the local store, and the few
helpers every concern shares (the account, names, stored sessions, queueing
a message). Synchronous; the network operations it names are provided by
the shell, :class:`chatcli.client.service.ChatClient`.

Every database change runs in one ``BEGIN IMMEDIATE`` transaction without
``await`` inside (see ``store.py``).
"""

from __future__ import annotations

import abc
import contextlib
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Self

import peewee

from chatcli.client import messages as m
from chatcli.client import models as db
from chatcli.client import prepared, sessions
from chatcli.client.groups.models import name_in_use
from chatcli.client.home import Home
from chatcli.client.keys import KeystoreSecrets, encode_secrets, read_secrets, write_keys
from chatcli.client.names import NAME_RE
from chatcli.client.search import SearchIndex
from chatcli.client.store import Sealer, Store, now_ms, session_row
from chatcli.crypto import devicelist as dl
from chatcli.crypto.keys import DHKeyPair, IdentityKeyPair, MailboxKeyPair
from chatcli.crypto.ratchet import RatchetSession
from chatcli.errors import KeyChangedError, UnknownContactError

if TYPE_CHECKING:
    from chatcli.client.events import DeliveryReport
    from chatcli.client.relay_client import AnonymousConnection, OwnerConnection, RelayPool

INSTALLATION_KEY = "installation"      # meta_entry: this installation's id (hex)
SUPERSEDE_KEY = "supersede_pending"    # meta_entry: restored, not yet announced to the relay


def _id(contact: db.Contact | None) -> int | None:
    return None if contact is None else int(contact.id)


def _session_where(contact: db.Contact | None, device: bytes) -> peewee.Expression:
    who = db.Session.contact.is_null() if contact is None else db.Session.contact == contact
    return who & (db.Session.device == device)


class ClientCore(abc.ABC):
    """An unlocked identity: keys and local store. The relay connections are
    the shell's: :meth:`own_relay`, :meth:`anonymous` and :meth:`flush_outbox`
    are declared here so that every concern can name them."""

    def __init__(self, home: Home, identity: IdentityKeyPair, mailbox: MailboxKeyPair,
                 store: Store) -> None:
        self.home = home
        self.identity = identity
        self.mailbox_key = mailbox
        self.store = store
        self.sealer = store.sealer
        self.auto_read = False  # mark incoming messages read (and say so) at once
        self._failed: dict[str, str] = {}  # message uuid -> why it cannot be sent
        # In memory only, filled at the first search (chatcli/client/search.py):
        # features that delete or edit messages call its forget()/update().
        self.search_index = SearchIndex()

    # ------------------------------------------------------------ lifecycle

    @classmethod
    def unlock(cls, home: Home, passphrase: str) -> Self:
        """Open the keystore with ``passphrase`` and the local database."""
        home.require()
        return cls.from_secrets(home, read_secrets(home.keystore, passphrase))

    @classmethod
    def from_secrets(cls, home: Home, secrets: KeystoreSecrets) -> Self:
        """Open the local database with keys already read from the keystore."""
        store = Store.open(home.database, Sealer(secrets.local_key))
        return cls(home, IdentityKeyPair.from_private_bytes(secrets.identity),
                   MailboxKeyPair.from_private_bytes(secrets.mailbox), store)

    @classmethod
    def create(cls, home: Home, passphrase: str, *, name: str, relay_url: str,
               mailbox: bytes, identity: IdentityKeyPair, mailbox_key: MailboxKeyPair,
               profile_key: bytes | None = None, restore_prekey: DHKeyPair | None = None,
               device_id: bytes | None = None, device_name: str | None = None) -> Self:
        """Write a new keystore and database for an identity whose mailbox exists
        (a new device of it: ``restore_prekey``, ``device_id`` and ``device_name``
        given; otherwise made here)."""
        home.create()
        local_key = os.urandom(32)
        store = Store.open(home.database, Sealer(local_key), create=True)
        try:
            client = cls(home, identity, mailbox_key, store)
            restore = restore_prekey or DHKeyPair.generate()
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
                    device_id=device_id or os.urandom(16), device_name=device_name,
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
        self.search_index = SearchIndex()  # the texts it held go with the keys

    def wipe_local(self) -> None:
        self.close()
        for path in (self.home.keystore, self.home.database,
                     Path(str(self.home.database) + "-wal"),
                     Path(str(self.home.database) + "-shm")):
            path.unlink(missing_ok=True)
        shutil.rmtree(self.home.downloads, ignore_errors=True)

    # ------------------------------------------------------------ account

    def account(self) -> db.Account:
        with self.store.read():
            return self.store.account()

    @property
    def relay_url(self) -> str:
        return str(self.account().relay_url)

    def set_read_receipts(self, enabled: bool) -> None:
        with self.store.write():
            db.Account.update(read_receipts=enabled).execute()

    # ------------------------------------------------------------ installation

    def _installation(self) -> tuple[bytes, bool]:
        """This installation's id (made on first use) and whether it still has to
        take the mailbox over from the one it was restored from."""
        with self.store.write():
            row = db.MetaEntry.get_or_none(db.MetaEntry.key == INSTALLATION_KEY)
            if row is None:
                row = db.MetaEntry.create(key=INSTALLATION_KEY, value=os.urandom(16).hex())
            supersede = db.MetaEntry.get_or_none(db.MetaEntry.key == SUPERSEDE_KEY)
        return bytes.fromhex(row.value), supersede is not None

    def _took_over(self) -> None:
        """The relay accepted this installation in place of the one it was
        restored from: nothing left to take over."""
        with self.store.write():
            db.MetaEntry.delete().where(db.MetaEntry.key == SUPERSEDE_KEY).execute()

    # ------------------------------------------------------------ shared helpers

    def name_taken(self, name: str) -> bool:
        """Whether a contact or a group already uses ``name``."""
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
            contact = prepared.CONTACT_BY_NAME.first(name=name)
        if contact is None:
            raise UnknownContactError(f"No contact is called {name!r}; see `chatcli contacts`.")
        if contact.key_changed and not allow_key_changed:
            raise KeyChangedError(
                f"The identity key of {name} has changed. Compare the new safety number "
                f"with them (`chatcli verify {name}`), then accept it with "
                f"`chatcli verify {name} --confirm`."
            )
        return contact

    def _load_session(self, contact: db.Contact | None,
                      device: bytes = db.LEGACY_DEVICE) -> RatchetSession | None:
        """The session with ``contact``'s ``device`` (contact None: the own
        device ``device``), or None."""
        if contact is not None:
            state = prepared.SESSION_STATE.scalar(contact=contact.id, device=device)
        else:
            row = db.Session.get_or_none(_session_where(contact, device))
            state = None if row is None else row.state_sealed
        if state is None:
            return None
        return RatchetSession.from_bytes(self.sealer.open(
            state, "session.state", session_row(_id(contact), device)))

    def _save_session(self, contact: db.Contact | None, session: RatchetSession,
                      device: bytes = db.LEGACY_DEVICE) -> None:
        sealed = self.sealer.seal(session.to_bytes(), "session.state",
                                  session_row(_id(contact), device))
        if contact is not None:
            updated = prepared.SESSION_UPDATE.execute(
                state=sealed, now=now_ms(), contact=contact.id, device=device).rowcount
        else:
            updated = db.Session.update(state_sealed=sealed, updated_at=now_ms()).where(
                _session_where(contact, device)).execute()
        if not updated:
            db.Session.create(contact=contact, device=device, state_sealed=sealed,
                              updated_at=now_ms())

    def _own_info(self, capability: bytes) -> m.ContactInfo:
        account = self.store.account()
        return m.ContactInfo(
            relay_url=account.relay_url, mailbox=account.mailbox, capability=capability,
            box_key=self.mailbox_key.box_public, name=account.name,
            restore_prekey=account.restore_prekey_public,
            restore_prekey_signature=account.restore_prekey_signature,
            devices=(None if account.device_list is None
                     else dl.decode_device_list(bytes(account.device_list))),
        )

    def _enqueue(self, contact: db.Contact, content: m.Content, *, kind: str,
                 message_uuid: str | None = None, device: bytes | None = None) -> None:
        """Queue a content message for a contact (inside a write transaction):
        :class:`chatcli.client.devices.Devices` fans it out to every device."""
        self._enqueue_one(contact, content, kind=kind, message_uuid=message_uuid,
                          device=db.LEGACY_DEVICE if device is None else device)

    def _enqueue_one(self, contact: db.Contact | None, content: m.Content, *, kind: str,
                     message_uuid: str | None = None, device: bytes) -> None:
        """Queue a content message for one device of a contact, or (contact
        None) for the own device ``device`` (inside a write transaction)."""
        outbox_id = int(prepared.OUTBOX_NEXT_ID.scalar() or 0) + 1
        prepared.OUTBOX_INSERT.execute(
            id=outbox_id, contact=_id(contact), device=device, kind=kind, uuid=message_uuid,
            now=now_ms(),
            plaintext=self.sealer.seal(m.encode(content), "outbox.plaintext", outbox_id))

    # ------------------------------------------------------------ the shell's

    @abc.abstractmethod
    def _require_pool(self) -> RelayPool:
        """The pool of relay connections (only inside ``online()``)."""

    @abc.abstractmethod
    async def own_relay(self, *, authenticate: bool = True) -> OwnerConnection:
        """The connection to this identity's relay, logged in as the mailbox owner."""

    @abc.abstractmethod
    async def anonymous(self, url: str) -> AnonymousConnection:
        """The connection to the relay at ``url`` that never logs in."""

    @abc.abstractmethod
    async def flush_outbox(self, time_limit: float = 5.0) -> DeliveryReport | None:
        """Best effort: deliver what is queued."""

    @abc.abstractmethod
    def delivering(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Held around a delivery pass: one pass at a time per identity (a
        daemon sends from several tasks; two passes would deposit twice)."""
