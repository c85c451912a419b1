"""``chatcli relay migrate``: copy a relay's SQLite database into PostgreSQL.

Everything moves: the relay key (so the relay address and its fingerprint
stay the same), mailboxes with their auth keys, usage counters and presence
settings, capabilities (revoked ones too), queued messages with their ids,
blobs and their chunks, and registration tokens. Message ids keep their
values and the target's id sequence continues after the highest id the
source ever handed out, so clients' de-duplication by id stays right.

The copy is one PostgreSQL transaction holding the relay writers' lock: it
is all or nothing. A target that already holds relay data is refused. At the
end the row counts (and message bytes) of both sides are compared; a
difference raises :class:`MigrationError` and rolls everything back.

Stop the SQLite relay first: a relay still running on the source would keep
accepting deposits that the copy does not see.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import peewee

from chatcli.errors import StorageError, UsageError
from chatcli.relay.store import schema
from chatcli.relay.store.postgres import WRITE_LOCK, PostgresStore, is_postgres_url
from chatcli.relay.store.sqlite import SqliteStore

__all__ = ["MigrationError", "MigrationReport", "migrate_sqlite_to_postgres"]

# Tables in copy order, and what each holds (for the report).
_COPIED: Final[tuple[type[peewee.Model], ...]] = (
    schema.Meta, schema.Mailbox, schema.Capability, schema.Token,
    schema.Message, schema.Blob, schema.BlobChunk,
)
_BATCH: Final = 500


class MigrationError(StorageError):
    """The migration was refused or failed; the target is unchanged."""


@dataclasses.dataclass(frozen=True)
class MigrationReport:
    """Rows copied per table (equal on both sides), and the message bytes."""

    counts: dict[str, int]
    message_bytes: int
    next_message_id: int
    seconds: float

    def lines(self) -> list[str]:
        out = [f"{table}: {count}" for table, count in self.counts.items()]
        out.append(f"message bytes: {self.message_bytes}")
        return out


def _table(model: type[peewee.Model]) -> str:
    return str(model._meta.table_name)


def _columns(model: type[peewee.Model]) -> list[str]:
    return [field.column_name for field in model._meta.sorted_fields]


def _source_rows(db: peewee.SqliteDatabase, model: type[peewee.Model]
                 ) -> Iterator[list[tuple[Any, ...]]]:
    cols = ", ".join(f'"{c}"' for c in _columns(model))
    cursor = db.execute_sql(f'SELECT {cols} FROM "{_table(model)}"')  # type: ignore[no-untyped-call]  # noqa: S608 - names from the models
    while True:
        rows = cursor.fetchmany(_BATCH)
        if not rows:
            return
        yield [tuple(row) for row in rows]


def _count(db: peewee.Database, model: type[peewee.Model]) -> int:
    cursor = db.execute_sql(f'SELECT COUNT(*) FROM "{_table(model)}"')  # type: ignore[no-untyped-call]  # noqa: S608 - names from the models
    return int(cursor.fetchone()[0])


def _message_bytes(db: peewee.Database) -> int:
    cursor = db.execute_sql('SELECT COALESCE(SUM("size"), 0) FROM "message"')  # type: ignore[no-untyped-call]
    return int(cursor.fetchone()[0])


def _sqlite_next_id(db: peewee.SqliteDatabase) -> int:
    """One more than the highest message id SQLite ever handed out."""
    highest = 0
    cursor = db.execute_sql('SELECT COALESCE(MAX("id"), 0) FROM "message"')  # type: ignore[no-untyped-call]
    highest = int(cursor.fetchone()[0])
    if db.table_exists("sqlite_sequence"):
        cursor = db.execute_sql(  # type: ignore[no-untyped-call]
            "SELECT seq FROM sqlite_sequence WHERE name = 'message'")
        row = cursor.fetchone()
        if row is not None and row[0] is not None:
            highest = max(highest, int(row[0]))
    return highest + 1


def migrate_sqlite_to_postgres(source: str | Path, target: str, *,
                               progress: Callable[[str], None] | None = None,
                               now_ms: int | None = None) -> MigrationReport:
    """Copy the SQLite relay database ``source`` into the PostgreSQL database
    at URL ``target`` (which must hold no relay data). Returns the verified
    counts; raises :class:`MigrationError` or :class:`UsageError`."""
    started = time.monotonic()
    say = progress or (lambda _text: None)
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    if not is_postgres_url(target):
        raise UsageError("--to must be a postgresql://USER@HOST:PORT/DB URL.")
    path = Path(source)
    if not path.is_file():
        raise UsageError(f"The SQLite relay database {source} does not exist.")

    src = SqliteStore(path)
    src.open(now)   # brings an older database up to the current schema first
    try:
        src_counts = {_table(m): _count(src.db, m) for m in _COPIED}
        src_bytes = _message_bytes(src.db)
        next_id = _sqlite_next_id(src.db)
        dst = PostgresStore(target, origin="migrate")
        dst.open(now)   # creates the schema if the target is empty
        try:
            return _copy(src, dst, src_counts, src_bytes, next_id, say, started)
        finally:
            dst.close()
    finally:
        src.close()


def _copy(src: SqliteStore, dst: PostgresStore, src_counts: dict[str, int],
          src_bytes: int, next_id: int, say: Callable[[str], None],
          started: float) -> MigrationReport:
    db = dst.db
    try:
        with db.atomic():
            db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))  # type: ignore[no-untyped-call]
            busy = {_table(m): n for m in _COPIED if (n := _count(db, m))}
            if busy:
                listed = ", ".join(f"{t} ({n})" for t, n in busy.items())
                raise MigrationError(
                    f"The target database already holds relay data: {listed}. "
                    "Migrate into an empty database.")
            for model in _COPIED:
                fields = list(model._meta.sorted_fields)
                copied = 0
                for rows in _source_rows(src.db, model):
                    model.insert_many(rows, fields=fields).execute()
                    copied += len(rows)
                say(f"copied {_table(model)}: {copied}")
            # New ids continue after every id the source ever used.
            db.execute_sql(  # type: ignore[no-untyped-call]
                "SELECT setval(pg_get_serial_sequence('message', 'id'), %s, false)",
                (next_id,))
            dst_counts = {_table(m): _count(db, m) for m in _COPIED}
            dst_bytes = _message_bytes(db)
            if dst_counts != src_counts or dst_bytes != src_bytes:
                raise MigrationError(
                    f"The copy does not match the source (source {src_counts}, "
                    f"{src_bytes} message bytes; target {dst_counts}, {dst_bytes}); "
                    "nothing was written.")
    except peewee.DatabaseError as exc:
        raise MigrationError(f"The migration failed and was rolled back: "
                             f"{str(exc).strip()}.") from None
    return MigrationReport(counts=dst_counts, message_bytes=dst_bytes,
                           next_message_id=next_id, seconds=time.monotonic() - started)
