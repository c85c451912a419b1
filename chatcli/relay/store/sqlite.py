"""The embedded SQLite store: one file in WAL mode with ``synchronous=FULL``,
so that a committed transaction survives a crash or SIGKILL of the relay
(and, with FULL, a power cut). Blob chunks live in the same file, so one
backup (``sqlite3 relay.db ".backup copy.db"`` or ``VACUUM INTO``) holds
everything.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import peewee

from chatcli.errors import StorageError
from chatcli.relay.store import schema
from chatcli.relay.store.base import (
    BlobInfo,
    NewMessage,
    Store,
    StoredMessage,
    StoreStats,
    Usage,
)
from chatcli.relay.store.peewee_reads import SHARED_READS, PeeweeReads
from chatcli.relay.store.schema import (
    Blob,
    BlobChunk,
    Capability,
    Mailbox,
    Message,
    Meta,
    Token,
)

__all__ = ["SqliteStore"]

_RELAY_SEED = "relay_key"
_IN_CHUNK = 400  # bound variables per IN (...) clause


_LAST_MESSAGE_ID = (
    'SELECT MAX(COALESCE((SELECT "seq" FROM "sqlite_sequence" WHERE "name" = \'message\'), 0), '
    'COALESCE((SELECT MAX("id") FROM "message"), 0))')
# Rows per multi-row statement: a few fixed sizes, so that the statements stay
# in sqlite3's statement cache; at most 4 variables a row keeps 200 rows under
# SQLITE_MAX_VARIABLE_NUMBER even on SQLite before 3.32 (999).
_INSERT_SIZES = (200, 50, 10, 1)
_ACK_SIZES = (400, 100, 20, 5, 1)     # 2 variables a row


def _insert_chunks(count: int, sizes: tuple[int, ...] = _INSERT_SIZES) -> Iterator[int]:
    """Split ``count`` rows into chunks of the given sizes (largest first)."""
    for size in sizes:
        while count >= size:
            yield size
            count -= size


@functools.cache
def _insert_sql(rows: int) -> str:
    return ('INSERT INTO "message" ("mailbox", "payload", "size", "received_at") VALUES '  # noqa: S608 - "?" only
            + ",".join(["(?, ?, ?, ?)"] * rows))


_UPDATE_FROM: Final = sqlite3.sqlite_version_info >= (3, 33, 0)   # UPDATE ... FROM


def _one_row(store: SqliteStore, sql: str, params: Sequence[Any]) -> list[str]:
    """The comma-separated entries of a query that aggregates its rows into one
    string with ``group_concat``. Python's sqlite3 releases the GIL for every
    row it steps to, and the storage thread then queues behind the event loop
    to get it back: at load, fetching one row per mailbox or capability cost
    more than the query. Entries are hex and decimal, so ',' and ' ' are safe."""
    cursor: Any = store.db.execute_sql(sql, params)  # type: ignore[no-untyped-call]
    row = cursor.fetchone()
    value = row[0] if row else None
    return value.split(",") if value else []


@functools.cache
def _usage_add_sql(rows: int) -> str:
    return ('WITH "add"("mb", "n", "b") AS (VALUES ' + ",".join(["(?, ?, ?)"] * rows) + ") "  # noqa: S608 - "?" only
            'UPDATE "mailbox" SET "msg_count" = "msg_count" + "add"."n", '
            '"msg_bytes" = "msg_bytes" + "add"."b" FROM "add" WHERE "mailbox"."id" = "add"."mb"')


def _ack_values(rows: int) -> str:
    return 'WITH "ack"("mb", "id") AS (VALUES ' + ",".join(["(?, ?)"] * rows) + ") "


@functools.cache
def _ack_usage_sql(rows: int) -> str:
    """Subtract the acknowledged messages that exist from their mailboxes' usage
    counters (run before the DELETE, while they are still there). CROSS JOIN
    keeps the acknowledged ids as the outer loop (primary-key lookups): left to
    itself the planner scanned the whole message table."""
    return (_ack_values(rows) + ', "gone"("mb", "n", "b") AS ('  # noqa: S608 - "?" only
            'SELECT "message"."mailbox", COUNT(*), SUM("message"."size") FROM "ack" CROSS '
            'JOIN "message" ON "message"."id" = "ack"."id" AND "message"."mailbox" = "ack"."mb" '
            'GROUP BY "message"."mailbox") '
            'UPDATE "mailbox" SET "msg_count" = "msg_count" - "gone"."n", '
            '"msg_bytes" = "msg_bytes" - "gone"."b" FROM "gone" WHERE "mailbox"."id" = "gone"."mb"')


@functools.cache
def _ack_delete_sql(rows: int) -> str:
    return (_ack_values(rows) + 'DELETE FROM "message" '  # noqa: S608 - "?" only
            'WHERE ("mailbox", "id") IN (SELECT "mb", "id" FROM "ack")')


def _is_rollback_failure(exc: BaseException) -> bool:
    text = str(exc)
    return "cannot rollback" in text or "no such savepoint" in text


def _make_private(path: str) -> None:
    """Mode 0600 for an existing database and its ``-wal`` and ``-shm`` (they
    hold the relay's key): a copy or a restore may have left them readable."""
    for name in (path, path + "-wal", path + "-shm"):
        with contextlib.suppress(OSError):   # gone, or not ours to change
            if os.stat(name).st_mode & 0o077:
                os.chmod(name, 0o600)


def _rows(query: Any) -> list[tuple[Any, ...]]:
    """The rows of a query as plain tuples."""
    return [tuple(row) for row in query.tuples()]


def _row(query: Any) -> tuple[Any, ...]:
    """The one row of an aggregate query as a plain tuple."""
    return tuple(query.tuples().get())


def _chunks(items: Sequence[bytes] | Sequence[int], size: int = _IN_CHUNK
            ) -> Iterator[list[bytes] | list[int]]:
    for i in range(0, len(items), size):
        yield list(items[i:i + size])  # type: ignore[misc]


def _bound_to_own_database(cls: type[SqliteStore]) -> type[SqliteStore]:
    """Run every public method with the schema's models bound to the store's
    own database (several stores may live in one process)."""

    def wrap(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def wrapper(self: SqliteStore, *args: Any, **kwargs: Any) -> Any:
            with schema.database_proxy.bound(self.db):
                return method(self, *args, **kwargs)
        return wrapper

    own = {name: value for name, value in vars(cls).items()
           if callable(value) and not name.startswith("_") and name != "transaction"}
    own.update({name: getattr(PeeweeReads, name) for name in SHARED_READS})
    for name, value in own.items():
        setattr(cls, name, wrap(value))
    return cls


@_bound_to_own_database
class SqliteStore(PeeweeReads, Store):
    """A relay database in one SQLite file (``path``)."""

    db: peewee.SqliteDatabase

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.db = peewee.SqliteDatabase(
            self.path,
            thread_safe=False,           # one worker thread at a time uses it
            check_same_thread=False,     # ...but not always the same thread
            pragmas={
                "journal_mode": "wal",
                "synchronous": "full",   # durable at commit, even across power loss
                "foreign_keys": 0,
                "busy_timeout": 10_000,
                "cache_size": -16_000,   # 16 MiB page cache
                "secure_delete": 1,      # deleted ciphertext is overwritten, not left in free pages
                # Checkpoint every ~40 MiB of WAL instead of 4: messages are
                # inserted and deleted soon after, so most pages are rewritten
                # in the WAL many times and copied back once (+15 % msg/s).
                "wal_autocheckpoint": 10_000,
            },
        )

    @property
    def description(self) -> str:
        return f"SQLite {self.path}"

    def _sql(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Raw SQL for the hot paths (peewee's query building costs more than
        SQLite itself there). Table names are the schema's."""
        cursor: Any = self.db.execute_sql(sql, params)  # type: ignore[no-untyped-call]
        return list(cursor.fetchall())

    # ------------------------------------------------------------ lifecycle

    def open(self, now: int) -> None:
        new_file = self.path != ":memory:" and not os.path.exists(self.path)
        if self.path != ":memory:":
            parent = Path(self.path).resolve().parent
            if not parent.is_dir():
                raise StorageError(f"The directory of the relay database {self.path} "
                                   "does not exist.")
        if not new_file and self.path != ":memory:":
            self._refuse_empty_file()
            self._refuse_read_only()
            _make_private(self.path)
        if new_file:
            # Created private before SQLite opens it, so that the -wal and -shm
            # files (same mode) are private too: they hold the relay's key.
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        try:
            schema.database_proxy.initialize(self.db)
            self.db.connect(reuse_if_open=True)
            schema.migrate(self.db, now)
        except peewee.DatabaseError as exc:
            raise StorageError(f"Cannot open the relay database {self.path}: {exc}.") from None

    def _refuse_read_only(self) -> None:
        """A relay must write (every deposit, every acknowledgement): say so at
        start-up rather than answering every request with "try again later"."""
        directory = str(Path(self.path).resolve().parent)
        if not os.access(self.path, os.W_OK) or not os.access(directory, os.W_OK):
            raise StorageError(
                f"The relay database {self.path} is read-only (the file or its directory "
                "cannot be written by this user); the relay needs to write it.")

    def _refuse_empty_file(self) -> None:
        """An existing file of zero bytes (and no WAL) is a relay database that
        lost its contents (truncated, a failed copy): opening it would quietly
        start a new relay with a new key. Only a missing file makes a new relay."""
        try:
            empty = os.path.getsize(self.path) == 0
            wal = os.path.getsize(self.path + "-wal") if os.path.exists(self.path + "-wal") else 0
        except OSError:
            return   # unreadable: SQLite's own error says why
        if empty and not wal:
            raise StorageError(
                f"The relay database {self.path} is an empty file, not a relay database "
                "(truncated or a failed copy?); refusing to start a new relay in its place. "
                "Restore it from a backup, or delete the file to start a new relay with a "
                "new key on purpose.")

    def close(self) -> None:
        if not self.db.is_closed():
            self.db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        try:
            with self.db.atomic():
                yield
        except peewee.OperationalError as exc:
            # After SQLITE_FULL (disk full) SQLite has rolled back already, and
            # peewee's own rollbacks fail ("cannot rollback - no transaction is
            # active", "no such savepoint"), hiding the cause: report the cause.
            cause: BaseException = exc
            while _is_rollback_failure(cause) and isinstance(
                    cause.__context__, peewee.DatabaseError | sqlite3.DatabaseError):
                cause = cause.__context__
            if cause is exc:
                raise
            raise cause from None

    def checkpoint(self) -> None:
        """Copy the WAL into the database and truncate it, so that the old pages
        of deleted rows do not stay in ``-wal`` (``secure_delete`` only zeroes
        them in the database file)."""
        self.db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")  # type: ignore[no-untyped-call]

    # ------------------------------------------------------------ relay key

    def load_or_store_relay_seed(self, new_seed: bytes) -> bytes:
        with self.db.atomic():
            Meta.insert(key=_RELAY_SEED, value=new_seed).on_conflict_ignore().execute()
            return bytes(Meta.get_by_id(_RELAY_SEED).value)

    # ------------------------------------------------------------ tokens

    def add_token(self, token_hash: bytes, uses: int, expires_at: int | None,
                  now: int) -> None:
        Token.create(token_hash=token_hash, uses_left=uses, expires_at=expires_at,
                     created_at=now)

    def consume_token(self, token_hash: bytes, now: int) -> bool:
        with self.db.atomic():
            updated = (Token.update(uses_left=Token.uses_left - 1)
                       .where((Token.token_hash == token_hash) & (Token.uses_left > 0)
                              & (Token.expires_at.is_null() | (Token.expires_at > now)))
                       .execute())
            return bool(updated)

    # ------------------------------------------------------------ mailboxes

    def create_mailbox(self, mailbox: bytes, auth_key: bytes, now: int) -> None:
        Mailbox.create(id=mailbox, auth_key=auth_key, created_at=now)

    def delete_mailbox(self, mailbox: bytes) -> bool:
        with self.db.atomic():
            blobs = [bytes(b.id) for b in Blob.select(Blob.id).where(Blob.owner == mailbox)]
            for part in _chunks(blobs):
                BlobChunk.delete().where(BlobChunk.blob.in_(part)).execute()
            Blob.delete().where(Blob.owner == mailbox).execute()
            Message.delete().where(Message.mailbox == mailbox).execute()
            Capability.delete().where(Capability.mailbox == mailbox).execute()
            return bool(Mailbox.delete().where(Mailbox.id == mailbox).execute())

    def mailbox_usage(self, mailboxes: Collection[bytes]) -> dict[bytes, Usage]:
        out: dict[bytes, Usage] = {}
        for part in _chunks(list(set(mailboxes))):
            marks = ",".join("?" * len(part))
            # One result row (see _one_row) instead of one per mailbox.
            sql = ("SELECT group_concat(hex(\"id\") || ' ' || \"msg_count\" || ' ' || "  # noqa: S608
                   f'"msg_bytes", \',\') FROM "mailbox" WHERE "id" IN ({marks})')
            for entry in _one_row(self, sql, part):
                mailbox, count, size = entry.split(" ")
                out[bytes.fromhex(mailbox)] = Usage(int(count), int(size))
        return out

    # ------------------------------------------------------------ capabilities

    def add_caps(self, mailbox: bytes, cap_hashes: Collection[bytes], now: int,
                 one_shot: bool = False) -> None:
        rows = [{"mailbox": mailbox, "cap_hash": h, "revoked": False, "created_at": now,
                 "uses_left": 1 if one_shot else None} for h in set(cap_hashes)]
        with self.db.atomic():
            (Capability.insert_many(rows)
             .on_conflict(conflict_target=[Capability.mailbox, Capability.cap_hash],
                          update={Capability.revoked: False})
             .execute())

    def revoke_caps(self, mailbox: bytes, cap_hashes: Collection[bytes], now: int) -> None:
        rows = [{"mailbox": mailbox, "cap_hash": h, "revoked": True, "created_at": now}
                for h in set(cap_hashes)]
        with self.db.atomic():
            (Capability.insert_many(rows)
             .on_conflict(conflict_target=[Capability.mailbox, Capability.cap_hash],
                          update={Capability.revoked: True})
             .execute())

    def valid_caps(self, pairs: Collection[tuple[bytes, bytes]]) -> set[tuple[bytes, bytes]]:
        return {pair for pair, uses in self.cap_uses(pairs).items() if uses != 0}

    def cap_uses(self, pairs: Collection[tuple[bytes, bytes]]
                 ) -> dict[tuple[bytes, bytes], int | None]:
        wanted = set(pairs)
        mailboxes = list({mailbox for mailbox, _ in wanted})
        hashes = list({cap for _, cap in wanted})
        out: dict[tuple[bytes, bytes], int | None] = {}
        step = _IN_CHUNK // 2
        for mb_part in _chunks(mailboxes, step):
            for cap_part in _chunks(hashes, step):
                sql = ("SELECT group_concat(hex(\"mailbox\") || ' ' || hex(\"cap_hash\") "  # noqa: S608
                       "|| ' ' || coalesce(\"uses_left\", -1), ',') "
                       'FROM "capability" WHERE "revoked" = 0 '
                       f'AND "mailbox" IN ({",".join("?" * len(mb_part))}) '
                       f'AND "cap_hash" IN ({",".join("?" * len(cap_part))})')
                for entry in _one_row(self, sql, [*mb_part, *cap_part]):
                    mailbox, cap, uses = entry.split(" ")
                    pair = (bytes.fromhex(mailbox), bytes.fromhex(cap))
                    if pair in wanted:
                        out[pair] = None if uses == "-1" else int(uses)
        return out

    def cap_used_by(self, pairs: Collection[tuple[bytes, bytes]]
                    ) -> dict[tuple[bytes, bytes], bytes | None]:
        out: dict[tuple[bytes, bytes], bytes | None] = {}
        for mailbox, hashed in sorted(set(pairs)):   # used-up pairs: a few at most
            row = (Capability.select(Capability.used_by)
                   .where((Capability.mailbox == mailbox)
                          & (Capability.cap_hash == hashed)
                          & (Capability.revoked == False)  # noqa: E712
                          & (Capability.uses_left == 0))
                   .tuples().first())
            if row is not None:
                out[(mailbox, hashed)] = None if row[0] is None else bytes(row[0])
        return out

    def consume_caps(self, uses: Mapping[tuple[bytes, bytes], bytes]
                     ) -> set[tuple[bytes, bytes]]:
        taken: set[tuple[bytes, bytes]] = set()
        with self.db.atomic():
            # The write lock of the transaction makes check and update one step.
            for (mailbox, hashed), used_by in sorted(uses.items()):
                if (Capability.update(uses_left=Capability.uses_left - 1, used_by=used_by)
                        .where((Capability.mailbox == mailbox)
                               & (Capability.cap_hash == hashed)
                               & (Capability.revoked == False)  # noqa: E712
                               & (Capability.uses_left > 0))
                        .execute()):
                    taken.add((mailbox, hashed))
        return taken

    # ------------------------------------------------------------ messages

    def insert_messages(self, messages: Sequence[NewMessage]) -> list[int]:
        if not messages:
            return []
        usage: dict[bytes, list[int]] = {}
        rows: list[tuple[bytes, bytes, int, int]] = []
        for msg in messages:
            size = len(msg.payload)
            rows.append((msg.mailbox, msg.payload, size, msg.received_at))
            counts = usage.get(msg.mailbox)
            if counts is None:
                usage[msg.mailbox] = [1, size]
            else:
                counts[0] += 1
                counts[1] += size
        with self.db.atomic():
            cursor: Any = self.db.cursor()  # type: ignore[no-untyped-call]
            # Every id ever used is at most `before` (AUTOINCREMENT keeps the
            # highest in sqlite_sequence; MAX(id) covers a table that has none).
            cursor.execute(_LAST_MESSAGE_ID)
            before = int(cursor.fetchone()[0])
            # Multi-row INSERTs: one sqlite3_step (and one release of the GIL)
            # per chunk instead of per message. Stepping once per row made the
            # storage thread queue for the GIL behind the event loop for every
            # row, which was most of a group commit's time under load.
            start = 0
            for size in _insert_chunks(len(rows)):
                cursor.execute(_insert_sql(size),
                               [v for row in rows[start:start + size] for v in row])
                start += size
            last = cursor.lastrowid
            if last == before + len(rows):
                # n distinct ids, increasing in insertion order, all in
                # (before, before + n]: exactly before+1 .. before+n, in order.
                ids = list(range(before + 1, last + 1))
            else:  # pragma: no cover - not with AUTOINCREMENT and one writer
                cursor.execute('SELECT "id" FROM "message" WHERE "id" > ? ORDER BY "id"',
                               (before,))
                ids = [int(i) for (i,) in cursor.fetchall()]
                if len(ids) != len(rows):
                    raise StorageError("Message ids were not assigned as expected.")
            if _UPDATE_FROM:   # one statement per chunk rather than one per mailbox
                deltas = [(mailbox, count, size) for mailbox, (count, size) in usage.items()]
                start = 0
                for size in _insert_chunks(len(deltas)):
                    cursor.execute(_usage_add_sql(size),
                                   [v for row in deltas[start:start + size] for v in row])
                    start += size
            else:
                cursor.executemany(
                    'UPDATE "mailbox" SET "msg_count" = "msg_count" + ?, '
                    '"msg_bytes" = "msg_bytes" + ? WHERE "id" = ?',
                    [(count, size, mailbox) for mailbox, (count, size) in usage.items()])
        return ids

    def fetch_messages(self, mailbox: bytes, after_id: int, limit: int) -> list[StoredMessage]:
        rows = self._sql('SELECT "id", "payload", "received_at" FROM "message" '
                         'WHERE "mailbox" = ? AND "id" > ? ORDER BY "id" LIMIT ?',
                         [mailbox, after_id, limit])
        return [StoredMessage(int(i), bytes(p), int(r)) for i, p, r in rows]

    def delete_messages(self, mailbox: bytes, ids: Collection[int]) -> int:
        total_count = total_bytes = 0
        with self.db.atomic():
            for part in _chunks(sorted(set(ids))):
                where = f'"mailbox" = ? AND "id" IN ({",".join("?" * len(part))})'
                ((count, size),) = self._sql(
                    f'SELECT COUNT(*), COALESCE(SUM("size"), 0) FROM "message" WHERE {where}',  # noqa: S608
                    [mailbox, *part])
                if count:
                    self._sql(f'DELETE FROM "message" WHERE {where}',  # noqa: S608 - "?" only
                              [mailbox, *part])
                    total_count += int(count)
                    total_bytes += int(size)
            if total_count:
                self._sql('UPDATE "mailbox" SET "msg_count" = "msg_count" - ?, '
                          '"msg_bytes" = "msg_bytes" - ? WHERE "id" = ?',
                          [total_count, total_bytes, mailbox])
        return total_count

    def delete_messages_many(self, acks: Sequence[tuple[bytes, Collection[int]]]) -> int:
        if not _UPDATE_FROM:
            return super().delete_messages_many(acks)
        pairs = sorted({(mailbox, i) for mailbox, ids in acks for i in ids})
        if not pairs:
            return 0
        total = 0
        with self.db.atomic():
            conn: Any = self.db.connection()  # type: ignore[no-untyped-call]
            cursor: Any = conn.cursor()
            # Two statements per chunk of (mailbox, id) pairs instead of a few
            # per acknowledgement: each statement steps once, so the storage
            # thread gives up the GIL (and waits to get it back) once.
            start = 0
            for size in _insert_chunks(len(pairs), _ACK_SIZES):
                params = [v for pair in pairs[start:start + size] for v in pair]
                start += size
                cursor.execute(_ack_usage_sql(size), params)
                # rowcount is not set for a DELETE that starts with WITH.
                before = conn.total_changes
                cursor.execute(_ack_delete_sql(size), params)
                total += conn.total_changes - before
        return total

    def expire_messages(self, received_before: int) -> int:
        with self.db.atomic():
            per_mailbox = _rows(
                Message.select(Message.mailbox, peewee.fn.COUNT(Message.id),
                               peewee.fn.SUM(Message.size))
                .where(Message.received_at < received_before)
                .group_by(Message.mailbox))
            if not per_mailbox:
                return 0
            Message.delete().where(Message.received_at < received_before).execute()
            total = 0
            for mailbox, count, size in per_mailbox:
                (Mailbox.update(msg_count=Mailbox.msg_count - int(count),
                                msg_bytes=Mailbox.msg_bytes - int(size))
                 .where(Mailbox.id == mailbox).execute())
                total += int(count)
            return total

    # ------------------------------------------------------------ presence

    def set_presence_hidden(self, mailbox: bytes, hidden: bool) -> None:
        Mailbox.update(hidden=hidden).where(Mailbox.id == mailbox).execute()

    def set_mailbox_installation(self, mailbox: bytes, installation: bytes) -> None:
        Mailbox.update(installation=installation).where(Mailbox.id == mailbox).execute()

    def set_last_seen(self, mailbox: bytes, when: int) -> None:
        Mailbox.update(last_seen=when).where(Mailbox.id == mailbox).execute()

    # ------------------------------------------------------------ blobs

    def create_blob(self, info: BlobInfo, now: int) -> None:
        Blob.create(id=info.blob, owner=info.owner, read_cap_hash=info.read_cap_hash,
                    size=info.size, complete=info.complete, created_at=now,
                    expires_at=info.expires_at)

    def append_blob_chunk(self, blob: bytes, offset: int, data: bytes, complete: bool) -> None:
        with self.db.atomic():
            if data:
                BlobChunk.create(blob=blob, offset=offset, data=data)
            (Blob.update(size=offset + len(data), complete=complete)
             .where(Blob.id == blob).execute())

    def delete_blob(self, blob: bytes) -> bool:
        with self.db.atomic():
            BlobChunk.delete().where(BlobChunk.blob == blob).execute()
            return bool(Blob.delete().where(Blob.id == blob).execute())

    def expire_blobs(self, now: int) -> int:
        with self.db.atomic():
            expired = [bytes(b) for (b,) in
                       _rows(Blob.select(Blob.id).where(Blob.expires_at <= now))]
            for part in _chunks(expired):
                BlobChunk.delete().where(BlobChunk.blob.in_(part)).execute()
                Blob.delete().where(Blob.id.in_(part)).execute()
            return len(expired)

    # ------------------------------------------------------------ stats

    def stats(self) -> StoreStats:
        mailboxes, messages, message_bytes = _row(
            Mailbox.select(peewee.fn.COUNT(Mailbox.id),
                           peewee.fn.COALESCE(peewee.fn.SUM(Mailbox.msg_count), 0),
                           peewee.fn.COALESCE(peewee.fn.SUM(Mailbox.msg_bytes), 0)))
        blobs, blob_bytes = _row(Blob.select(peewee.fn.COUNT(Blob.id),
                                             peewee.fn.COALESCE(peewee.fn.SUM(Blob.size), 0)))
        tokens = Token.select().where(Token.uses_left > 0).count()
        return StoreStats(mailboxes=int(mailboxes), messages=int(messages),
                          message_bytes=int(message_bytes), blobs=int(blobs),
                          blob_bytes=int(blob_bytes), tokens=int(tokens),
                          schema_version=self.schema_version())
