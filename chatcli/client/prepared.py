"""Prepared statements: the hot queries of a send and a delivery, built once.

Building SQL is what peewee costs most on a hot path (half of a daemon's CPU
for a JSON-RPC ``send`` went to peewee's ``sql``/``__sql__``). A
:class:`Prepared` statement is a peewee query built once from the models (so
no table is copied into raw SQL), with :func:`param` slots where the values
go; it is compiled on first use and then re-run with new values.

Statements run on the database their model is bound to, like any peewee
query: inside ``store.read()``/``store.write()``. Selects give model
instances, each column converted by its field as peewee does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import peewee

from chatcli.client import models as db

M = TypeVar("M", bound=peewee.Model)


class _Slot:
    """Where a value goes in a prepared statement (a parameter by name)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


def param(name: str) -> peewee.Value:
    """A named slot: ``Model.field == param("x")``; peewee converts no value
    given for it (every value given is already what SQLite stores)."""
    return peewee.Value(_Slot(name), converter=False)


class Prepared(Generic[M]):
    """A query of ``model`` built by ``build`` once; run with the slots' values."""

    def __init__(self, model: type[M], build: Callable[[], peewee.Query]) -> None:
        self.model = model
        self._build = build
        self._sql: str | None = None
        self._plan: list[tuple[str | None, Any]] = []
        self._fields: list[tuple[str, Callable[[Any], Any]]] | None = None

    def _compiled(self, database: peewee.Database) -> str:
        if self._sql is None:
            context = database.get_sql_context()
            sql, params = context.sql(self._build()).query()  # type: ignore[no-untyped-call]
            # Per parameter: the name of its slot, or the constant built in.
            self._plan = [(p.name, None) if isinstance(p, _Slot) else (None, p) for p in params]
            self._sql = sql
        return self._sql

    def _params(self, values: dict[str, Any]) -> list[Any]:
        return [values[name] if name is not None else fixed for name, fixed in self._plan]

    @property
    def _database(self) -> peewee.Database:
        return self.model._meta.database  # type: ignore[no-any-return]

    def execute(self, **values: Any) -> Any:
        """Run it; the cursor (an INSERT's ``lastrowid``, an UPDATE's ``rowcount``)."""
        database = self._database
        sql = self._compiled(database)
        return database.execute_sql(sql, self._params(values))  # type: ignore[no-untyped-call]

    def rows(self, **values: Any) -> list[M]:
        """The selected rows as model instances (as peewee makes them: each
        column through its field's ``python_value``, nothing marked dirty)."""
        cursor = self.execute(**values)
        if self._fields is None:
            columns = self.model._meta.columns
            self._fields = [(columns[c[0]].name, columns[c[0]].python_value)
                            for c in cursor.description]
        fields = self._fields
        found = []
        for row in cursor:
            instance = self.model(__no_default__=1)
            instance.__data__.update({name: convert(value) for (name, convert), value
                                      in zip(fields, row, strict=True)})
            found.append(instance)
        return found

    def first(self, **values: Any) -> M | None:
        found = self.rows(**values)
        return found[0] if found else None

    def scalar(self, **values: Any) -> Any:
        """The first column of the first row (None when there is none)."""
        row = self.execute(**values).fetchone()
        return None if row is None else row[0]


# ------------------------------------------------------------------ account

ACCOUNT = Prepared(db.Account, lambda: db.Account.select().limit(1))

# ------------------------------------------------------------------ contacts

CONTACT_BY_NAME = Prepared(db.Contact, lambda: db.Contact.select().where(
    db.Contact.name == param("name")).limit(1))
CONTACT_BY_ID = Prepared(db.Contact, lambda: db.Contact.select().where(
    db.Contact.id == param("id")).limit(1))
CONTACT_BY_IDENTITY = Prepared(db.Contact, lambda: db.Contact.select().where(
    db.Contact.identity == param("identity")).limit(1))

# ------------------------------------------------------------------ sessions

SESSION_STATE = Prepared(db.Session, lambda: db.Session.select(db.Session.state_sealed).where(
    db.Session.contact == param("contact")).limit(1))
SESSION_UPDATE = Prepared(db.Session, lambda: db.Session.update(
    state_sealed=param("state"), updated_at=param("now")).where(
    db.Session.contact == param("contact")))

# ------------------------------------------------------------------ history

MESSAGE_INSERT = Prepared(db.Message, lambda: db.Message.insert(
    uuid=param("uuid"), contact=param("contact"), outgoing=param("outgoing"),
    text_sealed=param("text"), attachment_sealed=param("attachment"),
    reply_sealed=param("reply"),
    sent_at=param("sent_at"), received_at=param("received_at"), read_at=param("read_at")))
BLOBS_TO_DELETE = Prepared(db.BlobToDelete, lambda: db.BlobToDelete.select(db.BlobToDelete.blob))
MESSAGE_EXISTS = Prepared(db.Message, lambda: db.Message.select(db.Message.id).where(
    db.Message.uuid == param("uuid")).limit(1))
MESSAGE_STORED = Prepared(db.Message, lambda: db.Message.update(stored_at=param("now")).where(
    db.Message.uuid == param("uuid")))


def _receipt(*columns: peewee.Field) -> Prepared[db.Message]:
    """A receipt's mark on one own message of a contact, once (``columns[0]``
    not set yet)."""
    return Prepared(db.Message, lambda: db.Message.update(
        {column: param("at") for column in columns}).where(
        db.Message.contact == param("contact"), db.Message.outgoing == True,  # noqa: E712
        db.Message.uuid == param("uuid"), columns[0].is_null()))


MESSAGE_DELIVERED = _receipt(db.Message.delivered_at)
MESSAGE_READ = _receipt(db.Message.read_at, db.Message.delivered_at)

# ------------------------------------------------------------------ inbox

PROCESSED_PURGE = Prepared(db.Processed, lambda: db.Processed.delete().where(
    db.Processed.processed_at < param("before")))
PROCESSED_SEEN = Prepared(db.Processed, lambda: db.Processed.select(db.Processed.relay_id).where(
    db.Processed.relay_id == param("id")).limit(1))
PROCESSED_INSERT = Prepared(db.Processed, lambda: db.Processed.insert(
    relay_id=param("id"), processed_at=param("now")))

# ------------------------------------------------------------------ invites

INVITES_TO_RETIRE = Prepared(db.Invite, lambda: db.Invite.select().where(
    db.Invite.expires_at_s < param("now"), db.Invite.capability_sealed != b"",
    db.Invite.used_at.is_null() | (db.Invite.expires_at_s == 0)))
RETIRED_CAPABILITIES = Prepared(db.RetiredCapability, lambda: db.RetiredCapability.select(
    db.RetiredCapability.cap_hash))

# ------------------------------------------------------------------ outbox

OUTBOX_NEXT_ID = Prepared(db.Outbox, lambda: db.Outbox.select(peewee.fn.MAX(db.Outbox.id)))
OUTBOX_INSERT = Prepared(db.Outbox, lambda: db.Outbox.insert(
    id=param("id"), contact=param("contact"), kind=param("kind"),
    message_uuid=param("uuid"), created_at=param("now"), plaintext_sealed=param("plaintext")))
ENCRYPT_BATCH = 64
"""Queued plaintexts encrypted in one transaction at most (a long queue holds
the write lock in turns, not all at once)."""
OUTBOX_TO_ENCRYPT = Prepared(db.Outbox, lambda: (
    db.Outbox.select(db.Outbox).join(db.Contact)
    .where(db.Outbox.payload_sealed.is_null(), db.Contact.key_changed == False,  # noqa: E712
           db.Outbox.id > param("after"))
    .order_by(db.Outbox.id).limit(ENCRYPT_BATCH)))
OUTBOX_ENCRYPTED = Prepared(db.Outbox, lambda: db.Outbox.update(
    payload_sealed=param("payload"), plaintext_sealed=None).where(db.Outbox.id == param("id")))
OUTBOX_TO_DEPOSIT = Prepared(db.Outbox, lambda: (
    db.Outbox.select().where(db.Outbox.payload_sealed.is_null(False)).order_by(db.Outbox.id)))
OUTBOX_TO_DEPOSIT_FOR = Prepared(db.Outbox, lambda: (
    db.Outbox.select().where(db.Outbox.payload_sealed.is_null(False),
                             db.Outbox.contact == param("contact")).order_by(db.Outbox.id)))
OUTBOX_DELETE = Prepared(db.Outbox, lambda: db.Outbox.delete().where(
    db.Outbox.id == param("id")))
OUTBOX_COUNT = Prepared(db.Outbox, lambda: db.Outbox.select(peewee.fn.COUNT(db.Outbox.id)))
OUTBOX_HOLDS_MESSAGE = Prepared(db.Outbox, lambda: db.Outbox.select(db.Outbox.id).where(
    db.Outbox.message_uuid == param("uuid")).limit(1))
