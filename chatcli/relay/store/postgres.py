"""The PostgreSQL store, for several relay processes sharing one database.

``--db postgresql://USER@HOST:PORT/DB`` selects it (psycopg 3 through peewee).
The tables and migrations are those of :mod:`chatcli.relay.store.schema`,
the same as SQLite's; every process sharing the database is one relay.

Concurrency between processes. Every writing transaction first takes one
transaction-scoped advisory lock (:data:`WRITE_LOCK`), so relay writers are
serialised across processes exactly as SQLite serialises them in one file:

* message ids (a ``BIGSERIAL``) are allocated and committed in the same order
  everywhere, so a reader that saw id ``n`` committed has seen every id below;
* quotas are checked and usage counters updated without a race;
* two processes never take mailbox-row locks in opposite orders, so relay
  transactions never deadlock.

Readers take no lock. Group commit in each process keeps the lock's cost per
message small; PostgreSQL's own commit (WAL flush, ``synchronous_commit``
on) makes an acknowledged deposit durable.

Cross-process wake-ups: :meth:`PostgresStore.insert_messages` sends, inside
its transaction, one ``NOTIFY`` on :data:`MAILBOX_CHANNEL` per group of
mailboxes (see :func:`encode_wakeups`), so that PostgreSQL delivers them to
the other processes exactly when the messages become visible, and never for a
transaction that rolled back. :mod:`chatcli.relay.notify` listens.

Failure: a lost connection (PostgreSQL restarting, a terminated backend)
raises :class:`StoreUnavailable`, which the relay answers with the
``try_again`` error code; the next call reconnects by itself.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import secrets
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any, Final, ParamSpec, TypeVar

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

__all__ = [
    "MAILBOX_CHANNEL",
    "WRITE_LOCK",
    "PostgresStore",
    "StoreUnavailable",
    "decode_wakeups",
    "encode_wakeups",
    "is_postgres_url",
    "redact_url",
]

_RELAY_SEED = "relay_key"
_IN_CHUNK = 1000          # values per IN (...) / multi-row INSERT
WRITE_LOCK: Final = 0x63686174636C6901   # "chatcli" + 1: the relay writers' advisory lock
MAILBOX_CHANNEL: Final = "chatcli_mailbox"
_NOTIFY_MAX: Final = 7800  # PostgreSQL's NOTIFY payload limit is 8000 bytes

P = ParamSpec("P")
R = TypeVar("R")


class StoreUnavailable(StorageError):
    """The database cannot be reached right now (restarting, connection lost).
    Transient: the relay answers ``try_again`` and the store reconnects."""


def is_postgres_url(db: str) -> bool:
    return db.lower().startswith(("postgresql://", "postgres://"))


def redact_url(url: str) -> str:
    """The URL without a password, for logs."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def encode_wakeups(origin: str, ranges: dict[bytes, tuple[int, int]]) -> list[str]:
    """NOTIFY payloads telling other processes which messages were stored:
    ``origin;MAILBOXHEX,FIRST,LAST;...``, each under PostgreSQL's size limit.
    ``origin`` names the sending process, so it can ignore its own."""
    payloads: list[str] = []
    parts: list[str] = []
    size = len(origin)
    for mailbox, (first, last) in ranges.items():
        part = f"{mailbox.hex()},{first},{last}"
        if parts and size + 1 + len(part) > _NOTIFY_MAX:
            payloads.append(";".join([origin, *parts]))
            parts, size = [], len(origin)
        parts.append(part)
        size += 1 + len(part)
    if parts:
        payloads.append(";".join([origin, *parts]))
    return payloads


def decode_wakeups(payload: str) -> tuple[str, dict[bytes, tuple[int, int]]]:
    """The inverse of :func:`encode_wakeups`; raises ValueError on garbage."""
    origin, *parts = payload.split(";")
    ranges: dict[bytes, tuple[int, int]] = {}
    for part in parts:
        mailbox_hex, first, last = part.split(",")
        mailbox = bytes.fromhex(mailbox_hex)
        if len(mailbox) != 16:
            raise ValueError("bad mailbox id")
        ranges[mailbox] = (int(first), int(last))
    return origin, ranges


def _rows(query: Any) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in query.tuples()]


def _row(query: Any) -> tuple[Any, ...]:
    return tuple(query.tuples().get())


def _chunks(items: Sequence[Any], size: int = _IN_CHUNK) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield list(items[i:i + size])


def _guarded(method: Callable[P, R]) -> Callable[P, R]:
    """Turn a lost connection into :class:`StoreUnavailable` (outermost call only)."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        self = args[0]
        assert isinstance(self, PostgresStore)
        if self._depth:
            return method(*args, **kwargs)
        self._depth += 1
        try:
            self._ensure_connected()
            return method(*args, **kwargs)
        except (peewee.OperationalError, peewee.InterfaceError) as exc:
            raise self._connection_lost() from exc
        finally:
            self._depth -= 1

    return wrapper


class PostgresStore(PeeweeReads, Store):
    """A relay database in PostgreSQL (``url``: ``postgresql://USER@HOST:PORT/DB``).

    ``origin`` names this process in the wake-up notifications it sends.
    """

    in_chunk = _IN_CHUNK

    def __init__(self, url: str, *, origin: str = "") -> None:
        if not is_postgres_url(url):
            raise StorageError(f"Not a PostgreSQL URL: {redact_url(url)}.")
        self.url = "postgresql://" + url.split("://", 1)[1]
        # Names this process in the wake-ups it sends (see chatcli.relay.notify).
        self.origin = origin or f"{os.getpid()}-{secrets.token_hex(3)}"
        self.db = peewee.PostgresqlDatabase(
            self.url, thread_safe=False, autoconnect=True, prefer_psycopg3=True)
        self._depth = 0          # nesting of guarded calls
        self._txn_depth = 0      # nesting of transaction()
        self._locked = False     # WRITE_LOCK held by the current transaction
        self._opened = False
        self._message_sequence: str | None = None

    @property
    def description(self) -> str:
        return f"PostgreSQL {redact_url(self.url)}"

    # ------------------------------------------------------------ connection

    def _ensure_connected(self) -> None:
        if not self._opened:
            raise StorageError("The relay database is not open.")
        if self.db.is_closed():
            self.db.connect()

    def _drop_connection(self) -> None:
        self._locked = False
        state: Any = self.db._state  # type: ignore[attr-defined]
        conn = state.conn
        # A broken connection may refuse to close through peewee (a transaction
        # still open on it): close the driver's connection and forget it.
        state.reset()
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _sql(self, sql: str, params: tuple[Any, ...] = (), *, binary: bool = False) -> Any:
        """Run raw SQL on the connection; returns the cursor. ``%b`` sends a
        parameter in binary (byte strings and their arrays: no hex escaping);
        ``binary`` asks for binary results (payloads read back as they are)."""
        if not binary:
            return self.db.execute_sql(sql, params)  # type: ignore[no-untyped-call]
        conn: Any = self.db.connection()  # type: ignore[no-untyped-call]
        wrapper: Any = getattr(peewee, "__exception_wrapper__")  # noqa: B009 - untyped
        with wrapper:  # driver errors become peewee's, as in execute_sql
            cursor = conn.cursor(binary=True)
            cursor.execute(sql, params)
        return cursor

    def _write_lock(self) -> None:
        """Take the relay writers' lock for the current transaction."""
        if self._txn_depth and not self._locked:
            self._sql("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            self._locked = True

    @_guarded
    def lock_writes(self) -> None:
        self._write_lock()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """A write: inside the caller's transaction, or a transaction of its own."""
        with self.transaction():
            self._write_lock()
            yield

    # ------------------------------------------------------------ lifecycle

    def open(self, now: int) -> None:
        try:
            schema.database_proxy.initialize(self.db)
            self.db.connect(reuse_if_open=True)
            self._opened = True
            with self.db.atomic():
                # Two processes starting on an empty database migrate one at a time.
                self._sql("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
                schema.migrate(self.db, now)
        except peewee.DatabaseError as exc:
            self._opened = False
            self._drop_connection()
            raise StorageError(
                f"Cannot open the relay database {redact_url(self.url)}: "
                f"{str(exc).strip()}.") from None

    def close(self) -> None:
        self._opened = False
        self._drop_connection()

    def _connection_lost(self) -> StoreUnavailable:
        """Forget the broken connection (the next call reconnects); the error to raise."""
        self._drop_connection()
        return StoreUnavailable("The relay's database is unavailable; try again shortly.")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        if self._txn_depth:
            self._txn_depth += 1
            try:
                yield
            finally:
                self._txn_depth -= 1
            return
        self._depth += 1
        try:
            self._ensure_connected()
            self._txn_depth = 1
            self._locked = False
            try:
                with self.db.atomic():
                    yield
            finally:
                self._txn_depth = 0
                self._locked = False
        except (peewee.OperationalError, peewee.InterfaceError) as exc:
            raise self._connection_lost() from exc
        finally:
            self._depth -= 1

    # ------------------------------------------------------------ relay key

    @_guarded
    def load_or_store_relay_seed(self, new_seed: bytes) -> bytes:
        # ON CONFLICT DO NOTHING then SELECT: processes starting together agree.
        with self.transaction():
            Meta.insert(key=_RELAY_SEED, value=new_seed).on_conflict_ignore().execute()
            return bytes(Meta.get_by_id(_RELAY_SEED).value)

    @_guarded
    def get_meta(self, key: str) -> bytes | None:
        return super().get_meta(key)

    @_guarded
    def put_meta(self, key: str, value: bytes) -> None:
        with self._writing():
            super().put_meta(key, value)

    # ------------------------------------------------------------ tokens

    @_guarded
    def add_token(self, token_hash: bytes, uses: int, expires_at: int | None,
                  now: int) -> None:
        with self._writing():
            Token.insert(token_hash=token_hash, uses_left=uses, expires_at=expires_at,
                         created_at=now).execute()

    @_guarded
    def consume_token(self, token_hash: bytes, now: int) -> bool:
        with self._writing():
            updated = (Token.update(uses_left=Token.uses_left - 1)
                       .where((Token.token_hash == token_hash) & (Token.uses_left > 0)
                              & (Token.expires_at.is_null() | (Token.expires_at > now)))
                       .execute())
            return bool(updated)

    # ------------------------------------------------------------ mailboxes

    @_guarded
    def create_mailbox(self, mailbox: bytes, auth_key: bytes, now: int) -> None:
        with self._writing():
            Mailbox.insert(id=mailbox, auth_key=auth_key, created_at=now).execute()

    @_guarded
    def delete_mailbox(self, mailbox: bytes) -> bool:
        with self._writing():
            blobs = Blob.select(Blob.id).where(Blob.owner == mailbox)
            BlobChunk.delete().where(BlobChunk.blob.in_(blobs)).execute()
            Blob.delete().where(Blob.owner == mailbox).execute()
            Message.delete().where(Message.mailbox == mailbox).execute()
            Capability.delete().where(Capability.mailbox == mailbox).execute()
            return bool(Mailbox.delete().where(Mailbox.id == mailbox).execute())

    @_guarded
    def mailbox_usage(self, mailboxes: Collection[bytes]) -> dict[bytes, Usage]:
        # Inside a transaction this is the start of a deposit: lock first, so
        # that the quota decision holds until the messages are committed.
        self._write_lock()
        out: dict[bytes, Usage] = {}
        for part in _chunks(list(set(mailboxes))):
            query = (Mailbox.select(Mailbox.id, Mailbox.msg_count, Mailbox.msg_bytes)
                     .where(Mailbox.id.in_(part)))
            for mailbox, count, size in _rows(query):
                out[bytes(mailbox)] = Usage(int(count), int(size))
        return out

    # ------------------------------------------------------------ capabilities

    def _set_caps(self, mailbox: bytes, cap_hashes: Collection[bytes], now: int,
                  revoked: bool, uses_left: int | None = None) -> None:
        rows = [{"mailbox": mailbox, "cap_hash": h, "revoked": revoked, "created_at": now,
                 "uses_left": uses_left} for h in sorted(set(cap_hashes))]
        with self._writing():
            for part in _chunks(rows):
                (Capability.insert_many(part)
                 .on_conflict(conflict_target=[Capability.mailbox, Capability.cap_hash],
                              update={Capability.revoked: revoked})
                 .execute())

    @_guarded
    def add_caps(self, mailbox: bytes, cap_hashes: Collection[bytes], now: int,
                 one_shot: bool = False) -> None:
        self._set_caps(mailbox, cap_hashes, now, False, 1 if one_shot else None)

    @_guarded
    def revoke_caps(self, mailbox: bytes, cap_hashes: Collection[bytes], now: int) -> None:
        self._set_caps(mailbox, cap_hashes, now, True)

    @_guarded
    def valid_caps(self, pairs: Collection[tuple[bytes, bytes]]) -> set[tuple[bytes, bytes]]:
        return {pair for pair, uses in self.cap_uses(pairs).items() if uses != 0}

    @_guarded
    def cap_uses(self, pairs: Collection[tuple[bytes, bytes]]
                 ) -> dict[tuple[bytes, bytes], int | None]:
        out: dict[tuple[bytes, bytes], int | None] = {}
        for part in _chunks(sorted(set(pairs))):
            cursor = self._sql(
                'SELECT c."mailbox", c."cap_hash", c."uses_left" FROM "capability" AS c '
                "JOIN unnest(%b::bytea[], %b::bytea[]) AS t(m, h) "
                'ON c."mailbox" = t.m AND c."cap_hash" = t.h WHERE NOT c."revoked"',
                ([m for m, _ in part], [h for _, h in part]))
            out.update(((bytes(m), bytes(h)), uses) for m, h, uses in cursor.fetchall())
        return out

    @_guarded
    def cap_used_by(self, pairs: Collection[tuple[bytes, bytes]]
                    ) -> dict[tuple[bytes, bytes], bytes | None]:
        out: dict[tuple[bytes, bytes], bytes | None] = {}
        for part in _chunks(sorted(set(pairs))):
            cursor = self._sql(
                'SELECT c."mailbox", c."cap_hash", c."used_by" FROM "capability" AS c '
                "JOIN unnest(%b::bytea[], %b::bytea[]) AS t(m, h) "
                'ON c."mailbox" = t.m AND c."cap_hash" = t.h '
                'WHERE NOT c."revoked" AND c."uses_left" = 0',
                ([m for m, _ in part], [h for _, h in part]))
            out.update(((bytes(m), bytes(h)), None if used_by is None else bytes(used_by))
                       for m, h, used_by in cursor.fetchall())
        return out

    @_guarded
    def consume_caps(self, uses: Mapping[tuple[bytes, bytes], bytes]
                     ) -> set[tuple[bytes, bytes]]:
        taken: set[tuple[bytes, bytes]] = set()
        with self.transaction():
            # Deposits run under the writers' lock (see mailbox_usage), so relay
            # processes take turns; the conditional UPDATE holds on its own too.
            for (mailbox, hashed), used_by in sorted(uses.items()):
                if (Capability.update(uses_left=Capability.uses_left - 1, used_by=used_by)
                        .where((Capability.mailbox == mailbox)
                               & (Capability.cap_hash == hashed)
                               & ~Capability.revoked
                               & (Capability.uses_left > 0))
                        .execute()):
                    taken.add((mailbox, hashed))
        return taken

    # ------------------------------------------------------------ messages

    @_guarded
    def insert_messages(self, messages: Sequence[NewMessage]) -> list[int]:
        if not messages:
            return []
        ids: list[int] = []
        with self._writing():
            # The writers' lock is held: the ids come out of the sequence in a
            # block nobody else draws from now; sorted, they go to the rows in order.
            for part in _chunks(messages):
                cursor = self._sql("SELECT nextval(%s) FROM generate_series(1, %s)",
                                   (self._sequence(), len(part)))
                part_ids = sorted(int(i) for (i,) in cursor.fetchall())
                ranges: dict[bytes, tuple[int, int]] = {}
                for msg, msg_id in zip(part, part_ids, strict=True):
                    first, _ = ranges.get(msg.mailbox, (msg_id, msg_id))
                    ranges[msg.mailbox] = (first, msg_id)
                # One round trip: the rows, the usage counters and the wake-ups
                # (NOTIFY: delivered by PostgreSQL when, and only if, this commits).
                self._sql(
                    'WITH ins AS (INSERT INTO "message" '
                    '("id", "mailbox", "payload", "size", "received_at") '
                    "SELECT * FROM unnest(%s::bigint[], %b::bytea[], %b::bytea[], "
                    '%s::integer[], %s::bigint[]) RETURNING "mailbox", "size"), '
                    'counts AS (SELECT "mailbox" AS mb, COUNT(*) AS n, SUM("size") AS b '
                    'FROM ins GROUP BY "mailbox"), '
                    'upd AS (UPDATE "mailbox" SET "msg_count" = "mailbox"."msg_count" + '
                    'counts.n, "msg_bytes" = "mailbox"."msg_bytes" + counts.b '
                    'FROM counts WHERE "mailbox"."id" = counts.mb) '
                    "SELECT pg_notify(%s, p) FROM unnest(%s::text[]) AS p",
                    (part_ids, [m.mailbox for m in part], [m.payload for m in part],
                     [len(m.payload) for m in part], [m.received_at for m in part],
                     MAILBOX_CHANNEL, encode_wakeups(self.origin, ranges)))
                ids.extend(part_ids)
        return ids

    def _sequence(self) -> str:
        if self._message_sequence is None:
            cursor = self._sql("SELECT pg_get_serial_sequence('message', 'id')")
            self._message_sequence = str(cursor.fetchone()[0])
        return self._message_sequence

    @_guarded
    def fetch_messages(self, mailbox: bytes, after_id: int, limit: int) -> list[StoredMessage]:
        cursor = self._sql(
            'SELECT "id", "payload", "received_at" FROM "message" '
            'WHERE "mailbox" = %b AND "id" > %s ORDER BY "id" LIMIT %s',
            (mailbox, after_id, limit), binary=True)
        return [StoredMessage(int(i), bytes(p), int(r)) for i, p, r in cursor.fetchall()]

    @_guarded
    def delete_messages(self, mailbox: bytes, ids: Collection[int]) -> int:
        wanted = sorted(set(ids))
        if not wanted:
            return 0
        with self._writing():
            # One round trip: delete, and keep the usage counters in step.
            cursor = self._sql(
                'WITH gone AS (DELETE FROM "message" WHERE "mailbox" = %s '
                'AND "id" = ANY(%s::bigint[]) RETURNING "size"), '
                'g AS (SELECT COUNT(*) AS n, COALESCE(SUM("size"), 0) AS b FROM gone), '
                'upd AS (UPDATE "mailbox" SET "msg_count" = "msg_count" - g.n, '
                '"msg_bytes" = "msg_bytes" - g.b FROM g WHERE "id" = %s AND g.n > 0) '
                "SELECT n FROM g", (mailbox, wanted, mailbox))
            return int(cursor.fetchone()[0])

    @_guarded
    def delete_messages_many(self, acks: Sequence[tuple[bytes, Collection[int]]]) -> int:
        pairs = sorted({(mailbox, i) for mailbox, ids in acks for i in ids})
        if not pairs:
            return 0
        total = 0
        with self._writing():
            # One round trip per chunk for every acknowledgement of a group commit.
            for part in _chunks(pairs):
                cursor = self._sql(
                    "WITH req AS (SELECT * FROM unnest(%b::bytea[], %s::bigint[]) AS r(m, i)), "
                    'gone AS (DELETE FROM "message" USING req WHERE "message"."mailbox" = req.m '
                    'AND "message"."id" = req.i RETURNING "message"."mailbox", "message"."size"), '
                    'g AS (SELECT "mailbox" AS mb, COUNT(*) AS n, SUM("size") AS b FROM gone '
                    'GROUP BY "mailbox"), '
                    'upd AS (UPDATE "mailbox" SET "msg_count" = "mailbox"."msg_count" - g.n, '
                    '"msg_bytes" = "mailbox"."msg_bytes" - g.b FROM g WHERE "mailbox"."id" = g.mb) '
                    "SELECT COALESCE(SUM(n), 0) FROM g",
                    ([m for m, _ in part], [i for _, i in part]))
                total += int(cursor.fetchone()[0])
        return total

    @_guarded
    def expire_messages(self, received_before: int) -> int:
        with self._writing():
            cursor = self._sql(
                'WITH gone AS (DELETE FROM "message" WHERE "received_at" < %s '
                'RETURNING "mailbox", "size") '
                'SELECT "mailbox", COUNT(*), SUM("size") FROM gone '
                'GROUP BY "mailbox" ORDER BY "mailbox"', (received_before,))
            per_mailbox = cursor.fetchall()
            total = 0
            for mailbox, count, size in per_mailbox:
                (Mailbox.update(msg_count=Mailbox.msg_count - int(count),
                                msg_bytes=Mailbox.msg_bytes - int(size))
                 .where(Mailbox.id == bytes(mailbox)).execute())
                total += int(count)
            return total

    # ------------------------------------------------------------ presence

    @_guarded
    def set_presence_hidden(self, mailbox: bytes, hidden: bool) -> None:
        with self._writing():
            Mailbox.update(hidden=hidden).where(Mailbox.id == mailbox).execute()

    @_guarded
    def set_mailbox_installation(self, mailbox: bytes, installation: bytes) -> None:
        with self._writing():
            Mailbox.update(installation=installation).where(Mailbox.id == mailbox).execute()

    @_guarded
    def set_last_seen(self, mailbox: bytes, when: int) -> None:
        with self._writing():
            Mailbox.update(last_seen=when).where(Mailbox.id == mailbox).execute()

    # ------------------------------------------------------------ blobs

    @_guarded
    def create_blob(self, info: BlobInfo, now: int) -> None:
        with self._writing():
            Blob.insert(id=info.blob, owner=info.owner, read_cap_hash=info.read_cap_hash,
                        size=info.size, complete=info.complete, created_at=now,
                        expires_at=info.expires_at).execute()

    @_guarded
    def append_blob_chunk(self, blob: bytes, offset: int, data: bytes, complete: bool) -> None:
        with self._writing():
            if data:
                BlobChunk.insert(blob=blob, offset=offset, data=data).execute()
            (Blob.update(size=offset + len(data), complete=complete)
             .where(Blob.id == blob).execute())

    @_guarded
    def delete_blob(self, blob: bytes) -> bool:
        with self._writing():
            BlobChunk.delete().where(BlobChunk.blob == blob).execute()
            return bool(Blob.delete().where(Blob.id == blob).execute())

    @_guarded
    def expire_blobs(self, now: int) -> int:
        with self._writing():
            expired = [bytes(b) for (b,) in
                       _rows(Blob.select(Blob.id).where(Blob.expires_at <= now))]
            for part in _chunks(expired):
                BlobChunk.delete().where(BlobChunk.blob.in_(part)).execute()
                Blob.delete().where(Blob.id.in_(part)).execute()
            return len(expired)

    # ------------------------------------------------------------ stats

    @_guarded
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
                          schema_version=schema.current_version(self.db))


# The shared reads answer with the same guard as the store's own methods.
for _name in SHARED_READS:
    setattr(PostgresStore, _name, _guarded(getattr(PeeweeReads, _name)))
del _name
