"""Messages: ``send``, ``receive`` and ``messages``."""

from __future__ import annotations

import datetime
import sys
from pathlib import Path
from typing import Any

import click

from chatcli.cli.output import (
    complete_contact,
    emit_json,
    info,
    json_option,
    passphrase_option,
    run,
    unlocked,
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
@passphrase_option
@json_option
def send(contact: str, text: str | None, file_path: Path | None, retry_for: float,
         passphrase_file: Path | None, as_json: bool) -> None:
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
    with unlocked(passphrase_file) as client:
        async def go() -> str:
            async with client.online(resume=True):
                attachment = None
                if file_path is not None:
                    from chatcli.client.attachments import upload_attachment

                    attachment = await upload_attachment(client, file_path)
                message_id = await client.send_text(contact, text or "",
                                                    time_limit=retry_for,
                                                    attachment=attachment)
                return message_id

        message_id = run(go)
        from chatcli.client.groups.service import group_copies_stored

        copies = group_copies_stored(client, message_id)
    result: dict[str, Any] = {"id": message_id, "to": contact, "stored": True}
    if copies is not None:
        stored, members = copies
        result.update(members=members, stored_for=stored)
        if stored < members:
            warn(f"{members - stored} of {members} members' relays refused the message "
                 "(they may have left or deleted their account); the others have it.")
    if as_json:
        emit_json(result)


def _print_message(event: Any, as_json: bool) -> None:
    if as_json:
        emit_json(event.to_json())
        return
    who = f"{event.display_name} in {event.group}" if event.group else event.display_name
    line = f"[{_clock(event.sent_at)}] {who}: {event.text}"
    if event.attachment:
        line += f"  [file: {event.attachment.get('path') or event.attachment.get('name')}]"
    click.echo(line)
    sys.stdout.flush()


@click.command()
@click.option("--wait", type=float, default=None, metavar="SECONDS",
              help="Stay connected this long after catching up, printing each message as "
                   "it arrives.")
@click.option("--save-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where to save received attachments (default: CHATCLI_HOME/downloads).")
@click.option("--no-read-receipts", is_flag=True,
              help="Do not tell senders that their messages were read (this time).")
@passphrase_option
@json_option
def receive(wait: float | None, save_dir: Path | None, no_read_receipts: bool,
            passphrase_file: Path | None, as_json: bool) -> None:
    """Fetch, decrypt, store and print new messages; complete pending handshakes.

    Stops once every waiting message was handled, unless --wait is given.
    With --json, prints one object per message and line: id, from, text,
    sent_at, received_at, group.
    """
    from chatcli.client.service import MessageEvent, NoticeEvent

    with unlocked(passphrase_file) as client:
        client.auto_read = not no_read_receipts

        async def go() -> None:
            async with client.online(resume=True):
                async for event in client.listen(wait=wait):
                    if isinstance(event, MessageEvent):
                        if event.attachment is not None:
                            from chatcli.client.attachments import download_for_event

                            event = await download_for_event(client, event, save_dir)
                        if event.unverified_key:
                            warn(f"warning: the next message comes from the NEW, unverified "
                                 f"key of {event.contact}.")
                        _print_message(event, as_json)
                    elif isinstance(event, NoticeEvent):
                        (warn if event.warning else info)(event.text)

        run(go)


@click.command()
@click.argument("contact", shell_complete=complete_contact)
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="How many of the latest messages to show.")
@passphrase_option
@json_option
def messages(contact: str, limit: int, passphrase_file: Path | None, as_json: bool) -> None:
    """Show the local history with CONTACT, both directions, with delivered/read state.

    Reads only the local database (no network). With --json, one object per
    message and line: id, from, to, direction, text, sent_at, received_at, state.
    """
    marks = {"queued": "…", "sent": "✓", "delivered": "✓✓", "read": "✓✓ read",
             "failed": "✗ failed", "received": "", }
    with unlocked(passphrase_file, network=False) as client:
        history = client.history(contact, limit)
    for entry in history:
        if as_json:
            emit_json(entry)
            continue
        who = "me" if entry["direction"] == "out" else entry["from"]
        mark = marks.get(entry["state"], "") if entry["direction"] == "out" else ""
        click.echo(f"[{_clock(entry['sent_at'])}] {who}: {entry['text']}"
                   + (f"  {mark}" if mark else ""))
