"""Shared pieces of the user commands: option bundles, output, running async code.

Habits (as in sqlite-utils and magic-wormhole): data goes to stdout, chatter
to stderr; ``--json`` prints one JSON object (or one per line for streams);
errors are :class:`chatcli.errors.ChatcliError` subclasses that the root group
prints as one line. Nothing heavy is imported at module level.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import click

if TYPE_CHECKING:
    from chatcli.api.local import LocalApi
    from chatcli.client.home import Home
    from chatcli.client.service import ChatClient

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def json_option(func: F) -> F:
    """Add ``--json``: machine-readable output on stdout."""
    return click.option("--json", "as_json", is_flag=True,
                        help="Print JSON (one object per line for streams).")(func)


def passphrase_option(func: F) -> F:
    """Add ``--passphrase-file PATH`` (else CHATCLI_PASSPHRASE, else a prompt)."""
    return click.option(
        "--passphrase-file", type=click.Path(dir_okay=False, path_type=Path),
        help="Read the passphrase from the first line of this file "
             "(default: $CHATCLI_PASSPHRASE, else a hidden prompt).")(func)


def emit_json(obj: Any) -> None:
    """One JSON object on its own line, flushed."""
    click.echo(json.dumps(obj, ensure_ascii=False, sort_keys=True))
    sys.stdout.flush()


def info(message: str) -> None:
    """Chatter for the person at the terminal, on stderr."""
    click.echo(message, err=True)


def warn(message: str) -> None:
    click.secho(message, err=True, fg="yellow")


def run(func: Callable[[], Awaitable[T]]) -> T:
    """Run an async function under Trio."""
    import trio

    return trio.run(func)


def lean_imports() -> None:
    """Import peewee without its optional PostgreSQL driver.

    peewee imports psycopg when it is installed (the relay's PostgreSQL
    backend needs it); the client never does, and that import costs more
    than a tenth of a second of every command's start-up. Called only by
    the client's commands, before anything imports peewee."""
    if "peewee" in sys.modules:
        return
    blocked = "psycopg" not in sys.modules
    if blocked:
        sys.modules["psycopg"] = None  # type: ignore[assignment]
    try:
        import peewee  # noqa: F401
    finally:
        if blocked:
            del sys.modules["psycopg"]


def agent_key(home: Home, passphrase_file: Path | None) -> bytes | None:
    """The keystore key from a running ``chatcli agent``, or None.

    An agent is asked only when no ``--passphrase-file`` was given, its socket
    exists and ``CHATCLI_AGENT`` is not ``0``. Imports only the standard
    library."""
    if passphrase_file is not None or not home.agent_socket.exists():
        return None
    from chatcli.client import agent

    if not agent.enabled():
        return None
    return agent.request_key(home.agent_socket)


@contextmanager
def unlocked(passphrase_file: Path | None, *, network: bool = True) -> Iterator[ChatClient]:
    """The unlocked identity of CHATCLI_HOME, closed at the end.

    With a running ``chatcli agent`` (and no ``--passphrase-file``) the
    keystore opens with the key the agent holds: no passphrase, no Argon2id.
    If the agent's key no longer opens the keystore (re-encrypted, replaced),
    that agent is stopped and the passphrase is asked for as usual.

    Otherwise the keystore's Argon2id (about 0.5 s at MODERATE cost) runs in a
    thread while this thread imports what the command needs (trio, the
    websocket client, the service), so the two costs overlap instead of adding
    up. libsodium releases the GIL during the key derivation. ``network=False``
    (commands that only read the local database) skips the network modules."""
    import threading

    lean_imports()
    from chatcli.client.home import Home
    from chatcli.client.keys import read_secrets, read_secrets_with_key
    from chatcli.client.unlock import get_passphrase

    home = Home.from_env()
    home.require()
    key = agent_key(home, passphrase_file)
    passphrase = get_passphrase(passphrase_file) if key is None else None
    outcome: dict[str, Any] = {}

    def derive() -> None:
        try:
            if key is not None:
                from chatcli.crypto.errors import WrongKey

                try:
                    outcome["secrets"] = read_secrets_with_key(home.keystore, key)
                except WrongKey:
                    outcome["stale"] = True
            else:
                assert passphrase is not None
                outcome["secrets"] = read_secrets(home.keystore, passphrase)
        except BaseException as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=derive, name="chatcli-unlock", daemon=True)
    worker.start()
    if network:
        import chatcli.client.relay_client  # noqa: F401  (trio, trio-websocket)
    from chatcli.client.service import ChatClient

    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    if outcome.get("stale"):
        from chatcli.client import agent

        agent.stop(home.agent_socket)  # its key is useless now
        outcome["secrets"] = read_secrets(home.keystore, get_passphrase(passphrase_file))
    client = ChatClient.from_secrets(home, outcome["secrets"])
    try:
        yield client
    finally:
        client.close()


class CliApi(Protocol):
    """What a command talks to: ``call(method, params)`` answers plain JSON (or
    raises the API error as a ChatcliError, ``chatcli.api.errors.ApiChatcliError``,
    so that the message and exit code are those of direct mode);
    ``stream(handler, ...)`` hands each event of ``receive`` to ``handler`` as
    it arrives. A daemon's client implements the same two methods."""

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any: ...

    def stream(self, handler: Callable[[dict[str, Any]], None], *, wait: float | None,
               read_receipts: bool, save_dir: str | None) -> None: ...


class DirectApi:
    """:class:`CliApi` over a :class:`chatcli.api.local.LocalApi` in this process."""

    def __init__(self, local: LocalApi) -> None:
        self.local = local

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        from chatcli.api.errors import ApiChatcliError, ApiError
        from chatcli.api.local import needs_network

        params = params or {}
        try:
            if not needs_network(method, params):
                return self.local.call_local(method, params)  # no trio needed
            return run(lambda: self.local.call(method, params))
        except ApiError as exc:
            raise ApiChatcliError(exc) from None

    def stream(self, handler: Callable[[dict[str, Any]], None], *, wait: float | None,
               read_receipts: bool, save_dir: str | None) -> None:
        from chatcli.api.errors import ApiChatcliError, ApiError

        async def go() -> None:
            async for event in self.local.events(wait=wait, read_receipts=read_receipts,
                                                 save_dir=save_dir):
                handler(event)

        try:
            run(go)
        except ApiError as exc:
            raise ApiChatcliError(exc) from None


@contextmanager
def api_session(passphrase_file: Path | None, *, network: bool = True) -> Iterator[CliApi]:
    """The API a command talks to: the one place that decides which.

    When a ``chatcli daemon`` runs for CHATCLI_HOME (and ``CHATCLI_DAEMON`` is
    not ``0``), its socket: no passphrase, no key derivation, and the daemon's
    store and connections, so that every front end sees the same messages.
    Otherwise a :class:`chatcli.api.local.LocalApi` over the identity unlocked
    in this process (direct mode). Both answer alike: same results, same
    errors and exit codes."""
    from chatcli.client.home import Home
    from chatcli.daemon.sync_client import find

    remote = find(Home.from_env().root)
    if remote is not None:
        yield remote
        return
    with unlocked(passphrase_file, network=network) as client:
        from chatcli.api.local import LocalApi

        yield DirectApi(LocalApi(client, resident=False))


def complete_contact(ctx: click.Context, param: click.Parameter, incomplete: str
                     ) -> list[click.shell_completion.CompletionItem]:
    """Shell completion of contact (and group) names; reads only the clear
    name column, so it needs no passphrase."""
    try:
        lean_imports()
        from chatcli.client import models
        from chatcli.client.home import Home
        from chatcli.client.store import Store

        home = Home.from_env()
        if not home.database.exists():
            return []
        store = Store.open(home.database, None)
        try:
            with store.read():
                names = [c.name for c in models.Contact.select(models.Contact.name)]
                from chatcli.client.groups.models import group_names

                names += group_names(store)
                if store.db.table_exists("group"):
                    names += [row[0] for row in store.db.execute_sql(  # type: ignore[no-untyped-call]
                        'SELECT name FROM "group"').fetchall()]
        finally:
            store.close()
    except Exception:  # completion must never crash the shell
        return []
    return [click.shell_completion.CompletionItem(n) for n in sorted(names)
            if n.startswith(incomplete)]


def parse_duration(text: str) -> int:
    """``90``, ``90s``, ``15m``, ``12h``, ``7d``, ``2w`` -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    value = text.strip().lower()
    factor = 1
    if value and value[-1] in units:
        factor = units[value[-1]]
        value = value[:-1]
    if not value.isdigit() or int(value) <= 0:
        raise click.BadParameter(f"{text!r} is not a duration like 30m, 12h or 7d.")
    return int(value) * factor


class Duration(click.ParamType[int]):
    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_duration(str(value))
        except click.BadParameter as exc:
            self.fail(exc.message, param, ctx)


def with_passphrase_and_json(func: F) -> F:
    return passphrase_option(json_option(func))


def wraps_async(func: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    """Decorator: a click callback written as ``async def``."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return run(functools.partial(func, *args, **kwargs))

    return wrapper
