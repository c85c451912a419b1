"""Contacts: ``invite``, ``accept``, ``contacts``, ``verify``, ``block``,
``unblock`` and ``contact remove``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from chatcli.cli.output import (
    Duration,
    complete_contact,
    emit_json,
    info,
    json_option,
    passphrase_option,
    run,
    unlocked,
    warn,
)

if TYPE_CHECKING:
    from chatcli.crypto.keys import IdentityKeyPair


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
    with unlocked(passphrase_file) as client:
        if label is not None and label in client.contact_names():
            warn(f"warning: {label} is already a contact: whoever accepts this invite will be "
                 f"taken as {label} with a NEW key, and must be verified before you can write "
                 "to them.")

        async def go() -> str:
            async with client.online(resume=True):
                return await client.create_invite(label, expires)

        link = run(go)
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
    previous = None
    if previous_keys is not None:
        previous = _identity_from_backup(previous_keys, passphrase_file)
    with unlocked(passphrase_file) as client:
        async def go() -> str:
            async with client.online(resume=True):
                return await client.accept_invite(link, name, previous_identity=previous)

        added = run(go)
        contact = client.get_contact(added)
        fingerprint = client.contact_identity(contact).fingerprint()
    if as_json:
        emit_json({"name": added, "fingerprint": fingerprint})
    else:
        info(f"Added {added} (fingerprint {fingerprint}).")
        info(f"Compare safety numbers with `chatcli verify {added}`.")


def _identity_from_backup(path: Path, passphrase_file: Path | None) -> IdentityKeyPair:
    """The old identity key in a key backup, opened with its passphrase."""
    from chatcli.client.service import ChatClient
    from chatcli.client.unlock import get_passphrase
    from chatcli.crypto.backup import import_armoured
    from chatcli.errors import UsageError

    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise UsageError(f"Cannot read {path}: {exc.strerror}.") from None
    return ChatClient.identity_of_backup(import_armoured(text, get_passphrase(passphrase_file)))


@click.command()
@passphrase_option
@json_option
@click.option("--offline", is_flag=True, help="Do not ask relays for online status.")
def contacts(passphrase_file: Path | None, as_json: bool, offline: bool) -> None:
    """List contacts: name, fingerprint, verified, online or last seen."""
    with unlocked(passphrase_file, network=not offline) as client:
        rows = client.contacts()
        status: dict[str, object] = {}
        if rows and not offline:
            async def go() -> dict[str, object]:
                async with client.online(resume=True):
                    return dict(await client.presence())

            status = run(go)
        items = []
        for contact in rows:
            presence = status.get(contact.name)
            online = getattr(presence, "online", None)
            last_seen = getattr(presence, "last_seen", None)
            items.append({
                "name": contact.name,
                "fingerprint": client.contact_identity(contact).fingerprint(),
                "verified": bool(contact.verified and not contact.key_changed),
                "key_changed": bool(contact.key_changed),
                "blocked": bool(contact.blocked),
                "online": online,
                "last_seen": last_seen,
                "relay": contact.relay_url.split("#")[0],
            })
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
    if reject:
        with unlocked(passphrase_file) as client:
            async def go() -> None:
                async with client.online(resume=True):
                    await client.reject_key_change(contact)

            run(go)
            row = client.get_contact(contact)
            fingerprint = client.contact_identity(row).fingerprint()
            number = client.safety_number(contact)[0]
        if as_json:
            emit_json({"contact": contact, "safety_number": number, "fingerprint": fingerprint,
                       "verified": bool(row.verified), "key_changed": False})
        else:
            info(f"{contact}: the new key was refused; the old key ({fingerprint}) stays.")
        return
    with unlocked(passphrase_file, network=False) as client:
        from chatcli.client.groups.service import group_of_member

        group_name = group_of_member(client, contact)
        if group_name is not None:  # a member of one of your groups, not a contact
            from chatcli.cli.cmd_group import show_member_safety

            show_member_safety(client, group_name, contact, confirm=confirm, qr=qr,
                               as_json=as_json)
            return
        number, payload, row = client.safety_number(contact)
        changed = bool(row.key_changed)
        accepted = False
        if confirm:
            accepted = client.confirm_contact(contact)
        row = client.get_contact(contact, allow_key_changed=True)
        fingerprint = client.contact_identity(row).fingerprint()
    if as_json:
        emit_json({"contact": contact, "safety_number": number, "fingerprint": fingerprint,
                   "verified": bool(row.verified), "key_changed": bool(row.key_changed)})
    else:
        if changed and not confirm:
            warn(f"The identity key of {contact} has CHANGED. Compare this new safety number "
                 "with them before accepting it with --confirm.")
        click.echo(format_safety_number(number))
        if confirm:
            info(f"{contact}: new key accepted and verified." if accepted
                 else f"{contact} is now verified.")
    if qr:
        import segno

        segno.make(payload, error="m").terminal(out=sys.stderr, compact=True)


@click.command()
@click.argument("contact", shell_complete=complete_contact)
@passphrase_option
def block(contact: str, passphrase_file: Path | None) -> None:
    """Refuse messages from CONTACT: their capability is revoked on your relay."""
    with unlocked(passphrase_file) as client:
        async def go() -> None:
            async with client.online(resume=True):
                await client.block(contact)

        run(go)
    info(f"Blocked {contact}.")


@click.command()
@click.argument("contact", shell_complete=complete_contact)
@passphrase_option
def unblock(contact: str, passphrase_file: Path | None) -> None:
    """Accept messages from CONTACT again (a new capability is sent to them)."""
    with unlocked(passphrase_file) as client:
        async def go() -> None:
            async with client.online(resume=True):
                await client.unblock(contact)

        run(go)
    info(f"Unblocked {contact}.")


@click.group()
def contact() -> None:
    """Manage one contact."""


@contact.command("remove")
@click.argument("name", shell_complete=complete_contact)
@passphrase_option
def contact_remove(name: str, passphrase_file: Path | None) -> None:
    """Delete contact NAME and its history; their capability is revoked."""
    with unlocked(passphrase_file) as client:
        async def go() -> None:
            async with client.online(resume=True):
                await client.remove_contact(name)

        run(go)
    info(f"Removed {name}.")
