"""``chatcli chat CONTACT``: the interactive, real-time conversation.

The work is in :mod:`chatcli.client.chat_ui`; this module only checks the
terminal, unlocks the identity and resolves CONTACT (a changed key stops here
with exit code 4, as in every other command).
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
    """
    from chatcli.errors import UsageError

    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError("`chatcli chat` needs a terminal; in scripts use `chatcli send` "
                         "and `chatcli receive --wait SECONDS`.")
    from chatcli.client.chat_ui import resolve_target, run_terminal_chat
    from chatcli.client.home import Home
    from chatcli.daemon.instance import refuse_while_running

    refuse_while_running(Home.from_env().root, "`chatcli chat`")

    with unlocked(passphrase_file) as client:
        target = resolve_target(client, contact)
        run_terminal_chat(client, target, history=history_limit)
