"""``chatcli relay ...``: run and manage a relay.

``serve`` prints exactly one line on stdout, ``relay address:
ws://HOST:PORT/#FINGERPRINT``, once clients can connect (with the real port
when ``--port 0``); everything else goes to stderr. ``fingerprint`` and
``token create`` print their one value alone, for scripts.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any

import click

from chatcli.errors import ChatcliError, RelayError, UsageError

if TYPE_CHECKING:
    from chatcli.relay.config import RelayConfig
    from chatcli.relay.store.base import Store

STATUS_FRESH_SECONDS = 35.0

db_option = click.option(
    "--db", "db", default="relay.db", show_default=True, envvar="CHATCLI_RELAY_DB",
    help="The relay database: a SQLite file path, or postgresql://USER@HOST:PORT/DB.")


class DurationType(click.ParamType):  # type: ignore[type-arg,unused-ignore]  # generic in click >= 8.2
    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        from chatcli.relay.config import parse_duration

        try:
            return parse_duration(value)
        except UsageError as exc:
            self.fail(str(exc), param, ctx)


DURATION = DurationType()


@click.group()
def relay() -> None:
    """Run and manage a chatcli relay (the server that stores sealed mailboxes)."""


def _build_config(options: dict[str, Any], config_file: str | None) -> RelayConfig:
    from chatcli.relay.config import RelayConfig, load_config_file

    settings: dict[str, Any] = load_config_file(config_file) if config_file else {}
    for key, value in options.items():
        if value is not None and value is not False:
            settings[key] = value
    return RelayConfig(**settings)


def _first_error(exc: BaseException) -> BaseException:
    """The interesting exception inside (possibly nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if isinstance(inner, ChatcliError | OSError | BaseExceptionGroup):
                exc = inner
                break
        else:
            exc = exc.exceptions[0]
    return exc


@relay.command()
@click.option("--host", default=None, help="Address to listen on.  [default: 127.0.0.1]")
@click.option("--port", type=int, default=None,
              help="Port to listen on; 0 picks a free one.  [default: 8765]")
@db_option
@click.option("--retention", type=DURATION, default=None,
              help="How long undelivered messages are kept, e.g. 21d, 12h.  [default: 21d]")
@click.option("--invite-only", is_flag=True, default=False,
              help="Registering a mailbox needs a token from `relay token create`.")
@click.option("--max-connections", type=click.IntRange(min=1), default=None,
              help="Most simultaneous connections.  [default: 10000]")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), default=None,
              help="PEM certificate chain: serve wss:// directly.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), default=None,
              help="PEM private key of --tls-cert.")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              default=None, help="A TOML file of settings (flags win); see docs/operations.md.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="Serve /metrics and /healthz over HTTP on this port (127.0.0.1).")
@click.option("--log-json", is_flag=True, default=False,
              help="Log one JSON object per line on stderr.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Relay processes sharing the port (SO_REUSEPORT), supervised by this "
                   "one; above 1 needs PostgreSQL.")
def serve(host: str | None, port: int | None, db: str, retention: float | None,
          invite_only: bool, max_connections: int | None, tls_cert: str | None,
          tls_key: str | None, config_file: str | None, metrics_port: int | None,
          log_json: bool, workers: int) -> None:
    """Run a relay until SIGTERM or Ctrl-C.

    Prints `relay address: ws://HOST:PORT/#FINGERPRINT` on stdout when ready:
    give that address to users (`chatcli init --relay ...`). The relay's key
    is created on first start and kept in the database.
    """
    import trio

    from chatcli.relay.logging import setup_logging

    options: dict[str, Any] = {
        "host": host, "port": port, "retention": retention, "invite_only": invite_only,
        "max_connections": max_connections, "tls_cert": tls_cert, "tls_key": tls_key,
        "metrics_port": metrics_port, "log_json": log_json,
    }
    source = click.get_current_context().get_parameter_source("db")
    if source is not click.core.ParameterSource.DEFAULT or not config_file:
        options["db"] = db
    config = _build_config(options, config_file)
    if workers > 1:
        from chatcli.relay.workers import check_workers, run_workers

        check_workers(config, workers)
    setup_logging(json_lines=config.log_json, level=config.log_level)
    # Threads of the relay process (the database calls with storage_process
    # = false; PostgreSQL notifications) must get the GIL back quickly after
    # each blocking call while the event loop is busy: 5 ms (the default) per
    # hand-over would make every commit wait on the loop.
    sys.setswitchinterval(0.0005)
    try:
        if workers > 1:
            run_workers(config, workers)
        else:
            trio.run(_serve_main, config)
    except BaseException as exc:  # unwrap exception groups for the CLI
        inner = _first_error(exc)
        if isinstance(inner, ChatcliError):
            raise inner from None
        if isinstance(inner, OSError):
            raise RelayError(f"Cannot listen on {config.host}:{config.port}: "
                             f"{inner.strerror or inner}.") from None
        raise


async def _serve_main(config: RelayConfig) -> None:
    import signal

    import trio

    from chatcli.relay.server import Relay

    relay_server = Relay(config)

    async def watch_signals() -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                relay_server.shutdown()
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch_signals)
        await nursery.start(relay_server.serve)
        sys.stdout.write(f"relay address: {relay_server.address}\n")
        sys.stdout.flush()
        if relay_server.metrics_port is not None:
            click.echo(f"metrics: http://{config.metrics_host}:{relay_server.metrics_port}"
                       "/metrics", err=True)
        await relay_server.wait_stopped()
        nursery.cancel_scope.cancel()


def _open_store(db: str) -> Store:
    from chatcli.relay.store import make_store

    store = make_store(db)
    store.open(int(time.time() * 1000))
    return store


@relay.command()
@db_option
def fingerprint(db: str) -> None:
    """Print the relay key's fingerprint (the part after # in the address).

    Creates the database and the key if they do not exist yet, so the
    address can be published before the first start.
    """
    from chatcli.crypto.keys import RelayKeyPair

    store = _open_store(db)
    try:
        seed = store.load_or_store_relay_seed(os.urandom(32))
    finally:
        store.close()
    click.echo(RelayKeyPair.from_private_bytes(seed).fingerprint())


@relay.command()
@click.option("--from", "source", required=True, type=click.Path(dir_okay=False),
              help="The SQLite relay database to copy (stop its relay first).")
@click.option("--to", "target", required=True,
              help="An empty PostgreSQL database: postgresql://USER@HOST:PORT/DB.")
@click.option("--json", "as_json", is_flag=True, default=False,
              help="Print the verified counts as one JSON object.")
def migrate(source: str, target: str, as_json: bool) -> None:
    """Copy a relay's SQLite database into PostgreSQL, key and all.

    Mailboxes, capabilities, queued messages (with their ids), blobs, tokens,
    presence settings and the relay key move, so the relay address stays the
    same. Refuses a target that already holds relay data; compares the counts
    of both sides at the end (and writes nothing if they differ).
    """
    from chatcli.relay.migrate import migrate_sqlite_to_postgres

    report = migrate_sqlite_to_postgres(
        source, target, progress=lambda text: click.echo(text, err=True))
    if as_json:
        click.echo(json.dumps({"counts": report.counts, "message_bytes": report.message_bytes,
                               "seconds": round(report.seconds, 3)}, sort_keys=True))
        return
    for line in report.lines():
        click.echo(line)
    click.echo(f"verified: the counts match; serve with --db {_redact(target)}", err=True)


def _redact(url: str) -> str:
    from chatcli.relay.store.postgres import redact_url

    return redact_url(url)


@relay.group()
def token() -> None:
    """Registration tokens for an --invite-only relay."""


@token.command("create")
@click.option("--uses", type=click.IntRange(min=1), default=1, show_default=True,
              help="How many mailboxes the token may register.")
@click.option("--expires", type=DURATION, default=None,
              help="Validity from now, e.g. 7d or 12h (default: no expiry).")
@db_option
def token_create(uses: int, expires: float | None, db: str) -> None:
    """Create a registration token and print it (only its hash is stored)."""
    from chatcli.relay.mailbox import Mailboxes, Quota

    now = int(time.time() * 1000)
    store = _open_store(db)
    try:
        mailboxes = Mailboxes(store, quota=Quota(1, 1), retention_ms=1)
        value = mailboxes.create_token(uses, None if expires is None
                                       else now + int(expires * 1000), now)
    finally:
        store.close()
    click.echo(value)


@relay.command()
@db_option
@click.option("--json", "as_json", is_flag=True, default=False, help="Print one JSON object.")
def stats(db: str, as_json: bool) -> None:
    """Mailboxes, queued messages and bytes, blobs, tokens, and the connections
    of the relay running on this database (if any)."""
    import dataclasses

    from chatcli.relay.server import STATUS_KEY

    store = _open_store(db)
    try:
        figures: dict[str, Any] = dataclasses.asdict(store.stats())
        raw = store.get_meta(STATUS_KEY)
    finally:
        store.close()
    status: dict[str, Any] = {}
    if raw:
        try:
            status = json.loads(raw)
        except ValueError:
            status = {}
    fresh = (bool(status) and not status.get("stopped")
             and time.time() * 1000 - status.get("updated_at", 0) < STATUS_FRESH_SECONDS * 1000)
    figures["running"] = fresh
    figures["connections"] = int(status.get("connections", 0)) if fresh else 0
    figures["authenticated_connections"] = (int(status.get("authenticated", 0))
                                            if fresh else 0)
    figures["online_mailboxes"] = int(status.get("online_mailboxes", 0)) if fresh else 0
    if as_json:
        click.echo(json.dumps(figures, sort_keys=True))
        return
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        click.echo(f"{key.replace('_', ' '):<{width}}  {value}")
