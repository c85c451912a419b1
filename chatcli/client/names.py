"""Local names of contacts and groups: what a usable one looks like."""

from __future__ import annotations

import re

from chatcli.errors import UsageError

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")


def validate_name(name: str) -> str:
    """A contact or group name: 1-64 letters, digits and ``._@+-``, starting with
    a letter or digit (so it never looks like an option)."""
    if not NAME_RE.fullmatch(name):
        raise UsageError(
            f"{name[:70]!r} is not a usable name: use 1-64 letters, digits and . _ @ + -, "
            "starting with a letter or digit."
        )
    return name
