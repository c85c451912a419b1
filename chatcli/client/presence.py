"""Presence: whether contacts are online, as their relays tell it."""

from __future__ import annotations

from dataclasses import dataclass

from chatcli.client import models as db
from chatcli.client.core import ClientCore
from chatcli.client.events import (
    Event,
    PresenceEvent,
)
from chatcli.protocol import frames


@dataclass(frozen=True)
class PresenceInfo:
    online: bool | None
    last_seen: int | None
    known: bool  # False when the contact's relay could not be asked


class Presence(ClientCore):
    """Presence entries from relays, named as contacts."""

    def _presence_events(self, entries: list[frames.PresenceEntry]) -> list[Event]:
        with self.store.read():
            # Oldest first wins: a newer contact claiming the same mailbox
            # never takes over an existing contact's presence.
            by_mailbox = {c.mailbox: c.name
                          for c in db.Contact.select().order_by(db.Contact.id.desc())}
        return [PresenceEvent(by_mailbox[e.mailbox], e.online, e.last_seen)
                for e in entries if e.mailbox in by_mailbox]
