"""Armoured, passphrase-protected key backups (``chatcli keys export``).

The body is the same sealed blob as the keystore (see
:mod:`chatcli.crypto.keystore`) with magic ``b"CCKB"``, base64-encoded and
wrapped at 64 columns between BEGIN/END lines. What the payload holds
(identity, contacts, verification state) is the client's business; this
module only protects it.
"""

from __future__ import annotations

import base64
import binascii
import re

from chatcli.crypto.errors import CorruptData
from chatcli.crypto.keystore import (
    BACKUP_MAGIC,
    MODERATE,
    Argon2Limits,
    open_with_passphrase,
    seal_with_passphrase,
)

BEGIN_LINE = "-----BEGIN CHATCLI KEY BACKUP-----"
END_LINE = "-----END CHATCLI KEY BACKUP-----"
_WIDTH = 64
_ARMOUR = re.compile(
    re.escape(BEGIN_LINE) + r"\s*\n(?P<body>[A-Za-z0-9+/=\s]*?)\n?\s*" + re.escape(END_LINE)
)


def export_armoured(payload: bytes, passphrase: str, *, limits: Argon2Limits = MODERATE) -> str:
    """Encrypt ``payload`` under ``passphrase`` and armour it as text (ends in a newline)."""
    blob = seal_with_passphrase(payload, passphrase, magic=BACKUP_MAGIC, limits=limits)
    encoded = base64.b64encode(blob).decode("ascii")
    lines = [encoded[i : i + _WIDTH] for i in range(0, len(encoded), _WIDTH)]
    return "\n".join([BEGIN_LINE, *lines, END_LINE]) + "\n"


def import_armoured(text: str, passphrase: str) -> bytes:
    """Decode and decrypt an armoured backup; text around the armour is ignored.

    Raises :class:`CorruptData` if the armour or its content is damaged, and
    :class:`WrongPassphrase` if it is intact but the passphrase does not open it.
    """
    match = _ARMOUR.search(text.replace("\r\n", "\n"))
    if match is None:
        raise CorruptData("This is not a chatcli key backup (no BEGIN/END lines found).")
    body = "".join(match.group("body").split())
    try:
        blob = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise CorruptData("The key backup is damaged (invalid base64).") from None
    return open_with_passphrase(blob, passphrase, magic=BACKUP_MAGIC)


__all__ = ["BEGIN_LINE", "END_LINE", "export_armoured", "import_armoured"]
