"""Armoured key backups: round trip, wrong passphrase, damage."""

from __future__ import annotations

import nacl.pwhash.argon2id as argon2id
import pytest

from chatcli.crypto.backup import BEGIN_LINE, END_LINE, export_armoured, import_armoured
from chatcli.crypto.errors import CorruptData, WrongPassphrase
from chatcli.crypto.keystore import KEYSTORE_MAGIC, Argon2Limits, seal_with_passphrase

FAST = Argon2Limits(argon2id.OPSLIMIT_MIN, argon2id.MEMLIMIT_MIN)
PAYLOAD = b"identity and contacts " * 40


@pytest.fixture(scope="module")
def armoured() -> str:
    return export_armoured(PAYLOAD, "backup pass", limits=FAST)


def test_round_trip_and_format(armoured: str) -> None:
    lines = armoured.splitlines()
    assert lines[0] == BEGIN_LINE and lines[-1] == END_LINE
    assert all(len(line) <= 64 for line in lines[1:-1])
    assert len(lines[1]) == 64
    assert import_armoured(armoured, "backup pass") == PAYLOAD


def test_surrounding_text_and_crlf_are_tolerated(armoured: str) -> None:
    mail = "Here is my backup:\r\n" + armoured.replace("\n", "\r\n") + "\r\nbye\r\n"
    assert import_armoured(mail, "backup pass") == PAYLOAD


def test_wrong_passphrase(armoured: str) -> None:
    with pytest.raises(WrongPassphrase):
        import_armoured(armoured, "backup pasS")


def test_modified_character_is_refused(armoured: str) -> None:
    lines = armoured.splitlines()
    for row in (1, len(lines) // 2, len(lines) - 2):
        line = lines[row]
        char = "A" if line[5] != "A" else "B"
        damaged = [*lines[:row], line[:5] + char + line[6:], *lines[row + 1 :]]
        with pytest.raises(CorruptData):
            import_armoured("\n".join(damaged), "backup pass")


def test_missing_lines_and_bad_base64(armoured: str) -> None:
    lines = armoured.splitlines()
    with pytest.raises(CorruptData):
        import_armoured("\n".join(lines[:-3] + lines[-1:]), "backup pass")
    with pytest.raises(CorruptData):
        import_armoured("\n".join(lines[:-1]), "backup pass")
    with pytest.raises(CorruptData):
        import_armoured(f"{BEGIN_LINE}\n@@@@\n{END_LINE}\n", "backup pass")


def test_keystore_blob_is_not_a_backup() -> None:
    import base64

    blob = seal_with_passphrase(b"x", "pw", magic=KEYSTORE_MAGIC, limits=FAST)
    text = f"{BEGIN_LINE}\n{base64.b64encode(blob).decode()}\n{END_LINE}\n"
    with pytest.raises(CorruptData):
        import_armoured(text, "pw")
