"""The SQLite relay database as files: modes, a full disk, a read-only file,
and deleted ciphertext leaving the WAL."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import peewee
import pytest

from chatcli.errors import StorageError
from chatcli.protocol import frames
from chatcli.relay.blobs import Blobs
from chatcli.relay.store.sqlite import SqliteStore
from tests.relay.helpers import make_config, running_relay

T0 = 1_800_000_000_000


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_existing_database_and_wal_are_made_private(tmp_path: Path) -> None:
    db = tmp_path / "relay.db"
    store = SqliteStore(db)
    store.open(T0)
    store.load_or_store_relay_seed(os.urandom(32))
    store.close()
    wal = tmp_path / "relay.db-wal"
    wal.write_bytes(b"")
    os.chmod(db, 0o644)       # as a restore with cp, or `sqlite3 .backup`, leaves it
    os.chmod(wal, 0o644)
    store = SqliteStore(db)
    store.open(T0)
    try:
        assert mode(db) == 0o600 and mode(wal) == 0o600
    finally:
        store.close()


def test_a_full_disk_is_reported_as_such(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "relay.db")
    store.open(T0)
    try:
        owner = os.urandom(16)
        store.create_mailbox(owner, os.urandom(32), T0)
        # A database that may not grow is what SQLite sees on a full disk (SQLITE_FULL).
        pages = int(store.db.execute_sql("PRAGMA page_count").fetchone()[0])
        store.db.execute_sql(f"PRAGMA max_page_count = {pages + 4}")
        blobs = Blobs(store, max_blob_size=1 << 20, owner_quota=1 << 20, max_ttl_ms=10**9)
        with pytest.raises(peewee.OperationalError) as info:
            blobs.put(owner, os.urandom(16), 0, os.urandom(200_000), True, os.urandom(32),
                      60, T0)
        assert "full" in str(info.value)
        assert "rollback" not in str(info.value)
    finally:
        store.close()


def test_a_read_only_database_is_refused_at_start(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "relay.db"
    store = SqliteStore(db)
    store.open(T0)
    store.close()
    # (The tests may run as root, who can write anything: the check is what is tested.)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, how: False if how == os.W_OK
                        else real_access(path, how))
    with pytest.raises(StorageError, match="read-only"):
        SqliteStore(db).open(T0)


async def test_deleted_ciphertext_leaves_the_wal(tmp_path: Path) -> None:
    marker = os.urandom(48)
    async with running_relay(make_config(tmp_path)) as h:
        owner, mailbox, cap = await h.owner()
        sender = await h.connect()
        assert await sender.deposit(mailbox, cap, marker) == [None]
        assert [m.payload for m in await owner.delivered(1)] == [marker]
        answer = await owner.request(frames.AccountDelete(req=owner.req()))
        assert isinstance(answer, frames.Ok)
        for name in ("relay.db", "relay.db-wal"):
            path = tmp_path / name
            if path.exists():
                assert marker not in path.read_bytes(), name


async def test_a_read_only_or_full_database_is_named_in_the_log(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Clients are told to try again later; the log says what to fix."""
    from chatcli.relay.storage import StorageWorker

    store = SqliteStore(tmp_path / "relay.db")
    store.open(T0)
    try:
        worker = StorageWorker(store)
        owner = os.urandom(16)
        await worker.run(store.create_mailbox, owner, os.urandom(32), T0)
        pages = int(store.db.execute_sql("PRAGMA page_count").fetchone()[0])
        store.db.execute_sql(f"PRAGMA max_page_count = {pages + 4}")
        blobs = Blobs(store, max_blob_size=1 << 20, owner_quota=1 << 20, max_ttl_ms=10**9)
        with pytest.raises(StorageError, match="try again later"):
            await worker.run(blobs.put, owner, os.urandom(16), 0, os.urandom(200_000), True,
                             os.urandom(32), 60, T0)
        assert "the disk of the relay database is full" in caplog.text
        store.db.execute_sql("PRAGMA query_only = 1")   # what SQLite says for a read-only file
        with pytest.raises(StorageError, match="try again later"):
            await worker.run(store.create_mailbox, os.urandom(16), os.urandom(32), T0)
        assert "the relay database is read-only" in caplog.text
    finally:
        store.close()
