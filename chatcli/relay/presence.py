"""Presence: which mailboxes are connected, and who watches them.

A mailbox is online while it has at least one authenticated connection; when
its last one closes, ``last_seen`` is that moment (ms) and is persisted by the
server. Watchers are connections that subscribed with a valid capability;
they get :class:`~chatcli.protocol.frames.PresenceEntry` updates pushed when
a watched mailbox comes online, goes offline, hides or shows itself. A
revoked capability's subscriptions end with an empty entry. An owner who
hides presence is reported with ``online`` and ``last_seen`` both None, as is
a mailbox the capability does not open.

:class:`Presence` is the interface (the PostgreSQL scale-out will implement
it across processes); :class:`LocalPresence` keeps everything in memory for
one process.
"""

from __future__ import annotations

import abc
from typing import Protocol

from chatcli.protocol import frames
from chatcli.relay.store.base import PresenceRecord

__all__ = ["LocalPresence", "Presence", "PresenceSink", "entry_for"]


class PresenceSink(Protocol):
    """Something that receives presence updates without blocking (a connection)."""

    def presence_changed(self, entry: frames.PresenceEntry) -> None: ...


def entry_for(mailbox: bytes, *, valid: bool, online: bool,
              record: PresenceRecord | None) -> frames.PresenceEntry:
    """What a capability holder is told about ``mailbox``."""
    if not valid or record is None or record.hidden:
        return frames.PresenceEntry(mailbox=mailbox, online=None, last_seen=None)
    return frames.PresenceEntry(mailbox=mailbox, online=online,
                                last_seen=None if online else record.last_seen)


class Presence(abc.ABC):
    """Online state and subscriptions."""

    @abc.abstractmethod
    def connected(self, mailbox: bytes, hidden: bool) -> None:
        """An authenticated connection of ``mailbox`` opened."""

    @abc.abstractmethod
    def disconnected(self, mailbox: bytes, now: int) -> bool:
        """One closed; True when it was the last (the mailbox went offline)."""

    @abc.abstractmethod
    def is_online(self, mailbox: bytes) -> bool: ...

    @abc.abstractmethod
    def set_hidden(self, mailbox: bytes, hidden: bool, last_seen: int | None) -> None:
        """The owner hid or showed its presence; watchers are told."""

    @abc.abstractmethod
    def subscribe(self, sink: PresenceSink, mailbox: bytes, cap_hash: bytes) -> None: ...

    @abc.abstractmethod
    def unsubscribe(self, sink: PresenceSink, mailboxes: set[bytes]) -> None: ...

    @abc.abstractmethod
    def revoke(self, mailbox: bytes, cap_hashes: set[bytes]) -> None:
        """End the subscriptions made with these capabilities."""

    @abc.abstractmethod
    def forget(self, mailbox: bytes) -> None:
        """The mailbox was deleted: tell its watchers and drop them."""

    @abc.abstractmethod
    def counts(self) -> tuple[int, int]:
        """(online mailboxes, subscriptions), for metrics."""


class LocalPresence(Presence):
    """In-memory presence for one relay process."""

    def __init__(self) -> None:
        self._online: dict[bytes, int] = {}
        self._hidden: dict[bytes, bool] = {}
        self._watchers: dict[bytes, dict[PresenceSink, bytes]] = {}
        self._subscriptions = 0

    def _tell(self, mailbox: bytes, entry: frames.PresenceEntry) -> None:
        for sink in list(self._watchers.get(mailbox, {})):
            sink.presence_changed(entry)

    def connected(self, mailbox: bytes, hidden: bool) -> None:
        count = self._online.get(mailbox, 0)
        self._online[mailbox] = count + 1
        self._hidden[mailbox] = hidden
        if count == 0 and not hidden:
            self._tell(mailbox, frames.PresenceEntry(mailbox=mailbox, online=True,
                                                     last_seen=None))

    def disconnected(self, mailbox: bytes, now: int) -> bool:
        count = self._online.get(mailbox, 0)
        if count <= 1:
            self._online.pop(mailbox, None)
            hidden = self._hidden.pop(mailbox, False)
            if not hidden:
                self._tell(mailbox, frames.PresenceEntry(mailbox=mailbox, online=False,
                                                         last_seen=now))
            return True
        self._online[mailbox] = count - 1
        return False

    def is_online(self, mailbox: bytes) -> bool:
        return mailbox in self._online

    def set_hidden(self, mailbox: bytes, hidden: bool, last_seen: int | None) -> None:
        if mailbox in self._online:
            self._hidden[mailbox] = hidden
        online = mailbox in self._online
        self._tell(mailbox, entry_for(mailbox, valid=True, online=online,
                                      record=PresenceRecord(hidden, last_seen)))

    def subscribe(self, sink: PresenceSink, mailbox: bytes, cap_hash: bytes) -> None:
        watchers = self._watchers.setdefault(mailbox, {})
        if sink not in watchers:
            self._subscriptions += 1
        watchers[sink] = cap_hash

    def unsubscribe(self, sink: PresenceSink, mailboxes: set[bytes]) -> None:
        for mailbox in mailboxes:
            watchers = self._watchers.get(mailbox)
            if watchers is not None and watchers.pop(sink, None) is not None:
                self._subscriptions -= 1
                if not watchers:
                    del self._watchers[mailbox]

    def revoke(self, mailbox: bytes, cap_hashes: set[bytes]) -> None:
        watchers = self._watchers.get(mailbox)
        if not watchers:
            return
        gone = [sink for sink, cap in watchers.items() if cap in cap_hashes]
        empty = frames.PresenceEntry(mailbox=mailbox, online=None, last_seen=None)
        for sink in gone:
            del watchers[sink]
            self._subscriptions -= 1
            sink.presence_changed(empty)
        if not watchers:
            del self._watchers[mailbox]

    def forget(self, mailbox: bytes) -> None:
        watchers = self._watchers.pop(mailbox, {})
        self._subscriptions -= len(watchers)
        empty = frames.PresenceEntry(mailbox=mailbox, online=None, last_seen=None)
        for sink in watchers:
            sink.presence_changed(empty)

    def counts(self) -> tuple[int, int]:
        return len(self._online), self._subscriptions
