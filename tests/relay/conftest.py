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

# "postgres": a fresh schema per test in this run's own database
# (tests/relay/pgutil.py), skipped when the server at 127.0.0.1:5432 is not running.
BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(scope="session")
def pg_session_database() -> Iterator[tuple[str, str] | None]:
    """This test run's own PostgreSQL database (name, URL), or None without a server."""
    if not pgutil.postgres_available():
        yield None
        return
    with pgutil.fresh_database() as database:
        yield database


@pytest.fixture
def pg_database(pg_session_database: tuple[str, str] | None) -> Iterator[tuple[str, str]]:
    """A fresh, empty PostgreSQL place for this test: (database name, URL).
    The URL selects a new schema of this run's database; it is dropped after."""
    if pg_session_database is None:
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    name, db_url = pg_session_database
    schema, url = pgutil.create_schema(db_url)
    try:
        yield name, url
    finally:
        pgutil.drop_schema(db_url, schema)


@pytest.fixture(params=BACKENDS)
def relay_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Server tests using this run once per backend: ``helpers.make_config``
    then points the relay at a fresh PostgreSQL database instead of SQLite."""
    if request.param == "postgres":
        from tests.relay import helpers

        url = request.getfixturevalue("pg_database")[1]
        monkeypatch.setattr(helpers, "default_db", lambda tmp_path: url)
    return str(request.param)


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
