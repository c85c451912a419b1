"""Blob logic with explicit time."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
from typing import Any

import pytest

from chatcli.protocol import codes
from chatcli.relay.blobs import Blobs
from chatcli.relay.errors import Refused
from chatcli.relay.mailbox import cap_hash
from chatcli.relay.store.base import Store

T0 = 1_800_000_000_000
OWNER = os.urandom(16)


def blobs(store: Store, **kwargs: int) -> Blobs:
    store.create_mailbox(OWNER, os.urandom(32), T0)
    settings = {"max_blob_size": 1000, "owner_quota": 1500, "max_ttl_ms": 86_400_000}
    settings.update(kwargs)
    return Blobs(store, **settings)


def refused(call: object) -> str:
    with pytest.raises(Refused) as info:
        call()  # type: ignore[operator]
    return info.value.code


def test_chunks_in_order_then_readable(store: Store) -> None:
    b = blobs(store)
    blob, cap = os.urandom(16), os.urandom(32)
    b.put(OWNER, blob, 0, b"hello ", False, cap_hash(cap), 3600, T0)
    assert refused(lambda: b.get(blob, cap, 0, 10, T0)) == codes.BLOB_NOT_FOUND  # unfinished
    assert refused(lambda: b.put(OWNER, blob, 0, b"x", False, cap_hash(cap), 3600, T0)) == \
        codes.BAD_REQUEST   # wrong offset
    b.put(OWNER, blob, 6, b"world", True, cap_hash(cap), 3600, T0)
    assert b.get(blob, cap, 0, 100, T0) == (b"hello world", 11)
    assert b.get(blob, cap, 3, 5, T0) == (b"lo wo", 11)
    assert b.get(blob, cap, 11, 5, T0) == (b"", 11)
    assert refused(lambda: b.get(blob, cap, 12, 5, T0)) == codes.BAD_REQUEST
    assert refused(lambda: b.put(OWNER, blob, 11, b"!", True, cap_hash(cap), 3600, T0)) == \
        codes.BAD_REQUEST   # finished blobs are immutable


def test_wrong_capability_looks_like_no_blob(store: Store) -> None:
    b = blobs(store)
    blob, cap = os.urandom(16), os.urandom(32)
    b.put(OWNER, blob, 0, b"data", True, cap_hash(cap), 3600, T0)
    assert refused(lambda: b.get(blob, os.urandom(32), 0, 4, T0)) == codes.BLOB_NOT_FOUND
    assert refused(lambda: b.get(os.urandom(16), cap, 0, 4, T0)) == codes.BLOB_NOT_FOUND


def test_size_and_quota_limits(store: Store) -> None:
    b = blobs(store)
    cap = cap_hash(os.urandom(32))
    assert refused(lambda: b.put(OWNER, os.urandom(16), 0, b"x" * 1001, True, cap, 60, T0)) \
        == codes.BLOB_TOO_LARGE
    b.put(OWNER, os.urandom(16), 0, b"x" * 1000, True, cap, 60, T0)
    assert refused(lambda: b.put(OWNER, os.urandom(16), 0, b"x" * 600, True, cap, 60, T0)) \
        == codes.QUOTA_EXCEEDED
    b.put(OWNER, os.urandom(16), 0, b"x" * 500, True, cap, 60, T0)


def test_others_cannot_write_or_delete(store: Store) -> None:
    b = blobs(store)
    blob, cap = os.urandom(16), cap_hash(os.urandom(32))
    b.put(OWNER, blob, 0, b"a", False, cap, 60, T0)
    intruder = os.urandom(16)
    store.create_mailbox(intruder, os.urandom(32), T0)
    assert refused(lambda: b.put(intruder, blob, 1, b"b", True, cap, 60, T0)) == codes.BAD_REQUEST
    assert refused(lambda: b.delete(intruder, blob)) == codes.BLOB_NOT_FOUND
    b.delete(OWNER, blob)
    assert store.get_blob(blob) is None


def test_expiry_and_ttl_cap(store: Store) -> None:
    b = blobs(store, max_ttl_ms=120_000)
    blob, cap = os.urandom(16), os.urandom(32)
    b.put(OWNER, blob, 0, b"a", True, cap_hash(cap), 366 * 86400, T0)
    info = store.get_blob(blob)
    assert info is not None and info.expires_at == T0 + 120_000
    assert b.get(blob, cap, 0, 1, T0 + 119_999) == (b"a", 1)
    assert refused(lambda: b.get(blob, cap, 0, 1, T0 + 120_000)) == codes.BLOB_NOT_FOUND
    assert b.expire(T0 + 120_000) == 1
    # An expired id can be reused.
    b.put(OWNER, blob, 0, b"b", True, cap_hash(cap), 60, T0 + 200_000)


def test_many_chunks_read_across_boundaries(store: Store) -> None:
    b = blobs(store, max_blob_size=10_000, owner_quota=10_000)
    blob, cap = os.urandom(16), os.urandom(32)
    data = os.urandom(5000)
    for offset in range(0, 5000, 700):
        chunk = data[offset:offset + 700]
        b.put(OWNER, blob, offset, chunk, offset + 700 >= 5000, cap_hash(cap), 60, T0)
    assert b.get(blob, cap, 0, 5000, T0)[0] == data
    assert b.get(blob, cap, 650, 1500, T0)[0] == data[650:2150]



def _racing_put(url: str, barrier: Any, results: Any) -> None:
    """One relay process putting a 10-byte blob of OWNER (quota 10); it
    pauses after reading the owner's usage until the other has read it too
    (or 1 s passes)."""
    from chatcli.relay.store.postgres import PostgresStore

    store = PostgresStore(url)
    store.open(T0)
    read = store.owner_blob_bytes

    def owner_blob_bytes(owner: bytes) -> int:
        used = read(owner)
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(1.0)
        return used

    store.owner_blob_bytes = owner_blob_bytes  # type: ignore[method-assign]
    b = Blobs(store, max_blob_size=100, owner_quota=10, max_ttl_ms=86_400_000)
    try:
        b.put(OWNER, os.urandom(16), 0, b"x" * 10, True, cap_hash(b"c" * 32), 60, T0)
        results.put("ok")
    except Refused as exc:
        results.put(exc.code)
    finally:
        store.close()


def test_racing_puts_of_one_owner_respect_the_quota_on_postgres(
        pg_database: tuple[str, str]) -> None:
    """Two relay processes putting blobs of one owner at once: the quota
    holds. Without the writers' lock taken before usage is read, both read 0
    and both are accepted."""
    from chatcli.relay.store.postgres import PostgresStore

    url = pg_database[1]
    store = PostgresStore(url)
    store.open(T0)
    try:
        store.create_mailbox(OWNER, os.urandom(32), T0)
        ctx = multiprocessing.get_context("fork")
        barrier, results = ctx.Barrier(2), ctx.Queue()
        procs = [ctx.Process(target=_racing_put, args=(url, barrier, results))
                 for _ in range(2)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(20)
        assert sorted(results.get(timeout=5) for _ in procs) == ["ok", codes.QUOTA_EXCEEDED]
        assert store.owner_blob_bytes(OWNER) == 10
    finally:
        store.close()
