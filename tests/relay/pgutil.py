"""PostgreSQL for the relay tests: every test gets a fresh, empty place.

The server runs at 127.0.0.1:5432 (trust auth, user ``postgres``; override
with ``CHATCLI_TEST_PG``, a URL to an administrative database). A test run
creates its own database ``chatcli_test_<random>`` (dropped with ``FORCE`` at
the end), and each test a fresh schema in it (``t_<random>``, the URL's
``search_path``), which is much faster than a database per test. Several
people's test runs never share data. Tests that need PostgreSQL are skipped
when the server is not running.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator

ADMIN_URL = os.environ.get("CHATCLI_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def base_url() -> str:
    """The admin URL without its database name."""
    return ADMIN_URL.rsplit("/", 1)[0]


def postgres_available() -> bool:
    try:
        import psycopg
    except ImportError:
        return False
    try:
        with psycopg.connect(ADMIN_URL, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def create_database() -> tuple[str, str]:
    """A fresh empty database: (its name, its URL)."""
    import psycopg

    name = f"chatcli_test_{secrets.token_hex(6)}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, f"{base_url()}/{name}"


def drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def fresh_database() -> Iterator[tuple[str, str]]:
    name, url = create_database()
    try:
        yield name, url
    finally:
        drop_database(name)


def create_schema(db_url: str) -> tuple[str, str]:
    """A fresh empty schema in the database at ``db_url``: (its name, a URL
    whose connections use it)."""
    import psycopg

    name = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    return name, f"{db_url}?options=-csearch_path%3D{name}"


def drop_schema(db_url: str, name: str) -> None:
    import psycopg

    with contextlib.suppress(psycopg.Error), psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '5s'")
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def allow_connections(name: str, allowed: bool) -> None:
    """Let clients connect to database ``name`` or not (as while PostgreSQL
    is restarting). The admin connection goes to another database."""
    import psycopg

    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}')


def terminate_backends(name: str) -> int:
    """Kill every connection to database ``name`` (what a PostgreSQL restart
    looks like to a client); return how many were terminated."""
    import psycopg

    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()", (name,)).fetchall()
    return sum(1 for (ok,) in rows if ok)
