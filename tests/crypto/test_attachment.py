"""Attachments: round trips at chunk boundaries, truncation, tampering, digest, streaming."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatcli.crypto.attachment import (
    CHUNK_SIZE,
    AttachmentDecryptor,
    AttachmentEncryptor,
    AttachmentKey,
    decrypt_file,
    encrypt_file,
)
from chatcli.crypto.errors import CorruptData

SEALED = CHUNK_SIZE + 17
HEADER = 4 + 24


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE])
def test_file_round_trip(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    (tmp_path / "in").write_bytes(data)
    result = encrypt_file(tmp_path / "in", tmp_path / "enc")
    sealed = (tmp_path / "enc").read_bytes()
    assert result.size == len(sealed) and result.plaintext_size == size
    assert result.digest == hashlib.sha256(sealed).digest()
    assert stat.S_IMODE((tmp_path / "enc").stat().st_mode) == 0o600
    chunks = max(1, -(-size // CHUNK_SIZE))
    assert len(sealed) == HEADER + size + 17 * chunks
    assert decrypt_file(tmp_path / "enc", tmp_path / "out", result.key, result.digest) == size
    assert (tmp_path / "out").read_bytes() == data
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o600


@pytest.fixture
def sealed_file(tmp_path: Path) -> tuple[Path, bytes, AttachmentKey, bytes]:
    data = os.urandom(2 * CHUNK_SIZE + 100)
    (tmp_path / "in").write_bytes(data)
    result = encrypt_file(tmp_path / "in", tmp_path / "enc")
    return tmp_path, (tmp_path / "enc").read_bytes(), result.key, result.digest


def _refused(tmp: Path, blob: bytes, key: AttachmentKey, digest: bytes) -> None:
    (tmp / "bad").write_bytes(blob)
    with pytest.raises(CorruptData):
        decrypt_file(tmp / "bad", tmp / "out", key, digest)
    assert not (tmp / "out").exists()
    assert sorted(p.name for p in tmp.iterdir()) == ["bad", "enc", "in"]


def test_truncation_detected_even_with_matching_digest(
    sealed_file: tuple[Path, bytes, AttachmentKey, bytes],
) -> None:
    tmp, blob, key, _digest = sealed_file
    for cut in (HEADER + SEALED, HEADER + 2 * SEALED, len(blob) - 1, 10, 0):
        truncated = blob[:cut]
        # The sender's digest would not match, but a truncated stream is refused
        # by the FINAL tag alone: try with the truncated file's own digest.
        _refused(tmp, truncated, key, hashlib.sha256(truncated).digest())


def test_tamper_wrong_key_and_wrong_digest(
    sealed_file: tuple[Path, bytes, AttachmentKey, bytes],
) -> None:
    tmp, blob, key, digest = sealed_file
    for index in (0, 5, HEADER + 10, HEADER + SEALED + 3, len(blob) - 1):
        damaged = bytearray(blob)
        damaged[index] ^= 1
        _refused(tmp, bytes(damaged), key, hashlib.sha256(bytes(damaged)).digest())
    _refused(tmp, blob, AttachmentKey.generate(), digest)
    _refused(tmp, blob, key, bytes(32))
    _refused(tmp, blob + b"extra", key, hashlib.sha256(blob + b"extra").digest())
    swapped = blob[:HEADER] + blob[HEADER + SEALED : HEADER + 2 * SEALED] + \
        blob[HEADER : HEADER + SEALED] + blob[HEADER + 2 * SEALED :]
    _refused(tmp, swapped, key, hashlib.sha256(swapped).digest())


@settings(max_examples=25, deadline=None)
@given(
    size=st.integers(min_value=0, max_value=3 * CHUNK_SIZE),
    piece=st.integers(min_value=1, max_value=100_000),
)
def test_streaming_classes_with_arbitrary_pieces(size: int, piece: int) -> None:
    data = bytes(i % 251 for i in range(size))
    enc = AttachmentEncryptor()
    out = [enc.start()]
    full = size // CHUNK_SIZE if size % CHUNK_SIZE else max(0, size // CHUNK_SIZE - 1)
    for i in range(full):
        out.append(enc.push(data[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE]))
    out.append(enc.finish(data[full * CHUNK_SIZE :]))
    sealed = b"".join(out)
    assert enc.digest == hashlib.sha256(sealed).digest() and enc.size == len(sealed)
    dec = AttachmentDecryptor(enc.key, enc.digest)
    plain = b"".join(dec.feed(sealed[i : i + piece]) for i in range(0, len(sealed), piece))
    assert plain + dec.finish() == data


def test_decryptor_holds_at_most_about_one_chunk() -> None:
    enc = AttachmentEncryptor()
    sealed = enc.start() + b"".join(enc.push(bytes(CHUNK_SIZE)) for _ in range(8)) + enc.finish()
    dec = AttachmentDecryptor(enc.key, enc.digest)
    for i in range(0, len(sealed), 1000):
        dec.feed(sealed[i : i + 1000])
        assert len(dec._buffer) < SEALED
    dec.finish()


def test_encryptor_misuse() -> None:
    enc = AttachmentEncryptor()
    with pytest.raises(RuntimeError):
        enc.push(bytes(CHUNK_SIZE))
    enc.start()
    with pytest.raises(ValueError):
        enc.push(b"short")
    with pytest.raises(RuntimeError):
        _ = enc.digest
    enc.finish(b"")
    with pytest.raises(RuntimeError):
        enc.finish(b"")
