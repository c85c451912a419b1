"""Recently refused capabilities, so that a frame repeating them is refused
without storage work.

The group commit tells which (mailbox, capability hash) pairs were unknown
or invalid; for ``ttl`` seconds the relay refuses them before queuing. A
capability added meanwhile on this relay is forgotten at once (``forget``);
one added through another relay process sharing the database is accepted
after at most ``ttl`` seconds. Bounded: the oldest entries go first, which
only costs a storage lookup. Pure, time is an argument.

A flood of *new* random capabilities is not caught by that memory: each one
costs a capability lookup in the commit. So each source address (see
``server.source_key``) has a budget of capabilities refused in the commit, a
token bucket (``strike_rate`` per second, ``strike_burst``). While it is
empty, each deposit frame of the source waits for a token, takes it, and is
refused whole as ``rate_limited`` before any work (:meth:`delay`,
:meth:`refuse_frame`): the source's connections stall, so the whole source
gets at most ``strike_rate`` frames a second looked at. An honest client meets
a refused capability rarely (a contact who blocked it or left), far below it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Sequence
from typing import Final

from chatcli.protocol import codes
from chatcli.relay.limits import KeyedBuckets
from chatcli.relay.mailbox import DepositItem

__all__ = ["BadCapabilities"]

# Refusals that no repeat of the item can turn into success, remembered.
# Not ``capability_used``: the retry of the deposit that used a one-shot
# capability is answered as stored (mailbox.plan_deposits), and only the
# commit can tell it from another deposit. It costs a strike all the same.
REMEMBERED: Final = frozenset({codes.BAD_CAPABILITY, codes.UNKNOWN_MAILBOX})
STRUCK: Final = REMEMBERED | {codes.CAPABILITY_USED}


class BadCapabilities:
    __slots__ = ("_entries", "max_entries", "strikes", "ttl")

    def __init__(self, ttl: float = 10.0, max_entries: int = 100_000, *,
                 strike_rate: float = 100.0, strike_burst: float = 1000.0) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[bytes, bytes], tuple[float, str]] = OrderedDict()
        self.strikes = KeyedBuckets(strike_rate, strike_burst)

    def admits(self, source: bytes, now: float) -> bool:
        """Whether ``source`` may have deposits looked at: False while it has
        used up its budget of capabilities refused in the commit."""
        return self.strikes.available(source, now) >= 1

    def delay(self, source: bytes, now: float) -> float:
        """Seconds until ``source``'s budget holds a token again (0: it does)."""
        available = self.strikes.available(source, now)
        return 0.0 if available >= 1 else (1 - available) / self.strikes.rate

    def refuse_frame(self, source: bytes, now: float) -> None:
        """A frame refused whole costs ``source`` one token."""
        self.strikes.charge(source, now, 1)

    def __len__(self) -> int:
        return len(self._entries)

    def check(self, items: Sequence[DepositItem], now: float) -> list[str | None]:
        """The code to refuse each item with now, or None to commit it."""
        entries = self._entries
        if not entries:
            return [None] * len(items)
        out: list[str | None] = []
        for item in items:
            entry = entries.get((item.mailbox, item.cap_hash))
            if entry is not None and entry[0] <= now:
                del entries[(item.mailbox, item.cap_hash)]
                entry = None
            out.append(None if entry is None else entry[1])
        return out

    def learn(self, items: Sequence[DepositItem], errors: Sequence[str | None],
              earlier: Sequence[str | None], now: float, source: bytes | None = None
              ) -> None:
        """Remember the items a commit refused as unknown or invalid (not those
        refused before it, ``earlier``: their entries expire as they should),
        and charge them, and those refused as ``capability_used``, to
        ``source``'s budget."""
        entries = self._entries
        strikes = 0
        for item, code, before in zip(items, errors, earlier, strict=True):
            if code in STRUCK and before is None:
                assert code is not None
                strikes += 1
                if code in REMEMBERED:
                    key = (item.mailbox, item.cap_hash)
                    entries[key] = (now + self.ttl, code)
                    entries.move_to_end(key)
        if strikes and source is not None:
            self.strikes.charge(source, now, strikes)
        while len(entries) > self.max_entries:
            entries.popitem(last=False)

    def forget(self, mailbox: bytes, cap_hashes: Collection[bytes]) -> None:
        """Capabilities added to ``mailbox``: no longer refused."""
        for hashed in cap_hashes:
            self._entries.pop((mailbox, hashed), None)
