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

import base64
import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import peewee

from chatcli.client import models, prepared
from chatcli.client.groups.tables import SEALED_GROUP_COLUMNS
from chatcli.crypto.errors import CorruptData
from chatcli.errors import StorageError

SCHEMA_VERSION = 11
SEALED_SCHEMA = 2  # from this version on, sealed values are bound to their rows
BUSY_TIMEOUT_MS = 10_000
SCRUB_DEFER_LIMIT = 1.0
"""Seconds a truncating WAL checkpoint may wait inside :meth:`Store.deferred_scrub`."""


def now_ms() -> int:
    return int(time.time() * 1000)


def _migrate_to_1(db: peewee.Database) -> None:
    db.create_tables(models.ALL_MODELS)


def _migrate_to_3(db: peewee.Database) -> None:
    # Databases made before version 3 lack the column (create_tables has it).
    # Idempotent: the reseal step (version 2) runs it first, as it reads every
    # column of today's models.
    if "contact_cap_hash" not in {c.name for c in db.get_columns("invite")}:
        db.execute_sql(  # type: ignore[no-untyped-call]
            "ALTER TABLE invite ADD COLUMN contact_cap_hash BLOB")


def _migrate_to_5(db: peewee.Database) -> None:
    db.create_tables([models.RetiredCapability])  # safe: new databases have it


def _migrate_to_6(db: peewee.Database) -> None:
    db.create_tables([models.SavedAttachment])  # safe: new databases have it


_MESSAGE_COLUMNS_7 = (("kind", "TEXT"), ("reply_sealed", "BLOB"), ("edited_at", "INTEGER"),
                      ("deleted_at", "INTEGER"))


def _migrate_to_7(db: peewee.Database) -> None:
    # Idempotent like _migrate_to_3: the reseal step (version 2) runs it first.
    present = {c.name for c in db.get_columns("message")}
    for name, kind in _MESSAGE_COLUMNS_7:
        if name not in present:
            db.execute_sql(  # type: ignore[no-untyped-call]
                f"ALTER TABLE message ADD COLUMN {name} {kind}")
    db.create_tables([models.MessageEdit, models.MessageReaction, models.PendingAction,
                      models.BlobToDelete])


def _rebuild(db: peewee.Database, model: type[models.BaseModel], columns: str,
             select: str) -> None:
    """Re-create ``model``'s table in today's shape (SQLite cannot drop a
    UNIQUE constraint or a NOT NULL in place), copying its rows."""
    table = model._meta.table_name
    run = db.execute_sql
    run(f"ALTER TABLE {table} RENAME TO {table}_old")  # type: ignore[no-untyped-call]
    for (index,) in run(  # type: ignore[no-untyped-call]
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
            "AND name NOT LIKE 'sqlite_autoindex%'", (f"{table}_old",)).fetchall():
        run(f'DROP INDEX "{index}"')  # type: ignore[no-untyped-call]
    db.create_tables([model])
    # Table and column names are this module's constants, never input.
    run(f"INSERT INTO {table} ({columns}) SELECT {select} FROM {table}_old")  # type: ignore[no-untyped-call]  # noqa: S608
    run(f"DROP TABLE {table}_old")  # type: ignore[no-untyped-call]


def _migrate_to_11(db: peewee.Database) -> None:
    """Devices: an existing identity becomes one device (a random id) and its
    contacts legacy single devices; sessions and outbox rows are keyed by
    device. Idempotent (a new database has today's shape)."""
    def columns(table: str) -> set[str]:
        return {c.name for c in db.get_columns(table)}

    for name in ("device_id BLOB", "device_name TEXT", "device_list BLOB",
                 "self_cap_sealed BLOB"):
        if name.split()[0] not in columns("account"):
            db.execute_sql(f"ALTER TABLE account ADD COLUMN {name}")  # type: ignore[no-untyped-call]
    if "device_list" not in columns("contact"):
        db.execute_sql("ALTER TABLE contact ADD COLUMN device_list BLOB")  # type: ignore[no-untyped-call]
    if "device" not in columns("session"):
        _rebuild(db, models.Session, "id, contact_id, device, state_sealed, updated_at",
                 "id, contact_id, x'', state_sealed, updated_at")
    if "device" not in columns("outbox"):
        kept = ("id, contact_id, kind, message_uuid, plaintext_sealed, payload_sealed, "
                "created_at, attempts, next_attempt_at, last_error")
        _rebuild(db, models.Outbox, kept + ", device", kept + ", x''")
    db.execute_sql(  # type: ignore[no-untyped-call]
        "UPDATE account SET device_id = randomblob(16) WHERE device_id IS NULL")


# version reached -> migration from the previous version. Append only. The
# migration to SEALED_SCHEMA reseals every value and needs the local key: it is
# :func:`_reseal_rows`, run by :meth:`Store._migrate` once a sealer is at hand.
MIGRATIONS: dict[int, Callable[[peewee.Database], None]] = {
    1: _migrate_to_1, 3: _migrate_to_3, 5: _migrate_to_5, 6: _migrate_to_6,
    7: _migrate_to_7, 11: _migrate_to_11}
GROUP_SEALED_SCHEMA = 4  # from this version on, the group tables' values are bound too


def _reseal_group_rows(db: peewee.Database, sealer: Sealer) -> None:
    """Reseal the group tables' values of the first format with the binding to
    their rows (the migration to version 4). Idempotent: a value that no longer
    opens in the first format was resealed already and is left alone."""
    for column, model, field, row_of in SEALED_GROUP_COLUMNS:
        if not db.table_exists(model._meta.table_name):
            continue
        with db.bind_ctx([model], bind_refs=False, bind_backrefs=False):
            for row in model.select():
                data = getattr(row, field)
                if not data:
                    continue
                try:
                    value = sealer.open_v1(bytes(data), column)
                except CorruptData:
                    continue
                model.update({field: sealer.seal(value, column, row_of(row))}).where(
                    model._meta.primary_key == row.get_id()).execute()  # type: ignore[no-untyped-call]


def _account_row(row: models.Account) -> object:
    return row.id


def _contact_row(row: models.Contact) -> object:
    return row.id


def _session_row(row: models.Session) -> object:
    return session_row(row.__data__["contact"], bytes(row.device))


def session_row(contact_id: int | None, device: bytes) -> str:
    """The row identity a session's state is bound to: the contact's id for its
    legacy device (as before devices), else the contact (or "self") and device."""
    if contact_id is not None and device == models.LEGACY_DEVICE:
        return str(contact_id)
    return f"{'self' if contact_id is None else contact_id}:{device.hex()}"


def _invite_row(row: models.Invite) -> object:
    return invite_row(row.invite_id)


def _message_row(row: models.Message) -> object:
    return row.uuid


def _outbox_row(row: models.Outbox) -> object:
    return row.id


def invite_row(invite_id: bytes) -> str:
    """The row identity an invite's sealed values are bound to."""
    return invite_id.hex()


# Every sealed column of the tables in chatcli.client.models: its context name,
# the model, the field, and the row identity it is bound to (never changes).
SEALED_COLUMNS: list[tuple[str, type[models.BaseModel], str, Callable[[Any], object]]] = [
    ("account.restore_prekey", models.Account, "restore_prekey_sealed", _account_row),
    ("account.profile_key", models.Account, "profile_key_sealed", _account_row),
    ("account.profile", models.Account, "profile_sealed", _account_row),
    ("account.profile_ref", models.Account, "profile_ref_sealed", _account_row),
    ("account.self_cap", models.Account, "self_cap_sealed", _account_row),
    ("contact.deposit_cap", models.Contact, "deposit_cap_sealed", _contact_row),
    ("contact.issued_cap", models.Contact, "issued_cap_sealed", _contact_row),
    ("contact.pending", models.Contact, "pending_sealed", _contact_row),
    ("contact.profile_key", models.Contact, "profile_key_sealed", _contact_row),
    ("contact.profile_ref", models.Contact, "profile_ref_sealed", _contact_row),
    ("contact.profile", models.Contact, "profile_sealed", _contact_row),
    ("session.state", models.Session, "state_sealed", _session_row),
    ("invite.prekey", models.Invite, "prekey_sealed", _invite_row),
    ("invite.capability", models.Invite, "capability_sealed", _invite_row),
    ("message.text", models.Message, "text_sealed", _message_row),
    ("message.attachment", models.Message, "attachment_sealed", _message_row),
    ("outbox.plaintext", models.Outbox, "plaintext_sealed", _outbox_row),
    ("outbox.payload", models.Outbox, "payload_sealed", _outbox_row),
]


def _v1_column(column: str, row: models.BaseModel) -> str:
    # Incoming attachment references were sealed under their own column name.
    if column == "message.attachment" and not row.outgoing:  # type: ignore[attr-defined]
        return "message.attachment_ref"
    return column


def _reseal_rows(sealer: Sealer) -> None:
    """Reseal every value of the first format (bound to its column only) with
    the binding to its row and a version; inside the migration's transaction."""
    for column, model, field, row_of in SEALED_COLUMNS:
        for row in model.select():
            data = getattr(row, field)
            if not data:  # NULL, or a destroyed one-time prekey (b"")
                continue
            name = _v1_column(column, row)
            value = sealer.open_v1(bytes(data), name)
            model.update({field: sealer.seal(value, name, row_of(row))}).where(
                model._meta.primary_key == row.get_id()).execute()  # type: ignore[no-untyped-call]


def _live_rows(db: peewee.Database) -> Callable[[str], set[str]]:
    """The identities of the rows that exist for a versioned ``column`` of ``db``."""
    def live(column: str) -> set[str]:
        for name, model, _field, row_of in SEALED_COLUMNS:
            if name == column:
                return {str(row_of(row)) for row in model.select()}
        for name, model, _field, row_of in SEALED_GROUP_COLUMNS:
            if name == column:
                if not db.table_exists(model._meta.table_name):
                    return set()
                with db.bind_ctx([model], bind_refs=False, bind_backrefs=False):
                    return {str(row_of(row)) for row in model.select()}
        return set()
    return live


@contextlib.contextmanager
def bind_models(database: peewee.Database, bound: list[type[models.BaseModel]]
                ) -> Iterator[None]:
    """Bind ``bound`` to ``database`` for a block, and back to what they were
    bound to afterwards: ``Database.bind_ctx`` without its per-model graph
    walks and sets, and nothing at all inside a block that bound them already
    (every store transaction binds, and most nest: they run on every query)."""
    if all(model._meta.database is database for model in bound):
        yield
        return
    before = [model._meta.database for model in bound]
    for model in bound:
        model._meta.set_database(database)
    try:
        yield
    finally:
        # Models that were bound to another store get it back (a block of one
        # store inside another's); unbound ones stay bound to this store, so
        # the next block of the same store (every transaction of a process
        # with one store, such as the daemon) binds nothing.
        for model, previous in zip(bound, before, strict=True):
            if not isinstance(previous, peewee.DatabaseProxy):
                model._meta.set_database(previous)


class SealingTampered(CorruptData):
    """A sealed value was moved from another row or rolled back to an older version."""


# Columns written once when their row is created and never rewritten: bound to
# their row only (there is no older version to roll back to), and kept out of
# the manifest so that it does not grow with the message history.
WRITE_ONCE = frozenset({"message.text", "message.attachment", "message.attachment_ref",
                        "message.attachment_path", "group.attachment", "group.attachment_path",
                        "invite.capability", "own_prekey.private", "group.op",
                        "group.message_text", "message.reply", "message.edit_text",
                        "message.reaction", "pending.action"})
MANIFEST_KEY = "seal_manifest"
PRUNE_MIN = 256  # manifest entries before a long-running process prunes it
_V1 = b"chatcli/local/v1/"
_V2 = b"chatcli/local/v2/"
_MANIFEST_SELECT = "SELECT value FROM meta_entry WHERE key = ?"
_MANIFEST_WRITE = "INSERT OR REPLACE INTO meta_entry (key, value) VALUES (?, ?)"


class _Manifest(msgspec.Struct, array_like=True):
    """The newest version of every sealed value (sealed itself, in ``meta_entry``).

    ``counter`` counts every write of a versioned value in this database and
    never goes back, so a version is never issued twice, not even to a row
    that reuses a deleted row's id."""

    counter: int
    versions: dict[str, int]


class Sealer:
    """Seals and opens the sensitive columns with the local storage key.

    Every value is bound to its column, its row (an identity that never
    changes: the primary key, a contact's id for its session, an invite id, a
    message uuid) and, for values that are rewritten, a version: the value of
    a database-wide write counter when it was sealed. The newest version of
    each (column, row) is kept in one sealed manifest, so a value copied from
    another row, or an older value of the same row put back, does not open.
    Putting back the whole database (manifest included) is not detected; see
    docs/threat-model.md.

    The manifest lives in the database this sealer is attached to (by
    :class:`Store`), and is rewritten in the write transaction that seals."""

    def __init__(self, key: bytes) -> None:
        from chatcli.crypto.localseal import LocalSealer

        self._sealer = LocalSealer(key)
        self._db: peewee.Database | None = None
        self._cache: tuple[str, _Manifest] | None = None
        self._prune_at = PRUNE_MIN

    def attach(self, db: peewee.Database) -> None:
        self._db = db

    # ------------------------------------------------------------ manifest

    def _read_manifest(self) -> tuple[str | None, _Manifest]:
        assert self._db is not None, "the sealer is not attached to a database"
        row = self._db.execute_sql(  # type: ignore[no-untyped-call]
            _MANIFEST_SELECT, (MANIFEST_KEY,)).fetchone()
        if row is None:
            return None, _Manifest(counter=0, versions={})
        text: str = row[0]
        if self._cache is not None and self._cache[0] == text:
            return text, self._cache[1]
        try:
            plain = self._sealer.open(base64.b64decode(text, validate=True),
                                      context=_V2 + b"manifest")
            manifest = msgspec.msgpack.decode(plain, type=_Manifest)
        except (ValueError, msgspec.DecodeError, msgspec.ValidationError):
            raise CorruptData("The local database's seal manifest is damaged.") from None
        self._cache = (text, manifest)
        return text, manifest

    def _write_manifest(self, manifest: _Manifest) -> None:
        assert self._db is not None
        text = base64.b64encode(self._sealer.seal(msgspec.msgpack.encode(manifest),
                                                  context=_V2 + b"manifest")).decode()
        self._db.execute_sql(  # type: ignore[no-untyped-call]
            _MANIFEST_WRITE, (MANIFEST_KEY, text))
        self._cache = (text, manifest)

    def prune(self, live: Callable[[str], set[str]]) -> None:
        """Drop the versions of rows that no longer exist (``live(column)`` gives
        the row identities present); inside a write transaction."""
        _text, manifest = self._read_manifest()
        columns = {key.split("\x00", 1)[0] for key in manifest.versions}
        rows = {column: live(column) for column in columns}
        kept = {key: version for key, version in manifest.versions.items()
                if key.split("\x00", 1)[1] in rows[key.split("\x00", 1)[0]]}
        if len(kept) != len(manifest.versions):
            self._write_manifest(_Manifest(counter=manifest.counter, versions=kept))
        self._prune_at = max(PRUNE_MIN, 2 * len(kept))

    def needs_prune(self) -> bool:
        """Whether the manifest last seen grew enough (outbox rows come and go)
        to be worth pruning in a long-running process."""
        return self._cache is not None and len(self._cache[1].versions) > self._prune_at

    # ------------------------------------------------------------ values

    @staticmethod
    def _context(column: str, row: str, version: int) -> bytes:
        return (_V2 + column.encode() + b"\x00" + row.encode() + b"\x00"
                + version.to_bytes(8, "big"))

    def seal(self, data: bytes, column: str, row: object) -> bytes:
        """Seal ``data`` for ``column`` of ``row``; a rewritable column gets a new
        version, recorded in the manifest (call inside a write transaction)."""
        row_id = str(row)
        if column in WRITE_ONCE:
            return self._sealer.seal(data, context=self._context(column, row_id, 0))
        assert self._db is not None and self._db.in_transaction(), "seal outside a transaction"
        _text, manifest = self._read_manifest()
        version = manifest.counter + 1
        versions = dict(manifest.versions)
        versions[column + "\x00" + row_id] = version
        self._write_manifest(_Manifest(counter=version, versions=versions))
        return self._sealer.seal(data, context=self._context(column, row_id, version))

    def open(self, data: bytes, column: str, row: object) -> bytes:
        """Open the value of ``column`` in ``row``; raises :class:`SealingTampered`
        when it belongs to another row or is not the newest version."""
        row_id = str(row)
        if column in WRITE_ONCE:
            version = 0
        else:
            _text, manifest = self._read_manifest()
            found = manifest.versions.get(column + "\x00" + row_id)
            if found is None:
                raise SealingTampered(self._tampered(column))
            version = found
        try:
            return self._sealer.open(data, context=self._context(column, row_id, version))
        except CorruptData:
            raise SealingTampered(self._tampered(column)) from None

    @staticmethod
    def _tampered(column: str) -> str:
        return (f"The local database was tampered with or damaged: a sealed {column} value "
                "does not belong to its row or is an older version. Restore the database "
                "from a backup (`chatcli keys import`).")

    def open_v1(self, data: bytes, column: str) -> bytes:
        """Open a value sealed by the first format (bound to its column only)."""
        return self._sealer.open(data, context=_V1 + column.encode())

    def seal_v1(self, data: bytes, column: str) -> bytes:
        """Seal with the column-only binding; for tests of the migration."""
        return self._sealer.seal(data, context=_V1 + column.encode())

    def seal_text(self, text: str, column: str, row: object) -> bytes:
        return self.seal(text.encode("utf-8"), column, row)

    def open_text(self, data: bytes, column: str, row: object) -> str:
        return self.open(data, column, row).decode("utf-8")


class Store:
    """One identity's database plus its sealer."""

    def __init__(self, path: Path, sealer: Sealer | None) -> None:
        self.path = path
        self._sealer = sealer
        self._defer_depth = 0
        self._scrub_due_since: float | None = None
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
        if sealer is not None:
            sealer.attach(store.db)
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
            # Without the key (a locked store, e.g. for shell completion), the
            # values cannot be resealed: stop before that step, keep the version.
            target = SCHEMA_VERSION if self._sealer is not None else SEALED_SCHEMA - 1
            for step in range(version + 1, target + 1):
                if step == SEALED_SCHEMA:
                    assert self._sealer is not None
                    _migrate_to_3(self.db)
                    _migrate_to_7(self.db)
                    _reseal_rows(self._sealer)
                elif step == GROUP_SEALED_SCHEMA:
                    assert self._sealer is not None
                    _reseal_group_rows(self.db, self._sealer)
                elif step in MIGRATIONS:  # versions 7-10 belong to other branches
                    MIGRATIONS[step](self.db)
            if target > version:
                models.MetaEntry.replace(  # type: ignore[no-untyped-call]
                    key="schema_version", value=str(target)).execute()
            if self._sealer is not None and version >= SEALED_SCHEMA:
                self._sealer.prune(_live_rows(self.db))

    def next_id(self, model: type[models.BaseModel]) -> int:
        """The id the next row of ``model`` gets, so its sealed values can be
        bound to it before it is inserted (inside a write transaction)."""
        top = model.select(peewee.fn.MAX(model._meta.primary_key)).scalar()
        return int(top or 0) + 1

    @contextlib.contextmanager
    def bound(self) -> Iterator[None]:
        """Bind the models to this database for a synchronous block (reads)."""
        with bind_models(self.db, models.ALL_MODELS):
            yield

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        """A ``BEGIN IMMEDIATE`` transaction with the models bound (no ``await`` inside)."""
        try:
            with self.bound(), self.db.atomic("IMMEDIATE"):
                yield
            if not self.db.in_transaction():
                if self._sealer is not None and self._sealer.needs_prune():
                    # Separately, once the rows sealed for are all inserted.
                    with self.bound(), self.db.atomic("IMMEDIATE"):
                        self._sealer.prune(_live_rows(self.db))
                self._scrub_after_write()
        except peewee.OperationalError as exc:
            if "locked" in str(exc):
                raise StorageError(
                    "The local database stayed busy for too long; another chatcli "
                    "command is holding it."
                ) from None
            raise

    def _scrub_after_write(self) -> None:
        now = time.monotonic()
        if self._defer_depth:
            if self._scrub_due_since is None:
                self._scrub_due_since = now
            if now - self._scrub_due_since < SCRUB_DEFER_LIMIT:
                return
        self._scrub_due_since = None
        self.scrub_wal()

    @contextlib.contextmanager
    def deferred_scrub(self, *, hand_off: bool = False) -> Iterator[None]:
        """Write transactions in this block leave the truncating WAL checkpoint
        to its end: one checkpoint (and its fsync) runs when the last such
        block ends, instead of one after each transaction. Blocks may overlap
        (the daemon serves requests concurrently); once a checkpoint has
        waited SCRUB_DEFER_LIMIT seconds, the next write or block end runs it.
        With ``hand_off``, the last block's checkpoint is left to the caller,
        who runs :meth:`scrub_if_due` right after answering its request."""
        self._defer_depth += 1
        try:
            yield
        finally:
            self._defer_depth -= 1
            due = self._scrub_due_since
            if due is not None and (time.monotonic() - due >= SCRUB_DEFER_LIMIT
                                    or (self._defer_depth == 0 and not hand_off)):
                self._scrub_due_since = None
                self.scrub_wal()

    def scrub_if_due(self) -> None:
        """The checkpoint a ``deferred_scrub(hand_off=True)`` block left, unless
        another block is still open (its end runs it)."""
        if self._scrub_due_since is not None and self._defer_depth == 0:
            self._scrub_due_since = None
            self.scrub_wal()

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        """A read transaction (a consistent snapshot) with the models bound;
        inside a transaction already, that one (a savepoint would add two
        statements and nothing to read)."""
        if self.db.in_transaction():
            with self.bound():
                yield
            return
        with self.bound(), self.db.atomic("DEFERRED"):
            yield

    def account(self) -> models.Account:
        row = prepared.ACCOUNT.first()
        if row is None:
            raise StorageError("The local database has no account; run `chatcli init`.")
        return row
