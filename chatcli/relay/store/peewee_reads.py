"""Reads that every peewee backend answers with the same queries.

The schema's models (:mod:`chatcli.relay.store.schema`) are shared by the
SQLite and PostgreSQL stores, and so are these read-only methods. Each backend
inherits them and wraps them as it wraps its own methods (SQLite binds its
database, PostgreSQL turns a lost connection into ``try_again``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from typing import Any

import peewee

from chatcli.relay.store import schema
from chatcli.relay.store.base import BlobInfo, PresenceRecord
from chatcli.relay.store.schema import Blob, BlobChunk, Mailbox

SHARED_READS = ("schema_version", "mailbox_auth_key", "mailbox_installation",
                "presence_records", "get_blob", "owner_blob_bytes", "read_blob")
"""The methods of :class:`PeeweeReads`, for backends that wrap them."""


def _rows(query: Any) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in query.tuples()]


class PeeweeReads:
    """Mixin for a :class:`~chatcli.relay.store.base.Store` on the shared schema."""

    db: peewee.Database
    in_chunk: int = 400
    """Values per ``IN (...)`` clause: the backend's bound-parameter budget."""

    def _in_chunks(self, items: Sequence[bytes]) -> Iterator[list[bytes]]:
        for i in range(0, len(items), self.in_chunk):
            yield list(items[i:i + self.in_chunk])

    def schema_version(self) -> int:
        return schema.current_version(self.db)

    def mailbox_auth_key(self, mailbox: bytes) -> bytes | None:
        row = Mailbox.select(Mailbox.auth_key).where(Mailbox.id == mailbox).first()
        return bytes(row.auth_key) if row else None

    def mailbox_installation(self, mailbox: bytes) -> bytes | None:
        row = Mailbox.select(Mailbox.installation).where(Mailbox.id == mailbox).first()
        return bytes(row.installation) if row and row.installation is not None else None

    def presence_records(self, mailboxes: Collection[bytes]) -> dict[bytes, PresenceRecord]:
        out: dict[bytes, PresenceRecord] = {}
        for part in self._in_chunks(list(set(mailboxes))):
            query = (Mailbox.select(Mailbox.id, Mailbox.hidden, Mailbox.last_seen)
                     .where(Mailbox.id.in_(part)))
            for mailbox, hidden, last_seen in _rows(query):
                out[bytes(mailbox)] = PresenceRecord(
                    bool(hidden), None if last_seen is None else int(last_seen))
        return out

    def get_blob(self, blob: bytes) -> BlobInfo | None:
        row = Blob.get_or_none(Blob.id == blob)
        if row is None:
            return None
        return BlobInfo(blob=bytes(row.id), owner=bytes(row.owner),
                        read_cap_hash=bytes(row.read_cap_hash), size=int(row.size),
                        complete=bool(row.complete), expires_at=int(row.expires_at))

    def owner_blob_bytes(self, owner: bytes) -> int:
        total = (Blob.select(peewee.fn.COALESCE(peewee.fn.SUM(Blob.size), 0))
                 .where(Blob.owner == owner).scalar())
        return int(total or 0)

    def read_blob(self, blob: bytes, offset: int, length: int) -> bytes:
        end = offset + length
        # The chunk that starts at or before ``offset``, and every later one before ``end``.
        first = (BlobChunk.select(peewee.fn.MAX(BlobChunk.offset))
                 .where((BlobChunk.blob == blob) & (BlobChunk.offset <= offset)).scalar())
        start = int(first) if first is not None else 0
        query = (BlobChunk.select(BlobChunk.offset, BlobChunk.data)
                 .where((BlobChunk.blob == blob) & (BlobChunk.offset >= start)
                        & (BlobChunk.offset < end))
                 .order_by(BlobChunk.offset))
        out = bytearray()
        for chunk_offset, data in _rows(query):
            chunk = bytes(data)
            lo = max(offset - int(chunk_offset), 0)
            hi = min(end - int(chunk_offset), len(chunk))
            if hi > lo:
                out += chunk[lo:hi]
        return bytes(out)
