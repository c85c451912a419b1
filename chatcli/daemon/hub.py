"""Fan-out of events to subscribers; a subscriber that stops reading is dropped."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import trio

QUEUE_LIMIT = 256
"""Events buffered per subscriber before it counts as not reading and is dropped."""


@dataclass
class Subscription:
    id: int
    types: frozenset[str] | None
    events: trio.MemoryReceiveChannel[dict[str, Any]]
    _send: trio.MemorySendChannel[dict[str, Any]]
    on_drop: Callable[[], None] | None = None

    def wants(self, event: dict[str, Any]) -> bool:
        return self.types is None or event.get("type") in self.types


class EventHub:
    """``publish`` never blocks: a full queue closes that subscriber's channel."""

    def __init__(self, queue_limit: int = QUEUE_LIMIT) -> None:
        self._limit = queue_limit
        self._ids = itertools.count(1)
        self._subs: dict[int, Subscription] = {}

    def subscribe(self, types: Iterable[str] | None = None, *,
                  on_drop: Callable[[], None] | None = None) -> Subscription:
        """A new subscription; ``on_drop`` runs if it is dropped for not reading."""
        send, receive = trio.open_memory_channel[dict[str, Any]](self._limit)
        sub = Subscription(next(self._ids), None if types is None else frozenset(types),
                           receive, send, on_drop)
        self._subs[sub.id] = sub
        return sub

    def unsubscribe(self, sub_id: int) -> bool:
        sub = self._subs.pop(sub_id, None)
        if sub is None:
            return False
        sub._send.close()
        return True

    def publish(self, event: dict[str, Any]) -> None:
        for sub in list(self._subs.values()):
            if not sub.wants(event):
                continue
            try:
                sub._send.send_nowait(event)
            except trio.WouldBlock:
                self.unsubscribe(sub.id)
                if sub.on_drop is not None:
                    sub.on_drop()

    def __len__(self) -> int:
        return len(self._subs)
