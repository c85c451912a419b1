"""Storage workers: every database call of the relay runs in one, one at a
time, because peewee is synchronous and a database connection must not be
used by two threads at once. Database failures become
:class:`~chatcli.errors.StorageError`, which connections answer with
``try_again``.

:class:`Worker` is the contract. :class:`StorageWorker` runs the calls in a
worker thread (``trio.to_thread.run_sync`` with a ``CapacityLimiter(1)``):
the relay uses it for a store handed in by the caller (tests).
``chatcli relay serve`` runs them in a child process instead
(:class:`~chatcli.relay.storage_process.StorageProcess`), where they do not
compete with the event loop for the interpreter lock.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import peewee
import trio

from chatcli.errors import StorageError
from chatcli.relay.store.base import Store

__all__ = ["StorageWorker", "Worker"]

T = TypeVar("T")
log = logging.getLogger("chatcli.relay.storage")


class Worker(Protocol):
    """Runs storage calls one at a time, in order."""

    failures: int

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` away from the event loop; a cancelled caller still
        waits for the call to finish, so a transaction is never left half done."""
        ...


class StorageWorker:
    """:class:`Worker` in a thread."""

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
