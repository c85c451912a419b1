"""What the client tells its front ends: one small frozen dataclass per event,
each with ``to_json`` (the ``--json`` form); and what a pass over the outbox
achieved (:class:`DeliveryReport`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chatcli.client import messages as m


@dataclass(frozen=True)
class MessageEvent:
    """A new incoming chat message."""

    id: str
    contact: str
    text: str
    sent_at: int
    received_at: int
    group: str | None = None
    attachment: dict[str, Any] | None = None
    unverified_key: bool = False
    attachment_ref: m.AttachmentRef | None = field(default=None, repr=False, compare=False)
    reply_to: dict[str, Any] | None = None   # {"id", "from", "excerpt"} of a reply
    unsupported: bool = False                # an unknown content tag (a newer client)

    @property
    def display_name(self) -> str:
        """How a person reads the sender's name: the contact's local name."""
        return self.contact

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "type": "message", "id": self.id, "from": self.contact, "text": self.text,
            "sent_at": self.sent_at, "received_at": self.received_at, "group": self.group,
        }
        if self.attachment is not None:
            data["attachment"] = self.attachment
        if self.unverified_key:
            data["key_changed"] = True
        if self.reply_to is not None:
            data["reply_to"] = self.reply_to
        if self.unsupported:
            data["unsupported"] = True
        return data


@dataclass(frozen=True)
class ActionEvent:
    """A contact reacted to (``reaction``), edited (``edit``) or deleted for
    everyone (``delete``) message ``id``: the history shows it changed."""

    kind: str
    contact: str
    id: str
    emoji: str | None = None
    text: str | None = None
    group: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": self.kind, "from": self.contact, "id": self.id,
                                "group": self.group}
        if self.kind == "reaction":
            data["emoji"] = self.emoji or ""
        elif self.kind == "edit":
            data["text"] = self.text or ""
        return data


@dataclass(frozen=True)
class ReceiptEvent:
    contact: str
    kind: str
    ids: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"type": "receipt", "from": self.contact, "kind": self.kind, "ids": self.ids}


@dataclass(frozen=True)
class TypingEvent:
    contact: str
    active: bool

    def to_json(self) -> dict[str, Any]:
        return {"type": "typing", "from": self.contact, "active": self.active}


@dataclass(frozen=True)
class PresenceEvent:
    contact: str
    online: bool | None
    last_seen: int | None

    def to_json(self) -> dict[str, Any]:
        return {"type": "presence", "contact": self.contact, "online": self.online,
                "last_seen": self.last_seen}


@dataclass(frozen=True)
class NoticeEvent:
    """Something the user should hear about (on stderr): a new contact, a
    refused handshake, a key change, an undecryptable message."""

    text: str
    warning: bool = False
    contact: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"type": "notice", "text": self.text, "warning": self.warning,
                "contact": self.contact}


@dataclass(frozen=True)
class ProfileEvent:
    """A contact shared a new profile (name, status or picture): ask for it
    again (``profile.get``) to show the new one."""

    contact: str

    def to_json(self) -> dict[str, Any]:
        return {"type": "profile", "contact": self.contact}


@dataclass(frozen=True)
class SyncedEvent:
    """Every message waiting at the relay when the client connected was handled."""

    def to_json(self) -> dict[str, Any]:
        return {"type": "synced"}


Event = (MessageEvent | ReceiptEvent | TypingEvent | PresenceEvent | NoticeEvent | ProfileEvent
         | SyncedEvent | ActionEvent)


@dataclass(frozen=True)
class GroupMessageEvent(MessageEvent):
    """A group message: ``contact`` is the sender's contact name, or the name it
    announced when it is not a contact."""

    fingerprint: str = ""
    from_contact: bool = True

    @property
    def display_name(self) -> str:
        """A contact's name as it is; a member who is not a contact is marked
        with ``~`` and the start of its fingerprint, so that a name it chose
        can never pass for a contact's (``~bob [1a2b 3c4d]`` is not ``bob``)."""
        if self.from_contact:
            return self.contact
        short = " ".join(self.fingerprint.split()[:2])
        return f"~{self.contact} [{short}]"

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        data["fingerprint"] = self.fingerprint
        data["from_contact"] = self.from_contact
        return data


@dataclass
class DeliveryReport:
    """What one pass over the outbox achieved."""

    stored: list[str] = field(default_factory=list)        # message uuids
    refused: dict[str, str] = field(default_factory=dict)  # uuid -> reason
    unreachable: dict[str, str] = field(default_factory=dict)  # relay -> reason
    held: dict[str, str] = field(default_factory=dict)     # uuid -> why it waits
    pending: int = 0
