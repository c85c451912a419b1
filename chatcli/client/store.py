"""The client's local database: opening it, migrating it, transactions, sealing.

SQLite in WAL mode with a 10 s busy timeout and foreign keys on, so a ``chat``
in one terminal and a ``send`` in another both work. Every read-modify-write
of a session or the outbox runs in :meth:`Store.write` (``BEGIN IMMEDIATE``),
which takes SQLite's write lock up front so two processes never interleave a
ratchet update.

Deleted and superseded secrets (one-time prekeys, old ratchet states) must not
linger on disk: ``secure_delete`` zeroes freed content in the database file,
and every write transaction ends with a truncating WAL checkpoint, so the old
pages do not stay in the ``-wal`` file either. The checkpoint never waits: if
another process is reading, it is retried after the next write and on close.

Several stores may be open in one process (tests run two users side by side):
each block of work binds the models to this store's database for its
duration, and contains no ``await``, so Trio never switches tasks inside it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import peewee

from chatcli.client import models
from chatcli.errors import StorageError

SCHEMA_VERSION = 2
BUSY_TIMEOUT_MS = 10_000


def now_ms() -> int:
    return int(time.time() * 1000)


def _migrate_to_1(db: peewee.Database) -> None:
    db.create_tables(models.ALL_MODELS)


def _migrate_to_2(db: peewee.Database) -> None:
    # Databases made at version 1 lack the column; create_tables above has it.
    if "contact_cap_hash" not in {c.name for c in db.get_columns("invite")}:
        db.execute_sql(  # type: ignore[no-untyped-call]
            "ALTER TABLE invite ADD COLUMN contact_cap_hash BLOB")


# version reached -> migration from the previous version. Append only.
MIGRATIONS: dict[int, Callable[[peewee.Database], None]] = {1: _migrate_to_1, 2: _migrate_to_2}


class Sealer:
    """Seals and opens the sensitive columns with the local storage key.

    ``context`` binds a ciphertext to its column, so that one column's value
    cannot be moved into another."""

    def __init__(self, key: bytes) -> None:
        from chatcli.crypto.localseal import LocalSealer

        self._sealer = LocalSealer(key)

    def seal(self, data: bytes, column: str) -> bytes:
        return self._sealer.seal(data, context=b"chatcli/local/v1/" + column.encode())

    def open(self, data: bytes, column: str) -> bytes:
        return self._sealer.open(data, context=b"chatcli/local/v1/" + column.encode())

    def seal_text(self, text: str, column: str) -> bytes:
        return self.seal(text.encode("utf-8"), column)

    def open_text(self, data: bytes, column: str) -> str:
        return self.open(data, column).decode("utf-8")


class Store:
    """One identity's database plus its sealer."""

    def __init__(self, path: Path, sealer: Sealer | None) -> None:
        self.path = path
        self._sealer = sealer
        self.db = peewee.SqliteDatabase(
            str(path),
            pragmas={
                "journal_mode": "wal",
                "busy_timeout": BUSY_TIMEOUT_MS,
                "foreign_keys": 1,
                "synchronous": "normal",
                "secure_delete": 1,
            },
            timeout=BUSY_TIMEOUT_MS / 1000,
        )

    @property
    def sealer(self) -> Sealer:
        if self._sealer is None:
            raise StorageError("The local database is locked; the passphrase is needed.")
        return self._sealer

    @classmethod
    def open(cls, path: Path, sealer: Sealer | None, *, create: bool = False) -> Store:
        if not create and not path.exists():
            raise StorageError(f"The local database {path} is missing.")
        store = cls(path, sealer)
        try:
            store.db.connect()
            if create:
                with contextlib.suppress(OSError):
                    os.chmod(path, 0o600)
            store._migrate()
        except peewee.DatabaseError as exc:
            store.db.close()
            raise StorageError(f"The local database {path} cannot be opened: {exc}.") from None
        return store

    def close(self) -> None:
        if not self.db.is_closed():
            self.scrub_wal()
            self.db.close()

    def scrub_wal(self) -> bool:
        """Copy the WAL into the database and truncate it, without waiting for
        readers; True when the WAL is empty afterwards."""
        try:
            run = self.db.execute_sql
            run("PRAGMA busy_timeout = 0")  # type: ignore[no-untyped-call]
            try:
                cursor = run("PRAGMA wal_checkpoint(TRUNCATE)")  # type: ignore[no-untyped-call]
                busy, _log, _done = cursor.fetchone()
            finally:
                run(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")  # type: ignore[no-untyped-call]
        except peewee.DatabaseError:
            return False
        return not busy

    def _migrate(self) -> None:
        with self.bound(), self.db.atomic("IMMEDIATE"):
            self.db.create_tables([models.MetaEntry])
            row = models.MetaEntry.get_or_none(models.MetaEntry.key == "schema_version")
            version = int(row.value) if row else 0
            if version > SCHEMA_VERSION:
                raise StorageError(
                    "The local database was written by a newer chatcli; upgrade chatcli."
                )
            for target in range(version + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[target](self.db)
            models.MetaEntry.replace(  # type: ignore[no-untyped-call]
                key="schema_version", value=str(SCHEMA_VERSION)).execute()

    @contextlib.contextmanager
    def bound(self) -> Iterator[None]:
        """Bind the models to this database for a synchronous block (reads)."""
        with self.db.bind_ctx(models.ALL_MODELS, bind_refs=False, bind_backrefs=False):
            yield

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        """A ``BEGIN IMMEDIATE`` transaction with the models bound (no ``await`` inside)."""
        try:
            with self.bound(), self.db.atomic("IMMEDIATE"):
                yield
            if not self.db.in_transaction():
                self.scrub_wal()
        except peewee.OperationalError as exc:
            if "locked" in str(exc):
                raise StorageError(
                    "The local database stayed busy for too long; another chatcli "
                    "command is holding it."
                ) from None
            raise

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        """A read transaction (a consistent snapshot) with the models bound."""
        with self.bound(), self.db.atomic("DEFERRED"):
            yield

    def account(self) -> models.Account:
        row = models.Account.get_or_none()
        if row is None:
            raise StorageError("The local database has no account; run `chatcli init`.")
        return row
