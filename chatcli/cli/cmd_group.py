"""Groups: ``group create|add|remove|leave|list|members|verify|messages``.

Sending to a group is ``chatcli send GROUP TEXT``; its messages arrive with
``chatcli receive`` (``--json`` gives the group's local name in ``group``).
"""

from __future__ import annotations

import datetime
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from chatcli.cli.output import emit_json, info, json_option, passphrase_option, run, unlocked

if TYPE_CHECKING:
    from chatcli.client.groups.service import GroupService
    from chatcli.client.service import ChatClient


def _service(client: ChatClient) -> GroupService:
    from chatcli.client.groups.service import GroupService

    return GroupService(client)


def _deliver(client: ChatClient, what: str) -> None:
    """Register the group capability and deposit what the command queued."""
    from chatcli.errors import RelayError

    async def go() -> None:
        async with client.online():
            await _service(client).deliver(time_limit=20.0)

    try:
        run(go)
    except RelayError as exc:
        raise RelayError(f"{what} is queued but not delivered yet: {exc}") from None


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
    with unlocked(passphrase_file) as client:
        _service(client).create(name, list(members))
        _deliver(client, "The invitation")
    if as_json:
        emit_json({"group": name, "invited": list(dict.fromkeys(members))})
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
    with unlocked(passphrase_file) as client:
        _service(client).add(name, contact)
        _deliver(client, "The invitation")
    info(f"Invited {contact} to {name}; they join when their client next receives.")


@group.command()
@click.argument("name")
@click.argument("member")
@passphrase_option
def remove(name: str, member: str, passphrase_file: Path | None) -> None:
    """Remove MEMBER (a contact name, a member's name or fingerprint) from NAME
    (creator only). Every remaining member then makes a new group key, so the
    removed member cannot read what is sent afterwards."""
    with unlocked(passphrase_file) as client:
        _service(client).remove(name, member)
        _deliver(client, "The removal")
    info(f"Removed {member} from {name}.")


@group.command()
@click.argument("name")
@passphrase_option
def leave(name: str, passphrase_file: Path | None) -> None:
    """Leave the group NAME: the members are told, and make new group keys."""
    with unlocked(passphrase_file) as client:
        _service(client).leave(name)
        _deliver(client, "The notice that you left")
    info(f"You left {name}.")


@group.command(name="list")
@passphrase_option
@json_option
def list_(passphrase_file: Path | None, as_json: bool) -> None:
    """List groups: local name, creator's name for it, admin, members, status."""
    with unlocked(passphrase_file, network=False) as client:
        groups = _service(client).groups()
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
    with unlocked(passphrase_file, network=False) as client:
        service = _service(client)
        people = service.members(name)
        invited = service.invited(name)
    if as_json:
        emit_json([p.to_json() for p in people])
        return
    for p in people:
        tags = [t for t, on in (("me", p.me), ("admin", p.admin), ("verified", p.verified))
                if on]
        if not p.me and p.contact is None:
            tags.append("not a contact")
        click.echo(f"{p.name}  {p.fingerprint}" + (f"  ({', '.join(tags)})" if tags else ""))
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
    with unlocked(passphrase_file, network=False) as client:
        show_member_safety(client, name, member, confirm=confirm, qr=False, as_json=as_json)


def show_member_safety(client: ChatClient, group_name: str, member: str, *, confirm: bool,
                       qr: bool, as_json: bool) -> None:
    """The safety number with a group member (also used by ``chatcli verify`` for a
    member who is not a contact)."""
    from chatcli.crypto.safety import format_safety_number

    service = _service(client)
    number, payload, person = service.safety_number(group_name, member)
    if confirm:
        service.confirm_member(group_name, member)
    if as_json:
        emit_json({"group": group_name, "member": person.name, "contact": person.contact,
                   "safety_number": number, "fingerprint": person.fingerprint,
                   "verified": confirm or person.verified, "key_changed": False})
    else:
        click.echo(format_safety_number(number))
        if confirm:
            info(f"{person.name} (in {group_name}) is now verified.")
    if qr:
        import segno

        segno.make(payload, error="m").terminal(out=sys.stderr, compact=True)


@group.command()
@click.argument("name")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="How many of the latest messages to show.")
@passphrase_option
@json_option
def messages(name: str, limit: int, passphrase_file: Path | None, as_json: bool) -> None:
    """Show the local history of the group NAME (no network)."""
    with unlocked(passphrase_file, network=False) as client:
        history = _service(client).history(name, limit)
    for entry in history:
        if as_json:
            emit_json(entry)
            continue
        when = datetime.datetime.fromtimestamp(entry["sent_at"] / 1000).strftime(
            "%Y-%m-%d %H:%M")
        click.echo(f"[{when}] {entry['from']}: {entry['text']}")
    sys.stdout.flush()
