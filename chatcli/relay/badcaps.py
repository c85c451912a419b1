"""Recently refused capabilities, so that a frame repeating them is refused
without storage work.

The group commit tells which (mailbox, capability hash) pairs were unknown
or invalid; for ``ttl`` seconds the relay refuses them before queuing. A
capability added meanwhile on this relay is forgotten at once (``forget``);
one added through another relay process sharing the database is accepted
after at most ``ttl`` seconds. Bounded: the oldest entries go first, which
only costs a storage lookup. Pure, time is an argument.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Sequence
from typing import Final

from chatcli.protocol import codes
from chatcli.relay.mailbox import DepositItem

__all__ = ["BadCapabilities"]

REMEMBERED: Final = frozenset({codes.BAD_CAPABILITY, codes.CAPABILITY_USED,
                                codes.UNKNOWN_MAILBOX})


class BadCapabilities:
    __slots__ = ("_entries", "max_entries", "ttl")

    def __init__(self, ttl: float = 10.0, max_entries: int = 100_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[bytes, bytes], tuple[float, str]] = OrderedDict()

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
              earlier: Sequence[str | None], now: float) -> None:
        """Remember the items a commit refused as unknown or invalid (not those
        refused before it, ``earlier``: their entries expire as they should)."""
        entries = self._entries
        for item, code, before in zip(items, errors, earlier, strict=True):
            if code in REMEMBERED and before is None:
                assert code is not None
                key = (item.mailbox, item.cap_hash)
                entries[key] = (now + self.ttl, code)
                entries.move_to_end(key)
        while len(entries) > self.max_entries:
            entries.popitem(last=False)

    def forget(self, mailbox: bytes, cap_hashes: Collection[bytes]) -> None:
        """Capabilities added to ``mailbox``: no longer refused."""
        for hashed in cap_hashes:
            self._entries.pop((mailbox, hashed), None)
