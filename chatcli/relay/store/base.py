"""The relay's storage interface.

Everything the mailbox, presence and blob logic needs from a database, and
nothing about policy: the store persists and counts; quotas, capabilities,
tokens and expiry *decisions* live in :mod:`chatcli.relay.mailbox` and
:mod:`chatcli.relay.blobs`. Methods are synchronous and are called from one
worker at a time, a thread or the storage process (see
:mod:`chatcli.relay.storage` and :mod:`chatcli.relay.storage_process`);
several calls
that must be atomic run inside :meth:`Store.transaction`.

Byte strings: mailbox and blob ids are 16 bytes, capability and token hashes
32. Times are integer milliseconds since the epoch.

A backend subclasses :class:`Store` (``sqlite.SqliteStore`` now; the
PostgreSQL store of the scale-out work later) and is opened by
:func:`chatcli.relay.store.open_store` from a ``--db`` value. The relay test
suite runs against each backend through the ``store_factory`` fixture.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
from collections.abc import Collection, Mapping, Sequence
from typing import NamedTuple

__all__ = [
    "BlobInfo",
    "NewMessage",
    "PresenceRecord",
    "Store",
    "StoreStats",
    "StoredMessage",
    "Usage",
]


class NewMessage(NamedTuple):
    mailbox: bytes
    payload: bytes
    received_at: int


class StoredMessage(NamedTuple):
    id: int
    payload: bytes
    received_at: int


@dataclasses.dataclass(frozen=True, slots=True)
class Usage:
    messages: int
    bytes: int


@dataclasses.dataclass(frozen=True, slots=True)
class PresenceRecord:
    hidden: bool
    last_seen: int | None


@dataclasses.dataclass(frozen=True, slots=True)
class BlobInfo:
    blob: bytes
    owner: bytes
    read_cap_hash: bytes
    size: int
    complete: bool
    expires_at: int


@dataclasses.dataclass(frozen=True, slots=True)
class StoreStats:
    mailboxes: int
    messages: int
    message_bytes: int
    blobs: int
    blob_bytes: int
    tokens: int
    schema_version: int


class Store(abc.ABC):
    """A relay database. Not thread-safe: one caller at a time."""

    # ------------------------------------------------------------ lifecycle

    @abc.abstractmethod
    def open(self, now: int) -> None:
        """Connect, and create or migrate the schema."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the connection; the store may be opened again."""

    @abc.abstractmethod
    def schema_version(self) -> int:
        """The schema version of the open database."""

    @abc.abstractmethod
    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """A context manager making the calls inside it one atomic, durable
        transaction (nested uses join the outer one)."""

    def lock_writes(self) -> None:
        """Inside :meth:`transaction`: serialise this transaction with every
        other relay writer *before* it reads what its writes depend on (a
        quota's usage), so that the decision still holds at commit. A no-op
        where one process is the only writer (SQLite)."""
        return

    def checkpoint(self) -> None:
        """Make deleted data leave the database's logs (the SQLite WAL) now;
        a no-op where the server manages its own log (PostgreSQL)."""
        return

    @property
    def description(self) -> str:
        """Where the data lives, for logs (no passwords)."""
        return type(self).__name__

    # ------------------------------------------------------------ relay key

    @abc.abstractmethod
    def load_or_store_relay_seed(self, new_seed: bytes) -> bytes:
        """The relay key's 32-byte seed: the stored one, or ``new_seed`` after
        storing it if there was none (processes sharing a database agree)."""

    def get_meta(self, key: str) -> bytes | None:
        """A relay-wide value (``relay_key`` is reserved for the key's seed).

        The default works for every backend on the shared peewee schema
        (:mod:`chatcli.relay.store.schema`); override to add retries."""
        from chatcli.relay.store.schema import Meta

        row = Meta.get_or_none(Meta.key == key)
        return None if row is None else bytes(row.value)

    def put_meta(self, key: str, value: bytes) -> None:
        """Set a relay-wide value (not ``relay_key``); default as :meth:`get_meta`."""
        from chatcli.relay.store.schema import Meta

        if key == "relay_key":
            raise ValueError("the relay key is set only by load_or_store_relay_seed")
        with self.transaction():
            (Meta.insert(key=key, value=value)
             .on_conflict(conflict_target=[Meta.key], update={Meta.value: value}).execute())

    # ------------------------------------------------------------ tokens

    @abc.abstractmethod
    def add_token(self, token_hash: bytes, uses: int, expires_at: int | None,
                  now: int) -> None: ...

    @abc.abstractmethod
    def consume_token(self, token_hash: bytes, now: int) -> bool:
        """Use one use of a registration token; False if unknown, used up or expired."""

    # ------------------------------------------------------------ mailboxes

    @abc.abstractmethod
    def create_mailbox(self, mailbox: bytes, auth_key: bytes, now: int) -> None: ...

    @abc.abstractmethod
    def mailbox_auth_key(self, mailbox: bytes) -> bytes | None:
        """The auth key of a mailbox, or None if it does not exist."""

    @abc.abstractmethod
    def mailbox_installation(self, mailbox: bytes) -> bytes | None:
        """The client installation that owns the mailbox now (None: not known yet)."""

    @abc.abstractmethod
    def set_mailbox_installation(self, mailbox: bytes, installation: bytes) -> None: ...

    @abc.abstractmethod
    def delete_mailbox(self, mailbox: bytes) -> bool:
        """Delete a mailbox and everything tied to it: messages, capabilities,
        blobs it owns. False if it did not exist."""

    @abc.abstractmethod
    def mailbox_usage(self, mailboxes: Collection[bytes]) -> dict[bytes, Usage]:
        """Queued messages and bytes of each existing mailbox among ``mailboxes``."""

    # ------------------------------------------------------------ capabilities

    @abc.abstractmethod
    def add_caps(self, mailbox: bytes, cap_hashes: Collection[bytes], now: int,
                 one_shot: bool = False) -> None:
        """Allow these capability hashes (re-adding a revoked one allows it
        again); ``one_shot``: for one deposit each (re-adding one leaves it
        as it is: a used invite stays used)."""

    @abc.abstractmethod
    def revoke_caps(self, mailbox: bytes, cap_hashes: Collection[bytes], now: int) -> None:
        """Refuse these capability hashes from now on (known or not)."""

    @abc.abstractmethod
    def valid_caps(self, pairs: Collection[tuple[bytes, bytes]]) -> set[tuple[bytes, bytes]]:
        """The (mailbox, cap_hash) pairs among ``pairs`` that are allowed, not
        revoked and not used up."""

    @abc.abstractmethod
    def cap_uses(self, pairs: Collection[tuple[bytes, bytes]]
                 ) -> dict[tuple[bytes, bytes], int | None]:
        """For the pairs among ``pairs`` that are allowed and not revoked: the
        deposits each has left (0: a used one-shot capability), None for no limit."""

    @abc.abstractmethod
    def cap_used_by(self, pairs: Collection[tuple[bytes, bytes]]
                    ) -> dict[tuple[bytes, bytes], bytes | None]:
        """For the pairs among ``pairs`` that are allowed, not revoked and used
        up (one-shot, no deposit left): the payload hash :meth:`consume_caps`
        recorded with the last use, None where none was (used before schema
        version 4)."""

    @abc.abstractmethod
    def consume_caps(self, uses: Mapping[tuple[bytes, bytes], bytes]
                     ) -> set[tuple[bytes, bytes]]:
        """Inside the deposit's transaction: take one use of each limited pair
        of ``uses``, recording with it the value it maps to (the SHA-256 of the
        deposit's payload, see :meth:`cap_used_by`); return the pairs that
        still had one. Atomic against other transactions (another relay
        process on the same database): of two that race, one gets the use."""

    # ------------------------------------------------------------ messages

    @abc.abstractmethod
    def insert_messages(self, messages: Sequence[NewMessage]) -> list[int]:
        """Store messages (mailboxes must exist), updating the usage counters;
        return their ids, in order. Ids increase and are never reused."""

    @abc.abstractmethod
    def fetch_messages(self, mailbox: bytes, after_id: int, limit: int) -> list[StoredMessage]:
        """Queued messages of ``mailbox`` with id > ``after_id``, oldest first."""

    @abc.abstractmethod
    def delete_messages(self, mailbox: bytes, ids: Collection[int]) -> int:
        """Delete these messages of ``mailbox`` (others' ids are ignored); return how many."""

    def delete_messages_many(self, acks: Sequence[tuple[bytes, Collection[int]]]) -> int:
        """:meth:`delete_messages` for several (mailbox, ids) at once, as in a
        group commit; return how many were deleted. Backends override it to
        use fewer statements; this default is correct for any of them."""
        return sum(self.delete_messages(mailbox, ids) for mailbox, ids in acks)

    @abc.abstractmethod
    def expire_messages(self, received_before: int) -> int:
        """Delete messages received before the given time; return how many."""

    # ------------------------------------------------------------ presence

    @abc.abstractmethod
    def presence_records(self, mailboxes: Collection[bytes]) -> dict[bytes, PresenceRecord]: ...

    @abc.abstractmethod
    def set_presence_hidden(self, mailbox: bytes, hidden: bool) -> None: ...

    @abc.abstractmethod
    def set_last_seen(self, mailbox: bytes, when: int) -> None: ...

    # ------------------------------------------------------------ blobs

    @abc.abstractmethod
    def get_blob(self, blob: bytes) -> BlobInfo | None: ...

    @abc.abstractmethod
    def create_blob(self, info: BlobInfo, now: int) -> None: ...

    @abc.abstractmethod
    def append_blob_chunk(self, blob: bytes, offset: int, data: bytes, complete: bool) -> None:
        """Add a chunk at ``offset`` (== the blob's size so far) and update size
        and completeness."""

    @abc.abstractmethod
    def owner_blob_bytes(self, owner: bytes) -> int:
        """Total size of the blobs a mailbox owns (finished or not)."""

    @abc.abstractmethod
    def read_blob(self, blob: bytes, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes of a blob from ``offset``."""

    @abc.abstractmethod
    def delete_blob(self, blob: bytes) -> bool: ...

    @abc.abstractmethod
    def expire_blobs(self, now: int) -> int:
        """Delete blobs whose expiry has passed; return how many."""

    # ------------------------------------------------------------ stats

    @abc.abstractmethod
    def stats(self) -> StoreStats: ...

