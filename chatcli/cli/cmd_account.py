"""``chatcli init``, ``chatcli account delete`` and ``chatcli presence``."""

from __future__ import annotations

from pathlib import Path

import click

from chatcli.cli.output import (
    api_session,
    emit_json,
    info,
    json_option,
    lean_imports,
    passphrase_option,
    run,
    unlocked,
    warn,
)


@click.command()
@click.option("--name", required=True, help="Your name, as your contacts will first see it.")
@click.option("--relay", "relay_url", required=True, metavar="URL",
              help="The relay that keeps your mailbox: ws://HOST:PORT/#FINGERPRINT "
                   "(without the fingerprint the relay's key is pinned on first use).")
@click.option("--token", help="Registration token, for a relay that is invite-only.")
@passphrase_option
@json_option
def init(name: str, relay_url: str, token: str | None, passphrase_file: Path | None,
         as_json: bool) -> None:
    """Create a new identity in CHATCLI_HOME and register its mailbox on a relay.

    The keys are stored in a keystore protected by a passphrase, asked twice
    (or taken from CHATCLI_PASSPHRASE or --passphrase-file).
    """
    lean_imports()
    from chatcli.client.home import Home
    from chatcli.client.service import create_account, validate_name
    from chatcli.client.unlock import get_passphrase
    from chatcli.protocol.address import parse_relay_url

    validate_name(name)
    parse_relay_url(relay_url)
    home = Home.from_env()
    home.require_empty()
    passphrase = get_passphrase(passphrase_file, confirm=True, prompt="New passphrase")
    from chatcli.client import agent

    agent.stop(home.agent_socket)  # a leftover agent of an earlier identity here
    with home.exclusive():
        client, tofu = run(lambda: create_account(home, passphrase, name=name,
                                                  relay_url=relay_url, token=token))
    try:
        account = client.account()
        fingerprint = client.identity.public.fingerprint()
        if tofu:
            warn("warning: the relay address had no fingerprint; its key was trusted on first "
                 f"use and is now pinned: {account.relay_url}")
        if as_json:
            emit_json({"name": account.name, "fingerprint": fingerprint,
                       "relay": account.relay_url, "home": str(home.root)})
        else:
            info(f"Created {account.name} in {home.root}.")
            info(f"Your fingerprint: {fingerprint}")
            info(f"Your relay: {account.relay_url}")
            info("Next: `chatcli invite --name FRIEND` and send them the link.")
    finally:
        client.close()


@click.group()
def account() -> None:
    """Manage this identity's account on its relay."""


@account.command("delete")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@passphrase_option
def account_delete(yes: bool, passphrase_file: Path | None) -> None:
    """Delete the mailbox on the relay, then every local file of this identity.

    Contacts can no longer reach you; messages and keys on this machine are
    gone. Export a backup first (`chatcli keys export`) if you may want them.
    """
    from chatcli.client.home import Home
    from chatcli.daemon.instance import refuse_while_running

    home = Home.from_env()
    home.require()
    refuse_while_running(home.root, "deleting the account")
    if not yes:
        click.confirm(f"Delete the account in {home.root} and its mailbox on the relay? "
                      "This cannot be undone", abort=True, err=True)
    with unlocked(passphrase_file) as client, home.exclusive():
        async def go() -> None:
            async with client.online():
                await client.delete_account()

        run(go)
    from chatcli.client import agent

    agent.stop(home.agent_socket)  # it would only hold the key of a deleted keystore
    info(f"Deleted the account and its local data in {home.root}.")


@click.command()
@click.option("--hide", "mode", flag_value="hide", help="Hide online status and last seen.")
@click.option("--show", "mode", flag_value="show", help="Show online status and last seen "
              "to contacts.")
@passphrase_option
@json_option
def presence(mode: str | None, passphrase_file: Path | None, as_json: bool) -> None:
    """Hide or show your online status and last-seen time (without an option:
    print the current setting)."""
    with api_session(passphrase_file, network=mode is not None) as api:
        if mode is not None:
            hidden = api.call("presence.set", {"mode": mode})["hidden"]
        else:
            hidden = api.call("settings.get")["presence_hidden"]
    if as_json:
        emit_json({"hidden": hidden})
    else:
        click.echo("hidden" if hidden else "shown")


@account.command("settings")
@click.option("--read-receipts/--no-read-receipts", default=None,
              help="Tell contacts when you have read their messages (default: on).")
@passphrase_option
@json_option
def account_settings(read_receipts: bool | None, passphrase_file: Path | None,
                     as_json: bool) -> None:
    """Show or change this identity's settings (read receipts; presence is
    `chatcli presence`)."""
    with api_session(passphrase_file, network=False) as api:
        if read_receipts is not None:
            data = api.call("settings.set", {"read_receipts": read_receipts})
        else:
            data = api.call("settings.get")
    if as_json:
        emit_json(data)
    else:
        for key, value in data.items():
            click.echo(f"{key}: {value}")
