"""The outbox: outgoing messages queued durably, encrypted in order (each with
its ratchet step, so that a retry sends the very same bytes), and what a
deposit's answer means for each of them. The relay connection that carries
the deposits is the shell's (:mod:`chatcli.client.service`)."""

from __future__ import annotations

import uuid as uuidlib

import msgspec

from chatcli.client import actions, sessions
from chatcli.client import messages as m
from chatcli.client import models as db
from chatcli.client.core import ClientCore
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
    blob: str | None = None  # hex id on the own relay: deleted with the message


class Outbox(ClientCore):
    """Queueing and encrypting what is sent; recording what the relays answered."""

    def enqueue_text(self, name: str, text: str,
                     attachment: m.AttachmentRef | None = None, *,
                     reply_to: str | None = None) -> str:
        """Store an outgoing message in history and outbox; returns its uuid.
        ``reply_to`` (an id or a unique prefix) quotes an earlier message."""
        if is_group(self, name):
            if reply_to is not None:
                raise UsageError("Replies in groups are not supported yet.")
            return GroupCommands(self).enqueue_text(name, text, attachment).id
        contact = self.get_contact(name)
        if contact.blocked:
            raise UsageError(f"{name} is blocked; `chatcli unblock {name}` first.")
        if len(text) > m.MAX_TEXT:
            raise UsageError(f"The message is too long (the limit is {m.MAX_TEXT} characters).")
        message_id = str(uuidlib.uuid4())
        sent_at = now_ms()
        with self.store.write():
            contact = db.Contact.get_by_id(contact.id)
            if contact.key_changed:
                raise KeyChangedError(f"The identity key of {name} has changed; run "
                                      f"`chatcli verify {name}`.")
            quote = None
            if reply_to is not None:
                quote = self._quote(contact, actions.find_message(contact, reply_to))
            content = m.Text(id=message_id, sent_at=sent_at, text=text, attachment=attachment,
                             reply_to=quote)
            record = None
            if attachment is not None:
                record = self.sealer.seal(msgspec.json.encode(_AttachmentRecord(
                    name=attachment.name, size=attachment.size, blob=attachment.blob.hex())),
                    "message.attachment", message_id)
            db.Message.create(
                uuid=message_id, contact=contact, outgoing=True,
                text_sealed=self.sealer.seal_text(text, "message.text", message_id),
                attachment_sealed=record, sent_at=sent_at,
                reply_sealed=(self.sealer.seal(msgspec.msgpack.encode(quote), "message.reply",
                                               message_id) if quote is not None else None),
            )
            self._enqueue(contact, content, kind="text", message_uuid=message_id)
        return message_id

    def _quote(self, contact: db.Contact, target: db.Message) -> m.Quote:
        if target.deleted_at is not None:
            raise UsageError("That message was deleted; it cannot be replied to.")
        author = self.identity.public.raw if target.outgoing else bytes(contact.identity)
        text = self.sealer.open_text(bytes(target.text_sealed), "message.text", target.uuid)
        latest = actions.edit_history(self.sealer, target)[-1]["text"]
        return m.Quote(id=target.uuid, author=author,
                       excerpt=actions.excerpt(latest if target.edited_at else text))

    def enqueue_action(self, name: str, ref: str, kind: str, value: str = "") -> str:
        """React to (``value`` the emoji, "" removes), edit (``value`` the new
        text) or delete for everyone (kind ``delete``) message ``ref`` of a
        conversation, locally and by queueing it for the contact. Answers the
        target's full id. A deleted message's attachment blob is queued for
        deletion on the own relay (:class:`chatcli.client.models.BlobToDelete`)."""
        if is_group(self, name):
            raise UsageError("Reactions, edits and deletes in groups are not supported yet.")
        contact = self.get_contact(name)
        if contact.blocked:
            raise UsageError(f"{name} is blocked; `chatcli unblock {name}` first.")
        sent_at = now_ms()
        with self.store.write():
            contact = db.Contact.get_by_id(contact.id)
            if contact.key_changed:
                raise KeyChangedError(f"The identity key of {name} has changed; run "
                                      f"`chatcli verify {name}`.")
            target = actions.find_message(contact, ref)
            content: m.Content
            if target.deleted_at is not None:
                raise UsageError("That message was deleted for everyone.")
            if kind == "reaction":
                if len(value) > m.MAX_EMOJI:
                    raise UsageError(f"A reaction is at most {m.MAX_EMOJI} characters.")
                content = m.Reaction(target=target.uuid, emoji=value, sent_at=sent_at)
                actions.set_reaction(self.sealer, target, self.identity.public.raw, value,
                                     sent_at)
            else:
                if not target.outgoing:
                    raise UsageError("Only your own messages can be edited or deleted for "
                                     "everyone.")
                if target.kind == "unsupported":
                    raise UsageError("That message cannot be changed.")
                if kind == "edit":
                    if not value:
                        raise UsageError("The new text is empty.")
                    if len(value) > m.MAX_TEXT:
                        raise UsageError(f"The message is too long (the limit is {m.MAX_TEXT} "
                                         "characters).")
                    edit = m.Edit(target=target.uuid, sent_at=sent_at, text=value,
                                  id=str(uuidlib.uuid4()))
                    actions.add_edit(self.sealer, target, edit)
                    content = edit
                else:
                    if target.attachment_sealed is not None:
                        record = msgspec.json.decode(self.sealer.open(
                            bytes(target.attachment_sealed), "message.attachment", target.uuid),
                            type=_AttachmentRecord)
                        if record.blob:
                            db.BlobToDelete.insert(blob=bytes.fromhex(record.blob),
                                                   queued_at=sent_at).on_conflict_ignore(
                                                   ).execute()
                    content = m.Delete(target=target.uuid, sent_at=sent_at)
                    actions.tombstone(self.sealer, target, sent_at)
                    # A queued message not encrypted yet need not go out at all,
                    # and then neither does its delete.
                    if db.Outbox.delete().where(db.Outbox.message_uuid == target.uuid,
                                                db.Outbox.payload_sealed.is_null()).execute():
                        return str(target.uuid)
            self._enqueue(contact, content, kind="action")
            return str(target.uuid)

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

    # ------------------------------------------------------------ one delivery pass

    def _start_delivery(self) -> DeliveryReport:
        """Encrypt what is queued; a report that starts with the messages found
        unsendable meanwhile."""
        self._encrypt_pending()
        report = DeliveryReport()
        report.refused.update(self._failed)
        self._failed.clear()
        return report

    def _deposits_by_relay(self, contact_id: int | None = None) -> dict[str, list[db.Outbox]]:
        """The encrypted items to deposit (all, or those for ``contact_id``), in
        queue order, grouped by the relay of their contact."""
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
        return by_relay

    def _deposit_items(self, chunk: list[db.Outbox]) -> list[frames.DepositItem]:
        """The items of one ``Deposit`` frame for these outbox rows."""
        return [frames.DepositItem(
            mailbox=row.contact.mailbox,
            cap=self.sealer.open(row.contact.deposit_cap_sealed, "contact.deposit_cap",
                                 row.contact.id),
            payload=self.sealer.open(row.payload_sealed or b"", "outbox.payload", row.id),
        ) for row in chunk]

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
