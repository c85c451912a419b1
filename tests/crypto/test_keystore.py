"""Keystore: round trip, errors that tell a wrong passphrase from damage, 0600, atomicity."""

from __future__ import annotations

import hashlib
import inspect
import os
import stat
import struct
from pathlib import Path

import nacl.pwhash.argon2id as argon2id
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatcli.crypto import keystore
from chatcli.crypto.errors import CorruptData, EmptyPassphrase, WrongPassphrase
from chatcli.crypto.keystore import (
    HEADER_SIZE,
    KEYSTORE_MAGIC,
    MODERATE,
    Argon2Limits,
    change_passphrase,
    open_with_passphrase,
    read_keystore,
    read_limits,
    seal_with_passphrase,
    write_keystore,
)

# Tests use libsodium's minimum costs; the product default is checked separately.
FAST = Argon2Limits(argon2id.OPSLIMIT_MIN, argon2id.MEMLIMIT_MIN)
SECRET = bytes(range(64))
# The module-scoped blob fixture is immutable, so reusing it across examples is safe.
_FIXTURE_OK = [HealthCheck.function_scoped_fixture]


def _rechecksum(blob: bytes) -> bytes:
    body = blob[:-32]
    return body + hashlib.blake2b(body, digest_size=32).digest()


@pytest.fixture(scope="module")
def blob() -> bytes:
    return seal_with_passphrase(SECRET, "correct horse", magic=KEYSTORE_MAGIC, limits=FAST)


def test_round_trip_and_mode(tmp_path: Path) -> None:
    path = tmp_path / "keys.bin"
    old_umask = os.umask(0)  # even a permissive umask must not widen the mode
    try:
        write_keystore(path, SECRET, "correct horse", limits=FAST)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_keystore(path, "correct horse") == SECRET
    raw = path.read_bytes()
    assert raw[:4] == b"CCKS" and raw[4] == 1
    assert SECRET not in raw
    assert [p.name for p in tmp_path.iterdir()] == ["keys.bin"]


def test_product_default_is_moderate_or_stronger(tmp_path: Path) -> None:
    assert inspect.signature(write_keystore).parameters["limits"].default == MODERATE
    assert MODERATE.opslimit >= argon2id.OPSLIMIT_MODERATE
    assert MODERATE.memlimit >= argon2id.MEMLIMIT_MODERATE
    path = tmp_path / "k"
    write_keystore(path, b"s", "pw")  # one real MODERATE derivation
    assert read_limits(path.read_bytes(), magic=KEYSTORE_MAGIC) == MODERATE


def test_wrong_passphrase(blob: bytes) -> None:
    with pytest.raises(WrongPassphrase):
        open_with_passphrase(blob, "correct horsf", magic=KEYSTORE_MAGIC)


def test_passphrase_is_unicode_normalised() -> None:
    sealed = seal_with_passphrase(b"x", "caf\u00e9", magic=KEYSTORE_MAGIC, limits=FAST)
    assert open_with_passphrase(sealed, "cafe\u0301", magic=KEYSTORE_MAGIC) == b"x"


def test_empty_passphrase_refused(tmp_path: Path) -> None:
    with pytest.raises(EmptyPassphrase):
        write_keystore(tmp_path / "k", SECRET, "", limits=FAST)


@settings(max_examples=60, deadline=None, suppress_health_check=_FIXTURE_OK)
@given(cut=st.integers(min_value=0, max_value=200))
def test_truncation_is_corrupt_data(blob: bytes, cut: int) -> None:
    truncated = blob[: min(cut, len(blob) - 1)]
    with pytest.raises(CorruptData):
        open_with_passphrase(truncated, "correct horse", magic=KEYSTORE_MAGIC)


@settings(max_examples=80, deadline=None, suppress_health_check=_FIXTURE_OK)
@given(data=st.data())
def test_any_flipped_byte_is_corrupt_data(blob: bytes, data: st.DataObject) -> None:
    index = data.draw(st.integers(min_value=0, max_value=len(blob) - 1))
    bit = data.draw(st.integers(min_value=0, max_value=7))
    damaged = bytearray(blob)
    damaged[index] ^= 1 << bit
    with pytest.raises(CorruptData):
        open_with_passphrase(bytes(damaged), "correct horse", magic=KEYSTORE_MAGIC)


def test_deliberate_tamper_with_fixed_checksum_is_refused(blob: bytes) -> None:
    # Documented: an attacker can recompute the unkeyed checksum; the AEAD still refuses.
    for index in (HEADER_SIZE + 3, 20, 40, len(blob) - 33):  # ciphertext, salt, nonce, tag
        damaged = bytearray(blob)
        damaged[index] ^= 0x01
        with pytest.raises(WrongPassphrase):
            open_with_passphrase(_rechecksum(bytes(damaged)), "correct horse",
                                 magic=KEYSTORE_MAGIC)


def test_unreasonable_costs_and_versions_are_corrupt(blob: bytes) -> None:
    huge = bytearray(blob)
    struct.pack_into(">Q", huge, 10, 1 << 40)
    with pytest.raises(CorruptData):
        open_with_passphrase(_rechecksum(bytes(huge)), "x", magic=KEYSTORE_MAGIC)
    future = bytearray(blob)
    future[4] = 2
    with pytest.raises(CorruptData):
        open_with_passphrase(_rechecksum(bytes(future)), "x", magic=KEYSTORE_MAGIC)
    with pytest.raises(CorruptData):
        open_with_passphrase(blob, "correct horse", magic=b"CCKB")


def test_change_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "keys.bin"
    write_keystore(path, SECRET, "old", limits=FAST)
    before = path.read_bytes()
    with pytest.raises(WrongPassphrase):
        change_passphrase(path, "wrong", "new", limits=FAST)
    assert path.read_bytes() == before
    change_passphrase(path, "old", "new", limits=FAST)
    assert read_keystore(path, "new") == SECRET
    with pytest.raises(WrongPassphrase):
        read_keystore(path, "old")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_failed_write_keeps_old_file_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "keys.bin"
    write_keystore(path, SECRET, "pw", limits=FAST)
    before = path.read_bytes()

    def fail(*_args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(keystore.os, "replace", fail)
    with pytest.raises(OSError):
        write_keystore(path, b"new secret", "pw", limits=FAST)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keys.bin"]


def test_truncated_file_on_disk_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "keys.bin"
    write_keystore(path, SECRET, "pw", limits=FAST)
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(CorruptData):
        read_keystore(path, "pw")
    path.write_bytes(b"")
    with pytest.raises(CorruptData):
        read_keystore(path, "pw")


def test_costs_above_sensitive_memory_are_refused_before_any_work(blob: bytes) -> None:
    # A crafted backup must not make import allocate more than SENSITIVE's 1 GiB.
    import nacl.pwhash.argon2id as argon2id

    for offset, fmt, value in ((10, ">Q", argon2id.MEMLIMIT_SENSITIVE * 2),
                               (6, ">I", argon2id.OPSLIMIT_SENSITIVE * 2 + 1)):
        crafted = bytearray(blob)
        struct.pack_into(fmt, crafted, offset, value)
        with pytest.raises(CorruptData, match="unreasonable"):
            open_with_passphrase(_rechecksum(bytes(crafted)), "x", magic=KEYSTORE_MAGIC)
