"""``chatcli agent start|stop|status``: keep the unlocked keystore key for a while.

An ssh-agent style helper: ``agent start`` unlocks once (Argon2id) and leaves
a small detached process holding the keystore's key; later commands of the
same user and CHATCLI_HOME get the key from it and skip the passphrase and
the key derivation. See :mod:`chatcli.client.agent`.
"""

from __future__ import annotations

from pathlib import Path

import click

from chatcli.cli.output import Duration, emit_json, info, json_option, passphrase_option


def _minutes(value: float) -> str:
    seconds = round(value)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m" + (f"{seconds % 60}s" if seconds % 60 else "")
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h" + (f"{rest // 60}m" if rest // 60 else "")


@click.group()
def agent() -> None:
    """Keep the unlocked key in memory for a while (like ssh-agent), so that
    commands need no passphrase and skip the slow key derivation."""


@agent.command("start")
@click.option("--timeout", "timeout_s", type=Duration(), default="10m", show_default=True,
              help="Forget the key after this long without a command using it "
                   "(e.g. 90s, 10m, 2h).")
@click.option("--max-lifetime", "max_lifetime_s", type=Duration(), default="8h",
              show_default=True, help="Forget the key after this long in any case.")
@passphrase_option
@json_option
def agent_start(timeout_s: int, max_lifetime_s: int, passphrase_file: Path | None,
                as_json: bool) -> None:
    """Unlock the keystore once and start an agent that holds its key.

    Until the agent forgets the key (`--timeout` without use, `--max-lifetime`
    in all), commands of this user for this CHATCLI_HOME need no passphrase,
    unless they are given --passphrase-file. If an agent is already running,
    it is left as it is (stop it first to change its timeouts).
    """
    from chatcli.client import agent as agent_client
    from chatcli.client.home import Home

    home = Home.from_env()
    home.require()
    running = agent_client.status(home.agent_socket)
    current = running
    if current is None:
        from chatcli.cli.output import lean_imports
        from chatcli.client.keys import unlock_key
        from chatcli.client.unlock import get_passphrase

        lean_imports()
        passphrase = get_passphrase(passphrase_file)
        _secrets, key = unlock_key(home.keystore, passphrase)
        with home.exclusive():
            current = agent_client.start(home.agent_socket, home.keystore, key,
                                         timeout_s=timeout_s,
                                         max_lifetime_s=max(max_lifetime_s, 1))
        del key, passphrase
    if as_json:
        emit_json(current.to_json() | {"already_running": running is not None})
    elif running is not None:
        info(f"agent already running (pid {running.pid}); it forgets the key in "
             f"{_minutes(running.forgets_in_s)}. `chatcli agent stop` first to change "
             "its timeouts.")
    else:
        info(f"agent started (pid {current.pid}); it forgets the key after "
             f"{_minutes(timeout_s)} unused (at the latest in {_minutes(max_lifetime_s)}).")


@agent.command("status")
@json_option
def agent_status(as_json: bool) -> None:
    """Say whether an agent holds the key of this CHATCLI_HOME (exit code 0)
    or not (exit code 1), its pid and when it forgets the key."""
    from chatcli.client import agent as agent_client
    from chatcli.client.home import Home

    home = Home.from_env()
    found = agent_client.status(home.agent_socket)
    if as_json:
        emit_json(found.to_json() if found is not None
                  else {"running": False, "socket": str(home.agent_socket)})
    elif found is not None:
        info(f"agent running (pid {found.pid}) for {home.root}; it forgets the key in "
             f"{_minutes(found.forgets_in_s)} (at the latest in "
             f"{_minutes(found.lifetime_left_s)}).")
    else:
        info(f"no agent is running for {home.root}.")
    if found is None:
        click.get_current_context().exit(1)


@agent.command("stop")
@json_option
def agent_stop(as_json: bool) -> None:
    """Make the agent of this CHATCLI_HOME forget the key and exit (nothing
    to do, exit code 0, when none is running)."""
    from chatcli.client import agent as agent_client
    from chatcli.client.home import Home

    home = Home.from_env()
    pid = agent_client.stop(home.agent_socket)
    if as_json:
        emit_json({"stopped": pid is not None, "pid": pid})
    elif pid is not None:
        info(f"agent stopped (pid {pid}).")
    else:
        info(f"no agent was running for {home.root}.")
