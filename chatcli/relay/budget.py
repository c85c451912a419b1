"""The relay's storage budget: a cap on everything clients can make it store
(queued message bytes plus blob bytes), across all mailboxes, so that an
open relay cannot be filled until its disk is.

The total is read from the store at most once per ``refresh_ms`` and counted
forward locally in between, so the hot path (a group commit) costs no extra
query. Other processes sharing the database are seen at the next refresh:
the budget may be overshot by what they store in that time. Synchronous with
explicit ``now`` (milliseconds), called from the storage worker.
"""

from __future__ import annotations

from chatcli.relay.store.base import Store

__all__ = ["StorageBudget"]


class StorageBudget:
    """``limit`` bytes of messages and blobs in all (0: no budget)."""

    def __init__(self, store: Store, limit: int, *, refresh_ms: int = 1000) -> None:
        self.store = store
        self.limit = limit
        self.refresh_ms = refresh_ms
        self._used = 0
        self._read_at: int | None = None

    def room(self, now: int) -> int | None:
        """Bytes that may still be stored (None: no budget)."""
        if not self.limit:
            return None
        if self._read_at is None or not 0 <= now - self._read_at < self.refresh_ms:
            stats = self.store.stats()
            self._used = stats.message_bytes + stats.blob_bytes
            self._read_at = now
        return max(self.limit - self._used, 0)

    def charge(self, size: int) -> None:
        """``size`` bytes were stored (or freed, if negative) since the last read."""
        self._used = max(self._used + size, 0)
