"""``chatcli profile set`` and ``chatcli profile show``."""

from __future__ import annotations

from pathlib import Path

import click

from chatcli.cli.output import (
    api_session,
    complete_contact,
    emit_json,
    info,
    json_option,
    passphrase_option,
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
    with api_session(passphrase_file) as api:
        told = api.call("profile.set", {
            "display_name": display_name, "status": status,
            "avatar": str(avatar) if avatar is not None else None})["shared_with"]
    info(f"Profile updated; shared with {told} contact(s).")


@profile.command("show")
@click.argument("contact", required=False, shell_complete=complete_contact)
@click.option("--avatar-out", type=click.Path(dir_okay=False, path_type=Path),
              help="Save the avatar image to this file.")
@passphrase_option
@json_option
def profile_show(contact: str | None, avatar_out: Path | None, passphrase_file: Path | None,
                 as_json: bool) -> None:
    """Show your profile, or CONTACT's (fetched from their relay)."""
    with api_session(passphrase_file, network=contact is not None) as api:
        shown = api.call("profile.get", {"contact": contact,
                                         "avatar": avatar_out is not None})
    if shown is None:
        if as_json:
            emit_json(None)
        else:
            info("No profile has been shared." if contact else
                 "No profile yet: `chatcli profile set --display-name NAME`.")
        return
    if avatar_out is not None and shown.get("avatar"):
        import base64

        avatar_out.write_bytes(base64.b64decode(shown["avatar"]))
    data = {key: value for key, value in shown.items() if key != "avatar"}
    if as_json:
        emit_json(data)
    else:
        click.echo(f"Name:   {data['display_name']}")
        click.echo(f"Status: {data['status']}")
        if data["avatar_bytes"]:
            click.echo(f"Avatar: {data['avatar_bytes']} bytes"
                       + (f" (saved to {avatar_out})" if avatar_out else ""))
