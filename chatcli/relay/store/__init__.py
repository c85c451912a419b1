"""Relay storage: the :class:`~chatcli.relay.store.base.Store` interface and
its backends. :func:`open_store` picks the backend from a ``--db`` value."""

from __future__ import annotations

from chatcli.errors import UsageError
from chatcli.relay.store.base import Store

__all__ = ["Store", "make_store"]


def make_store(db: str) -> Store:
    """The store for a ``--db`` value: a file path means SQLite, a
    ``postgresql://`` URL PostgreSQL. (Not opened yet.)"""
    if "://" in db:
        scheme = db.split("://", 1)[0].lower()
        if scheme in ("postgresql", "postgres"):
            import importlib.util

            if importlib.util.find_spec("psycopg") is None:
                raise UsageError("PostgreSQL support is not installed: "
                                 "pip install 'chatcli[postgres]'.")
            from chatcli.relay.store.postgres import PostgresStore

            return PostgresStore(db)
        if scheme in ("sqlite", "file"):
            db = db.split("://", 1)[1]
        else:
            raise UsageError(f"Unsupported database {scheme}://; use a file path for SQLite "
                             "or postgresql://USER@HOST:PORT/DB.")
    from chatcli.relay.store.sqlite import SqliteStore

    return SqliteStore(db)
