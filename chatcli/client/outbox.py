"""The outbox: outgoing messages queued durably, encrypted in order (each with
its ratchet step, so that a retry sends the very same bytes), and what a
deposit's answer means for each of them. The relay connection that carries
the deposits is the shell's (:mod:`chatcli.client.service`)."""

from __future__ import annotations

import uuid as uuidlib

import msgspec
import peewee

from chatcli.client import messages as m
from chatcli.client import models as db
from chatcli.client import sessions
from chatcli.client.devices import Devices, Target
from chatcli.client.events import DeliveryReport
from chatcli.client.groups.commands import GroupCommands
from chatcli.client.groups.models import is_group
from chatcli.client.store import now_ms
from chatcli.crypto.envelope import seal_envelope
from chatcli.crypto.keys import IdentityPublicKey
from chatcli.errors import KeyChangedError, UsageError
from chatcli.protocol import codes, frames

DEPOSIT_CHUNK = 64
PERMANENT_DEPOSIT_ERRORS = frozenset({codes.BAD_CAPABILITY, codes.CAPABILITY_USED,
                                      codes.UNKNOWN_MAILBOX})


class _AttachmentRecord(msgspec.Struct, frozen=True):
    name: str
    size: int
    path: str | None = None


class Outbox(Devices):
    """Queueing and encrypting what is sent; recording what the relays answered."""

    def enqueue_text(self, name: str, text: str,
                     attachment: m.AttachmentRef | None = None) -> str:
        """Store an outgoing message in history and outbox; returns its uuid."""
        if is_group(self, name):
            return GroupCommands(self).enqueue_text(name, text, attachment).id
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

    def queue_typing(self, name: str, active: bool) -> None:
        contact = self.get_contact(name)
        with self.store.write():
            self._enqueue(contact, m.Typing(active=active), kind="typing")

    def _encrypt_pending(self) -> None:
        """Encrypt every queued plaintext in order, each in one transaction with
        its ratchet update, so that a retry re-sends the very same bytes. Each
        row is one device's copy, encrypted in that device's session."""
        skipped: set[int] = set()
        while True:
            with self.store.write():
                query = (db.Outbox.select().join(db.Contact, peewee.JOIN.LEFT_OUTER)
                         .where(db.Outbox.payload_sealed.is_null(),
                                db.Contact.id.is_null() | (db.Contact.key_changed == False))  # noqa: E712
                         .order_by(db.Outbox.id))
                if skipped:
                    query = query.where(db.Outbox.id.not_in(list(skipped)))
                row = query.first()
                if row is None:
                    return
                contact = row.contact
                target = self._target(contact, bytes(row.device))
                if target is None:      # the device left its list meanwhile
                    row.delete_instance()
                    continue
                plaintext = self.sealer.open(row.plaintext_sealed, "outbox.plaintext",
                                             row.id)
                session = self._load_session(contact, target.session_device)
                body: m.Body
                me = self.store.account().device_id
                if session is None:
                    if target.restore_prekey is None:
                        # No session and no way to start one (the contact never
                        # sent its restore prekey): the message cannot be sent.
                        if row.message_uuid and contact is not None:
                            db.Message.update(failed="no_session").where(
                                db.Message.uuid == row.message_uuid).execute()
                            self._failed[row.message_uuid] = (
                                f"there is no session with {contact.name} and none can be "
                                "set up; ask them for a new invite")
                        row.delete_instance()
                        continue
                    plaintext = self._list_first(row, plaintext)
                    their = (self.identity.public if contact is None
                             else IdentityPublicKey.from_bytes(contact.identity))
                    session, first = sessions.start_restore(
                        self.identity, their, target.restore_prekey, plaintext)
                    body = msgspec.structs.replace(first, device=me)
                    # Tell the contact our (possibly new) restore prekey in the new session.
                    if contact is not None and contact.issued_cap_sealed is not None:
                        capability = self.sealer.open(contact.issued_cap_sealed,
                                                      "contact.issued_cap", contact.id)
                        self._enqueue(contact, self._own_info(capability), kind="info",
                                      device=bytes(row.device))
                elif not session.can_send:
                    skipped.add(row.id)
                    continue
                else:
                    body = m.RatchetBody(v=m.BODY_VERSION, message=session.encrypt(plaintext),
                                         device=me)
                payload = seal_envelope(target.box_key, self.identity.public, m.encode(body))
                row.payload_sealed = self.sealer.seal(payload, "outbox.payload", row.id)
                row.plaintext_sealed = None
                row.save()
                self._save_session(contact, session, target.session_device)

    def _list_first(self, row: db.Outbox, plaintext: bytes) -> bytes:
        """The first message of a new session with a contact's device carries
        our device list (when we have one), so that the device knows which of
        our devices this is before anything else: the row's own content moves
        to a new row behind it. Returns the plaintext to encrypt in ``row``."""
        own = self._own_list_if_any()
        if row.contact is None or own is None or row.kind == "device_list":
            return plaintext
        moved_id = self.store.next_id(db.Outbox)
        db.Outbox.create(
            id=moved_id, contact=row.contact, device=row.device, kind=row.kind,
            message_uuid=row.message_uuid, created_at=row.created_at,
            plaintext_sealed=self.sealer.seal(plaintext, "outbox.plaintext", moved_id))
        row.kind, row.message_uuid = "device_list", None
        return m.encode(m.DeviceListUpdate(devices=own))

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
                elif row.contact is None:
                    # A copy for an own device: retried, never failing the message.
                    if error in PERMANENT_DEPOSIT_ERRORS:
                        db.Outbox.delete().where(db.Outbox.id == row.id).execute()
                    else:
                        db.Outbox.update(attempts=db.Outbox.attempts + 1, last_error=error
                                         ).where(db.Outbox.id == row.id).execute()
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
                    others = db.Outbox.select().where(
                        db.Outbox.message_uuid == row.message_uuid, db.Outbox.id != row.id,
                        db.Outbox.contact.is_null(False)).exists() if row.message_uuid else False
                    db.Outbox.delete().where(db.Outbox.id == row.id).execute()
                    reason = (f"{row.contact.name}'s relay refused the message ({error}): "
                              "they may have blocked you or deleted their account")
                    if row.kind == "handshake" and error in (codes.BAD_CAPABILITY,
                                                             codes.CAPABILITY_USED):
                        reason = "This invite was already used or revoked; ask for a new one"
                    if row.message_uuid and not others:
                        # Failed only when no other device's copy is still on its way.
                        db.Message.update(failed=error).where(
                            db.Message.uuid == row.message_uuid,
                            db.Message.stored_at.is_null()).execute()
                        report.refused[row.message_uuid] = reason
                    elif row.kind == "handshake":
                        report.refused["handshake"] = reason
                else:
                    db.Outbox.update(attempts=db.Outbox.attempts + 1, last_error=error).where(
                        db.Outbox.id == row.id).execute()

    # ------------------------------------------------------------ one delivery pass

    def _start_delivery(self) -> DeliveryReport:
        """Encrypt what is queued; a report that starts with the messages found
        unsendable meanwhile."""
        self._encrypt_pending()
        report = DeliveryReport()
        report.refused.update(self._failed)
        self._failed.clear()
        return report

    def _deposits_by_relay(self, contact_id: int | None = None
                           ) -> dict[str, list[tuple[db.Outbox, Target]]]:
        """The encrypted items to deposit (all, or those for ``contact_id`` and
        the own devices), in queue order, each with where it goes, grouped by
        relay: every device's copy on one relay travels in the same Deposit."""
        with self.store.read():
            query = (db.Outbox.select(db.Outbox, db.Contact)
                     .join(db.Contact, peewee.JOIN.LEFT_OUTER)
                     .where(db.Outbox.payload_sealed.is_null(False))
                     .order_by(db.Outbox.id))
            if contact_id is not None:
                query = query.where((db.Outbox.contact == contact_id)
                                    | db.Outbox.contact.is_null())
            rows = list(query)
            by_relay: dict[str, list[tuple[db.Outbox, Target]]] = {}
            for row in rows:
                target = self._target(row.contact, bytes(row.device))
                if target is not None:
                    by_relay.setdefault(target.relay_url, []).append((row, target))
        return by_relay

    def _deposit_items(self, chunk: list[tuple[db.Outbox, Target]]) -> list[frames.DepositItem]:
        """The items of one ``Deposit`` frame for these outbox rows."""
        return [frames.DepositItem(
            mailbox=target.mailbox, cap=target.capability,
            payload=self.sealer.open(row.payload_sealed or b"", "outbox.payload", row.id),
        ) for row, target in chunk]

    def _record_unreachable(self, items: list[db.Outbox], reason: str) -> None:
        """Their relay could not be reached (or failed for now): one attempt more."""
        with self.store.write():
            for row in items:
                db.Outbox.update(attempts=db.Outbox.attempts + 1,
                                 last_error=reason[:500]).where(
                    db.Outbox.id == row.id).execute()

    def _pending_count(self) -> int:
        with self.store.read():
            return int(db.Outbox.select().count())

    def _contact_of_message(self, message_id: str) -> int | None:
        """The contact an outgoing message is for (None if unknown)."""
        with self.store.read():
            row = db.Message.get_or_none(db.Message.uuid == message_id)
            return row.contact.id if row is not None and row.contact else None

    def _waiting(self, *, message_id: str | None, kinds: set[str] | None,
                 contact_id: int | None) -> bool:
        """Whether ``message_id`` (or, without it, any item of ``kinds`` for
        ``contact_id``) is still in the outbox."""
        with self.store.read():
            if message_id is not None:
                return bool(db.Outbox.select().where(
                    db.Outbox.message_uuid == message_id).exists())
            query = db.Outbox.select().where(db.Outbox.kind.in_(list(kinds or ())))
            if contact_id is not None:
                query = query.where(db.Outbox.contact == contact_id)
            return bool(query.exists())
