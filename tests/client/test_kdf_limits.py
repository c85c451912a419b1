"""Which Argon2id costs new keystores and backups get."""

from __future__ import annotations

from pathlib import Path

import nacl.pwhash.argon2id as argon2id
import pytest

from chatcli.client import keys
from chatcli.crypto import keystore


def test_backups_use_sensitive_and_keystores_moderate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(keys.ENV_FAST_KDF, raising=False)
    assert keys.kdf_limits() == keystore.MODERATE
    assert keys.kdf_limits(backup=True) == keystore.SENSITIVE


def test_fast_kdf_works_in_the_test_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(keys.ENV_FAST_KDF, "1")
    assert keys.fast_kdf_allowed()
    assert keys.kdf_limits(backup=True) == keystore.Argon2Limits(
        argon2id.OPSLIMIT_MIN, argon2id.MEMLIMIT_MIN)


def test_fast_kdf_is_ignored_by_an_installed_chatcli(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # An installed chatcli lives in site-packages, with no test suite beside it.
    installed = tmp_path / "site-packages" / "chatcli" / "client" / "keys.py"
    installed.parent.mkdir(parents=True)
    installed.write_text("")
    monkeypatch.setattr(keys, "__file__", str(installed))
    monkeypatch.setenv(keys.ENV_FAST_KDF, "1")
    assert not keys.fast_kdf_allowed()
    assert keys.kdf_limits() == keystore.MODERATE
    assert keys.kdf_limits(backup=True) == keystore.SENSITIVE
