"""Where the passphrase comes from: ``CHATCLI_PASSPHRASE``, a file, or a prompt.

The passphrase is never printed or logged. A file holds it on its first line
(a trailing newline is removed). Without a terminal and without either source
the command stops with a usage error instead of hanging.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from chatcli.errors import UsageError

ENV_PASSPHRASE = "CHATCLI_PASSPHRASE"  # noqa: S105 - the variable's name
MIN_LENGTH = 8


def read_passphrase_file(path: Path) -> str:
    """The first line of ``path``, without its newline."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"Cannot read the passphrase file {path}: {exc.strerror}.") from None
    line = text.splitlines()[0] if text else ""
    if not line:
        raise UsageError(f"The passphrase file {path} is empty.")
    return line


def get_passphrase(
    passphrase_file: Path | None = None, *, confirm: bool = False, prompt: str = "Passphrase"
) -> str:
    """The passphrase from ``--passphrase-file``, ``CHATCLI_PASSPHRASE`` or a hidden
    prompt (asked twice when ``confirm``, e.g. when a keystore is created)."""
    if passphrase_file is not None:
        value = read_passphrase_file(passphrase_file)
    elif os.environ.get(ENV_PASSPHRASE):
        value = os.environ[ENV_PASSPHRASE]
    else:
        if not sys.stdin.isatty():
            raise UsageError(
                "A passphrase is needed: set CHATCLI_PASSPHRASE, pass --passphrase-file, "
                "or run in a terminal."
            )
        import click

        value = click.prompt(prompt, hide_input=True, confirmation_prompt=confirm, err=True)
    if confirm and len(value) < MIN_LENGTH:
        raise UsageError(f"Choose a passphrase of at least {MIN_LENGTH} characters.")
    return value
