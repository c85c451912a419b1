"""``chatcli web``: open the web front end that the daemon serves.

If a daemon runs for CHATCLI_HOME, it is asked to serve the page (``web.start``,
nothing to do when it does already) and for a one-time login link
(``web.login``); otherwise the identity is unlocked here and a detached
daemon is started with ``--web``, as ``chatcli daemon --detach --web PORT``
would. The link opens in the default browser (``webbrowser``), or is printed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from chatcli.cli.output import emit_json, info, json_option, passphrase_option


@click.command()
@click.option("--no-browser", is_flag=True,
              help="Print the login link instead of opening a browser.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="The 127.0.0.1 port to serve the page on when it is not served yet "
                   "(0: a free port).")
@json_option
@passphrase_option
def web(no_browser: bool, port: int, as_json: bool, passphrase_file: Path | None) -> None:
    """Open chatcli in your web browser.

    Starts the daemon in the background if none runs (unlocking here with
    your passphrase; without a terminal or passphrase it starts locked and
    the page asks for it; with no identity yet, the page creates one), makes
    it serve the web page on 127.0.0.1, and opens a
    one-time login link (valid 2 minutes, for one browser) in your default
    browser. Run it again for a new link; `chatcli daemon stop` stops
    everything.
    """
    from chatcli.client.home import Home
    from chatcli.daemon.sync_client import find

    home = Home.from_env()
    remote = find(home.root)
    if remote is None:
        from chatcli.cli.cmd_daemon import _start_detached
        from chatcli.cli.output import lean_imports
        from chatcli.daemon.instance import DaemonRunningError, daemon_pid

        pid = daemon_pid(home.root)
        if pid is not None:
            raise DaemonRunningError(
                f"A chatcli daemon (pid {pid}) holds {home.root} but does not answer; "
                "stop it with `chatcli daemon stop`.")
        lean_imports()
        empty = not home.exists()
        if empty:
            home.create()  # no identity yet: the page creates it
        locked = empty or _no_passphrase_here(home, passphrase_file)
        pid = _start_detached(home, passphrase_file, port, locked=locked)
        info(f"chatcli daemon started (pid {pid}) for {home.root}; "
             "`chatcli daemon stop` stops it.")
        if empty:
            info("There is no identity here yet: create yours in the page.")
        elif locked:
            info("It is locked: unlock it in the page with your passphrase.")
        remote = find(home.root)
        if remote is None:
            from chatcli.errors import ChatcliError

            raise ChatcliError(f"The daemon started but does not answer (see "
                               f"{home.root / 'daemon.log'}).")
    started: dict[str, Any] = remote.call("web.start", {"port": port})
    login: dict[str, Any] = remote.call("web.login")
    opened = False if no_browser else _open(login["url"])
    if as_json:
        emit_json({"url": login["url"], "page": login["page"], "opened": opened})
        return
    if opened:
        info(f"Opened chatcli in your browser ({started['page']}); if no page "
             "appeared, run `chatcli web --no-browser` and open the link it prints.")
    else:
        info("Open this link in your browser (it works once, within 2 minutes):")
        click.echo(login["url"])


def _no_passphrase_here(home: Any, passphrase_file: Path | None) -> bool:
    """True when no passphrase can be had here (no file, no CHATCLI_PASSPHRASE,
    no agent, no terminal): the daemon then starts locked, for the page to unlock."""
    import os
    import sys

    from chatcli.cli.output import agent_key
    from chatcli.client.unlock import ENV_PASSPHRASE

    if passphrase_file is not None or os.environ.get(ENV_PASSPHRASE) or sys.stdin.isatty():
        return False
    return agent_key(home, None) is None


def _open(url: str) -> bool:
    """Whether a browser was started on ``url`` (False when none is available)."""
    import webbrowser

    try:
        return webbrowser.open(url, new=2)
    except webbrowser.Error:
        return False
