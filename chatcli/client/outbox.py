"""The outbox: outgoing messages queued durably, encrypted in order (each with
its ratchet step, so that a retry sends the very same bytes), and what a
deposit's answer means for each of them. The relay connection that carries
the deposits is the shell's (:mod:`chatcli.client.service`)."""

from __future__ import annotations

import uuid as uuidlib

import msgspec

from chatcli.client import actions, prepared, sessions
from chatcli.client import messages as m
from chatcli.client import models as db
from chatcli.client.core import ClientCore
from chatcli.client.events import DeliveryReport
from chatcli.client.groups.commands import GroupCommands
from chatcli.client.groups.models import is_group
from chatcli.client.store import now_ms
from chatcli.crypto.envelope import seal_envelope
from chatcli.crypto.keys import IdentityPublicKey
from chatcli.crypto.ratchet import RatchetSession
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

    # Whether a delivery pass must look for attachment blobs to delete on the
    # own relay: once per process (another process may have queued some), then
    # only after this one queued one, so a send does not pay for the look.
    blobs_to_delete_due = True

    def enqueue_text(self, name: str, text: str,
                     attachment: m.AttachmentRef | None = None, *,
                     reply_to: str | None = None) -> str:
        """Store an outgoing message in history and outbox; returns its uuid.
        ``reply_to`` (an id or a unique prefix) quotes an earlier message."""
        if is_group(self, name):
            if reply_to is not None:
                raise UsageError("Replies in groups are not supported yet.")
            return GroupCommands(self).enqueue_text(name, text, attachment).id
        return self._queue_text(name, text, attachment, reply_to=reply_to)[0]

    def _queue_text(self, name: str, text: str, attachment: m.AttachmentRef | None, *,
                    reply_to: str | None = None) -> tuple[str, int]:
        """:meth:`enqueue_text` for a contact (not a group): its uuid and the contact's id."""
        message_id = str(uuidlib.uuid4())
        sent_at = now_ms()
        with self.store.write():
            # Read under the write lock: what is checked is what the message goes to.
            contact = self.get_contact(name)
            if contact.blocked:
                raise UsageError(f"{name} is blocked; `chatcli unblock {name}` first.")
            if len(text) > m.MAX_TEXT:
                raise UsageError(
                    f"The message is too long (the limit is {m.MAX_TEXT} characters).")
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
            prepared.MESSAGE_INSERT.execute(
                uuid=message_id, contact=contact.id, outgoing=True,
                text=self.sealer.seal_text(text, "message.text", message_id),
                attachment=record, sent_at=sent_at, received_at=None, read_at=None,
                reply=(self.sealer.seal(msgspec.msgpack.encode(quote), "message.reply",
                                        message_id) if quote is not None else None))
            self._enqueue(contact, content, kind="text", message_uuid=message_id)
        return message_id, contact.id

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
                            self.blobs_to_delete_due = True
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
        """Encrypt every queued plaintext in order, each in the transaction of
        its ratchet update, so that a retry re-sends the very same bytes."""
        after: int | None = 0
        while after is not None:
            with self.store.write():
                after = self._encrypt_batch(after)

    def _encrypt_batch(self, after: int, contacts: dict[int, db.Contact] | None = None
                       ) -> int | None:
        """Encrypt up to :data:`ENCRYPT_BATCH` queued plaintexts past outbox id
        ``after`` (inside a write transaction); the id to go on from, or None
        when nothing is left. A contact's session is read once and written
        once, with the payloads it encrypted."""
        rows = prepared.OUTBOX_TO_ENCRYPT.rows(after=after)
        contacts = {} if contacts is None else contacts  # by id, read once
        sessions_used: dict[int, RatchetSession] = {}
        advanced: set[int] = set()  # contacts whose session encrypted something
        queued = False  # a restore queued an item: look again
        for row in rows:
            after = row.id
            contact_id = row.__data__["contact"]
            contact = contacts.get(contact_id)
            if contact is None:
                contact = contacts[contact_id] = prepared.CONTACT_BY_ID.rows(id=contact_id)[0]
            plaintext = self.sealer.open(row.plaintext_sealed or b"", "outbox.plaintext", row.id)
            session = sessions_used.get(contact_id)
            if session is None:
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
                    prepared.OUTBOX_DELETE.execute(id=row.id)
                    continue
                their = IdentityPublicKey.from_bytes(contact.identity)
                session, body = sessions.start_restore(
                    self.identity, their, contact.restore_prekey[:32], plaintext)
                # Tell the contact our (possibly new) restore prekey in the new session.
                if contact.issued_cap_sealed is not None:
                    capability = self.sealer.open(contact.issued_cap_sealed,
                                                  "contact.issued_cap", contact.id)
                    self._enqueue(contact, self._own_info(capability), kind="info")
                    queued = True
            elif not session.can_send:
                sessions_used[contact_id] = session
                continue
            else:
                body = m.RatchetBody(v=m.BODY_VERSION, message=session.encrypt(plaintext))
            sessions_used[contact_id] = session
            advanced.add(contact_id)
            payload = seal_envelope(contact.box_key, self.identity.public, m.encode(body))
            prepared.OUTBOX_ENCRYPTED.execute(
                payload=self.sealer.seal(payload, "outbox.payload", row.id), id=row.id)
        for contact_id in advanced:
            self._save_session(contacts[contact_id], sessions_used[contact_id])
        if len(rows) < prepared.ENCRYPT_BATCH and not queued:
            return None
        return after

    def _record_deposit(self, chunk: list[db.Outbox], errors: list[str | None],
                        report: DeliveryReport) -> None:
        stamp = now_ms()
        with self.store.write():
            for row, error in zip(chunk, errors, strict=False):
                if error is None:
                    prepared.OUTBOX_DELETE.execute(id=row.id)
                    if row.message_uuid:
                        prepared.MESSAGE_STORED.execute(now=stamp, uuid=row.message_uuid)
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
                    prepared.OUTBOX_DELETE.execute(id=row.id)
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
            report.pending = self._pending_count()

    # ------------------------------------------------------------ one delivery pass

    def _start_delivery(self, contact_id: int | None = None
                        ) -> tuple[DeliveryReport, dict[str, list[db.Outbox]]]:
        """Encrypt what is queued; a report that starts with the messages found
        unsendable meanwhile, and the encrypted items to deposit (all, or those
        for ``contact_id``) by relay, read in the last encryption's transaction."""
        report = DeliveryReport()
        after: int | None = 0
        while after is not None:
            with self.store.write():
                contacts: dict[int, db.Contact] = {}
                after = self._encrypt_batch(after, contacts)
                if after is None:
                    by_relay = self._deposits_by_relay(contact_id, contacts)
                    if not by_relay:  # else recording the deposits counts
                        report.pending = self._pending_count()
        report.refused.update(self._failed)
        self._failed.clear()
        return report, by_relay

    def _deposits_by_relay(self, contact_id: int | None = None,
                           contacts: dict[int, db.Contact] | None = None
                           ) -> dict[str, list[db.Outbox]]:
        """The encrypted items to deposit (all, or those for ``contact_id``), in
        queue order, grouped by the relay of their contact (``contacts``: those
        read already in this transaction, by id)."""
        by_relay: dict[str, list[db.Outbox]] = {}
        contacts = {} if contacts is None else contacts
        with self.store.read():
            rows = (prepared.OUTBOX_TO_DEPOSIT.rows() if contact_id is None
                    else prepared.OUTBOX_TO_DEPOSIT_FOR.rows(contact=contact_id))
            for row in rows:
                contact_of = row.__data__["contact"]
                contact = contacts.get(contact_of)
                if contact is None:
                    contact = contacts[contact_of] = prepared.CONTACT_BY_ID.rows(id=contact_of)[0]
                row.contact = contact
                by_relay.setdefault(contact.relay_url, []).append(row)
        return by_relay

    def _deposit_items(self, chunk: list[db.Outbox]) -> list[frames.DepositItem]:
        """The items of one ``Deposit`` frame for these outbox rows."""
        return [frames.DepositItem(
            mailbox=row.contact.mailbox,
            cap=self.sealer.open(row.contact.deposit_cap_sealed, "contact.deposit_cap",
                                 row.contact.id),
            payload=self.sealer.open(row.payload_sealed or b"", "outbox.payload", row.id),
        ) for row in chunk]

    def _record_unreachable(self, items: list[db.Outbox], reason: str,
                            report: DeliveryReport) -> None:
        """Their relay could not be reached (or failed for now): one attempt more."""
        with self.store.write():
            for row in items:
                db.Outbox.update(attempts=db.Outbox.attempts + 1,
                                 last_error=reason[:500]).where(
                    db.Outbox.id == row.id).execute()
            report.pending = self._pending_count()

    def _pending_count(self) -> int:
        with self.store.read():
            return int(prepared.OUTBOX_COUNT.scalar())

    def _contact_of_message(self, message_id: str) -> int | None:
        """The contact an outgoing message is for (None if unknown)."""
        with self.store.read():
            row = db.Message.get_or_none(db.Message.uuid == message_id)
            return None if row is None else row.__data__["contact"]

    def _waiting(self, *, message_id: str | None, kinds: set[str] | None,
                 contact_id: int | None) -> bool:
        """Whether ``message_id`` (or, without it, any item of ``kinds`` for
        ``contact_id``) is still in the outbox."""
        with self.store.read():
            if message_id is not None:
                return prepared.OUTBOX_HOLDS_MESSAGE.scalar(uuid=message_id) is not None
            query = db.Outbox.select().where(db.Outbox.kind.in_(list(kinds or ())))
            if contact_id is not None:
                query = query.where(db.Outbox.contact == contact_id)
            return bool(query.exists())
