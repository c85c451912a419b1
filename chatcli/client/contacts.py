"""Contacts: the address book, safety numbers, verification, and a changed
identity key waiting for the user's word (``verify --confirm``/``--reject``)."""

from __future__ import annotations

import msgspec

from chatcli.client import messages as m
from chatcli.client import models as db
from chatcli.client.capabilities import cap_hash, retire_issued_capability
from chatcli.client.core import ClientCore
from chatcli.crypto.keys import IdentityPublicKey
from chatcli.crypto.ratchet import RatchetSession
from chatcli.errors import UsageError


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


class Contacts(ClientCore):
    """The contacts of an unlocked identity (local: no relay is asked)."""

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
            retire_issued_capability(contact, pending.issued_cap)
            contact.issued_cap_sealed = self.sealer.seal(pending.issued_cap, "contact.issued_cap",
                                                          contact.id)
            contact.issued_cap_hash = cap_hash(pending.issued_cap)
        contact.restore_prekey = pending.restore_prekey
        contact.pending_sealed = None
        db.Outbox.delete().where(db.Outbox.contact == contact).execute()
        self._save_session(contact, RatchetSession.from_bytes(pending.session))

    def _pending_from(self, sender: IdentityPublicKey) -> db.Contact | None:
        for contact in db.Contact.select().where(db.Contact.pending_sealed.is_null(False)):
            if self._open_pending(contact).identity == sender.raw:
                return contact
        return None

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

    def _reset_session(self, contact: db.Contact, session: RatchetSession) -> None:
        """Replace the session; queued deposits made for the old one are failed."""
        self._save_session(contact, session)
        stale = list(db.Outbox.select().where(db.Outbox.contact == contact,
                                              db.Outbox.payload_sealed.is_null(False)))
        db.Message.update(failed="session_reset").where(
            db.Message.uuid.in_([row.message_uuid for row in stale if row.message_uuid])
        ).execute()
        db.Outbox.delete().where(db.Outbox.id.in_([row.id for row in stale])).execute()

    # ------------------------------------------------------------ capabilities

    def _capabilities_of(self, contact: db.Contact) -> tuple[list[db.Invite], list[bytes]]:
        """The used invites ``contact`` may still deposit with and the hashes of
        every capability it may deposit with: what blocking or removing it revokes."""
        invites = self._invites_of(contact)
        revoked = [h for h in [contact.issued_cap_hash, *(i.cap_hash for i in invites)] if h]
        return invites, revoked

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

    def _mark_blocked(self, contact: db.Contact, invites: list[db.Invite]) -> None:
        """After its capabilities were revoked: blocked, and nothing but texts
        kept queued for it."""
        self._mark_invites_revoked(invites)
        with self.store.write():
            db.Contact.update(blocked=True).where(db.Contact.id == contact.id).execute()
            db.Outbox.delete().where(db.Outbox.contact == contact.id,
                                     db.Outbox.kind != "text").execute()

    def _mark_unblocked(self, contact: db.Contact, capability: bytes) -> None:
        """Unblocked with a new ``capability`` (registered by the shell), which is
        queued for it."""
        with self.store.write():
            contact = db.Contact.get_by_id(contact.id)
            contact.blocked = False
            contact.issued_cap_sealed = self.sealer.seal(capability, "contact.issued_cap",
                                                         contact.id)
            contact.issued_cap_hash = cap_hash(capability)
            contact.save()
            self._enqueue(contact, m.CapabilityUpdate(capability=capability), kind="capability")

    def _forget_contact(self, contact: db.Contact, invites: list[db.Invite]) -> None:
        """After its capabilities were revoked: the contact and its history go."""
        self._mark_invites_revoked(invites)
        with self.store.write():
            db.Contact.delete().where(db.Contact.id == contact.id).execute()

    # ------------------------------------------------------------ a changed key refused

    def _pending_to_reject(self, contact: db.Contact) -> _Pending | None:
        """The new identity ``contact`` brought (None if it carried no record);
        ``UsageError`` when its key did not change."""
        if not contact.key_changed:
            raise UsageError(f"The identity key of {contact.name} has not changed; there is "
                             "nothing to reject.")
        return self._open_pending(contact) if contact.pending_sealed else None

    def _reject_pending(self, contact: db.Contact, pending: _Pending | None) -> None:
        """The old key stays (verified again if it was); the invite the new key
        used is marked for retiring."""
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
