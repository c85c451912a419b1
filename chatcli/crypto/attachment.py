"""Attachment sealing: files of any size, streamed in constant memory.

Layout, version 1::

    magic      4   b"CCA1"
    header    24   crypto_secretstream_xchacha20poly1305 header
    chunks         each CHUNK_SIZE (64 KiB) bytes of plaintext + 17 bytes;
                   the last one is shorter or equal and tagged FINAL

Every chunk is pushed with the 4 magic bytes as associated data. The FINAL
tag makes truncation detectable; secretstream's internal counter makes
reordering, dropping or duplicating chunks detectable. A SHA-256 digest of the
whole ciphertext travels with the key (inside the message that announces the
attachment), so the recipient also checks that the relay returned exactly the
blob that was sent before trusting any of it.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import nacl.bindings as sodium
import nacl.exceptions

from chatcli.crypto.errors import CorruptData, InvalidKey

MAGIC = b"CCA1"
CHUNK_SIZE = 64 * 1024
HEADER_SIZE = len(MAGIC) + sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES
_ABYTES = sodium.crypto_secretstream_xchacha20poly1305_ABYTES
SEALED_CHUNK_SIZE = CHUNK_SIZE + _ABYTES
_TAG_MESSAGE = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
_TAG_FINAL = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
_DAMAGED = "The attachment is damaged, truncated, or was not encrypted with this key."


class AttachmentKey:
    """The 32-byte secretstream key of one attachment."""

    __slots__ = ("_raw",)

    def __init__(self, raw: bytes) -> None:
        if not isinstance(raw, bytes) or len(raw) != 32:
            raise InvalidKey("An attachment key has 32 bytes.")
        self._raw = raw

    @classmethod
    def generate(cls) -> AttachmentKey:
        return cls(sodium.crypto_secretstream_xchacha20poly1305_keygen())

    @classmethod
    def from_bytes(cls, raw: bytes) -> AttachmentKey:
        return cls(raw)

    @property
    def raw(self) -> bytes:
        """The key bytes, to send inside a session message. **Secret.**"""
        return self._raw

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AttachmentKey):
            return NotImplemented
        return sodium.sodium_memcmp(self._raw, other._raw)

    __hash__ = None  # type: ignore[assignment]  # secret keys are not dict keys

    def __repr__(self) -> str:
        return "AttachmentKey(...)"


class AttachmentEncryptor:
    """Encrypts a stream chunk by chunk, for upload as it is produced.

    Call :meth:`start` once, then :meth:`push` with exactly ``CHUNK_SIZE`` bytes
    per chunk, and :meth:`finish` with the last (possibly empty, at most
    ``CHUNK_SIZE``) bytes. Send every returned piece in order; afterwards
    ``digest`` is the SHA-256 of all of them and ``size`` their total length.
    """

    def __init__(self, key: AttachmentKey | None = None) -> None:
        self.key = key if key is not None else AttachmentKey.generate()
        self._state = sodium.crypto_secretstream_xchacha20poly1305_state()
        self._hash = hashlib.sha256()
        self._started = False
        self._finished = False
        self.size = 0
        self.plaintext_size = 0

    def _emit(self, data: bytes) -> bytes:
        self._hash.update(data)
        self.size += len(data)
        return data

    def start(self) -> bytes:
        if self._started:
            raise RuntimeError("start() was already called")
        self._started = True
        header = sodium.crypto_secretstream_xchacha20poly1305_init_push(self._state, self.key.raw)
        return self._emit(MAGIC + header)

    def _push(self, data: bytes, tag: int) -> bytes:
        if not self._started or self._finished:
            raise RuntimeError("push() needs start() first and no finish() yet")
        self.plaintext_size += len(data)
        return self._emit(
            sodium.crypto_secretstream_xchacha20poly1305_push(self._state, data, MAGIC, tag)
        )

    def push(self, chunk: bytes) -> bytes:
        """Encrypt one full chunk of exactly ``CHUNK_SIZE`` bytes."""
        if len(chunk) != CHUNK_SIZE:
            raise ValueError(f"every chunk but the last must be {CHUNK_SIZE} bytes")
        return self._push(chunk, _TAG_MESSAGE)

    def finish(self, last: bytes = b"") -> bytes:
        """Encrypt the last chunk (0..CHUNK_SIZE bytes) with the FINAL tag."""
        if len(last) > CHUNK_SIZE:
            raise ValueError(f"the last chunk must be at most {CHUNK_SIZE} bytes")
        out = self._push(last, _TAG_FINAL)
        self._finished = True
        return out

    @property
    def digest(self) -> bytes:
        """SHA-256 of the ciphertext; only meaningful after :meth:`finish`."""
        if not self._finished:
            raise RuntimeError("the digest is known only after finish()")
        return self._hash.digest()


class AttachmentDecryptor:
    """Decrypts ciphertext fed in pieces of any size, holding at most one chunk.

    :meth:`feed` returns the plaintext it could authenticate so far;
    :meth:`finish` raises :class:`CorruptData` unless the FINAL chunk was seen,
    nothing followed it, and the ciphertext's SHA-256 equals ``expected_digest``.

    **Plaintext from** :meth:`feed` **is authenticated chunk by chunk but the
    whole file is only proven complete by** :meth:`finish`: keep it aside
    (as :func:`decrypt_file` does, in a temporary file) until then.
    """

    def __init__(self, key: AttachmentKey, expected_digest: bytes) -> None:
        if len(expected_digest) != 32:
            raise ValueError("the digest is a 32-byte SHA-256")
        self._key = key
        self._expected = expected_digest
        self._state = sodium.crypto_secretstream_xchacha20poly1305_state()
        self._hash = hashlib.sha256()
        self._buffer = bytearray()
        self._started = False
        self._final_seen = False

    def _pull(self, sealed: bytes) -> bytes:
        try:
            plain, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(
                self._state, sealed, MAGIC
            )
        except (nacl.exceptions.CryptoError, nacl.exceptions.RuntimeError):
            raise CorruptData(_DAMAGED) from None
        if tag == _TAG_FINAL:
            self._final_seen = True
        elif tag != _TAG_MESSAGE or len(plain) != CHUNK_SIZE:
            raise CorruptData(_DAMAGED)
        return plain

    def feed(self, data: bytes) -> bytes:
        if self._final_seen and data:
            raise CorruptData(_DAMAGED)
        self._hash.update(data)
        self._buffer += data
        if not self._started:
            if len(self._buffer) < HEADER_SIZE:
                return b""
            if bytes(self._buffer[: len(MAGIC)]) != MAGIC:
                raise CorruptData("This is not a chatcli attachment.")
            try:
                sodium.crypto_secretstream_xchacha20poly1305_init_pull(
                    self._state, bytes(self._buffer[len(MAGIC) : HEADER_SIZE]), self._key.raw
                )
            except (nacl.exceptions.CryptoError, nacl.exceptions.RuntimeError):
                raise CorruptData(_DAMAGED) from None
            del self._buffer[:HEADER_SIZE]
            self._started = True
        out = bytearray()
        # Only the last chunk may be shorter, so every full one can be pulled
        # at once; a full-size FINAL chunk is recognised by its tag.
        while len(self._buffer) >= SEALED_CHUNK_SIZE:
            if self._final_seen:
                raise CorruptData(_DAMAGED)
            sealed = bytes(self._buffer[:SEALED_CHUNK_SIZE])
            del self._buffer[:SEALED_CHUNK_SIZE]
            out += self._pull(sealed)
        return bytes(out)

    def finish(self) -> bytes:
        """Decrypt what is left and check completeness and the digest."""
        out = b""
        if self._started and not self._final_seen and self._buffer:
            out = self._pull(bytes(self._buffer))
            self._buffer.clear()
        if not self._final_seen or self._buffer:
            raise CorruptData(_DAMAGED)
        if not hmac.compare_digest(self._hash.digest(), self._expected):
            raise CorruptData("The attachment does not match its announced digest.")
        return out


@dataclass(frozen=True)
class EncryptedAttachment:
    """What :func:`encrypt_file` returns: send ``key`` and ``digest`` to the recipient."""

    key: AttachmentKey = field(repr=False)
    digest: bytes
    size: int
    plaintext_size: int


def _create_private(path: Path) -> BinaryIO:
    """Create a new file readable by the owner only from the first instant."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")


@contextlib.contextmanager
def _replacing(dst: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """A private temporary file next to ``dst`` that becomes ``dst`` (flushed
    and fsynced) if the block succeeds, and is removed if it fails: ``dst``
    never holds a partial file."""
    tmp = Path(dst).with_name(f".{Path(dst).name}.{sodium.randombytes(4).hex()}.part")
    try:
        with _create_private(tmp) as writer:
            yield writer
            writer.flush()
            os.fsync(writer.fileno())
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _read_exact(handle: BinaryIO, size: int) -> bytes:
    parts = []
    remaining = size
    while remaining:
        part = handle.read(remaining)
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


def encrypt_file(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], key: AttachmentKey | None = None
) -> EncryptedAttachment:
    """Encrypt the file ``src`` into ``dst`` (mode 0600) in constant memory."""
    encryptor = AttachmentEncryptor(key)
    with open(src, "rb") as reader, _replacing(dst) as writer:
        writer.write(encryptor.start())
        chunk = _read_exact(reader, CHUNK_SIZE)
        while True:
            following = _read_exact(reader, CHUNK_SIZE) if len(chunk) == CHUNK_SIZE else b""
            if not following:
                writer.write(encryptor.finish(chunk))
                break
            writer.write(encryptor.push(chunk))
            chunk = following
    return EncryptedAttachment(encryptor.key, encryptor.digest, encryptor.size,
                               encryptor.plaintext_size)


def decrypt_file(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    key: AttachmentKey,
    digest: bytes,
) -> int:
    """Decrypt ``src`` into ``dst`` (mode 0600); returns the plaintext size.

    ``dst`` appears only if the whole file authenticated and matched ``digest``;
    otherwise :class:`CorruptData` is raised and nothing is left behind.
    """
    decryptor = AttachmentDecryptor(key, digest)
    written = 0
    with open(src, "rb") as reader, _replacing(dst) as writer:
        while piece := reader.read(SEALED_CHUNK_SIZE):
            plain = decryptor.feed(piece)
            writer.write(plain)
            written += len(plain)
        plain = decryptor.finish()
        writer.write(plain)
        written += len(plain)
    return written


__all__ = [
    "CHUNK_SIZE",
    "AttachmentDecryptor",
    "AttachmentEncryptor",
    "AttachmentKey",
    "EncryptedAttachment",
    "decrypt_file",
    "encrypt_file",
]
