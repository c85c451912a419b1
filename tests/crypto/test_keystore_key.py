"""The keystore's passphrase path split in two: derive the key, open with it."""

from __future__ import annotations

from pathlib import Path

import nacl.pwhash.argon2id as argon2id
import pytest

from chatcli.crypto.errors import CorruptData, WrongKey, WrongPassphrase
from chatcli.crypto.keystore import (
    BACKUP_MAGIC,
    KEYSTORE_MAGIC,
    Argon2Limits,
    change_passphrase,
    derive_keystore_key,
    open_with_key,
    open_with_passphrase,
    read_keystore_blob,
    seal_with_passphrase,
    write_keystore,
)

FAST = Argon2Limits(argon2id.OPSLIMIT_MIN, argon2id.MEMLIMIT_MIN)
SECRET = bytes(range(96))
PASSPHRASE = "correct horse battery"


@pytest.fixture(scope="module")
def blob() -> bytes:
    return seal_with_passphrase(SECRET, PASSPHRASE, magic=KEYSTORE_MAGIC, limits=FAST)


def test_derive_then_open_with_key(blob: bytes) -> None:
    key = derive_keystore_key(blob, PASSPHRASE)
    assert len(key) == 32
    assert open_with_key(blob, key) == SECRET
    assert open_with_key(blob, bytearray(key), magic=KEYSTORE_MAGIC) == SECRET


def test_derive_is_deterministic_per_blob(blob: bytes) -> None:
    assert derive_keystore_key(blob, PASSPHRASE) == derive_keystore_key(blob, PASSPHRASE)
    # NFKC normalisation applies as for open_with_passphrase.
    assert derive_keystore_key(blob, "ｃorrect horse battery") == derive_keystore_key(
        blob, PASSPHRASE)


def test_open_with_passphrase_is_derive_plus_open(blob: bytes) -> None:
    assert open_with_passphrase(blob, PASSPHRASE, magic=KEYSTORE_MAGIC) == SECRET
    with pytest.raises(WrongPassphrase) as info:
        open_with_passphrase(blob, "not the passphrase", magic=KEYSTORE_MAGIC)
    assert type(info.value) is WrongPassphrase  # not the key-specific subclass


def test_wrong_key_is_refused(blob: bytes) -> None:
    key = derive_keystore_key(blob, "another passphrase")
    with pytest.raises(WrongKey):
        open_with_key(blob, key)
    with pytest.raises(WrongPassphrase):  # WrongKey is a WrongPassphrase
        open_with_key(blob, bytes(32))


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_key_of_wrong_length_is_refused(blob: bytes, size: int) -> None:
    with pytest.raises(WrongKey):
        open_with_key(blob, bytes(size))


def test_reencrypted_blob_needs_a_new_key(blob: bytes) -> None:
    key = derive_keystore_key(blob, PASSPHRASE)
    again = seal_with_passphrase(SECRET, PASSPHRASE, magic=KEYSTORE_MAGIC, limits=FAST)
    with pytest.raises(WrongKey):  # a fresh salt: the old key does not open it
        open_with_key(again, key)


def test_damage_is_corrupt_data_not_wrong_key(blob: bytes) -> None:
    key = derive_keystore_key(blob, PASSPHRASE)
    with pytest.raises(CorruptData):
        open_with_key(blob[:-1], key)
    damaged = bytearray(blob)
    damaged[70] ^= 1
    with pytest.raises(CorruptData):
        open_with_key(bytes(damaged), key)
    with pytest.raises(CorruptData):
        derive_keystore_key(bytes(damaged), PASSPHRASE)
    with pytest.raises(CorruptData):
        open_with_key(blob, key, magic=BACKUP_MAGIC)
    with pytest.raises(CorruptData):
        derive_keystore_key(blob, PASSPHRASE, magic=BACKUP_MAGIC)


def test_backup_magic() -> None:
    backup = seal_with_passphrase(SECRET, PASSPHRASE, magic=BACKUP_MAGIC, limits=FAST)
    key = derive_keystore_key(backup, PASSPHRASE, magic=BACKUP_MAGIC)
    assert open_with_key(backup, key, magic=BACKUP_MAGIC) == SECRET


def test_keystore_file_and_change_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "identity.keystore"
    write_keystore(path, SECRET, PASSPHRASE, limits=FAST)
    key = derive_keystore_key(read_keystore_blob(path), PASSPHRASE)
    assert open_with_key(read_keystore_blob(path), key) == SECRET
    change_passphrase(path, PASSPHRASE, "a new passphrase", limits=FAST)
    with pytest.raises(WrongKey):
        open_with_key(read_keystore_blob(path), key)
