"""``chatcli chat CONTACT``: the interactive, real-time conversation.

The work is in :mod:`chatcli.client.chat_ui`; this module only checks the
terminal, unlocks the identity and resolves CONTACT (a changed key stops here
with exit code 4, as in every other command). When a ``chatcli daemon`` runs
for the home, the chat goes through it instead (:mod:`chatcli.client.chat_remote`):
no passphrase, and every window and command of the identity sees the same
conversation.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from chatcli.cli.output import complete_contact, passphrase_option, unlocked


@click.command()
@click.argument("contact", shell_complete=complete_contact)
@click.option("--history", "history_limit", type=click.IntRange(min=0), default=20,
              show_default=True, metavar="N",
              help="How many earlier messages to show when the chat opens.")
@passphrase_option
def chat(contact: str, history_limit: int, passphrase_file: Path | None) -> None:
    """Chat with CONTACT interactively, in real time.

    Shows the recent history, then new messages as they arrive while you type,
    with marks on your own messages (… pending, ✓ at their relay, ✓✓ delivered,
    ✓✓ read), the contact's typing indicator and presence in the status line.
    Sends read receipts for the messages it shows (unless turned off for the
    account). Messages go through the same durable outbox as `chatcli send`;
    after a network drop the chat reconnects by itself and sends what was
    queued. Inside: /help, /history, /quit; Ctrl-D (or Ctrl-C) leaves.

    While a `chatcli daemon` runs, the chat goes through it (no passphrase):
    several chat windows and commands on one identity all see every message,
    own sends included. If the daemon stops, the chat ends with exit code 1
    (what was not sent yet stays queued in the daemon's outbox).
    """
    from chatcli.errors import UsageError

    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError("`chatcli chat` needs a terminal; in scripts use `chatcli send` "
                         "and `chatcli receive --wait SECONDS`.")
    from chatcli.client.home import Home
    from chatcli.daemon.sync_client import enabled, find

    root = Home.from_env().root
    daemon = find(root)
    if daemon is not None:
        from chatcli.client.chat_remote import resolve_remote_target, run_remote_chat

        run_remote_chat(daemon, resolve_remote_target(daemon, contact), history=history_limit)
        return
    if enabled():
        # A daemon that holds the home but does not answer (starting, stuck):
        # a direct chat would deliver from the same outbox beside it.
        from chatcli.daemon.instance import refuse_while_running

        refuse_while_running(root, "`chatcli chat`")
    from chatcli.client.chat_ui import resolve_target, run_terminal_chat

    with unlocked(passphrase_file) as client:
        target = resolve_target(client, contact)
        run_terminal_chat(client, target, history=history_limit)
