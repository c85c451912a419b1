"""The storage worker: every database call of the relay runs here, one at a
time, in a worker thread (``trio.to_thread.run_sync`` with a
``CapacityLimiter(1)``), because peewee is synchronous and a SQLite
connection must not be used by two threads at once. Database failures become
:class:`~chatcli.errors.StorageError`, which connections answer with
``try_again``.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

import peewee
import trio

from chatcli.errors import StorageError
from chatcli.relay.store.base import Store

__all__ = ["StorageWorker"]

T = TypeVar("T")
log = logging.getLogger("chatcli.relay.storage")


class StorageWorker:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.limiter = trio.CapacityLimiter(1)
        self.failures = 0

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in the worker thread. A cancelled caller still
        waits for the call to finish, so a transaction is never left half done."""
        try:
            return await trio.to_thread.run_sync(fn, *args, limiter=self.limiter)
        except (peewee.PeeweeException, sqlite3.Error) as exc:
            self.failures += 1
            log.error("storage error: %s", type(exc).__name__,
                      extra={"fields": {"error": str(exc)[:200]}})
            raise StorageError("The relay's storage is unavailable; try again later.") from None
