"""The relay's tables (peewee models) and their versioned migrations.

Models are bound to :data:`database_proxy`, which a store points at its
database. The schema version is the highest row of ``schema_migrations``;
:func:`migrate` applies the missing migrations in order, each in its own
transaction, so that a relay started on an older database upgrades it and a
relay refuses a database newer than itself. Every backend (SQLite now,
PostgreSQL later) runs the same migrations; DDL that differs by dialect goes
through peewee's field types (see :class:`MonotonicIdField`).

Times are integers in milliseconds since the epoch. Sizes are in bytes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable, Iterator
from typing import Any, Final

import peewee

from chatcli.errors import StorageError


class ThreadBoundProxy(peewee.DatabaseProxy):
    """A database proxy that resolves to the database bound to the current
    thread (:meth:`bind_thread`), else to the one last :meth:`initialize`-d.

    The models are module-level, but one process may run several relays (tests
    do), each with its own database and worker thread: a store's methods run
    inside :meth:`bound` (see ``sqlite.SqliteStore``). A store that does not
    bind uses the database last initialised."""

    __slots__ = ("_default", "_local")

    def __init__(self) -> None:
        object.__setattr__(self, "_local", threading.local())
        object.__setattr__(self, "_default", None)
        super().__init__()

    def __setattr__(self, attr: str, value: Any) -> None:
        object.__setattr__(self, attr, value)

    def initialize(self, obj: Any) -> None:
        object.__setattr__(self, "_default", obj)
        for callback in self._callbacks:
            callback(obj)

    @contextlib.contextmanager
    def bound(self, db: peewee.Database) -> Iterator[None]:
        """Resolve to ``db`` in this thread for the duration of the block."""
        previous = getattr(self._local, "db", None)
        self._local.db = db
        try:
            yield
        finally:
            self._local.db = previous

    @property
    def obj(self) -> Any:
        db = getattr(self._local, "db", None)
        return db if db is not None else self._default


database_proxy: Final = ThreadBoundProxy()


class MonotonicIdField(peewee.BigAutoField):
    """A 64-bit row id that is never reused, even after the highest row is
    deleted (SQLite needs ``AUTOINCREMENT`` for that; PostgreSQL's sequences
    never go back). Message ids must be stable for at-least-once delivery."""

    def ddl(self, ctx: Any) -> Any:
        node = super().ddl(ctx)
        db = self.model._meta.database
        db = getattr(db, "obj", db)
        if isinstance(db, peewee.SqliteDatabase):
            return peewee.NodeList((node, peewee.SQL("AUTOINCREMENT")))
        return node


class _Model(peewee.Model):
    class Meta:
        database = database_proxy
        legacy_table_names = False


class Meta(_Model):
    """Relay-wide values: the relay key's seed (``relay_key``)."""

    key = peewee.CharField(primary_key=True, max_length=64)
    value = peewee.BlobField()


class SchemaMigration(_Model):
    version = peewee.IntegerField(primary_key=True)
    description = peewee.TextField()
    applied_at = peewee.BigIntegerField()


class Mailbox(_Model):
    id = peewee.BlobField(primary_key=True)            # 16 random bytes, chosen by the relay
    auth_key = peewee.BlobField()                      # Ed25519 public key (32)
    created_at = peewee.BigIntegerField()
    msg_count = peewee.BigIntegerField(default=0)      # usage counters, kept in step
    msg_bytes = peewee.BigIntegerField(default=0)      # with the messages table
    hidden = peewee.BooleanField(default=False)        # presence hidden by the owner
    last_seen = peewee.BigIntegerField(null=True)      # last disconnect
    installation = peewee.BlobField(null=True)         # current client installation (16)


class Capability(_Model):
    mailbox = peewee.BlobField()
    cap_hash = peewee.BlobField()                      # SHA-256 of the capability
    revoked = peewee.BooleanField(default=False)
    created_at = peewee.BigIntegerField()
    uses_left = peewee.IntegerField(null=True)         # deposits left (one-shot); NULL: no limit
    used_by = peewee.BlobField(null=True)              # SHA-256 of the deposit that used it up

    class Meta:
        primary_key = peewee.CompositeKey("mailbox", "cap_hash")


class Message(_Model):
    id = MonotonicIdField()
    mailbox = peewee.BlobField()
    payload = peewee.BlobField()
    size = peewee.IntegerField()
    received_at = peewee.BigIntegerField(index=True)

    class Meta:
        indexes = ((("mailbox", "id"), False),)


class Blob(_Model):
    id = peewee.BlobField(primary_key=True)            # 16 bytes, chosen by the owner
    owner = peewee.BlobField(index=True)               # mailbox id
    read_cap_hash = peewee.BlobField()
    size = peewee.BigIntegerField(default=0)
    complete = peewee.BooleanField(default=False)
    created_at = peewee.BigIntegerField()
    expires_at = peewee.BigIntegerField(index=True)


class BlobChunk(_Model):
    blob = peewee.BlobField()
    offset = peewee.BigIntegerField()
    data = peewee.BlobField()

    class Meta:
        primary_key = peewee.CompositeKey("blob", "offset")


class Token(_Model):
    token_hash = peewee.BlobField(primary_key=True)    # SHA-256 of the registration token
    uses_left = peewee.IntegerField()
    expires_at = peewee.BigIntegerField(null=True)
    created_at = peewee.BigIntegerField()


ALL_MODELS: Final[list[type[peewee.Model]]] = [
    Meta, SchemaMigration, Mailbox, Capability, Message, Blob, BlobChunk, Token,
]


@dataclasses.dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[peewee.Database], None]


def _initial(db: peewee.Database) -> None:
    db.create_tables([m for m in ALL_MODELS if m is not SchemaMigration], safe=False)


def _mailbox_installation(db: peewee.Database) -> None:
    from playhouse.migrate import SchemaMigrator, migrate

    table = Mailbox._meta.table_name
    if "installation" not in {c.name for c in db.get_columns(table)}:
        migrate(SchemaMigrator.from_database(db).add_column(
            table, "installation", peewee.BlobField(null=True)))


def _capability_uses(db: peewee.Database) -> None:
    from playhouse.migrate import SchemaMigrator, migrate

    table = Capability._meta.table_name
    if "uses_left" not in {c.name for c in db.get_columns(table)}:
        migrate(SchemaMigrator.from_database(db).add_column(
            table, "uses_left", peewee.IntegerField(null=True)))


def _capability_used_by(db: peewee.Database) -> None:
    from playhouse.migrate import SchemaMigrator, migrate

    table = Capability._meta.table_name
    if "used_by" not in {c.name for c in db.get_columns(table)}:
        migrate(SchemaMigrator.from_database(db).add_column(
            table, "used_by", peewee.BlobField(null=True)))


MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(1, "mailboxes, capabilities, messages, blobs, tokens, meta", _initial),
    Migration(2, "the current client installation of each mailbox", _mailbox_installation),
    Migration(3, "one-shot capabilities (invites): deposits left", _capability_uses),
    Migration(4, "one-shot capabilities: the hash of the deposit that used each",
              _capability_used_by),
)
SCHEMA_VERSION: Final = MIGRATIONS[-1].version


def current_version(db: peewee.Database) -> int:
    """The schema version of ``db``: 0 for an empty database."""
    if not db.table_exists(SchemaMigration._meta.table_name):
        return 0
    row = SchemaMigration.select(peewee.fn.MAX(SchemaMigration.version)).scalar()
    return int(row or 0)


def migrate(db: peewee.Database, now_ms: int) -> int:
    """Bring ``db`` to :data:`SCHEMA_VERSION`; return the version it had."""
    SchemaMigration.create_table(safe=True)
    found = current_version(db)
    if found > SCHEMA_VERSION:
        raise StorageError(
            f"The relay database has schema version {found}, newer than this relay "
            f"understands ({SCHEMA_VERSION}); upgrade chatcli.")
    for migration in MIGRATIONS:
        if migration.version <= found:
            continue
        with db.atomic():
            migration.apply(db)
            SchemaMigration.create(version=migration.version,
                                   description=migration.description, applied_at=now_ms)
    return found
