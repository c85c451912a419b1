"""The JSON object of each event (docs/api.md "Events"), the same dicts that
``receive --json`` prints one per line and the daemon sends as notifications.

Key changes arrive from the client core as notices about a contact; a
:class:`KeyWatch` tells them apart by comparing the contact with what it was
when the stream started, so that scripts get a ``key_change`` object."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chatcli.client.service import ChatClient, Event


class KeyWatch:
    """Which contacts' keys changed since the stream started (or the last change)."""

    def __init__(self, client: ChatClient) -> None:
        self.client = client
        self.known = {c.name: (bytes(c.identity), bool(c.key_changed)) for c in client.contacts()}

    def refresh(self, name: str) -> None:
        """Take ``name`` as it is now (after a decision made elsewhere: a key
        accepted or refused), so that the next change is told apart from it."""
        from chatcli.errors import UsageError

        try:
            row = self.client.get_contact(name, allow_key_changed=True)
        except UsageError:
            self.known.pop(name, None)
            return
        self.known[name] = (bytes(row.identity), bool(row.key_changed))

    def change(self, name: str) -> dict[str, Any] | None:
        """``{"contact", "fingerprint", "pending"}`` when ``name``'s key changed."""
        from chatcli.errors import UsageError

        try:
            row = self.client.get_contact(name, allow_key_changed=True)
        except UsageError:
            return None
        now = (bytes(row.identity), bool(row.key_changed))
        before = self.known.get(name)
        self.known[name] = now
        if before is None or before == now or not (now[1] or now[0] != before[0]):
            return None
        return {"contact": name, "pending": now[1],
                "fingerprint": self.client.contact_identity(row).fingerprint()}


def event_json(event: Event, keys: KeyWatch | None = None) -> dict[str, Any]:
    """The JSON object of one client event."""
    from chatcli.client.service import NoticeEvent

    if isinstance(event, NoticeEvent) and event.contact is not None and keys is not None:
        change = keys.change(event.contact)
        if change is not None:
            return {"type": "key_change", **change, "text": event.text,
                    "warning": event.warning}
    return event.to_json()


def display_sender(event: dict[str, Any]) -> str:
    """How the terminal shows a message's sender: a group member who is not a
    contact is marked ``~name [1a2b 3c4d]`` so a chosen name never passes for a
    contact's (as :class:`chatcli.client.groups.service.GroupMessageEvent`)."""
    name = str(event["from"])
    if event.get("from_contact") is False:
        short = " ".join(str(event.get("fingerprint", "")).split()[:2])
        name = f"~{name} [{short}]"
    return name
