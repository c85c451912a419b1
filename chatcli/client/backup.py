"""Key backups: what ``keys export`` writes (keys, mailbox, contacts, groups;
no sessions) and how ``keys import`` makes a new installation from it."""

from __future__ import annotations

from typing import Annotated, Self

import msgspec

from chatcli.client import models as db
from chatcli.client.capabilities import cap_hash
from chatcli.client.core import SUPERSEDE_KEY
from chatcli.client.devices import Devices
from chatcli.client.groups.backup import BackupGroup, export_groups, restore_groups
from chatcli.client.home import Home
from chatcli.client.store import now_ms
from chatcli.crypto import devicelist as dl
from chatcli.crypto.keys import IdentityKeyPair, MailboxKeyPair
from chatcli.errors import StorageError


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
    device_list: bytes | None = None  # their signed device list (chatcli.crypto.devicelist)


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
    self_capability: bytes | None = None  # absent from backups made before devices
    device_list: bytes | None = None      # the identity's signed device list
    device_id: bytes | None = None        # the device the backup was made on


class Backup(Devices):
    """Exporting and importing key backups."""

    def export_backup(self) -> bytes:
        """The backup payload (msgspec): keys, mailbox, contacts, groups; no sessions."""
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
                device_list=None if c.device_list is None else bytes(c.device_list),
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
                self_capability=self._self_cap_if_any(),
                device_list=None if account.device_list is None else bytes(account.device_list),
                device_id=None if account.device_id is None else bytes(account.device_id),
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
    def import_backup(cls, home: Home, payload: bytes, passphrase: str) -> Self:
        """Create this home from a backup payload (the home must be empty)."""
        backup = cls.decode_backup(payload)
        identity = IdentityKeyPair.from_private_bytes(backup.identity)
        own_list = (None if backup.device_list is None
                    else dl.decode_device_list(backup.device_list))
        record = None if own_list is None else own_list.find(backup.device_id)
        client = cls.create(home, passphrase, name=backup.name, relay_url=backup.relay_url,
                            mailbox=backup.mailbox, identity=identity,
                            mailbox_key=MailboxKeyPair.from_private_bytes(backup.mailbox_key),
                            profile_key=backup.profile_key,
                            device_id=None if record is None else record.device_id,
                            device_name=None if record is None else record.name)
        with client.store.write():
            # A new installation that replaces the one the backup came from:
            # its first login tells the relay (see own_relay).
            db.MetaEntry.replace(  # type: ignore[no-untyped-call]
                key=SUPERSEDE_KEY, value="1").execute()
            client.restore_contacts(backup)
            if own_list is not None and record is not None:
                # The same device (mailbox, id) with a new restore prekey: the
                # list names the new one, for contacts and own devices.
                now = now_ms()
                db.Account.update(device_list=dl.encode_device_list(own_list)).execute()
                signed = dl.with_device(own_list, identity, client._own_record(now), now=now)
                client._publish_own_list(signed)
        return client

    @staticmethod
    def decode_backup(payload: bytes) -> BackupV1:
        try:
            return msgspec.msgpack.decode(payload, type=BackupV1)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise StorageError("The backup's content is not understood by this chatcli."
                               ) from None

    def _self_cap_if_any(self) -> bytes | None:
        account = self.store.account()
        if account.self_cap_sealed is None:
            return None
        return self.sealer.open(bytes(account.self_cap_sealed), "account.self_cap", account.id)

    def restore_contacts(self, backup: BackupV1) -> None:
        """The settings, contacts and groups of ``backup`` into this (new) home,
        inside a write transaction."""
        client = self
        db.Account.update(read_receipts=backup.read_receipts,
                          presence_hidden=backup.presence_hidden).execute()
        if backup.self_capability is not None:
            account = self.store.account()
            db.Account.update(self_cap_sealed=self.sealer.seal(
                backup.self_capability, "account.self_cap", account.id)).execute()
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
                created_at=now_ms(), device_list=c.device_list,
            )
        restore_groups(client, backup.groups)
