"""Relay test fixtures.

``store_factory`` is parametrised over the storage backends in
:data:`BACKENDS`: each call returns a new, *unopened* store object on the
test's own database (the same database for every call within one test), so
tests can reopen it or open two stores on it. Opened stores are closed at
teardown. ``store`` is one opened store.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chatcli.relay.store.base import Store
from chatcli.relay.store.sqlite import SqliteStore
from tests.relay import pgutil

StoreFactory = Callable[[], Store]

# "postgres": a fresh database per test (tests/relay/pgutil.py), skipped when
# the server at 127.0.0.1:5432 is not running.
BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(scope="session")
def postgres_up() -> bool:
    return pgutil.postgres_available()


@pytest.fixture
def pg_database(postgres_up: bool) -> Iterator[tuple[str, str]]:
    """A fresh PostgreSQL database for this test, dropped afterwards: (name, URL)."""
    if not postgres_up:
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    with pgutil.fresh_database() as database:
        yield database


@pytest.fixture(params=BACKENDS)
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    made: list[Store] = []
    pg_url = request.getfixturevalue("pg_database")[1] if request.param == "postgres" else ""

    def factory() -> Store:
        if request.param == "sqlite":
            store: Store = SqliteStore(tmp_path / "relay.db")
        elif request.param == "postgres":
            from chatcli.relay.store.postgres import PostgresStore

            store = PostgresStore(pg_url)
        else:  # pragma: no cover - other backends register here
            raise ValueError(request.param)
        made.append(store)
        return store

    yield factory
    for store in made:
        store.close()


@pytest.fixture
def store(store_factory: StoreFactory) -> Store:
    opened = store_factory()
    opened.open(int(time.time() * 1000))
    return opened
