"""Blob logic: opaque encrypted blobs (profiles, avatars, attachments) written
in chunks by their owner and read by anyone holding the read capability.

Rules: chunks arrive in order (``offset`` is the size written so far); the
first chunk fixes the read capability's hash and the expiry (``ttl``, capped
by the relay's maximum); ``final`` makes the blob readable and immutable; a
blob may not exceed the maximum blob size, nor an owner's blobs the per-owner
quota. An unknown blob, an unfinished or expired one and a wrong read
capability all answer ``blob_not_found``, so a reader learns nothing without
the capability. Synchronous with explicit ``now`` (milliseconds); the data
lives in the store (the ``blob_chunk`` table).
"""

from __future__ import annotations

import hmac

from chatcli.protocol import codes
from chatcli.relay.budget import StorageBudget
from chatcli.relay.errors import Refused
from chatcli.relay.mailbox import cap_hash, require_mailbox
from chatcli.relay.store.base import BlobInfo, Store

__all__ = ["Blobs"]

_NOT_FOUND = "No such blob, or the read capability does not open it."


class Blobs:
    def __init__(self, store: Store, *, max_blob_size: int, owner_quota: int,
                 max_ttl_ms: int, budget: StorageBudget | None = None) -> None:
        self.store = store
        self.budget = budget if budget is not None else StorageBudget(store, 0)
        self.max_blob_size = max_blob_size
        self.owner_quota = owner_quota
        self.max_ttl_ms = max_ttl_ms

    def put(self, owner: bytes, blob: bytes, offset: int, data: bytes, final: bool,
            read_cap_hash: bytes, ttl_seconds: int, now: int) -> None:
        """Write one chunk; raise :class:`Refused`."""
        with self.store.transaction():
            # Before reading usage: racing puts of one owner must not all pass the quota.
            require_mailbox(self.store, owner)
            info = self.store.get_blob(blob)
            if info is not None and info.expires_at <= now:
                self.store.delete_blob(blob)
                info = None
            size_before = 0 if info is None else info.size
            if info is None:
                if offset != 0:
                    raise Refused(codes.BAD_REQUEST,
                                  "A new blob starts at offset 0.")
            elif not hmac.compare_digest(info.owner, owner):
                raise Refused(codes.BAD_REQUEST, "This blob id is taken; choose another.")
            elif info.complete:
                raise Refused(codes.BAD_REQUEST, "The blob is finished and cannot change.")
            elif offset != info.size:
                raise Refused(codes.BAD_REQUEST,
                              f"The next chunk of this blob starts at offset {info.size}.")
            if size_before + len(data) > self.max_blob_size:
                raise Refused(codes.BLOB_TOO_LARGE,
                              f"Blobs are limited to {self.max_blob_size} bytes.")
            if self.store.owner_blob_bytes(owner) + len(data) > self.owner_quota:
                raise Refused(codes.QUOTA_EXCEEDED,
                              "The blob storage quota of this mailbox is used up.")
            room = self.budget.room(now)
            if room is not None and len(data) > room:
                raise Refused(codes.RELAY_FULL,
                              "The relay's storage is full; try again later or another relay.")
            if info is None:
                expires_at = now + min(ttl_seconds * 1000, self.max_ttl_ms)
                self.store.create_blob(BlobInfo(blob=blob, owner=owner,
                                                read_cap_hash=read_cap_hash, size=0,
                                                complete=False, expires_at=expires_at), now)
            self.store.append_blob_chunk(blob, offset, data, final)
        self.budget.charge(len(data))

    def get(self, blob: bytes, read_cap: bytes, offset: int, length: int,
            now: int) -> tuple[bytes, int]:
        """Read up to ``length`` bytes from ``offset``: (data, total size)."""
        info = self.store.get_blob(blob)
        if (info is None or not info.complete or info.expires_at <= now
                or not hmac.compare_digest(info.read_cap_hash, cap_hash(read_cap))):
            raise Refused(codes.BLOB_NOT_FOUND, _NOT_FOUND)
        if offset > info.size:
            raise Refused(codes.BAD_REQUEST, f"The blob has only {info.size} bytes.")
        return self.store.read_blob(blob, offset, min(length, info.size - offset)), info.size

    def delete(self, owner: bytes, blob: bytes) -> None:
        """Delete a blob the mailbox owns; raise ``blob_not_found`` otherwise."""
        with self.store.transaction():
            info = self.store.get_blob(blob)
            if info is None or not hmac.compare_digest(info.owner, owner):
                raise Refused(codes.BLOB_NOT_FOUND, "This mailbox owns no such blob.")
            self.store.delete_blob(blob)

    def expire(self, now: int) -> int:
        return self.store.expire_blobs(now)
