"""Message kinds of one-to-one chats: replies, reactions, edits and deletes
for everyone (``docs/protocol.md`` part 3), their rules and local storage.

Rules: anyone in the conversation reacts to any of its messages (one emoji
per person and message, replaced by a later one, "" removes it); only a
message's author edits it or deletes it for everyone; a deleted message is
not edited. An action whose target has not arrived yet (the ratchet delivers
out of order) is kept and applied when the target arrives.
Synchronous: every function runs inside the caller's write transaction.
"""

from __future__ import annotations

from typing import Any

import msgspec

from chatcli.client import messages as m
from chatcli.client import models as db
from chatcli.client.events import ActionEvent, Event
from chatcli.client.store import Sealer
from chatcli.errors import UsageError

MIN_PREFIX = 4
MAX_PENDING = 1000  # actions kept per contact while their targets are missing
TOMBSTONE = "message deleted"


def excerpt(text: str) -> str:
    """The quoted line of a reply: the first line, at most MAX_EXCERPT characters."""
    return (text.splitlines() or [""])[0][:m.MAX_EXCERPT]


def find_message(contact: db.Contact, ref: str) -> db.Message:
    """The message of ``contact``'s conversation whose id is ``ref`` or starts
    with it (at least MIN_PREFIX characters, unique)."""
    ref = ref.strip().lower()
    exact = db.Message.get_or_none(db.Message.uuid == ref, db.Message.contact == contact)
    if exact is not None:
        return exact
    if len(ref) < MIN_PREFIX:
        raise UsageError(f"A message id needs at least {MIN_PREFIX} characters.")
    rows = list(db.Message.select().where(db.Message.contact == contact,
                                          db.Message.uuid.startswith(ref)).limit(2))
    if not rows:
        raise UsageError(f"No message with {contact.name} has the id {ref}.")
    if len(rows) > 1:
        raise UsageError(f"More than one message starts with {ref}; give more of the id.")
    return rows[0]


def reaction_row(uuid: str, author: bytes, sent_at: int) -> str:
    """The row identity a reaction's sealed emoji is bound to."""
    return f"{uuid}/{author.hex()}/{sent_at}"


def set_reaction(sealer: Sealer, message: db.Message, author: bytes, emoji: str,
                 sent_at: int) -> bool:
    """Record ``author``'s reaction (``""`` removes it); False when an equally
    new or newer one is already there (reactions may arrive out of order)."""
    row = db.MessageReaction.get_or_none(db.MessageReaction.message == message,
                                         db.MessageReaction.author == author)
    if row is not None:
        if row.sent_at >= sent_at:
            return False
        row.delete_instance()
    # A removal is kept as an empty emoji so that an older reaction arriving
    # late does not come back.
    db.MessageReaction.create(
        message=message, author=author, sent_at=sent_at,
        emoji_sealed=sealer.seal_text(emoji, "message.reaction",
                                      reaction_row(message.uuid, author, sent_at)))
    return True


def add_edit(sealer: Sealer, message: db.Message, edit: m.Edit) -> bool:
    """Record an edit of ``message`` (its history is kept); False if it was
    seen already or the message is deleted."""
    if message.deleted_at is not None:
        return False
    if db.MessageEdit.get_or_none(db.MessageEdit.edit_uuid == edit.id) is not None:
        return False
    db.MessageEdit.create(message=message, edit_uuid=edit.id, sent_at=edit.sent_at,
                          text_sealed=sealer.seal_text(edit.text, "message.edit_text", edit.id))
    message.edited_at = max(message.edited_at or 0, edit.sent_at)
    message.save()
    return True


def tombstone(sealer: Sealer, message: db.Message, deleted_at: int) -> None:
    """Replace ``message`` by a tombstone: its text, edits, quote, reactions and
    attachment reference (with the file's key) are erased from the store.
    ``secure_delete`` zeroes the freed pages; the WAL is checkpointed after the
    write transaction (:meth:`chatcli.client.store.Store.write`)."""
    message.text_sealed = sealer.seal_text("", "message.text", message.uuid)
    message.attachment_sealed = None
    message.reply_sealed = None
    message.deleted_at = deleted_at
    message.save()
    db.MessageEdit.delete().where(db.MessageEdit.message == message).execute()
    db.MessageReaction.delete().where(db.MessageReaction.message == message).execute()
    db.SavedAttachment.delete().where(db.SavedAttachment.message == message).execute()


def apply_incoming(sealer: Sealer, contact: db.Contact, action: m.MessageAction,
                   received_at: int) -> list[Event]:
    """Apply a contact's reaction, edit or delete; keep it for later when its
    target has not arrived. Actions on messages the contact may not change
    (someone else's, another conversation's, a deleted one) are ignored."""
    target = db.Message.get_or_none(db.Message.uuid == action.target)
    if target is None:
        held = db.PendingAction.select().where(db.PendingAction.contact == contact).count()
        if held >= MAX_PENDING:  # a bound on what a contact can make us keep
            return []
        db.PendingAction.create(contact=contact, target=action.target, received_at=received_at,
                                sent_at=action.sent_at,
                                content_sealed=sealer.seal(m.encode(action), "pending.action",
                                                           f"{contact.id}/{action.target}"
                                                           f"/{action.sent_at}"))
        return []
    if target.__data__["contact"] != contact.id:
        return []
    if isinstance(action, m.Reaction):
        if target.deleted_at is not None:
            return []
        if set_reaction(sealer, target, bytes(contact.identity), action.emoji, action.sent_at):
            return [ActionEvent("reaction", contact.name, target.uuid, emoji=action.emoji)]
        return []
    if target.outgoing:  # an edit or delete of our message: only we may
        return []
    if isinstance(action, m.Edit):
        if add_edit(sealer, target, action):
            return [ActionEvent("edit", contact.name, target.uuid, text=action.text)]
        return []
    if target.deleted_at is None:
        tombstone(sealer, target, action.sent_at)
        return [ActionEvent("delete", contact.name, target.uuid)]
    return []


def apply_pending(sealer: Sealer, contact: db.Contact, uuid: str) -> list[Event]:
    """Apply the actions kept for message ``uuid`` (now stored) in the order
    they were sent; each is dropped once applied."""
    rows = list(db.PendingAction.select().where(db.PendingAction.target == uuid,
                                                db.PendingAction.contact == contact))
    actions: list[m.MessageAction] = []
    for row in rows:
        content = m.decode_content(sealer.open(bytes(row.content_sealed), "pending.action",
                                               f"{contact.id}/{uuid}/{row.sent_at}"))
        if isinstance(content, m.Reaction | m.Edit | m.Delete):
            actions.append(content)
        row.delete_instance()
    events: list[Event] = []
    for action in sorted(actions, key=lambda a: a.sent_at):
        events.extend(apply_incoming(sealer, contact, action, 0))
    return events


def history_fields(sealer: Sealer, row: db.Message, names: dict[bytes, str]
                   ) -> dict[str, Any]:
    """The history entry's fields of this module: ``reply_to``, ``reactions``,
    ``edited``, ``deleted``, ``unsupported``, and the text as last edited.
    ``names`` maps identity keys to how the user knows them ("me" for ours)."""
    out: dict[str, Any] = {"reply_to": None, "reactions": [], "edited": False,
                           "deleted": row.deleted_at is not None,
                           "unsupported": row.kind == "unsupported"}
    if row.deleted_at is not None:
        out["text"] = TOMBSTONE
        return out
    if row.kind == "unsupported":
        out["text"] = m.UNSUPPORTED_TEXT
    if row.reply_sealed is not None:
        quote = msgspec.msgpack.decode(
            sealer.open(bytes(row.reply_sealed), "message.reply", row.uuid), type=m.Quote)
        out["reply_to"] = {"id": quote.id, "from": names.get(bytes(quote.author), "?"),
                           "excerpt": quote.excerpt}
    if row.edited_at is not None:
        latest = (db.MessageEdit.select().where(db.MessageEdit.message == row)
                  .order_by(db.MessageEdit.sent_at.desc(), db.MessageEdit.id.desc()).first())
        if latest is not None:
            out["text"] = sealer.open_text(bytes(latest.text_sealed), "message.edit_text",
                                           latest.edit_uuid)
            out["edited"] = True
    for reaction in (db.MessageReaction.select().where(db.MessageReaction.message == row)
                     .order_by(db.MessageReaction.sent_at)):
        author = bytes(reaction.author)
        emoji = sealer.open_text(bytes(reaction.emoji_sealed), "message.reaction",
                                 reaction_row(row.uuid, author, reaction.sent_at))
        if emoji:
            out["reactions"].append({"emoji": emoji, "from": names.get(author, "?")})
    return out


def edit_history(sealer: Sealer, row: db.Message) -> list[dict[str, Any]]:
    """The texts a message had, oldest first: ``{"text", "sent_at"}``."""
    texts = [{"text": sealer.open_text(bytes(row.text_sealed), "message.text", row.uuid),
              "sent_at": row.sent_at}]
    for edit in (db.MessageEdit.select().where(db.MessageEdit.message == row)
                 .order_by(db.MessageEdit.sent_at, db.MessageEdit.id)):
        texts.append({"text": sealer.open_text(bytes(edit.text_sealed), "message.edit_text",
                                               edit.edit_uuid), "sent_at": edit.sent_at})
    return texts
