"""``chatcli daemon [--detach]``, ``daemon status``, ``daemon stop``.

The daemon is one resident process per CHATCLI_HOME (:mod:`chatcli.daemon`):
it holds the unlocked keys, the local store and the relay connections, and
serves the JSON-RPC API on ``CHATCLI_HOME/daemon.sock``. While it runs, every
other command talks to it (no passphrase, no key derivation) with the same
output and exit codes as without it.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

import click

from chatcli.cli.output import emit_json, info, json_option, passphrase_option

START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


@click.group(invoke_without_command=True)
@click.option("--detach", is_flag=True,
              help="Unlock, start the daemon in the background and return once it answers "
                   "(its log: CHATCLI_HOME/daemon.log).")
@click.option("--locked", is_flag=True,
              help="Start without unlocking (no passphrase asked): it serves only `daemon "
                   "unlock` (and the web page's unlock) until then; on an empty "
                   "CHATCLI_HOME it waits for an identity to be created through it.")
@click.option("--websocket", "websocket_port", type=click.IntRange(0, 65535), metavar="PORT",
              help="Also serve the JSON-RPC API on ws://127.0.0.1:PORT/ (0: a free port) to "
                   "clients that send the bearer token of CHATCLI_HOME/daemon.token; "
                   "`daemon status --json` tells the address.")
@click.option("--web", "web_port", type=click.IntRange(0, 65535), metavar="PORT",
              help="Also serve the web front end on 127.0.0.1:PORT (0: a free port); "
                   "`chatcli web` logs a browser in.")
@passphrase_option
@click.pass_context
def daemon(ctx: click.Context, detach: bool, locked: bool, websocket_port: int | None,
           web_port: int | None, passphrase_file: Path | None) -> None:
    """Run the chatcli daemon: stay online, serve the JSON-RPC API.

    One daemon per CHATCLI_HOME holds the unlocked keys, the local store and
    the relay connection, receiving in real time. While it runs, every chatcli
    command and every `chatcli chat` window goes through it, so all of them
    see every message, own sends included; scripts use its JSON-RPC API on
    CHATCLI_HOME/daemon.sock (docs/api.md), and with --websocket on a loopback
    WebSocket behind a bearer token. Without --detach it runs in the
    foreground until Ctrl-C or SIGTERM (what a systemd unit wants). A second
    daemon for the same home is refused (exit code 1).
    """
    if ctx.invoked_subcommand is not None:
        return
    from chatcli.cli.output import lean_imports
    from chatcli.client.home import Home
    from chatcli.daemon.instance import DaemonRunningError, daemon_pid

    home = Home.from_env()
    if not locked:
        home.require()
    pid = daemon_pid(home.root)
    if pid is not None:
        raise DaemonRunningError(f"A chatcli daemon already runs for {home.root} (pid {pid}); "
                                 "stop it with `chatcli daemon stop`.")
    lean_imports()
    if detach:
        pid = _start_detached(home, passphrase_file, web_port, locked=locked,
                              websocket_port=websocket_port)
        state = " (locked: `chatcli daemon unlock`)" if locked and home.exists() else ""
        info(f"chatcli daemon started (pid {pid}) for {home.root}{state}; "
             "`chatcli daemon stop` stops it.")
        return
    _run_foreground(home, passphrase_file, locked=locked, websocket_port=websocket_port,
                    web_port=web_port)


def _run_foreground(home: Any, passphrase_file: Path | None, *, locked: bool,
                    websocket_port: int | None, web_port: int | None) -> None:
    from chatcli.cli.output import unlocked
    from chatcli.daemon.runtime import Daemon, serve

    def ready(d: Daemon) -> None:
        info(f"chatcli daemon (pid {os.getpid()}) serving {d.socket_path} ({d.state}); "
             "Ctrl-C stops it.")
        if d.websocket is not None:
            info(f"WebSocket API on {d.websocket.url} (bearer token in {d.token_path})")
        if d.web is not None:
            info(f"web front end on {d.web.url} (`chatcli web` logs a browser in)")

    if locked:
        serve(home, None, ready, websocket_port=websocket_port, web_port=web_port)
        return
    with unlocked(passphrase_file) as client:
        serve(home, client, ready, websocket_port=websocket_port, web_port=web_port)


def _keystore_key(home: Any, passphrase_file: Path | None) -> bytes:
    from chatcli.cli.output import agent_key
    from chatcli.client.keys import unlock_key
    from chatcli.client.unlock import get_passphrase

    key = agent_key(home, passphrase_file)
    if key is not None:
        return key
    _secrets, key = unlock_key(home.keystore, get_passphrase(passphrase_file))
    return key


def _start_detached(home: Any, passphrase_file: Path | None, web_port: int | None = None, *,
                    locked: bool, websocket_port: int | None = None) -> int:
    import sys

    from chatcli.client.agent import spawn_detached
    from chatcli.errors import ChatcliError

    key = b"" if locked else _keystore_key(home, passphrase_file)
    home.create()
    log_fd = os.open(home.root / "daemon.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        line = spawn_detached(
            [sys.executable, "-m", "chatcli.daemon.main", "--home", str(home.root),
             *(["--locked"] if locked else []),
             *([] if web_port is None else ["--web", str(web_port)]),
             *([] if websocket_port is None else ["--websocket", str(websocket_port)])],
            key, stderr=log_fd, timeout=START_TIMEOUT)
    finally:
        os.close(log_fd)
    del key
    if line.startswith(b"ready"):
        return int(line.split()[1])
    reason = line.decode("utf-8", "replace").removeprefix("error:").strip()
    raise ChatcliError(f"The daemon did not start: {reason or 'no answer'} "
                       f"(see {home.root / 'daemon.log'}).")


def _status_line(found: dict[str, Any]) -> str:
    ws = found.get("websocket")
    websocket = f", WebSocket API on {ws['url']}" if ws else ""
    if found.get("web"):
        websocket += f", web page on {found['web']}"
    if found.get("state") == "locked":
        return (f"daemon running (pid {found['pid']}) for {found['home']}: locked "
                f"(`chatcli daemon unlock`){websocket}.")
    if found.get("state") == "empty":
        return (f"daemon running (pid {found['pid']}) for {found['home']}: no identity yet "
                f"(create one with `chatcli web`){websocket}.")
    state = "online" if found["connected"] else "connecting to its relay"
    return (f"daemon running (pid {found['pid']}) for {found['name']} in {found['home']}: "
            f"{state}, {found['subscribers']} subscriber(s), {found['outbox']} item(s) in "
            f"the outbox, up {found['uptime']:.0f} s{websocket}.")


def _running(home: Any) -> Any:
    from chatcli.daemon.sync_client import find
    from chatcli.errors import UsageError

    remote = find(home.root)
    if remote is None:
        raise UsageError(f"No chatcli daemon is running for {home.root} "
                         "(start one with `chatcli daemon`).")
    return remote


@daemon.command("unlock")
@passphrase_option
@json_option
def daemon_unlock(passphrase_file: Path | None, as_json: bool) -> None:
    """Unlock a daemon started with --locked (or locked with `daemon lock`):
    it opens the keystore with the passphrase and goes online. Nothing to do
    when it is already unlocked."""
    from chatcli.client.home import Home
    from chatcli.client.unlock import get_passphrase

    home = Home.from_env()
    remote = _running(home)
    found = remote.call("daemon.status")
    if found["state"] == "locked":
        found = remote.call("unlock", {"passphrase": get_passphrase(passphrase_file)})
    if as_json:
        emit_json(found)
    else:
        info(_status_line(found))


@daemon.command("lock")
@json_option
def daemon_lock(as_json: bool) -> None:
    """Make the daemon go offline and forget the keys, without stopping it;
    commands then fail (exit 1) until `chatcli daemon unlock`."""
    from chatcli.client.home import Home

    found = _running(Home.from_env()).call("lock")
    if as_json:
        emit_json(found)
    else:
        info(_status_line(found))


@daemon.command("status")
@json_option
def daemon_status(as_json: bool) -> None:
    """Say whether a daemon serves this CHATCLI_HOME (exit code 0) or not
    (exit code 1), with its pid, connection and outbox."""
    from chatcli.client.home import Home
    from chatcli.daemon.sync_client import find

    home = Home.from_env()
    remote = find(home.root)
    found = remote.call("daemon.status") if remote is not None else None
    if as_json:
        emit_json(found if found is not None else {"running": False, "home": str(home.root)})
    elif found is not None:
        info(_status_line(found))
    else:
        info(f"no daemon is running for {home.root}.")
    if found is None:
        click.get_current_context().exit(1)


@daemon.command("stop")
@json_option
def daemon_stop(as_json: bool) -> None:
    """Stop the daemon of this CHATCLI_HOME and wait until it has exited
    (nothing to do, exit code 0, when none runs). What it had queued stays in
    the outbox for the next command."""
    from chatcli.client.home import Home
    from chatcli.daemon.instance import daemon_pid
    from chatcli.daemon.sync_client import DaemonGoneError, find
    from chatcli.errors import ChatcliError

    home = Home.from_env()
    remote = find(home.root)
    pid = daemon_pid(home.root)
    if remote is not None:
        with contextlib.suppress(DaemonGoneError):
            pid = remote.call("daemon.stop")["pid"]
    elif pid:
        os.kill(pid, 15)  # it holds the lock but its socket is gone: SIGTERM
    if pid is not None:
        deadline = time.monotonic() + STOP_TIMEOUT
        while daemon_pid(home.root) is not None:
            if time.monotonic() > deadline:
                raise ChatcliError(f"The daemon (pid {pid}) did not stop within "
                                   f"{STOP_TIMEOUT:g} s.")
            time.sleep(0.05)
    if as_json:
        emit_json({"stopped": pid is not None, "pid": pid})
    elif pid is not None:
        info(f"daemon stopped (pid {pid}).")
    else:
        info(f"no daemon was running for {home.root}.")
