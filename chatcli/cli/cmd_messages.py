"""Messages: ``send``, ``receive``, ``messages`` and ``search``."""

from __future__ import annotations

import datetime
import sys
from pathlib import Path
from typing import Any

import click

from chatcli.cli.output import (
    api_session,
    complete_contact,
    emit_json,
    info,
    json_option,
    passphrase_option,
    warn,
)


def _clock(ms: int | None) -> str:
    if ms is None:
        return "?"
    return datetime.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M")


@click.command()
@click.argument("contact", shell_complete=complete_contact)
@click.argument("text", required=False)
@click.option("--file", "file_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Send this file as an encrypted attachment (TEXT is its caption).")
@click.option("--retry-for", type=float, default=20.0, show_default=True, metavar="SECONDS",
              help="How long to keep retrying while the contact's relay is unreachable.")
@click.option("--reply-to", metavar="ID",
              help="Reply to this message, quoting it (its id from `chatcli messages`, "
                   "or a unique start of it).")
@passphrase_option
@json_option
def send(contact: str, text: str | None, file_path: Path | None, retry_for: float,
         reply_to: str | None, passphrase_file: Path | None, as_json: bool) -> None:
    """Send TEXT to CONTACT (TEXT `-` reads standard input).

    Exits 0 only once the contact's relay has durably stored the message. If
    it cannot be reached, the message stays queued (exit 3) and the next
    chatcli command that connects sends it.
    """
    from chatcli.errors import UsageError

    if text == "-":
        text = sys.stdin.read()
        if text.endswith("\n"):
            text = text[:-1]
    if text is None:
        if file_path is None:
            raise UsageError("Give the text to send (or - to read it from standard input).")
        text = ""
    if not text and file_path is None:
        raise UsageError("The message is empty.")
    params: dict[str, Any] = {"to": contact, "text": text or "", "retry_for": retry_for}
    if file_path is not None:
        params["file"] = str(file_path)
    if reply_to is not None:
        params["reply_to"] = reply_to.lstrip("#")
    with api_session(passphrase_file) as api:
        result = api.call("send", params)
    if "members" in result:
        stored, members = result["stored_for"], result["members"]
        if stored < members:
            warn(f"{members - stored} of {members} members' relays refused the message "
                 "(they may have left or deleted their account); the others have it.")
    if as_json:
        emit_json(result)


def _print_message(event: dict[str, Any]) -> None:
    from chatcli.api.events import display_sender
    from chatcli.client.chat_ui import clean
    from chatcli.client.kinds_view import quote_line, short_id

    sender = display_sender(event)
    who = f"{sender} in {event['group']}" if event["group"] else sender
    quote = quote_line(event.get("reply_to"))
    if quote:
        click.echo(clean(f"  {quote}"))
    line = f"[{_clock(event['sent_at'])}] {short_id(event['id'])} {who}: {event['text']}"
    attachment = event.get("attachment")
    if attachment:
        line += f"  [file: {attachment.get('path') or attachment.get('name')}]"
    click.echo(clean(line))
    sys.stdout.flush()


@click.command()
@click.option("--wait", type=float, default=None, metavar="SECONDS",
              help="Stay connected this long after catching up, printing each message as "
                   "it arrives.")
@click.option("--save-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where to save received attachments (default: CHATCLI_HOME/downloads).")
@click.option("--read-receipts", is_flag=True,
              help="Tell senders that their messages were read (if the account sends read "
                   "receipts); by default only delivery receipts go back.")
@click.option("--no-read-receipts", is_flag=True, hidden=True,
              help="Accepted for old scripts: read receipts are off unless --read-receipts.")
@passphrase_option
@json_option
def receive(wait: float | None, save_dir: Path | None, read_receipts: bool,
            no_read_receipts: bool, passphrase_file: Path | None, as_json: bool) -> None:
    """Fetch, decrypt, store and print new messages; complete pending handshakes.

    Stops once every waiting message was handled, unless --wait is given.
    With --json, prints one object per line: each message (id, from, text,
    sent_at, received_at, group) and each receipt, typing, presence, key change
    and notice, told apart by "type".
    """
    def show(event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "message":
            if event.get("key_changed"):
                warn(f"warning: the next message comes from the NEW, unverified "
                     f"key of {event['from']}.")
            if as_json:
                emit_json(event)
            else:
                _print_message(event)
        elif kind == "synced":
            return
        elif kind in ("reaction", "edit", "delete") and not as_json:
            from chatcli.client.chat_ui import clean
            from chatcli.client.kinds_view import action_line

            click.echo(clean(action_line(event)))
        elif as_json:
            emit_json(event)
        elif kind in ("notice", "key_change"):
            (warn if event["warning"] else info)(event["text"])

    with api_session(passphrase_file) as api:
        api.stream(show, wait=wait, read_receipts=read_receipts and not no_read_receipts,
                   save_dir=str(save_dir) if save_dir is not None else None)


@click.command()
@click.argument("contact", shell_complete=complete_contact)
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="How many of the latest messages to show.")
@passphrase_option
@json_option
def messages(contact: str, limit: int, passphrase_file: Path | None, as_json: bool) -> None:
    """Show the local history with CONTACT, both directions, with delivered/read state.

    Reads only the local database (no network). Each line starts with the
    message's short id (#1a2b3c4d), which reply, react, edit and delete accept.
    With --json, one object per message and line: id, from, to, direction,
    text, sent_at, received_at, state, reply_to, reactions, edited, deleted,
    unsupported.
    """
    marks = {"queued": "…", "sent": "✓", "delivered": "✓✓", "read": "✓✓ read",
             "failed": "✗ failed", "received": "", }
    from chatcli.client.chat_ui import clean
    from chatcli.client.kinds_view import decorated, quote_line, reactions_line, short_id

    with api_session(passphrase_file, network=False) as api:
        history = api.call("history", {"contact": contact, "limit": limit})
    for entry in history:
        if as_json:
            emit_json(entry)
            continue
        who = "me" if entry["direction"] == "out" else entry["from"]
        mark = marks.get(entry["state"], "") if entry["direction"] == "out" else ""
        attachment = entry.get("attachment")
        file = (f" [file: {attachment['name']}"
                + (f" in {attachment['path']}" if attachment.get("path") else "") + "]"
                if attachment else "")
        quote = quote_line(entry.get("reply_to"))
        if quote:
            click.echo(clean(f"  {quote}"))
        # A contact chose the text and the file name: no escape sequences reach the terminal.
        click.echo(clean(f"[{_clock(entry['sent_at'])}] {short_id(entry['id'])} {who}: "
                         f"{decorated(entry)}{file}")
                   + (f"  {mark}" if mark else ""))
        reactions = reactions_line(entry.get("reactions"))
        if reactions:
            click.echo(clean(f"  {reactions}"))


@click.command()
@click.argument("text")
@click.option("--contact", metavar="NAME", shell_complete=complete_contact,
              help="Search only the conversation with this contact.")
@click.option("--group", metavar="NAME", help="Search only this group's conversation.")
@click.option("--limit", type=click.IntRange(min=1, max=1000), default=20, show_default=True,
              help="How many of the newest matching messages to show.")
@passphrase_option
@json_option
def search(text: str, contact: str | None, group: str | None, limit: int,
           passphrase_file: Path | None, as_json: bool) -> None:
    """Find messages in the local history that contain every word of TEXT.

    Case and Unicode forms do not matter; the last word may be the beginning
    of a word (`chatcli search "lunch tom"` finds "Lunch tomorrow?"). Newest
    first: time, conversation, sender, the text around the match and the
    message id. Reads only the local database (no network). With --json, one
    object per message and line: id, conversation, contact, group, from,
    direction, sent_at, snippet, highlights.
    """
    from chatcli.client.chat_ui import search_line

    params: dict[str, Any] = {"text": text, "limit": limit}
    if contact is not None:
        params["contact"] = contact
    if group is not None:
        params["group"] = group
    with api_session(passphrase_file, network=False) as api:
        hits = api.call("search", params)
    for hit in hits:
        if as_json:
            emit_json(hit)
        else:
            click.echo(search_line(hit))
    if not hits and not as_json:
        info("No message matches.")
