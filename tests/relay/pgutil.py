"""PostgreSQL for the relay tests: each test gets its own fresh database.

The server runs at 127.0.0.1:5432 (trust auth, user ``postgres``; override
with ``CHATCLI_TEST_PG``, a URL to an administrative database). Every
database made here is called ``chatcli_test_<random>`` and is dropped (with
``FORCE``) afterwards, so test runs of several people never share data.
Tests that need PostgreSQL are skipped when the server is not running.
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


def terminate_backends(name: str) -> int:
    """Kill every connection to database ``name`` (what a PostgreSQL restart
    looks like to a client); return how many were terminated."""
    import psycopg

    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()", (name,)).fetchall()
    return sum(1 for (ok,) in rows if ok)
