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
    blob: str | None = None  # hex id on the own relay: deleted with the message


class Outbox(Devices):
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
                        self.search_index.forget(str(target.uuid))
                        return str(target.uuid)
            self._enqueue(contact, content, kind="action")
        if kind == "edit":
            self.search_index.update(str(target.uuid), value)
        elif kind == "delete":
            self.search_index.forget(str(target.uuid))
        return str(target.uuid)

    def queue_typing(self, name: str, active: bool) -> None:
        contact = self.get_contact(name)
        with self.store.write():
            self._enqueue(contact, m.Typing(active=active), kind="typing")

    def _encrypt_pending(self, contacts: dict[int, db.Contact] | None = None) -> None:
        """Encrypt every queued plaintext in order, each in the transaction of
        its ratchet update, so that a retry re-sends the very same bytes. Each
        row is one device's copy, encrypted in that device's session. At most
        ``prepared.ENCRYPT_BATCH`` rows a transaction: a long queue holds the
        write lock in turns, a short one costs one transaction. ``contacts``:
        the contacts read so far in this delivery pass, by id (filled in)."""
        contacts = {} if contacts is None else contacts
        after = 0
        while True:
            with self.store.write():
                me = self._me()
                done = 0
                while done < prepared.ENCRYPT_BATCH:
                    # Rows queued meanwhile (a restore's address, a moved
                    # content) come after ``after`` and are found next.
                    rows = prepared.OUTBOX_TO_ENCRYPT.rows(after=after)
                    if not rows:
                        return
                    for row in rows:
                        self._attach_contact(row, contacts)
                        self._encrypt_row(row, me)
                    after = rows[-1].id
                    done += len(rows)

    @staticmethod
    def _attach_contact(row: db.Outbox, contacts: dict[int, db.Contact]) -> None:
        """Give an outbox row its contact (None for an own device's copy), each
        contact read once per transaction (``contacts``, by id)."""
        contact_id = row.__data__.get("contact")
        if contact_id is None:
            row.contact = None
            return
        contact = contacts.get(contact_id)
        if contact is None:
            contact = contacts[contact_id] = prepared.CONTACT_BY_ID.rows(id=contact_id)[0]
        row.contact = contact

    def _encrypt_row(self, row: db.Outbox, me: bytes) -> None:
        """Encrypt one queued row for its device (inside a write transaction);
        a row whose session cannot send yet stays queued."""
        contact = row.contact
        target = self._target(contact, bytes(row.device))
        if target is None:      # the device left its list meanwhile
            row.delete_instance()
            return
        plaintext = self.sealer.open(row.plaintext_sealed or b"", "outbox.plaintext", row.id)
        session = self._load_session(contact, target.session_device)
        body: m.Body
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
                return
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
            return
        else:
            body = m.RatchetBody(v=m.BODY_VERSION, message=session.encrypt(plaintext),
                                 device=me)
        payload = seal_envelope(target.box_key, self.identity.public, m.encode(body))
        prepared.OUTBOX_ENCRYPTED.execute(
            payload=self.sealer.seal(payload, "outbox.payload", row.id), id=row.id)
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
        db.Outbox.update(kind=row.kind, message_uuid=None).where(db.Outbox.id == row.id).execute()
        return m.encode(m.DeviceListUpdate(devices=own))

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
            report.pending = self._pending_count()

    # ------------------------------------------------------------ one delivery pass

    def _start_delivery(self, contact_id: int | None = None
                        ) -> tuple[DeliveryReport, dict[str, list[tuple[db.Outbox, Target]]]]:
        """Encrypt what is queued; a report that starts with the messages found
        unsendable meanwhile, and the encrypted items to deposit (all, or those
        for ``contact_id`` and the own devices) by relay."""
        report = DeliveryReport()
        # Contacts read while encrypting serve the deposits too: nothing runs
        # in between (no await), and the relay checks the capability anyway.
        contacts: dict[int, db.Contact] = {}
        self._encrypt_pending(contacts)
        by_relay = self._deposits_by_relay(contact_id, contacts)
        if not by_relay:  # else recording the deposits counts
            report.pending = self._pending_count()
        report.refused.update(self._failed)
        self._failed.clear()
        return report, by_relay

    def _deposits_by_relay(self, contact_id: int | None = None,
                           contacts: dict[int, db.Contact] | None = None
                           ) -> dict[str, list[tuple[db.Outbox, Target]]]:
        """The encrypted items to deposit (all, or those for ``contact_id`` and
        the own devices), in queue order, each with where it goes, grouped by
        relay: every device's copy on one relay travels in the same Deposit."""
        with self.store.read():
            rows = (prepared.OUTBOX_TO_DEPOSIT.rows() if contact_id is None
                    else prepared.OUTBOX_TO_DEPOSIT_FOR.rows(contact=contact_id))
            contacts = {} if contacts is None else contacts
            for row in rows:
                self._attach_contact(row, contacts)
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
