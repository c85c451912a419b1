"""Invites: one-time links, and answering the handshake of someone who used one
(a new contact, a renewed session, a signed key change, or a changed key that
waits for the user's word)."""

from __future__ import annotations

import msgspec

from chatcli.client import messages as m
from chatcli.client import models as db
from chatcli.client import sessions
from chatcli.client.capabilities import cap_hash, invite_contact_capability
from chatcli.client.contacts import Contacts, _Pending
from chatcli.client.events import (
    Event,
    NoticeEvent,
)
from chatcli.client.store import invite_row, now_ms
from chatcli.crypto.errors import BadSignature
from chatcli.crypto.keychange import KeyChange, verify_key_change
from chatcli.crypto.keys import DHKeyPair, IdentityPublicKey

DEFAULT_INVITE_SECONDS = 7 * 86400


class Invites(Contacts):
    """The invites of an unlocked identity and the handshakes that answer them."""

    def _answer_invite(self, sender: IdentityPublicKey, body: m.PrekeyBody, digest: bytes
                       ) -> list[Event]:
        """The handshake of someone who used one of our invites (``body.invite_id``
        is set; ``digest`` is the handshake's, not seen before)."""
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
