"""Invites: one-time links, and answering the handshake of someone who used one
(a new contact, a renewed session, a signed key change, or a changed key that
waits for the user's word)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import msgspec

from chatcli.client import messages as m
from chatcli.client import models as db
from chatcli.client import prepared, sessions
from chatcli.client.capabilities import (
    cap_hash,
    invite_contact_capability,
    retire_issued_capability,
)
from chatcli.client.contacts import Contacts, _Pending
from chatcli.client.events import (
    Event,
    NoticeEvent,
)
from chatcli.client.groups.models import name_in_use
from chatcli.client.names import validate_name
from chatcli.client.store import invite_row, now_ms
from chatcli.crypto.envelope import seal_envelope
from chatcli.crypto.errors import BadSignature
from chatcli.crypto.invite import Invite
from chatcli.crypto.keychange import KeyChange, sign_key_change, verify_key_change
from chatcli.crypto.keys import DHKeyPair, IdentityKeyPair, IdentityPublicKey
from chatcli.errors import UsageError

DEFAULT_INVITE_SECONDS = 7 * 86400


@dataclass(frozen=True)
class NewInvite:
    """An invite made but not kept yet: the shell registers its capability
    (one-shot) and :attr:`contact_cap` with the own relay, then
    :meth:`Invites._keep_invite` stores it."""

    invite: Invite
    label: str | None
    prekey: DHKeyPair
    capability: bytes
    contact_cap: bytes  # the accepter's own capability, registered with the invite's


class Invites(Contacts):
    """The invites of an unlocked identity and the handshakes that answer them.

    Making one: :meth:`_new_invite`, (the shell registers its capabilities),
    :meth:`_keep_invite`. Accepting one: :meth:`_check_acceptable`, (the shell
    registers a capability for the inviter), :meth:`_add_inviter`, (the shell
    delivers the handshake), and :meth:`_forget_refused_inviter` when its relay
    refused it. Retiring: :meth:`_invites_to_retire`, (the shell revokes),
    :meth:`_mark_retired`."""

    # ------------------------------------------------------------ making

    def _new_invite(self, label: str | None, expires_in: int, *, now: int) -> NewInvite:
        """A fresh invite (one-time prekey, capability) expiring ``expires_in``
        seconds after ``now``."""
        from chatcli.crypto.invite import create_invite

        if label is not None:
            validate_name(label)
            with self.store.read():
                if name_in_use(self, label):
                    raise UsageError(f"The name {label!r} is already used by a group; "
                                     "choose another.")
        account = self.account()
        capability = os.urandom(32)
        prekey = DHKeyPair.generate()
        invite = create_invite(
            self.identity, relay_url=account.relay_url, mailbox=account.mailbox,
            capability=capability, mailbox_key=self.mailbox_key.box_public,
            prekey_public=prekey.public, expires_at=now + expires_in,
        )
        # The acceptor's own capability is registered now, with the invite's: it
        # must work when the acceptor switches to it after the first exchange.
        return NewInvite(invite=invite, label=label, prekey=prekey, capability=capability,
                         contact_cap=invite_contact_capability(prekey.private_bytes()))

    def _keep_invite(self, new: NewInvite) -> str:
        """Store an invite whose capabilities the relay registered; its link."""
        invite = new.invite
        with self.store.write():
            db.Invite.create(
                invite_id=invite.invite_id, label=new.label,
                prekey_sealed=self.sealer.seal(new.prekey.private_bytes(), "invite.prekey",
                                               invite_row(invite.invite_id)),
                capability_sealed=self.sealer.seal(new.capability, "invite.capability",
                                                   invite_row(invite.invite_id)),
                cap_hash=cap_hash(new.capability), created_at=now_ms(),
                expires_at_s=invite.expires_at, contact_cap_hash=cap_hash(new.contact_cap),
            )
        return invite.to_link()

    def _invites_to_retire(self, *, now: int) -> tuple[list[db.Invite], list[bytes]]:
        """Invites whose capabilities are to be revoked at ``now`` (seconds), and
        those capabilities' hashes: invites that expired unused (with the
        accepter's capability registered with them), and used invites whose
        acceptor switched to its own capability (``expires_at_s`` 0, set when
        its :class:`CapabilitySwitched` arrived or the key it brought was
        rejected), plus the capabilities issued to contacts' previous identity
        keys (:class:`db.RetiredCapability`)."""
        with self.store.read():
            expired = prepared.INVITES_TO_RETIRE.rows(now=now)
            retired = [bytes(row.cap_hash) for row in prepared.RETIRED_CAPABILITIES.rows()]
        hashes = [row.cap_hash for row in expired] + retired
        for row in expired:
            if row.used_at is None and row.prekey_sealed:
                hashes.append(cap_hash(invite_contact_capability(
                    self.sealer.open(row.prekey_sealed, "invite.prekey",
                                     invite_row(row.invite_id)))))
        return expired, hashes

    def _mark_retired(self, rows: list[db.Invite], retired: list[bytes]) -> None:
        """After the relay revoked them: the invites' prekeys are destroyed and
        ``capability_sealed`` emptied (how a revoked invite is known); the
        ``retired`` capability hashes of contacts' previous keys are forgotten."""
        from peewee import fn

        with self.store.write():
            db.Invite.update(used_at=fn.COALESCE(db.Invite.used_at, now_ms()),
                             prekey_sealed=b"", capability_sealed=b"").where(
                db.Invite.id.in_([row.id for row in rows])).execute()
            db.RetiredCapability.delete().where(
                db.RetiredCapability.cap_hash.in_(retired)).execute()

    # ------------------------------------------------------------ accepting

    def _check_acceptable(self, link: str, name: str | None, *, now: int
                          ) -> tuple[Invite, str]:
        """The invite behind ``link`` (checked at ``now``, seconds) and the local
        name its maker will have; ``UsageError`` for one's own invite, a known
        person or a name in use."""
        from chatcli.crypto.invite import parse_invite

        invite = parse_invite(link, now=now)
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
                return invite, name
            return invite, self._unique_name(
                "contact-" + invite.identity.fingerprint().replace(" ", "")[:8])

    def _add_inviter(self, invite: Invite, name: str, *, auto_named: bool, capability: bytes,
                     previous_identity: IdentityKeyPair | None, now: int) -> int:
        """Add the invite's maker as contact ``name`` (it deposits with
        ``capability``, registered by the shell), start the session and queue
        the handshake; returns the contact's id. With ``previous_identity``, the
        handshake carries that key's statement, signed at ``now``, that the
        current key replaces it."""
        with self.store.write():
            if self.name_taken(name):
                raise UsageError(f"The name {name!r} is already taken.")
            info = self._own_info(capability)
            if previous_identity is not None:
                change = sign_key_change(previous_identity, self.identity.public, now=now)
                info = msgspec.structs.replace(info, key_change=m.KeyChangeRecord(
                    old_identity=change.old.raw, issued_at=change.issued_at,
                    signature=change.signature))
            session, body = sessions.start_from_invite(
                self.identity, invite.identity, invite.invite_id, invite.prekey, m.encode(info))
            contact_id = self.store.next_id(db.Contact)
            contact = db.Contact.create(
                id=contact_id, name=name, identity=invite.identity.raw,
                relay_url=invite.relay_url,
                mailbox=invite.mailbox, box_key=invite.mailbox_key,
                deposit_cap_sealed=self.sealer.seal(invite.capability, "contact.deposit_cap",
                                                    contact_id),
                issued_cap_sealed=self.sealer.seal(capability, "contact.issued_cap", contact_id),
                issued_cap_hash=cap_hash(capability), auto_named=auto_named,
                created_at=now_ms(),
            )
            self._save_session(contact, session)
            payload = seal_envelope(invite.mailbox_key, self.identity.public, m.encode(body))
            outbox_id = self.store.next_id(db.Outbox)
            db.Outbox.create(id=outbox_id, contact=contact, kind="handshake", created_at=now_ms(),
                             payload_sealed=self.sealer.seal(payload, "outbox.payload", outbox_id))
        return contact_id

    def _forget_refused_inviter(self, contact_id: int) -> bool:
        """After the handshake could not be delivered: when it is no longer queued
        (refused for good), delete the contact and say so (the shell then revokes
        the capability it registered). A contact nobody will ever read would look
        usable while every message to it is lost."""
        with self.store.read():
            queued = db.Outbox.select().where(db.Outbox.contact == contact_id,
                                              db.Outbox.kind == "handshake").exists()
        if queued:
            return False
        with self.store.write():
            db.Contact.delete().where(db.Contact.id == contact_id).execute()
        return True

    # ------------------------------------------------------------ answering

    def _answer_invite(self, sender: IdentityPublicKey, body: m.PrekeyBody, digest: bytes, *,
                       now: int) -> list[Event]:
        """The handshake of someone who used one of our invites (``body.invite_id``
        is set; ``digest`` is the handshake's, not seen before), received at
        ``now`` (milliseconds)."""
        invite = db.Invite.get_or_none(db.Invite.invite_id == body.invite_id)
        if invite is None:
            return [NoticeEvent("A handshake for an unknown invite was refused.", warning=True)]
        label = f" ({invite.label})" if invite.label else ""
        # Our own clock decides, not the relay's received_at: a relay that
        # backdates a deposit must not revive an expired invite.
        if invite.expires_at_s * 1000 < now:
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
        vouched = self._vouched_contact(sender, info, now=now)
        db.SeenHandshake.create(digest=digest, seen_at=now)
        # One-time: the prekey's private key is destroyed now (forward secrecy).
        # The acceptor gets a capability of its own in our answer; the invite's
        # is revoked once it says it switched (CapabilitySwitched).
        issued = invite_contact_capability(prekey_private)
        if invite.contact_cap_hash is None:
            # Made by an older chatcli, which registered no contact capability:
            # the accepter keeps the invite's (as it always did).
            issued = self.sealer.open(invite.capability_sealed, "invite.capability",
                                       invite_row(invite.invite_id))
        invite.used_at = now
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
            if issued is not None:
                retire_issued_capability(contact, issued)
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
                auto_named=invite.label is None, created_at=now,
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

    def _vouched_contact(self, sender: IdentityPublicKey, info: m.ContactInfo, *, now: int
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
                issued_at=record.issued_at, signature=record.signature), now=now // 1000)
        except BadSignature as exc:
            raise sessions.HandshakeRefused(
                f"A handshake claims a key change of {contact.name} that does not verify "
                f"({exc}); refused.") from None
        return contact
