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
from typing import Any, Generic, Protocol, TypeVar

import peewee
import trio

from chatcli.errors import StorageError
from chatcli.relay.store.base import Store

__all__ = ["Pending", "StorageWorker", "Worker", "log_database_error"]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
log = logging.getLogger("chatcli.relay.storage")


class Pending(Protocol[T_co]):
    """A storage call sent and not yet answered."""

    async def result(self) -> T_co:
        """The call's result (or its exception); await it exactly once."""
        ...


class Worker(Protocol):
    """Runs storage calls one at a time, in the order they are made."""

    failures: int

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` away from the event loop; a cancelled caller still
        waits for the call to finish, so a transaction is never left half done."""
        ...

    async def send(self, fn: Callable[..., T], *args: Any) -> Pending[T]:
        """Make the call ``fn(*args)`` now, behind those made before it, and
        read its result later, so that the caller can prepare (and send) the
        next call meanwhile."""
        ...


class _Done(Generic[T]):
    """A call that already ran: its result or its exception."""

    def __init__(self, value: T | None, error: BaseException | None) -> None:
        self._value = value
        self._error = error

    async def result(self) -> T:
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


def log_database_error(kind: str, error: str) -> None:
    """Log a failed database call, naming the causes an operator must fix
    (clients are only told to try again later)."""
    text = error.lower()
    if "readonly" in text or "read-only" in text:
        message = "storage error: the relay database is read-only; nothing can be stored"
    elif "disk is full" in text or "no space left" in text:
        message = "storage error: the disk of the relay database is full"
    else:
        message = f"storage error: {kind}"
    log.error(message, extra={"fields": {"error": error[:200]}})


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
            log_database_error(type(exc).__name__, str(exc))
            raise StorageError("The relay's storage is unavailable; try again later.") from None

    async def send(self, fn: Callable[..., T], *args: Any) -> Pending[T]:
        """:meth:`Worker.send` without overlap: a thread runs the call to the
        end at once (a store used in a thread serves one call at a time)."""
        try:
            return _Done(await self.run(fn, *args), None)
        except Exception as exc:
            return _Done(None, exc)
