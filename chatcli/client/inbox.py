"""The inbox: a batch of deliveries from the own relay opened, decrypted and
stored in one transaction, turned into events and the receipts and answers
to send (queued in the outbox). No relay connection: the shell fetches the
batch and acknowledges it."""

from __future__ import annotations

import hmac
import os
import uuid as uuidlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import msgspec

from chatcli.client import actions, prekeys, prepared, sessions
from chatcli.client import messages as m
from chatcli.client import models as db
from chatcli.client.capabilities import cap_hash
from chatcli.client.core import ClientCore
from chatcli.client.devices import contact_list
from chatcli.client.events import (
    ActionEvent,
    Event,
    MessageEvent,
    NoticeEvent,
    ProfileEvent,
    ReceiptEvent,
    TypingEvent,
)
from chatcli.client.groups.inbox import GroupInbox
from chatcli.client.groups.models import is_group
from chatcli.client.groups.queries import GroupQueries
from chatcli.client.invites import Invites
from chatcli.client.names import NAME_RE
from chatcli.client.outbox import Outbox
from chatcli.client.store import now_ms
from chatcli.crypto.envelope import open_envelope
from chatcli.crypto.errors import ReplayedMessage
from chatcli.crypto.keys import IdentityPublicKey
from chatcli.crypto.ratchet import RatchetSession
from chatcli.errors import ChatcliError, CryptoError
from chatcli.protocol import frames

PROCESSED_KEEP_MS = 400 * 86400 * 1000


class Inbox(Invites, Outbox):
    """Incoming messages: processing, reading, history."""

    def process_deliveries(self, delivered: Iterable[frames.Delivered], *,
                           now: int | None = None) -> list[Event]:
        """Open, decrypt and store a batch of deposits in one transaction, at
        ``now`` (milliseconds; the clock's when not given); the events for the
        user.

        De-duplicates by relay message id (a delivery seen twice, e.g. by two
        processes) and by message uuid; queues receipts and handshake answers
        in the outbox. Needs no relay connection: the shell fetched the batch
        and acknowledges it afterwards.
        """
        if now is None:
            now = now_ms()
        events: list[Event] = []
        receipts: dict[int, list[str]] = {}
        with self.store.write():
            read_receipts = self.store.account().read_receipts
            # Relay ids matter only while a delivery may come twice (two
            # processes, a lost Ack); forget them after the longest retention.
            prepared.PROCESSED_PURGE.execute(before=now - PROCESSED_KEEP_MS)
            for item in delivered:
                if prepared.PROCESSED_SEEN.scalar(id=item.id) is not None:
                    continue
                prepared.PROCESSED_INSERT.execute(id=item.id, now=now)
                try:
                    with self.store.db.atomic():
                        events.extend(self._process_one(item, receipts, now))
                except ReplayedMessage:
                    # Delivery is at-least-once: a sender's retry after a lost
                    # answer deposits the same ciphertext again. It was shown once.
                    continue
                except (CryptoError, msgspec.DecodeError, msgspec.ValidationError,
                        UnicodeDecodeError) as exc:
                    reason = str(exc) if isinstance(exc, ChatcliError) else "it is malformed"
                    events.append(NoticeEvent(
                        f"A message could not be read and was dropped: {reason}", warning=True))
            kind: Literal["delivered", "read"] = (
                "read" if self.auto_read and read_receipts else "delivered")
            for contact_id, ids in receipts.items():
                contact = prepared.CONTACT_BY_ID.rows(id=contact_id)[0]
                for start in range(0, len(ids), 500):
                    self._enqueue(contact, m.Receipt(kind=kind, ids=ids[start:start + 500]),
                                  kind="receipt")
        return events

    def _process_one(self, item: frames.Delivered, receipts: dict[int, list[str]], now: int
                     ) -> list[Event]:
        opened = open_envelope(self.mailbox_key, item.payload)
        body = m.decode_body(opened.body)
        sender = opened.sender
        if isinstance(body, m.GroupBody):
            return GroupInbox(self).handle_body(sender, body.message, item.received_at)
        if sender == self.identity.public:
            return self._from_own_device(body, item, now)
        if isinstance(body, m.PrekeyBody):
            return self._handle_prekey(sender, body, item, receipts, now)
        contact = prepared.CONTACT_BY_IDENTITY.first(identity=sender.raw)
        if contact is not None:
            device = self._sender_device(contact, body.device)
            session = self._load_session(contact, device)
            if session is None:
                return self._no_session(contact, device)
            plaintext = session.decrypt(body.message)
            self._save_session(contact, session, device)
            return self._handle_content(contact, m.decode_content(plaintext), item, receipts,
                                        now)
        pending_contact = self._pending_from(sender)
        if pending_contact is not None:
            return self._decrypt_pending(pending_contact, body, item, receipts, now)
        return [NoticeEvent("A message from an unknown sender was dropped.", warning=True)]

    def _decrypt_pending(self, contact: db.Contact, body: m.RatchetBody, item: frames.Delivered,
                         receipts: dict[int, list[str]], now: int) -> list[Event]:
        pending = self._open_pending(contact)
        session = RatchetSession.from_bytes(pending.session)
        content = m.decode_content(session.decrypt(body.message))
        contact.pending_sealed = self.sealer.seal(msgspec.msgpack.encode(msgspec.structs.replace(
            pending, session=session.to_bytes())), "contact.pending", contact.id)
        contact.save()
        if isinstance(content, m.Text):
            return self._store_text(contact, content, item, None, now, unverified=True)
        if isinstance(content, m.Unsupported):
            return self._store_unsupported(contact, content, item, now)
        return []

    def _no_session(self, contact: db.Contact, device: bytes = db.LEGACY_DEVICE
                    ) -> list[Event]:
        # We were restored from a backup and the contact still uses the old
        # session: start a new one so that their next messages can be read.
        if contact.issued_cap_sealed is not None:
            capability = self.sealer.open(contact.issued_cap_sealed, "contact.issued_cap",
                                            contact.id)
            target = next((d for d in self._contact_devices(contact)
                           if (t := self._target(contact, d)) is not None
                           and t.session_device == device), None)
            if target is not None and not db.Outbox.select().where(
                    db.Outbox.contact == contact, db.Outbox.device == target).exists():
                self._enqueue(contact, self._own_info(capability), kind="info", device=target)
        return [NoticeEvent(
            f"A message from {contact.name} was sent in a session this device does not have "
            "(restored from a backup?); a new session is being set up: ask them to resend.",
            warning=True, contact=contact.name)]

    def _handle_prekey(self, sender: IdentityPublicKey, body: m.PrekeyBody,
                       item: frames.Delivered, receipts: dict[int, list[str]], now: int
                       ) -> list[Event]:
        digest = sessions.handshake_digest(body)
        if db.SeenHandshake.get_or_none(db.SeenHandshake.digest == digest) is not None:
            # The same handshake deposited twice (a retry after a lost answer) or
            # replayed by the relay: it was handled the first time; nothing to say.
            return []
        if body.invite_id is None:
            return self._handle_restore(sender, body, digest, item, receipts, now)
        return self._answer_invite(sender, body, digest, now=now)

    def _handle_restore(self, sender: IdentityPublicKey, body: m.PrekeyBody, digest: bytes,
                        item: frames.Delivered, receipts: dict[int, list[str]], now: int
                        ) -> list[Event]:
        contact = db.Contact.get_or_none(db.Contact.identity == sender.raw)
        if contact is None:
            return [NoticeEvent("A session request from an unknown sender was refused.",
                                warning=True)]
        # The current signed prekey, or a rotated one still in its grace period.
        prekey = (prekeys.private_for(self.store, body.restore_prekey)
                  if body.restore_prekey is not None else None)
        if prekey is None:
            return [NoticeEvent(f"A session request from {contact.name} named an old prekey; "
                                "refused.", warning=True, contact=contact.name)]
        session, plaintext = sessions.answer_prekey(self.identity, prekey, sender, body)
        content = m.decode_content(plaintext)
        events: list[Event] = []
        if isinstance(content, m.DeviceListUpdate) and body.device is not None \
                and content.devices.find(body.device) is not None:
            # A new session's first message carries the sender's device list,
            # so that a device not known yet is known before it is checked.
            events += self._accept_contact_list(contact, content.devices)
        device = self._sender_device(contact, body.device)
        db.SeenHandshake.create(digest=digest, seen_at=now)
        had_session = self._load_session(contact, device) is not None
        self._save_session(contact, session, device)
        # Queued but not yet sent copies for that device were encrypted for the old session.
        stale = [row for row in db.Outbox.select().where(
            db.Outbox.contact == contact, db.Outbox.payload_sealed.is_null(False))
            if (t := self._target(contact, bytes(row.device))) is None
            or t.session_device == device]
        db.Message.update(failed="session_reset").where(
            db.Message.uuid.in_([row.message_uuid for row in stale if row.message_uuid]),
            db.Message.stored_at.is_null()).execute()
        db.Outbox.delete().where(db.Outbox.id.in_([row.id for row in stale])).execute()
        if had_session:
            events.append(NoticeEvent(
                f"{contact.name} set up a new session (restored from a backup); the safety "
                "number is unchanged.", contact=contact.name))
        if not isinstance(content, m.DeviceListUpdate):
            events.extend(self._handle_content(contact, content, item, receipts, now))
        return events

    def _handle_content(self, contact: db.Contact, content: m.AnyContent | m.Unsupported,
                        item: frames.Delivered, receipts: dict[int, list[str]], now: int
                        ) -> list[Event]:
        if isinstance(content, m.Text):
            return self._store_text(contact, content, item, receipts, now)
        if isinstance(content, m.Reaction | m.Edit | m.Delete):
            if contact.blocked:
                return []
            return self._indexed(actions.apply_incoming(self.sealer, contact, content,
                                                        item.received_at))
        if isinstance(content, m.Unsupported):
            return self._store_unsupported(contact, content, item, now)
        if isinstance(content, m.Receipt):
            mark = (prepared.MESSAGE_DELIVERED if content.kind == "delivered"
                    else prepared.MESSAGE_READ)
            for message_id in content.ids:
                mark.execute(at=item.received_at, contact=contact.id, uuid=message_id)
            return [ReceiptEvent(contact.name, content.kind, list(content.ids))]
        if isinstance(content, m.Typing):
            return [TypingEvent(contact.name, content.active)]
        if isinstance(content, m.DeviceListUpdate):
            return self._accept_contact_list(contact, content.devices)
        if isinstance(content, m.ContactInfo):
            sessions.verify_restore_prekey(IdentityPublicKey.from_bytes(contact.identity),
                                           content.restore_prekey,
                                           content.restore_prekey_signature)
            if content.devices is not None:
                listed = self._accept_contact_list(contact, content.devices)
                if listed:
                    return listed
            previous = self._contact_info_from_device(contact, content)
            if not hmac.compare_digest(previous, content.capability):
                # From now on every deposit uses the new capability: say so, so
                # that the old one (an invite's) can be revoked.
                self._enqueue(contact, m.CapabilitySwitched(replaced=cap_hash(previous)),
                              kind="capability")
            if contact.auto_named and content.name != contact.name:
                wanted = content.name
                if NAME_RE.fullmatch(wanted) and not self.name_taken(wanted):
                    old = contact.name
                    contact.name = wanted
                    contact.auto_named = False
                    contact.save()
                    return [NoticeEvent(f"{old} calls themselves {wanted}; renamed.",
                                        contact=wanted)]
            contact.save()
            return []
        if isinstance(content, m.ProfileKeyUpdate):
            contact.profile_key_sealed = self.sealer.seal(content.key, "contact.profile_key",
                                                          contact.id)
            contact.profile_ref_sealed = self.sealer.seal(m.encode(content), "contact.profile_ref",
                                                          contact.id)
            contact.profile_sealed = None
            contact.save()
            return [ProfileEvent(contact.name)]
        if isinstance(content, m.CapabilityUpdate):
            contact.deposit_cap_sealed = self.sealer.seal(content.capability,
                                                          "contact.deposit_cap", contact.id)
            contact.save()
            return [NoticeEvent(f"{contact.name} can be written to again.", contact=contact.name)]
        if isinstance(content, m.CapabilitySwitched):
            # Naming the hash needs the invite's capability, which only those
            # who saw its link know; a used invite is all that can be retired.
            (db.Invite.update(expires_at_s=0)
             .where(db.Invite.cap_hash == content.replaced, db.Invite.used_at.is_null(False),
                    db.Invite.capability_sealed != b"")
             .execute())
            return []
        return []

    def _contact_info_from_device(self, contact: db.Contact, info: m.ContactInfo) -> bytes:
        """Take a contact's ContactInfo; the capability it replaces. From a
        device other than the one at the contact address, only the (shared)
        capability is taken: that device's address is in the device list."""
        previous = self.sealer.open(contact.deposit_cap_sealed, "contact.deposit_cap",
                                    contact.id)
        listed = contact_list(contact)
        if listed is not None and bytes(info.mailbox) != bytes(contact.mailbox) and any(
                bytes(d.mailbox) == bytes(info.mailbox) for d in listed.devices):
            contact.deposit_cap_sealed = self.sealer.seal(info.capability,
                                                          "contact.deposit_cap", contact.id)
        else:
            self._update_address(contact, info)
        return previous

    def _from_own_device(self, body: m.AnyBody, item: frames.Delivered, now: int
                         ) -> list[Event]:
        """A message from another device of this identity: a device list or a
        copy of a message it sent."""
        device = self._sender_device(None, body.device)
        if isinstance(body, m.PrekeyBody):
            digest = sessions.handshake_digest(body)
            if db.SeenHandshake.get_or_none(db.SeenHandshake.digest == digest) is not None:
                return []
            prekey = (prekeys.private_for(self.store, body.restore_prekey)
                      if body.restore_prekey is not None else None)
            if prekey is None:
                return [NoticeEvent("A session request from another device of this account "
                                    "named an old prekey; refused.", warning=True)]
            session, plaintext = sessions.answer_prekey(self.identity, prekey,
                                                        self.identity.public, body)
            db.SeenHandshake.create(digest=digest, seen_at=now)
        else:
            found = self._load_session(None, device)
            if found is None:
                return [NoticeEvent("A message from another device of this account was sent "
                                    "in a session this device does not have; dropped.",
                                    warning=True)]
            session = found
            plaintext = session.decrypt(body.message)
        self._save_session(None, session, device)
        content = m.decode_content(plaintext)
        if isinstance(content, m.DeviceListUpdate):
            return self._accept_own_list(content.devices)
        if isinstance(content, m.SyncSent):
            return self._store_synced(content, item)
        return []

    def _store_synced(self, sync: m.SyncSent, item: frames.Delivered) -> list[Event]:
        """Store a message another own device sent as an outgoing one (same uuid,
        so that the contact's receipts match it here too)."""
        from chatcli.client.events import SentElsewhereEvent
        from chatcli.client.outbox import _AttachmentRecord

        content = m.decode_content(sync.content)
        contact = db.Contact.get_or_none(db.Contact.identity == sync.destination)
        if not isinstance(content, m.Text) or contact is None:
            return []
        if db.Message.get_or_none(db.Message.uuid == content.id) is not None:
            return []
        record = None
        if content.attachment is not None:
            record = self.sealer.seal(msgspec.json.encode(_AttachmentRecord(
                name=content.attachment.name, size=content.attachment.size)),
                "message.attachment", content.id)
        db.Message.create(
            uuid=content.id, contact=contact, outgoing=True,
            text_sealed=self.sealer.seal_text(content.text, "message.text", content.id),
            attachment_sealed=record, sent_at=content.sent_at, stored_at=item.received_at)
        return [SentElsewhereEvent(
            id=content.id, contact=contact.name, text=content.text, sent_at=content.sent_at,
            file=None if content.attachment is None else content.attachment.name)]

    def _store_text(self, contact: db.Contact, content: m.Text, item: frames.Delivered,
                    receipts: dict[int, list[str]] | None, now: int, *,
                    unverified: bool = False) -> list[Event]:
        if prepared.MESSAGE_EXISTS.scalar(uuid=content.id) is not None:
            return []
        if contact.blocked:
            return []
        attachment = None
        if content.attachment is not None:
            attachment = {"name": content.attachment.name, "size": content.attachment.size}
        quote = content.reply_to
        prepared.MESSAGE_INSERT.execute(
            uuid=content.id, contact=contact.id, outgoing=False,
            text=self.sealer.seal_text(content.text, "message.text", content.id),
            attachment=(self.sealer.seal(msgspec.msgpack.encode(content.attachment),
                                         "message.attachment_ref", content.id)
                        if content.attachment else None),
            reply=(self.sealer.seal(msgspec.msgpack.encode(quote), "message.reply", content.id)
                   if quote is not None else None),
            sent_at=content.sent_at, received_at=item.received_at,
            read_at=now if self.auto_read else None)
        if receipts is not None:
            receipts.setdefault(contact.id, []).append(content.id)
        reply = None
        if quote is not None:
            reply = {"id": quote.id, "excerpt": quote.excerpt,
                     "from": self._identity_names(contact).get(bytes(quote.author), "?")}
        events: list[Event] = [MessageEvent(
            id=content.id, contact=contact.name, text=content.text, sent_at=content.sent_at,
            received_at=item.received_at, attachment=attachment, unverified_key=unverified,
            attachment_ref=content.attachment, reply_to=reply)]
        # Reactions, edits or a delete that overtook the message on the way.
        events.extend(self._indexed(actions.apply_pending(self.sealer, contact, content.id)))
        return events

    def _store_unsupported(self, contact: db.Contact, content: m.Unsupported,
                           item: frames.Delivered, now: int) -> list[Event]:
        """Content of a tag from a newer client: kept in the history and shown
        as "unsupported message, update chatcli", never dropped silently."""
        if contact.blocked:
            return []
        message_id = str(uuidlib.uuid4())
        db.Message.create(
            uuid=message_id, contact=contact, outgoing=False, kind="unsupported",
            text_sealed=self.sealer.seal_text("", "message.text", message_id),
            sent_at=item.received_at, received_at=item.received_at,
            read_at=now if self.auto_read else None)
        return [MessageEvent(id=message_id, contact=contact.name, text=m.UNSUPPORTED_TEXT,
                             sent_at=item.received_at, received_at=item.received_at,
                             unsupported=True)]

    def _indexed(self, events: list[Event]) -> list[Event]:
        """Keep the in-memory search index in step with the edits and deletes
        that were applied (a deleted text must not be found any more)."""
        for event in events:
            if isinstance(event, ActionEvent):
                if event.kind == "edit" and event.text is not None:
                    self.search_index.update(event.id, event.text)
                elif event.kind == "delete":
                    self.search_index.forget(event.id)
        return events

    def _identity_names(self, contact: db.Contact) -> dict[bytes, str]:
        """Who the authors of a one-to-one conversation are: "me" and the contact."""
        return {self.identity.public.raw: "me", bytes(contact.identity): contact.name}

    def mark_read(self, name: str, ids: list[str]) -> None:
        """Record that messages were shown and queue a read receipt (if enabled)."""
        if not ids:
            return
        contact = self.get_contact(name, allow_key_changed=True)
        with self.store.write():
            # Only what was not read yet: two chat windows on one conversation
            # both mark what they show, and the contact hears of it once.
            fresh = [row.uuid for row in db.Message.select(db.Message.uuid).where(
                db.Message.uuid.in_(ids), db.Message.contact == contact,
                db.Message.outgoing == False, db.Message.read_at.is_null())]  # noqa: E712
            if not fresh:
                return
            db.Message.update(read_at=now_ms()).where(db.Message.uuid.in_(fresh)).execute()
            if self.store.account().read_receipts and not contact.key_changed:
                self._enqueue(contact, m.Receipt(kind="read", ids=fresh), kind="receipt")

    def _history_attachment(self, row: db.Message, path_sealed: bytes | None
                            ) -> dict[str, Any]:
        """``{"name", "size", "path"?}`` of a message's attachment; ``path`` for a
        received one that was saved and is still there."""
        from chatcli.client.outbox import _AttachmentRecord

        assert row.attachment_sealed is not None
        sealed = bytes(row.attachment_sealed)
        if row.outgoing:
            record = msgspec.json.decode(self.sealer.open(sealed, "message.attachment", row.uuid),
                                         type=_AttachmentRecord)
            return {"name": record.name, "size": record.size}
        ref = msgspec.msgpack.decode(self.sealer.open(sealed, "message.attachment_ref", row.uuid),
                                     type=m.AttachmentRef)
        info: dict[str, Any] = {"name": ref.name, "size": ref.size}
        path = saved_path(self, row.uuid, path_sealed)
        if path is not None:
            info["path"] = path
        return info

    def history(self, name: str, limit: int = 50, *, before: int | None = None
                ) -> list[dict[str, Any]]:
        """The last ``limit`` messages with ``name`` (a contact or a group), oldest
        first; with ``before`` (ms), the last ones sent before it (a page of older
        history: only its rows are read and opened)."""
        if is_group(self, name):
            return GroupQueries(self).history(name, limit, before=before)
        contact = self.get_contact(name)
        with self.store.read():
            query = db.Message.select().where(db.Message.contact == contact)
            if before is not None:
                query = query.where(db.Message.sent_at < before)
            rows = list(query.order_by(db.Message.sent_at.desc(), db.Message.id.desc())
                        .limit(limit))
            saved = {row.__data__["message"]: bytes(row.path_sealed)
                     for row in db.SavedAttachment.select().where(
                         db.SavedAttachment.message.in_(
                             [r.id for r in rows if r.attachment_sealed is not None]))}
        out = []
        names = self._identity_names(contact)
        for row in reversed(rows):
            if row.outgoing:
                state = ("failed" if row.failed else "read" if row.read_at else
                         "delivered" if row.delivered_at else "sent" if row.stored_at
                         else "queued")
            else:
                state = "read" if row.read_at else "received"
            entry: dict[str, Any] = {
                "id": row.uuid, "from": "me" if row.outgoing else contact.name,
                "to": contact.name if row.outgoing else "me",
                "direction": "out" if row.outgoing else "in",
                "text": self.sealer.open_text(row.text_sealed, "message.text",
                                                 row.uuid),
                "sent_at": row.sent_at, "received_at": row.received_at, "state": state,
                "group": None,
            }
            with self.store.read():
                entry.update(actions.history_fields(self.sealer, row, names))
            if row.attachment_sealed is not None:
                entry["attachment"] = self._history_attachment(row, saved.get(row.id))
            out.append(entry)
        return out


def record_saved(client: ClientCore, message_id: str, path: Path) -> None:
    """Remember where a received attachment was saved, for the history
    (one-to-one messages; the path is sealed like the message)."""
    from chatcli.client.groups import models as gdb

    with client.store.write():
        message = db.Message.get_or_none(db.Message.uuid == message_id)
        if message is None:
            if gdb.has_tables(client.store):
                with gdb.bound(client.store):
                    gdb.record_saved(client.sealer, message_id, path)
            return
        if db.SavedAttachment.get_or_none(db.SavedAttachment.message == message) is None:
            db.SavedAttachment.create(message=message, path_sealed=client.sealer.seal(
                os.fsencode(path.resolve()), "message.attachment_path", message_id))


def saved_path(client: ClientCore, message_id: str, sealed: bytes | None) -> str | None:
    """The saved path of a received attachment while the file is still there."""
    if sealed is None:
        return None
    path = Path(os.fsdecode(client.sealer.open(sealed, "message.attachment_path", message_id)))
    return str(path) if path.is_file() else None
