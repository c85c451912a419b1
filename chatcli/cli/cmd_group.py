"""Groups: ``group create|add|remove|leave|list|members|admin|vote|info|set|verify|messages``.

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

    Admins (the creator and those it made admins) invite and remove members
    and set the group's profile; anyone can leave. Send with
    `chatcli send GROUP TEXT`, read with `chatcli receive`.
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
    become members as soon as their client receives the invitation, whether
    or not you are online then.
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
    """Invite CONTACT to the group NAME (admins). Inviting a current member
    again lets one that lost its keys rejoin with new ones."""
    with api_session(passphrase_file) as api:
        api.call("groups.add", {"group": name, "contact": contact})
    info(f"Invited {contact} to {name}; they join when their client next receives.")


@group.command()
@click.argument("name")
@click.argument("member")
@passphrase_option
def remove(name: str, member: str, passphrase_file: Path | None) -> None:
    """Remove MEMBER (a contact name, a member's name or fingerprint) from NAME,
    or withdraw an invitation (admins; an admin only by a more senior one).
    Every remaining member then makes a new group key, so the removed member
    cannot read what is sent afterwards."""
    with api_session(passphrase_file) as api:
        api.call("groups.remove", {"group": name, "member": member})
    info(f"Removed {member} from {name}.")


@group.command()
@click.argument("name")
@click.option("--successor", metavar="MEMBER",
              help="If you are the last admin: who takes the role (default: the "
                   "longest-standing member).")
@passphrase_option
def leave(name: str, successor: str | None, passphrase_file: Path | None) -> None:
    """Leave the group NAME: the members are told, and make new group keys.
    The last admin hands the role over first."""
    with api_session(passphrase_file) as api:
        result = api.call("groups.leave", {"group": name, "successor": successor})
    heir = result["successor"] if result else None
    info(f"You left {name}." + (f" {heir} is an admin now." if heir else ""))


@group.command()
@click.argument("name")
@click.argument("member")
@click.option("--remove", "remove_role", is_flag=True,
              help="Take the admin role back instead of giving it.")
@passphrase_option
def admin(name: str, member: str, remove_role: bool, passphrase_file: Path | None) -> None:
    """Make MEMBER an admin of NAME, or with --remove take the role back
    (admins; only a more senior admin takes it from another)."""
    with api_session(passphrase_file) as api:
        api.call("groups.admin", {"group": name, "member": member, "remove": remove_role})
    info(f"{member} is {'no longer' if remove_role else 'now'} an admin of {name}.")


@group.command()
@click.argument("name")
@click.argument("member")
@passphrase_option
def vote(name: str, member: str, passphrase_file: Path | None) -> None:
    """Back MEMBER as an admin of NAME. When more than half of the members
    vote for the same member, it becomes an admin: how a group whose admins
    are gone (a lost device) gets one again."""
    with api_session(passphrase_file) as api:
        api.call("groups.vote", {"group": name, "member": member})
    info(f"You voted for {member} as an admin of {name}.")


@group.command(name="info")
@click.argument("name")
@click.option("--avatar-out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the group's avatar to this file.")
@passphrase_option
@json_option
def info_(name: str, avatar_out: Path | None, passphrase_file: Path | None,
          as_json: bool) -> None:
    """Show the group's profile (name, description, avatar) and its admins."""
    import base64

    from chatcli.client.chat_ui import clean

    with api_session(passphrase_file, network=False) as api:
        result = api.call("groups.info", {"group": name, "avatar": avatar_out is not None})
    if avatar_out is not None and result.get("avatar"):
        avatar_out.write_bytes(base64.b64decode(result["avatar"]))
    if as_json:
        emit_json({k: v for k, v in result.items() if k != "avatar"})
        return
    # Admins chose the profile: no escape sequences reach the terminal.
    click.echo(clean(f"{result['title']}" + (f"  (here: {name})"
                                             if result["title"] != name else "")))
    if result["description"]:
        click.echo(clean(result["description"]))
    count = f"{result['members']} member" + ("" if result["members"] == 1 else "s")
    click.echo(clean(f"{count}, created by {result['creator']}; admins: "
                     f"{', '.join(result['admins']) or 'none'}"
                     + (f"; {result['invited']} invited" if result["invited"] else "")))
    if result["avatar_bytes"]:
        click.echo(f"avatar: {result['avatar_bytes']} bytes"
                   + (f", written to {avatar_out}" if avatar_out and result.get("avatar")
                      else ""))


@group.command(name="set")
@click.argument("name")
@click.option("--name", "title", help="The group's name in its profile (what members see).")
@click.option("--description", help="A description (at most 1000 characters).")
@click.option("--avatar", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A PNG, JPEG, GIF or WebP image of at most 32 KiB.")
@click.option("--clear-avatar", is_flag=True, help="Remove the group's avatar.")
@passphrase_option
def set_(name: str, title: str | None, description: str | None, avatar: Path | None,
         clear_avatar: bool, passphrase_file: Path | None) -> None:
    """Set the profile of the group NAME (admins): sent end to end encrypted to
    every member. Your local name for the group does not change."""
    if title is None and description is None and avatar is None and not clear_avatar:
        raise click.UsageError("Give --name, --description, --avatar or --clear-avatar.")
    with api_session(passphrase_file) as api:
        api.call("groups.set", {"group": name, "name": title, "description": description,
                                "avatar": str(avatar.resolve()) if avatar else None,
                                "clear_avatar": clear_avatar})
    info(f"The profile of {name} is updated.")


@group.command(name="list")
@passphrase_option
@json_option
def list_(passphrase_file: Path | None, as_json: bool) -> None:
    """List groups: local name, profile name, members, creator, status."""
    from chatcli.client.chat_ui import clean

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
        title = g.get("title") or g["creator_name"]
        named = "" if title in (g["name"], g["creator_name"]) else f" \"{title}\""
        click.echo(clean(f"{g['name']}{named}{extra}: {count}, created by {g['admin']}"
                         f"{' (you are an admin)' if g['is_admin'] else ''}{status}"))


@group.command()
@click.argument("name")
@passphrase_option
@json_option
def members(name: str, passphrase_file: Path | None, as_json: bool) -> None:
    """List the members of NAME: name, fingerprint, role (creator, admin),
    whether a contact, verified. Members who are not contacts show the name
    they gave themselves."""
    with api_session(passphrase_file, network=False) as api:
        result = api.call("groups.members", {"group": name})
    people, invited = result["members"], result["invited"]
    if as_json:
        emit_json(people)
        return
    for p in people:
        tags = [t for t in ("me",) if p[t]]
        if p.get("role", "member") != "member":
            tags.append(p["role"])
        tags += [t for t in ("verified",) if p[t]]
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
