"""Presence: whether contacts are online, as their relays tell it."""

from __future__ import annotations

from dataclasses import dataclass

from chatcli.client import models as db
from chatcli.client.contacts import Contacts
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


class Presence(Contacts):
    """Presence entries from relays, named as contacts."""

    def _presence_events(self, entries: list[frames.PresenceEntry]) -> list[Event]:
        with self.store.read():
            # Oldest first wins: a newer contact claiming the same mailbox
            # never takes over an existing contact's presence.
            by_mailbox = {c.mailbox: c.name
                          for c in db.Contact.select().order_by(db.Contact.id.desc())}
        return [PresenceEvent(by_mailbox[e.mailbox], e.online, e.last_seen)
                for e in entries if e.mailbox in by_mailbox]

    def _presence_queries(self, names: list[str] | None
                          ) -> tuple[dict[str, list[db.Contact]], dict[str, PresenceInfo]]:
        """The contacts to ask about (all, or those in ``names``) grouped by relay,
        and the answer while no relay has spoken: unknown for each."""
        contacts = [c for c in self.contacts() if names is None or c.name in names]
        by_relay: dict[str, list[db.Contact]] = {}
        for contact in contacts:
            by_relay.setdefault(contact.relay_url, []).append(contact)
        return by_relay, {c.name: PresenceInfo(None, None, known=False) for c in contacts}

    def _presence_targets(self, contacts: list[db.Contact]) -> list[frames.PresenceTarget]:
        """What proves we may ask: each contact's mailbox and our capability for it."""
        return [frames.PresenceTarget(
            mailbox=c.mailbox, cap=self.sealer.open(c.deposit_cap_sealed, "contact.deposit_cap",
                                                    c.id))
            for c in contacts]

    @staticmethod
    def _presence_answer(contacts: list[db.Contact], answer: frames.PresenceResult
                         ) -> dict[str, PresenceInfo]:
        """What a relay said about ``contacts`` (those it named)."""
        by_mailbox = {entry.mailbox: entry for entry in answer.entries}
        result: dict[str, PresenceInfo] = {}
        for contact in contacts:
            entry = by_mailbox.get(contact.mailbox)
            if entry is not None:
                result[contact.name] = PresenceInfo(entry.online, entry.last_seen, True)
        return result
