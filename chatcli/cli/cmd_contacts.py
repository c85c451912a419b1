"""Contacts: ``invite``, ``accept``, ``contacts``, ``verify``, ``block``,
``unblock`` and ``contact remove``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from chatcli.cli.output import (
    Duration,
    api_session,
    complete_contact,
    emit_json,
    info,
    json_option,
    passphrase_option,
    warn,
)


@click.command()
@click.option("--name", "label", metavar="LABEL",
              help="What you will call the person who accepts (default: the name they give).")
@click.option("--qr", is_flag=True, help="Also draw the link as a QR code on stderr.")
@click.option("--expires", type=Duration(), default="7d", show_default=True,
              help="How long the invite stays valid (e.g. 30m, 12h, 7d).")
@passphrase_option
def invite(label: str | None, qr: bool, expires: int, passphrase_file: Path | None) -> None:
    """Print a one-time invite link (and nothing else) on stdout.

    Send the link to one person over a channel you trust; they run
    `chatcli accept LINK`. It works once and expires.
    """
    with api_session(passphrase_file) as api:
        created = api.call("invites.create", {"label": label, "expires": expires})
    if created["label_taken"]:
        warn(f"warning: {label} is already a contact: whoever accepts this invite will be "
             f"taken as {label} with a NEW key, and must be verified before you can write "
             "to them.")
    link = created["link"]
    click.echo(link)
    if qr:
        import segno

        segno.make(link, error="l").terminal(out=sys.stderr, compact=True)


@click.command()
@click.argument("link")
@click.option("--name", help="What to call the inviter (default: the name they give).")
@click.option("--previous-keys", type=click.Path(path_type=Path, dir_okay=False),
              metavar="BACKUP",
              help="A key backup (`chatcli keys export`) of the identity you used before: "
                   "its key signs that your current key replaces it.")
@passphrase_option
@json_option
def accept(link: str, name: str | None, previous_keys: Path | None,
           passphrase_file: Path | None, as_json: bool) -> None:
    """Accept an invite LINK: add the inviter as a contact and send the handshake.

    Exits 0 once the inviter's relay has stored the handshake; exits 3 when the
    invite was already used or revoked (no contact is added).
    """
    params: dict[str, Any] = {"link": link, "name": name}
    if previous_keys is not None:
        from chatcli.client.unlock import get_passphrase

        params.update(previous_keys=str(previous_keys),
                      previous_passphrase=get_passphrase(passphrase_file))
    with api_session(passphrase_file) as api:
        result = api.call("invites.accept", params)
    added, fingerprint = result["name"], result["fingerprint"]
    if as_json:
        emit_json({"name": added, "fingerprint": fingerprint})
    else:
        info(f"Added {added} (fingerprint {fingerprint}).")
        info(f"Compare safety numbers with `chatcli verify {added}`.")


@click.command()
@passphrase_option
@json_option
@click.option("--offline", is_flag=True, help="Do not ask relays for online status.")
def contacts(passphrase_file: Path | None, as_json: bool, offline: bool) -> None:
    """List contacts: name, fingerprint, verified, online or last seen."""
    with api_session(passphrase_file, network=not offline) as api:
        items = api.call("contacts.list", {"offline": offline})
    if as_json:
        emit_json(items)
        return
    if not items:
        info("No contacts yet: `chatcli invite` makes a link to send to someone.")
        return
    import datetime

    for item in items:
        if item["key_changed"]:
            state = "KEY CHANGED"
        else:
            state = "verified" if item["verified"] else "unverified"
        if item["blocked"]:
            state += ", blocked"
        if item["online"] is True:
            seen = "online"
        elif isinstance(item["last_seen"], int):
            when = datetime.datetime.fromtimestamp(item["last_seen"] / 1000)
            seen = "last seen " + when.strftime("%Y-%m-%d %H:%M")
        elif item["online"] is False:
            seen = "offline"
        else:
            seen = "unknown"
        click.echo(f"{item['name']:<20} {item['fingerprint']}  {state:<12} {seen}")


@click.command()
@click.argument("contact", shell_complete=complete_contact)
@click.option("--qr", is_flag=True, help="Also draw the safety number as a QR code on stderr.")
@click.option("--confirm", is_flag=True,
              help="Mark the contact verified (and accept a changed key) after comparing.")
@click.option("--reject", is_flag=True,
              help="Refuse a changed key: keep the old one, discard and block the new one.")
@passphrase_option
@json_option
def verify(contact: str, qr: bool, confirm: bool, reject: bool, passphrase_file: Path | None,
           as_json: bool) -> None:
    """Show the safety number shared with CONTACT; compare it with theirs
    (in person or on a call), then run again with --confirm (or, for a changed
    key that does not match, --reject)."""
    from chatcli.crypto.safety import format_safety_number

    if confirm and reject:
        raise click.UsageError("--confirm and --reject exclude each other.")
    with api_session(passphrase_file, network=reject) as api:
        result = api.call("contacts.verify", {"contact": contact, "confirm": confirm,
                                              "reject": reject})
    if result.get("rejected"):
        if as_json:
            emit_json(_verify_json(result))
        else:
            info(f"{contact}: the new key was refused; the old key ({result['fingerprint']}) "
                 "stays.")
        return
    if result.get("group") is not None:  # a member of one of your groups, not a contact
        from chatcli.cli.cmd_group import show_member_safety

        show_member_safety(result, confirm=confirm, qr=qr, as_json=as_json)
        return
    if as_json:
        emit_json(_verify_json(result))
    else:
        if result["was_key_changed"] and not confirm:
            warn(f"The identity key of {contact} has CHANGED. Compare this new safety number "
                 "with them before accepting it with --confirm.")
        click.echo(format_safety_number(result["safety_number"]))
        if confirm:
            info(f"{contact}: new key accepted and verified." if result["accepted"]
                 else f"{contact} is now verified.")
    if qr:
        import segno

        segno.make(bytes.fromhex(result["qr"]), error="m").terminal(out=sys.stderr,
                                                                    compact=True)


def _verify_json(result: dict[str, Any]) -> dict[str, Any]:
    """What `verify --json` prints of a contacts.verify result."""
    keys = ("contact", "safety_number", "fingerprint", "verified", "key_changed")
    return {key: result[key] for key in keys}


@click.command()
@click.argument("contact", shell_complete=complete_contact)
@passphrase_option
def block(contact: str, passphrase_file: Path | None) -> None:
    """Refuse messages from CONTACT: their capability is revoked on your relay."""
    with api_session(passphrase_file) as api:
        api.call("contacts.block", {"contact": contact})
    info(f"Blocked {contact}.")


@click.command()
@click.argument("contact", shell_complete=complete_contact)
@passphrase_option
def unblock(contact: str, passphrase_file: Path | None) -> None:
    """Accept messages from CONTACT again (a new capability is sent to them)."""
    with api_session(passphrase_file) as api:
        api.call("contacts.unblock", {"contact": contact})
    info(f"Unblocked {contact}.")


@click.group()
def contact() -> None:
    """Manage one contact."""


@contact.command("remove")
@click.argument("name", shell_complete=complete_contact)
@passphrase_option
def contact_remove(name: str, passphrase_file: Path | None) -> None:
    """Delete contact NAME and its history; their capability is revoked."""
    with api_session(passphrase_file) as api:
        api.call("contacts.remove", {"contact": name})
    info(f"Removed {name}.")
