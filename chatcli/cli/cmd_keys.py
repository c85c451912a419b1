"""``chatcli keys export`` and ``chatcli keys import``: passphrase-protected backups."""

from __future__ import annotations

from pathlib import Path

import click

from chatcli.cli.output import (
    emit_json,
    info,
    json_option,
    lean_imports,
    passphrase_option,
    run,
    warn,
)


@click.group()
def keys() -> None:
    """Back up and restore this identity (keys, mailbox, contacts)."""


@keys.command("export")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite FILE if it exists.")
@passphrase_option
def keys_export(file: Path, force: bool, passphrase_file: Path | None) -> None:
    """Write a backup of the identity to FILE, protected by the passphrase.

    It holds the identity and mailbox keys, the relay address, the contacts
    with their addresses and verification state, and the groups; not the
    message history, the sessions nor the group keys (they are set up again by
    themselves after an import).
    """
    lean_imports()
    from chatcli.client.keys import kdf_limits
    from chatcli.client.unlock import get_passphrase
    from chatcli.crypto.backup import export_armoured
    from chatcli.crypto.keystore import atomic_write
    from chatcli.errors import UsageError

    if file.exists() and not force:
        raise UsageError(f"{file} exists; choose another file or pass --force.")
    passphrase = get_passphrase(passphrase_file)
    from chatcli.client.home import Home
    from chatcli.client.service import ChatClient

    home = Home.from_env()
    home.require()
    client = ChatClient.unlock(home, passphrase)
    try:
        armoured = export_armoured(client.export_backup(), passphrase,
                                   limits=kdf_limits(backup=True))  # type: ignore[arg-type]
    finally:
        client.close()
    try:
        atomic_write(file, armoured.encode("ascii"))
    except OSError as exc:
        raise UsageError(f"Cannot write {file}: {exc.strerror}.") from None
    info(f"Backup written to {file}. Keep it safe: with the passphrase it is your identity.")


@keys.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@passphrase_option
@json_option
def keys_import(file: Path, passphrase_file: Path | None, as_json: bool) -> None:
    """Restore a backup from FILE into an empty CHATCLI_HOME.

    The backup's passphrase unlocks it and protects the new keystore. Sessions
    with contacts are set up again by themselves at the next message; safety
    numbers do not change. The relay is told that this installation replaces
    the one the backup came from, which then stops with exit code 6.
    """
    lean_imports()
    from chatcli.client.home import Home
    from chatcli.client.service import ChatClient
    from chatcli.client.unlock import get_passphrase
    from chatcli.crypto.backup import import_armoured
    from chatcli.errors import UsageError

    home = Home.from_env()
    home.require_empty()
    try:
        text = file.read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise UsageError(f"Cannot read {file}: {exc.strerror}.") from None
    passphrase = get_passphrase(passphrase_file)
    payload = import_armoured(text, passphrase)
    from chatcli.client import agent

    agent.stop(home.agent_socket)  # a leftover agent must not serve the old key
    from chatcli.errors import RelayError

    with home.exclusive():
        client = ChatClient.import_backup(home, payload, passphrase)
    try:
        account = client.account()
        names = client.contact_names()
        fingerprint = client.identity.public.fingerprint()
        # Tell the relay at once that this installation replaces the old one,
        # so the old one stops at its next command (exit 6) instead of sending
        # into sessions its contacts will no longer have.
        try:
            run(client.take_over_mailbox)
        except RelayError as exc:
            warn(f"{exc} The old installation will be told it was replaced when this one "
                 "next reaches the relay.")
    finally:
        client.close()
    if as_json:
        emit_json({"name": account.name, "fingerprint": fingerprint,
                   "relay": account.relay_url, "contacts": sorted(names)})
    else:
        info(f"Restored {account.name} ({fingerprint}) with {len(names)} contact(s) "
             f"into {home.root}.")
