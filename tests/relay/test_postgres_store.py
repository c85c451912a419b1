"""What the PostgreSQL store adds to the Store contract: several processes on
one database, and surviving a lost connection. (The contract itself is in
test_store_conformance.py, for both backends.)"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from chatcli.errors import StorageError
from chatcli.relay.store import make_store
from chatcli.relay.store.base import NewMessage
from chatcli.relay.store.postgres import PostgresStore, StoreUnavailable, redact_url
from tests.relay import pgutil

NOW = 1_700_000_000_000

_SEED_SCRIPT = """
import os, sys
from chatcli.relay.store.postgres import PostgresStore
store = PostgresStore(sys.argv[1])
store.open(0)
print(store.load_or_store_relay_seed(os.urandom(32)).hex())
store.close()
"""


def test_make_store_selects_postgres(pg_database: tuple[str, str]) -> None:
    store = make_store(pg_database[1])
    assert isinstance(store, PostgresStore)
    assert "PostgreSQL" in store.description
    assert redact_url("postgresql://u:secret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert "secret" not in PostgresStore("postgres://u:secret@h/db").description


def test_processes_starting_together_agree_on_schema_and_key(
        pg_database: tuple[str, str]) -> None:
    _name, url = pg_database
    procs = [subprocess.Popen([sys.executable, "-c", _SEED_SCRIPT, url],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    outputs = [proc.communicate(timeout=30) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), [err for _, err in outputs]
    seeds = {out.strip() for out, _ in outputs}
    assert len(seeds) == 1 and len(seeds.pop()) == 64


def test_writers_serialised_and_ids_in_commit_order(pg_database: tuple[str, str]) -> None:
    _name, url = pg_database
    a, b = PostgresStore(url), PostgresStore(url)
    a.open(NOW)
    b.open(NOW)
    try:
        mailbox = os.urandom(16)
        a.create_mailbox(mailbox, os.urandom(32), NOW)
        got: list[int] = []
        with a.transaction():
            first = a.insert_messages([NewMessage(mailbox, b"a", NOW)])
            thread = threading.Thread(target=lambda: got.extend(
                b.insert_messages([NewMessage(mailbox, b"b", NOW)])))
            thread.start()
            time.sleep(0.3)
            assert got == []   # b waits for a's transaction (the writers' lock)
        thread.join(5)
        assert got and got[0] > first[0]
        # Ids from both connections are distinct and increase in commit order.
        ids: list[int] = []
        for i in range(20):
            store = a if i % 2 else b
            ids += store.insert_messages([NewMessage(mailbox, b"m", NOW)] * 3)
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        assert [m.id for m in b.fetch_messages(mailbox, 0, 1000)] == sorted(
            first + got + ids)
        assert a.mailbox_usage([mailbox])[mailbox].messages == 62
    finally:
        a.close()
        b.close()


def test_lost_connection_is_try_again_then_recovers(pg_database: tuple[str, str]) -> None:
    """A PostgreSQL restart, as the relay sees it: its connection is terminated
    (pg_terminate_backend; restarting the shared server would disturb other
    test runs). The next call fails with StoreUnavailable (``try_again``), and
    the store reconnects by itself on the call after."""
    name, url = pg_database
    store = PostgresStore(url)
    store.open(NOW)
    try:
        mailbox = os.urandom(16)
        store.create_mailbox(mailbox, os.urandom(32), NOW)
        assert pgutil.terminate_backends(name) >= 1
        with pytest.raises(StoreUnavailable):
            store.insert_messages([NewMessage(mailbox, b"lost?", NOW)])
        assert store.fetch_messages(mailbox, 0, 10) == []   # reconnected
        store.insert_messages([NewMessage(mailbox, b"kept", NOW)])
        # Inside an explicit transaction too.
        assert pgutil.terminate_backends(name) >= 1
        with pytest.raises(StoreUnavailable), store.transaction():
            store.insert_messages([NewMessage(mailbox, b"lost", NOW)])
        assert [m.payload for m in store.fetch_messages(mailbox, 0, 10)] == [b"kept"]
    finally:
        store.close()


def test_unreachable_server_is_a_clear_error() -> None:
    store = PostgresStore("postgresql://postgres@127.0.0.1:1/nowhere")
    with pytest.raises(StorageError, match="Cannot open the relay database"):
        store.open(NOW)
