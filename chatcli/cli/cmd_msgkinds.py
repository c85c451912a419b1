"""Acting on a sent or received message: ``react``, ``edit`` and ``delete``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from chatcli.cli.output import (
    api_session,
    complete_contact,
    emit_json,
    json_option,
    passphrase_option,
)

_retry_for = click.option(
    "--retry-for", type=float, default=20.0, show_default=True, metavar="SECONDS",
    help="How long to keep retrying while the contact's relay is unreachable.")


def _call(method: str, params: dict[str, Any], passphrase_file: Path | None,
          as_json: bool) -> None:
    params["id"] = str(params["id"]).lstrip("#")
    with api_session(passphrase_file) as api:
        result = api.call(method, params)
    if as_json:
        emit_json(result)


@click.command()
@click.argument("contact", shell_complete=complete_contact)
@click.argument("message_id", metavar="ID")
@click.argument("emoji", required=False)
@click.option("--remove", is_flag=True, help="Take your reaction to the message back.")
@_retry_for
@passphrase_option
@json_option
def react(contact: str, message_id: str, emoji: str | None, remove: bool, retry_for: float,
          passphrase_file: Path | None, as_json: bool) -> None:
    """React to message ID of the chat with CONTACT with EMOJI (one per person:
    a new one replaces yours). ID is the #id `chatcli messages` shows, or a
    unique start of the full id."""
    from chatcli.errors import UsageError

    if remove == bool(emoji):
        raise UsageError("Give an emoji, or --remove to take your reaction back.")
    _call("react", {"to": contact, "id": message_id, "emoji": emoji or "", "remove": remove,
                    "retry_for": retry_for}, passphrase_file, as_json)


@click.command()
@click.argument("contact", shell_complete=complete_contact)
@click.argument("message_id", metavar="ID")
@click.argument("text")
@_retry_for
@passphrase_option
@json_option
def edit(contact: str, message_id: str, text: str, retry_for: float,
         passphrase_file: Path | None, as_json: bool) -> None:
    """Replace the text of your message ID to CONTACT by TEXT; it shows
    "(edited)", and the earlier texts are kept in your local history."""
    _call("edit", {"to": contact, "id": message_id, "text": text, "retry_for": retry_for},
          passphrase_file, as_json)


@click.command()
@click.argument("contact", shell_complete=complete_contact)
@click.argument("message_id", metavar="ID")
@_retry_for
@passphrase_option
@json_option
def delete(contact: str, message_id: str, retry_for: float, passphrase_file: Path | None,
           as_json: bool) -> None:
    """Delete your message ID for everyone: CONTACT's copy becomes "message
    deleted", its text and file are erased from both local stores, and the
    file's blob is deleted from your relay. An honest client honours this; a
    modified one can keep a copy."""
    _call("delete", {"to": contact, "id": message_id, "retry_for": retry_for},
          passphrase_file, as_json)
