"""The root ``chatcli`` group: lazy subcommands and one error policy.

Subcommands are registered by name as ``"module:attribute"`` strings and
imported only when invoked (or when help lists them: then only their module is
imported, and modules keep their own heavy imports inside functions).

Error policy: a :class:`chatcli.errors.ChatcliError` prints one line
``chatcli: error: <message>`` on stderr and exits with its ``exit_code``;
anything unexpected prints one line too (a traceback only with
``CHATCLI_DEBUG=1``) and exits 1. Usage errors exit 2 (click's own).
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from typing import Any

import click

from chatcli import __version__
from chatcli.errors import ChatcliError

# name -> "module:attribute". Keep sorted by name; docs/cli.md documents each.
COMMANDS: dict[str, str] = {
    "accept": "chatcli.cli.cmd_contacts:accept",
    "account": "chatcli.cli.cmd_account:account",
    "agent": "chatcli.cli.cmd_agent:agent",
    "block": "chatcli.cli.cmd_contacts:block",
    "chat": "chatcli.cli.cmd_chat:chat",
    "contact": "chatcli.cli.cmd_contacts:contact",
    "contacts": "chatcli.cli.cmd_contacts:contacts",
    "daemon": "chatcli.cli.cmd_daemon:daemon",
    "delete": "chatcli.cli.cmd_msgkinds:delete",
    "edit": "chatcli.cli.cmd_msgkinds:edit",
    "device": "chatcli.cli.cmd_device:device",
    "group": "chatcli.cli.cmd_group:group",
    "init": "chatcli.cli.cmd_account:init",
    "invite": "chatcli.cli.cmd_contacts:invite",
    "keys": "chatcli.cli.cmd_keys:keys",
    "messages": "chatcli.cli.cmd_messages:messages",
    "presence": "chatcli.cli.cmd_account:presence",
    "profile": "chatcli.cli.cmd_profile:profile",
    "react": "chatcli.cli.cmd_msgkinds:react",
    "receive": "chatcli.cli.cmd_messages:receive",
    "relay": "chatcli.relay.cli:relay",
    "search": "chatcli.cli.cmd_messages:search",
    "send": "chatcli.cli.cmd_messages:send",
    "unblock": "chatcli.cli.cmd_contacts:unblock",
    "verify": "chatcli.cli.cmd_contacts:verify",
    "web": "chatcli.cli.cmd_web:web",
}


def _load(target: str) -> click.Command:
    module_name, _, attr = target.partition(":")
    command = getattr(importlib.import_module(module_name), attr)
    if not isinstance(command, click.Command):
        raise TypeError(f"{target} is not a click command")
    return command


def _available() -> dict[str, str]:
    """Commands whose module exists (a command is listed only once it is built)."""
    import importlib.util

    found = {}
    for name, target in COMMANDS.items():
        module_name = target.partition(":")[0]
        try:
            if importlib.util.find_spec(module_name) is not None:
                found[name] = target
        except ModuleNotFoundError:
            continue
    return found


def report_error(message: str) -> None:
    """Print one error line on stderr, in the one format chatcli uses."""
    click.echo(f"chatcli: error: {message}", err=True)


class LazyGroup(click.Group):
    """A click group that imports each subcommand only when it is needed, and
    turns chatcli errors into one line on stderr with the documented exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(_available()))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        target = _available().get(cmd_name)
        return _load(target) if target else None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ChatcliError as exc:
            report_error(str(exc))
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            click.echo("", err=True)
            ctx.exit(130)
        except BrokenPipeError:
            # stdout closed early (e.g. piped into head): not an error.
            sys.stderr.close()
            ctx.exit(0)
        except Exception as exc:
            if os.environ.get("CHATCLI_DEBUG"):
                traceback.print_exc()
            report_error(f"internal error ({type(exc).__name__}); run with CHATCLI_DEBUG=1 "
                         "for details")
            ctx.exit(1)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="chatcli")
def cli() -> None:
    """chatcli: end-to-end encrypted chat in the terminal.

    Every message is encrypted on this machine before it leaves; relays store
    only sealed ciphertext. Start with `chatcli init`, then `chatcli invite`.
    Exit codes: 0 success, 1 error, 2 usage, 3 relay unreachable or refusing,
    4 a contact's key changed and has not been accepted, 5 an attachment too large
    for the relay, 6 this installation was replaced by a backup restored elsewhere.
    """
