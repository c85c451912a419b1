"""``chatcli profile set`` and ``chatcli profile show``."""

from __future__ import annotations

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
)


@click.group()
def profile() -> None:
    """Your profile (display name, status, avatar), encrypted for your contacts."""


@profile.command("set")
@click.option("--display-name", help="The name your contacts see.")
@click.option("--status", help="A short status line.")
@click.option("--avatar", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="An image file (at most 512 KiB).")
@passphrase_option
def profile_set(display_name: str | None, status: str | None, avatar: Path | None,
                passphrase_file: Path | None) -> None:
    """Update your profile; it is sealed with your profile key, stored on your
    relay as an opaque blob, and the key is sent to your contacts."""
    from chatcli.client.profiles import merge, own_profile, publish_profile

    avatar_bytes = avatar.read_bytes() if avatar is not None else None
    with unlocked(passphrase_file) as client:
        new = merge(own_profile(client), display_name, status, avatar_bytes)

        async def go() -> int:
            async with client.online(resume=True):
                return await publish_profile(client, new)

        told = run(go)
    info(f"Profile updated; shared with {told} contact(s).")


def _describe(profile: Any) -> dict[str, Any]:
    return {"display_name": profile.display_name, "status": profile.status,
            "avatar_bytes": len(profile.avatar) if profile.avatar else 0}


@profile.command("show")
@click.argument("contact", required=False, shell_complete=complete_contact)
@click.option("--avatar-out", type=click.Path(dir_okay=False, path_type=Path),
              help="Save the avatar image to this file.")
@passphrase_option
@json_option
def profile_show(contact: str | None, avatar_out: Path | None, passphrase_file: Path | None,
                 as_json: bool) -> None:
    """Show your profile, or CONTACT's (fetched from their relay)."""
    from chatcli.client.profiles import contact_profile, own_profile

    with unlocked(passphrase_file) as client:
        if contact is None:
            shown = own_profile(client)
        else:
            name = contact

            async def go() -> Any:
                async with client.online(resume=True):
                    return await contact_profile(client, name)

            shown = run(go)
    if shown is None:
        if as_json:
            emit_json(None)
        else:
            info("No profile has been shared." if contact else
                 "No profile yet: `chatcli profile set --display-name NAME`.")
        return
    if avatar_out is not None and shown.avatar:
        avatar_out.write_bytes(shown.avatar)
    data = _describe(shown)
    if contact:
        data["contact"] = contact
    if as_json:
        emit_json(data)
    else:
        click.echo(f"Name:   {data['display_name']}")
        click.echo(f"Status: {data['status']}")
        if data["avatar_bytes"]:
            click.echo(f"Avatar: {data['avatar_bytes']} bytes"
                       + (f" (saved to {avatar_out})" if avatar_out else ""))
