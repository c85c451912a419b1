"""Routing of stored deposits to the online owners' connections.

The group committer hands every committed message to :meth:`Router.dispatch`
in commit (= id) order; each connection of the owner queues it for pushing.
:meth:`Router.wake` tells a mailbox's connections to read their mailbox from
the store instead: the hook for deposits committed by another relay process
(the scale-out work).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from chatcli.relay.store.base import StoredMessage

__all__ = ["DeliverySink", "Router"]


class DeliverySink(Protocol):
    def push_message(self, message: StoredMessage) -> None: ...

    def fetch_more(self) -> None: ...

    def fetch_from(self, first_id: int | None) -> None: ...

    def mailbox_deleted(self) -> None: ...


class Router:
    def __init__(self) -> None:
        self._owners: dict[bytes, list[DeliverySink]] = {}

    def register(self, mailbox: bytes, sink: DeliverySink) -> None:
        self._owners.setdefault(mailbox, []).append(sink)

    def unregister(self, mailbox: bytes, sink: DeliverySink) -> None:
        sinks = self._owners.get(mailbox)
        if sinks is None:
            return
        if sink in sinks:
            sinks.remove(sink)
        if not sinks:
            del self._owners[mailbox]

    def connections(self, mailbox: bytes) -> list[DeliverySink]:
        return list(self._owners.get(mailbox, ()))

    def dispatch(self, stored: Iterable[tuple[bytes, StoredMessage]]) -> None:
        for mailbox, message in stored:
            for sink in self._owners.get(mailbox, ()):
                sink.push_message(message)

    def wake(self, mailbox: bytes) -> None:
        for sink in self._owners.get(mailbox, ()):
            sink.fetch_more()

    def wake_from(self, mailbox: bytes, first_id: int | None) -> None:
        """Another process stored messages for ``mailbox`` from id ``first_id``
        on (None: unknown, e.g. after the listener reconnected): its
        connections re-read the mailbox from there (see :mod:`chatcli.relay.notify`)."""
        for sink in self._owners.get(mailbox, ()):
            sink.fetch_from(first_id)

    def mailbox_deleted(self, mailbox: bytes) -> None:
        """The mailbox was deleted (by another process): close its connections here."""
        for sink in self._owners.get(mailbox, ()):
            sink.mailbox_deleted()

    def mailboxes(self) -> list[bytes]:
        """The mailboxes with an owner connected here."""
        return list(self._owners)

    def __len__(self) -> int:
        return len(self._owners)
