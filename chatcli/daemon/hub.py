"""Fan-out of events to subscribers; a subscriber that stops reading is dropped.

Events that arrive while no *consumer* (a ``receive`` or a chat window) is
subscribed wait in a bounded backlog, and the next consumer that asks for the
backlog gets them first: so ``chatcli receive`` run now and then against a
daemon shows what arrived in between, as it would in direct mode. Typing and
presence are momentary and never wait.

A subscription can be narrowed to event types and to one conversation
(``contact``): a chat window takes only its own conversation's events, and
the others keep waiting for a ``receive``.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import trio

QUEUE_LIMIT = 256
"""Events buffered per subscriber before it counts as not reading and is dropped."""

BACKLOG_LIMIT = 10_000
"""Events kept for the next consumer; the oldest go first (they stay in the history)."""

MOMENTARY = frozenset({"typing", "presence", "profile", "synced", "contact"})


def concerns(event: dict[str, Any], name: str) -> bool:
    """Whether ``event`` belongs to the conversation called ``name``: a group's
    events by their ``group``; the others by ``from``, ``to`` or ``contact``
    (a message from bob in a group is the group's, not bob's)."""
    group = event.get("group")
    if group is not None:
        return bool(group == name)
    return any(event.get(key) == name for key in ("from", "to", "contact"))


@dataclass(frozen=True)
class EventFilter:
    """Which events a subscription wants: of these ``types`` (None: all), of
    this conversation (``contact``, None: all; see :func:`concerns`)."""

    types: frozenset[str] | None = None
    contact: str | None = None

    def wants(self, event: dict[str, Any]) -> bool:
        if self.types is not None and event.get("type") not in self.types:
            return False
        return self.contact is None or concerns(event, self.contact)


@dataclass
class Subscription:
    id: int
    filter: EventFilter
    events: trio.MemoryReceiveChannel[dict[str, Any]]
    _send: trio.MemorySendChannel[dict[str, Any]]
    on_drop: Callable[[], None] | None = None
    consumer: bool = False
    replayed: int = 0
    """How many backlog events were queued first, when the subscription asked for them."""

    @property
    def types(self) -> frozenset[str] | None:
        return self.filter.types

    def wants(self, event: dict[str, Any]) -> bool:
        return self.filter.wants(event)


class EventHub:
    """``publish`` never blocks: a full queue closes that subscriber's channel."""

    def __init__(self, queue_limit: int = QUEUE_LIMIT,
                 backlog_limit: int = BACKLOG_LIMIT) -> None:
        self._limit = queue_limit
        self._ids = itertools.count(1)
        self._subs: dict[int, Subscription] = {}
        self._backlog: deque[dict[str, Any]] = deque(maxlen=backlog_limit)

    def subscribe(self, types: Iterable[str] | None = None, *,
                  on_drop: Callable[[], None] | None = None, consumer: bool = False,
                  backlog: bool = False, contact: str | None = None) -> Subscription:
        """A new subscription; ``on_drop`` runs if it is dropped for not reading.

        A ``consumer`` takes the events it wants off the backlog's path (while
        one is subscribed they are not kept); with ``backlog`` it first
        receives the kept events it wants, which leave the backlog. ``types``
        and ``contact`` narrow what it wants."""
        wanted = EventFilter(None if types is None else frozenset(types), contact)
        replay: list[dict[str, Any]] = []
        if backlog:
            kept: deque[dict[str, Any]] = deque(maxlen=self._backlog.maxlen)
            for event in self._backlog:
                (replay if wanted.wants(event) else kept).append(event)
            self._backlog = kept
        send, receive = trio.open_memory_channel[dict[str, Any]](self._limit + len(replay))
        for event in replay:
            send.send_nowait(event)
        sub = Subscription(next(self._ids), wanted, receive, send, on_drop,
                           consumer=consumer, replayed=len(replay))
        self._subs[sub.id] = sub
        return sub

    def unsubscribe(self, sub_id: int) -> bool:
        sub = self._subs.pop(sub_id, None)
        if sub is None:
            return False
        sub._send.close()
        return True

    def publish(self, event: dict[str, Any]) -> None:
        consumed = False
        for sub in list(self._subs.values()):
            if not sub.wants(event):
                continue
            consumed = consumed or sub.consumer
            try:
                sub._send.send_nowait(event)
            except trio.WouldBlock:
                self.unsubscribe(sub.id)
                if sub.on_drop is not None:
                    sub.on_drop()
        if not consumed and event.get("type") not in MOMENTARY:
            self._backlog.append(event)

    @property
    def backlog(self) -> int:
        """How many events wait for the next consumer."""
        return len(self._backlog)

    def __len__(self) -> int:
        return len(self._subs)
