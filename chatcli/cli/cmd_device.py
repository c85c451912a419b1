"""``chatcli device``: this identity's devices (``list``, ``remove``, ``rename``)."""

from __future__ import annotations

from pathlib import Path

import click

from chatcli.cli.output import api_session, emit_json, info, json_option, passphrase_option


@click.group()
def device() -> None:
    """This identity's devices: list, remove or rename them."""


@device.command("list")
@passphrase_option
@json_option
def device_list(passphrase_file: Path | None, as_json: bool) -> None:
    """List the devices of this identity (its signed device list)."""
    with api_session(passphrase_file) as api:
        devices = api.call("devices.list", {})
    if as_json:
        emit_json(devices)
        return
    for entry in devices:
        mark = "  (this device)" if entry["this_device"] else ""
        click.echo(f"{entry['name']}{mark}")


@device.command("remove")
@click.argument("name")
@passphrase_option
def device_remove(name: str, passphrase_file: Path | None) -> None:
    """Remove device NAME: contacts and your other devices stop encrypting to it,
    and it is told it was removed (its commands then exit 6)."""
    with api_session(passphrase_file) as api:
        api.call("devices.remove", {"name": name})
    info(f"Removed the device {name}.")


@device.command("rename")
@click.argument("name")
@click.argument("new_name")
@passphrase_option
def device_rename(name: str, new_name: str, passphrase_file: Path | None) -> None:
    """Call device NAME NEW_NAME in the device list."""
    with api_session(passphrase_file) as api:
        api.call("devices.rename", {"name": name, "new_name": new_name})
    info(f"Renamed the device {name} to {new_name}.")
