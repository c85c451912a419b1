"""Devices (issue 13): this device, the identity's signed device list, the
lists of contacts, and where each copy of a message goes.

An identity's devices share its identity key; each has its own mailbox,
restore prekey and sessions (``docs/protocol.md`` "Devices"). A contact that
never published a list is one legacy device at its contact address. The
session with the device whose mailbox is the contact's address keeps the
legacy key (``LEGACY_DEVICE``), so sessions made before devices go on.
Synchronous; the caller holds the store's transaction where a method says so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import msgspec

from chatcli.client import messages as m
from chatcli.client import models as db
from chatcli.client.capabilities import cap_hash
from chatcli.client.core import ClientCore
from chatcli.client.events import Event, NoticeEvent
from chatcli.client.store import now_ms
from chatcli.crypto import devicelist as dl
from chatcli.crypto.keys import IdentityPublicKey
from chatcli.errors import CryptoError, ReplacedError, UsageError

LEGACY = db.LEGACY_DEVICE
REMOVED_KEY = "device_removed"   # meta_entry: a newer own list no longer names this device
# meta_entry DEPARTED + device id (hex): the record of an own device just
# removed, so that the list telling it so can still reach its mailbox.
DEPARTED = "departed_device:"
DEFAULT_DEVICE_NAME = "first device"


class UnlistedDevice(CryptoError):
    """A message came from a device that is not on its sender's device list."""


class DeviceRemovedError(ReplacedError):
    """This device was removed from its identity's device list."""


def removed_message(name: str) -> str:
    return (f"This device was removed from {name}'s account; it can no longer send or "
            "receive.")


@dataclass(frozen=True)
class Target:
    """Where one copy of a message goes and which session encrypts it."""

    relay_url: str
    mailbox: bytes
    box_key: bytes
    capability: bytes
    restore_prekey: bytes | None   # to start a session when there is none
    session_device: bytes          # the key of the session (LEGACY for a legacy device)


def contact_list(contact: db.Contact) -> dl.DeviceList | None:
    """The contact's newest accepted device list (None: one legacy device)."""
    return None if contact.device_list is None else dl.decode_device_list(
        bytes(contact.device_list))


def session_device(contact: db.Contact, record: dl.DeviceRecord) -> bytes:
    """The session key of a contact's device: the legacy one at its contact address."""
    return LEGACY if bytes(record.mailbox) == bytes(contact.mailbox) else record.device_id


class Devices(ClientCore):
    """This device and the device lists; where copies go."""

    # ------------------------------------------------------------ this device

    @property
    def device_id(self) -> bytes:
        with self.store.read():
            return self._me()

    def _me(self) -> bytes:
        """This device's id (it never changes once the store is open: read once)."""
        me: bytes | None = self.__dict__.get("_device_id")
        if me is None:
            device = self.store.account().device_id
            assert device is not None, "schema 11 gives every account a device id"
            me = self.__dict__["_device_id"] = bytes(device)
        return me

    def device_name(self) -> str:
        with self.store.read():
            return str(self.store.account().device_name or DEFAULT_DEVICE_NAME)

    def own_device_record(self, *, now: int | None = None) -> dl.DeviceRecord:
        """This device's record: its own mailbox, box key and restore prekey."""
        with self.store.read():
            return self._own_record(now_ms() if now is None else now)

    def _own_record(self, now: int) -> dl.DeviceRecord:
        account = self.store.account()
        return dl.DeviceRecord(
            device_id=self._me(),
            name=account.device_name or DEFAULT_DEVICE_NAME, relay_url=account.relay_url,
            mailbox=bytes(account.mailbox), box_key=self.mailbox_key.box_public,
            restore_prekey=bytes(account.restore_prekey_public),
            restore_prekey_signature=bytes(account.restore_prekey_signature), added_at=now)

    def own_device_list(self, *, now: int | None = None) -> dl.DeviceList:
        """The identity's current signed list (version 1 with this device alone
        the first time it is needed)."""
        with self.store.write():
            return self._own_list(now_ms() if now is None else now)

    def _own_list(self, now: int) -> dl.DeviceList:
        account = self.store.account()
        if account.device_list is not None:
            return dl.decode_device_list(bytes(account.device_list))
        signed = dl.sign_device_list(self.identity, 1, [self._own_record(now)], now=now)
        db.Account.update(device_list=dl.encode_device_list(signed)).execute()
        return signed

    def _own_list_if_any(self) -> dl.DeviceList | None:
        raw = self.store.account().device_list
        return None if raw is None else dl.decode_device_list(bytes(raw))

    def self_capability(self) -> bytes:
        """The capability the identity's devices deposit to each other with."""
        with self.store.write():
            return self._self_cap()

    def _self_cap(self) -> bytes:
        account = self.store.account()
        if account.self_cap_sealed is not None:
            return self.sealer.open(bytes(account.self_cap_sealed), "account.self_cap",
                                    account.id)
        capability = os.urandom(32)
        db.Account.update(self_cap_sealed=self.sealer.seal(
            capability, "account.self_cap", account.id)).execute()
        return capability

    def capability_hashes(self) -> list[bytes]:
        """SHA-256 of every capability this identity issued that a device's
        mailbox must accept: contacts' and the self capability. (An invite's
        one-shot capability stays on the device that made the invite.)"""
        own = self.self_capability()
        with self.store.read():
            hashes = [bytes(c.issued_cap_hash or b"") for c in db.Contact.select().where(
                db.Contact.issued_cap_hash.is_null(False), db.Contact.blocked == False)]  # noqa: E712
        return [*hashes, cap_hash(own)]

    def require_listed(self) -> None:
        """Raise :class:`DeviceRemovedError` when a newer own list removed this device."""
        with self.store.read():
            removed = db.MetaEntry.get_or_none(db.MetaEntry.key == REMOVED_KEY)
            name = self.store.account().name
        if removed is not None:
            raise DeviceRemovedError(removed_message(name))

    # ------------------------------------------------------------ changing the own list

    def add_own_device(self, record: dl.DeviceRecord, *, now: int | None = None
                       ) -> dl.DeviceList:
        """Add (or replace) ``record`` in the own list, sign it, and queue it to
        every contact device and every own other device."""
        now = now_ms() if now is None else now
        with self.store.write():
            signed = dl.with_device(self._own_list(now), self.identity, record, now=now)
            self._publish_own_list(signed)
        return signed

    def remove_own_device(self, name: str, *, now: int | None = None) -> dl.DeviceList:
        """Remove the device called ``name``; the new list goes to contacts and
        own devices, the removed one included (so that it learns it)."""
        now = now_ms() if now is None else now
        with self.store.write():
            current = self._own_list(now)
            record = current.find_name(name)
            if record is None:
                raise UsageError(f"No device is called {name!r}; see `chatcli device list`.")
            if record.device_id == self._me():
                raise UsageError("This device cannot remove itself; remove it from another "
                                 "device.")
            signed = dl.without_device(current, self.identity, record.device_id, now=now)
            db.MetaEntry.replace(  # type: ignore[no-untyped-call]
                key=DEPARTED + record.device_id.hex(),
                value=msgspec.msgpack.encode(record).hex()).execute()
            self._publish_own_list(signed, also=[record])
            db.Session.delete().where(db.Session.contact.is_null(),
                                      db.Session.device == record.device_id).execute()
        return signed

    def rename_own_device(self, old: str, new: str, *, now: int | None = None
                          ) -> dl.DeviceList:
        now = now_ms() if now is None else now
        if not new or len(new) > dl.MAX_NAME:
            raise UsageError(f"A device name has 1 to {dl.MAX_NAME} characters.")
        with self.store.write():
            current = self._own_list(now)
            record = current.find_name(old)
            if record is None:
                raise UsageError(f"No device is called {old!r}; see `chatcli device list`.")
            if current.find_name(new) is not None:
                raise UsageError(f"A device is already called {new!r}.")
            signed = dl.renamed_device(current, self.identity, record.device_id, new, now=now)
            if record.device_id == self._me():
                db.Account.update(device_name=new).execute()
            self._publish_own_list(signed)
        return signed

    def _publish_own_list(self, signed: dl.DeviceList,
                          also: list[dl.DeviceRecord] | None = None) -> None:
        """Store ``signed`` and queue it to every contact and own device
        (inside a write transaction)."""
        db.Account.update(device_list=dl.encode_device_list(signed)).execute()
        self._self_cap()   # made now, so that deposits to own devices find it
        update = m.DeviceListUpdate(devices=signed)
        for contact in db.Contact.select().where(db.Contact.blocked == False,  # noqa: E712
                                                 db.Contact.key_changed == False):  # noqa: E712
            for device in self._contact_devices(contact):
                self._enqueue_one(contact, update, kind="device_list", device=device)
        for record in [*self._other_own_devices(), *(also or [])]:
            self._enqueue_own(record.device_id, update, kind="device_list")

    # ------------------------------------------------------------ queueing

    def _enqueue(self, contact: db.Contact, content: m.Content, *, kind: str,
                 message_uuid: str | None = None, device: bytes | None = None) -> None:
        """Queue ``content`` for every device of ``contact`` (or only ``device``),
        and for a text, a ``sync_sent`` copy for every own other device."""
        devices = [device] if device is not None else self._contact_devices(contact)
        for target in devices:
            self._enqueue_one(contact, content, kind=kind, message_uuid=message_uuid,
                             device=target)
        if isinstance(content, m.Text) and device is None:
            sync = m.SyncSent(destination=bytes(contact.identity), content=m.encode(content))
            for record in self._other_own_devices():
                self._enqueue_one(None, sync, kind="sync", message_uuid=message_uuid,
                                 device=record.device_id)

    def _enqueue_own(self, device: bytes, content: m.Content, *, kind: str) -> None:
        self._enqueue_one(None, content, kind=kind, device=device)

    def _contact_devices(self, contact: db.Contact) -> list[bytes]:
        listed = contact_list(contact)
        return [LEGACY] if listed is None else [d.device_id for d in listed.devices]

    def _other_own_devices(self) -> list[dl.DeviceRecord]:
        own = self._own_list_if_any()
        if own is None:
            return []
        me = self._me()
        return [d for d in own.devices if d.device_id != me]

    def _target(self, contact: db.Contact | None, device: bytes) -> Target | None:
        """Where an outbox row for ``contact``'s (or an own) ``device`` goes;
        None when the device is no longer listed (the row is dropped)."""
        if contact is None:
            own = self._own_list_if_any()
            record = None if own is None else own.find(device)
            if record is None:
                departed = db.MetaEntry.get_or_none(db.MetaEntry.key == DEPARTED + device.hex())
                if departed is None:
                    return None
                record = msgspec.msgpack.decode(bytes.fromhex(departed.value),
                                                type=dl.DeviceRecord)
            return Target(record.relay_url, record.mailbox, record.box_key, self._self_cap(),
                          record.restore_prekey, device)
        capability = self.sealer.open(contact.deposit_cap_sealed, "contact.deposit_cap",
                                      contact.id)
        if device == LEGACY:
            prekey = None if contact.restore_prekey is None else bytes(contact.restore_prekey)[:32]
            return Target(contact.relay_url, bytes(contact.mailbox), bytes(contact.box_key),
                          capability, prekey, LEGACY)
        listed = contact_list(contact)
        record = None if listed is None else listed.find(device)
        if record is None:
            return None
        return Target(record.relay_url, record.mailbox, record.box_key, capability,
                      record.restore_prekey, session_device(contact, record))

    # ------------------------------------------------------------ receiving

    def _sender_device(self, contact: db.Contact | None, device: bytes | None) -> bytes:
        """The session key of the device a message says it came from; raise
        :class:`UnlistedDevice` when the sender's newest list does not name it."""
        if contact is None:
            own = self._own_list_if_any()
            if device is None or own is None or own.find(device) is None:
                raise UnlistedDevice("A message from a device of this account that is not on "
                                     "its device list was refused.")
            return device
        listed = contact_list(contact)
        if listed is None:
            # One legacy device: whichever device holds the legacy session.
            return LEGACY
        record = listed.find(device)
        if record is None:
            raise UnlistedDevice(f"A message from a device that is not on {contact.name}'s "
                                 "device list was refused.")
        return session_device(contact, record)

    def _accept_contact_list(self, contact: db.Contact, offered: dl.DeviceList
                             ) -> list[Event]:
        """Take ``offered`` as the contact's list when it is signed by them and
        newer; drop the sessions of removed devices; a notice of the change."""
        identity = IdentityPublicKey.from_bytes(bytes(contact.identity))
        stored = contact_list(contact)
        if not dl.accept_device_list(stored, offered, identity):
            return []
        contact.device_list = dl.encode_device_list(offered)
        contact.save()
        legacy_listed = any(bytes(d.mailbox) == bytes(contact.mailbox) for d in offered.devices)
        kept = [session_device(contact, d) for d in offered.devices]
        query = db.Session.delete().where(db.Session.contact == contact,
                                          db.Session.device.not_in(kept))
        query.execute()
        db.Outbox.delete().where(db.Outbox.contact == contact, db.Outbox.device != LEGACY,
                                 db.Outbox.device.not_in(
                                     [d.device_id for d in offered.devices])).execute()
        # Their new devices may not know our devices yet (they were made from
        # a snapshot taken before our list reached them): tell them.
        own = self._own_list_if_any()
        known = set() if stored is None else stored.device_ids
        if own is not None:
            for record in offered.devices:
                if record.device_id not in known and session_device(contact, record) != LEGACY:
                    self._enqueue_one(contact, m.DeviceListUpdate(devices=own),
                                      kind="device_list", device=record.device_id)
        if stored is None and legacy_listed and len(offered.devices) == 1:
            return []   # the device already known, now with a list: nothing changed
        added, removed = dl.changes(stored, offered)
        if stored is None:
            # The first list names the device at the contact address too.
            added = [d.name for d in offered.devices if bytes(d.mailbox) != bytes(contact.mailbox)]
        if not added and not removed:
            return []
        parts = ([f"added {', '.join(added)}"] if added else []) + (
            [f"removed {', '.join(removed)}"] if removed else [])
        return [NoticeEvent(f"{contact.name}'s devices changed: {'; '.join(parts)}. "
                            "The safety number is unchanged.", contact=contact.name)]

    def _accept_own_list(self, offered: dl.DeviceList) -> list[Event]:
        """A newer own list from another own device; when it no longer names
        this device, this device was removed."""
        stored = self._own_list_if_any()
        if not dl.accept_device_list(stored, offered, self.identity.public):
            return []
        db.Account.update(device_list=dl.encode_device_list(offered)).execute()
        me = self._me()
        db.Session.delete().where(db.Session.contact.is_null(),
                                  db.Session.device.not_in(list(offered.device_ids))).execute()
        if offered.find(me) is None:
            db.MetaEntry.replace(key=REMOVED_KEY, value="1").execute()  # type: ignore[no-untyped-call]
            db.Outbox.delete().execute()
            return [NoticeEvent(removed_message(self.store.account().name), warning=True)]
        record = offered.find(me)
        assert record is not None
        db.Account.update(device_name=record.name).execute()
        added, removed = dl.changes(stored, offered)
        parts = ([f"added {', '.join(added)}"] if added else []) + (
            [f"removed {', '.join(removed)}"] if removed else [])
        if not parts:
            return []
        return [NoticeEvent(f"Your devices changed: {'; '.join(parts)}.")]
