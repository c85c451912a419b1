"""Groups: ``group create|add|remove|leave|list|members|verify|messages``.

Sending to a group is ``chatcli send GROUP TEXT``; its messages arrive with
``chatcli receive`` (``--json`` gives the group's local name in ``group``).
"""

from __future__ import annotations

import datetime
import sys
from pathlib import Path
from typing import Any

import click

from chatcli.cli.output import api_session, emit_json, info, json_option, passphrase_option


@click.group()
def group() -> None:
    """Group chats: every member gets each message, encrypted once with the
    sender's group key; relays learn no group name and no member list.

    The creator of a group adds and removes members; anyone can leave.
    Send with `chatcli send GROUP TEXT`, read with `chatcli receive`.
    """


@group.command()
@click.argument("name")
@click.option("--member", "members", multiple=True, metavar="CONTACT",
              help="Invite this contact (repeatable).")
@passphrase_option
@json_option
def create(name: str, members: tuple[str, ...], passphrase_file: Path | None,
           as_json: bool) -> None:
    """Create the group NAME and invite contacts to it.

    NAME must differ from every contact and group name. Invited contacts
    become members when their client next receives and yours receives their
    answer.
    """
    with api_session(passphrase_file) as api:
        result = api.call("groups.create", {"name": name, "members": list(members)})
    if as_json:
        emit_json(result)
    else:
        info(f"Group {name} created" + (f"; invited {', '.join(dict.fromkeys(members))}."
                                        if members else "."))


@group.command()
@click.argument("name")
@click.argument("contact")
@passphrase_option
def add(name: str, contact: str, passphrase_file: Path | None) -> None:
    """Invite CONTACT to the group NAME (creator only). Inviting a current member
    again lets one restored from a backup rejoin with new keys."""
    with api_session(passphrase_file) as api:
        api.call("groups.add", {"group": name, "contact": contact})
    info(f"Invited {contact} to {name}; they join when their client next receives.")


@group.command()
@click.argument("name")
@click.argument("member")
@passphrase_option
def remove(name: str, member: str, passphrase_file: Path | None) -> None:
    """Remove MEMBER (a contact name, a member's name or fingerprint) from NAME
    (creator only). Every remaining member then makes a new group key, so the
    removed member cannot read what is sent afterwards."""
    with api_session(passphrase_file) as api:
        api.call("groups.remove", {"group": name, "member": member})
    info(f"Removed {member} from {name}.")


@group.command()
@click.argument("name")
@passphrase_option
def leave(name: str, passphrase_file: Path | None) -> None:
    """Leave the group NAME: the members are told, and make new group keys."""
    with api_session(passphrase_file) as api:
        api.call("groups.leave", {"group": name})
    info(f"You left {name}.")


@group.command(name="list")
@passphrase_option
@json_option
def list_(passphrase_file: Path | None, as_json: bool) -> None:
    """List groups: local name, creator's name for it, admin, members, status."""
    with api_session(passphrase_file, network=False) as api:
        groups = api.call("groups.list")
    if as_json:
        emit_json(groups)
        return
    for g in groups:
        extra = ("" if g["name"] == g["creator_name"]
                 else f" (the creator calls it {g['creator_name']})")
        status = "" if g["status"] == "active" else f" [{g['status']}]"
        count = f"{g['members']} member" + ("" if g["members"] == 1 else "s")
        click.echo(f"{g['name']}{extra}: {count}, admin {g['admin']}{status}")


@group.command()
@click.argument("name")
@passphrase_option
@json_option
def members(name: str, passphrase_file: Path | None, as_json: bool) -> None:
    """List the members of NAME: name, whether a contact, fingerprint, admin,
    verified. Members who are not contacts show the name they gave themselves."""
    with api_session(passphrase_file, network=False) as api:
        result = api.call("groups.members", {"group": name})
    people, invited = result["members"], result["invited"]
    if as_json:
        emit_json(people)
        return
    for p in people:
        tags = [t for t in ("me", "admin", "verified") if p[t]]
        if not p["me"] and p["contact"] is None:
            tags.append("not a contact")
        click.echo(f"{p['name']}  {p['fingerprint']}"
                   + (f"  ({', '.join(tags)})" if tags else ""))
    for who in invited:
        click.echo(f"{who}  (invited, not joined yet)")


@group.command()
@click.argument("name")
@click.argument("member")
@click.option("--confirm", is_flag=True, help="Mark the member verified after comparing.")
@passphrase_option
@json_option
def verify(name: str, member: str, confirm: bool, passphrase_file: Path | None,
           as_json: bool) -> None:
    """Show the safety number shared with MEMBER of NAME (contact or not);
    compare it with theirs, then run again with --confirm."""
    with api_session(passphrase_file, network=False) as api:
        result = api.call("groups.verify", {"group": name, "member": member,
                                            "confirm": confirm})
    show_member_safety(result, confirm=confirm, qr=False, as_json=as_json)


def show_member_safety(result: dict[str, Any], *, confirm: bool, qr: bool,
                       as_json: bool) -> None:
    """Print the safety number with a group member (also used by ``chatcli verify``
    for a member who is not a contact)."""
    from chatcli.crypto.safety import format_safety_number

    if as_json:
        keys = ("group", "member", "contact", "safety_number", "fingerprint", "verified",
                "key_changed")
        emit_json({key: result[key] for key in keys})
    else:
        click.echo(format_safety_number(result["safety_number"]))
        if confirm:
            info(f"{result['member']} (in {result['group']}) is now verified.")
    if qr:
        import segno

        segno.make(bytes.fromhex(result["qr"]), error="m").terminal(out=sys.stderr,
                                                                    compact=True)


@group.command()
@click.argument("name")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="How many of the latest messages to show.")
@passphrase_option
@json_option
def messages(name: str, limit: int, passphrase_file: Path | None, as_json: bool) -> None:
    """Show the local history of the group NAME (no network)."""
    from chatcli.client.chat_ui import clean

    with api_session(passphrase_file, network=False) as api:
        history = api.call("groups.history", {"group": name, "limit": limit})
    for entry in history:
        if as_json:
            emit_json(entry)
            continue
        when = datetime.datetime.fromtimestamp(entry["sent_at"] / 1000).strftime(
            "%Y-%m-%d %H:%M")
        attachment = entry.get("attachment")
        file = (f" [file: {attachment['name']}"
                + (f" in {attachment['path']}" if attachment.get("path") else "") + "]"
                if attachment else "")
        # Members chose the text and file names: no escape sequences reach the terminal.
        click.echo(clean(f"[{when}] {entry['from']}: {entry['text']}{file}"))
    sys.stdout.flush()
