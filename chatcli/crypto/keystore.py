"""Passphrase-protected secrets: the keystore file, and the sealed blob that
the keystore and the armoured backup share.

Blob layout (version 1), all integers big-endian::

    magic      4   b"CCKS" (keystore) or b"CCKB" (backup)
    version    1   1
    kdf        1   1 = Argon2id v1.3
    opslimit   4   u32
    memlimit   8   u64, bytes
    salt      16   random
    nonce     24   random
    length     4   u32, length of the ciphertext
    ciphertext     XChaCha20-Poly1305 (IETF), associated data = the 62 bytes above
    checksum  32   BLAKE2b-256 of every byte before it

The key is Argon2id(passphrase NFKC-normalised as UTF-8, salt, opslimit,
memlimit), 32 bytes. Opening is split in two so that a caller may keep that
key (``chatcli agent``): :func:`derive_keystore_key` runs Argon2id, and
:func:`open_with_key` decrypts without it.

Reading checks structure and the checksum first: a truncated or randomly
damaged file is :class:`CorruptData`. Only a well-formed file whose AEAD tag
fails is :class:`WrongPassphrase` (:class:`WrongKey` from
:func:`open_with_key`). The checksum is unkeyed,
so someone who deliberately alters the ciphertext and recomputes it also gets
"wrong passphrase"; either way nothing is decrypted, and the message says so.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import nacl.bindings as sodium
import nacl.exceptions
import nacl.pwhash.argon2id as argon2id

from chatcli.crypto.errors import CorruptData, EmptyPassphrase, WrongKey, WrongPassphrase

FORMAT_VERSION = 1
KDF_ARGON2ID13 = 1
KEYSTORE_MAGIC = b"CCKS"
BACKUP_MAGIC = b"CCKB"

_HEADER = struct.Struct(">4sBBIQ16s24sI")
HEADER_SIZE = _HEADER.size  # 62
CHECKSUM_SIZE = 32
_TAG_SIZE = sodium.crypto_aead_xchacha20poly1305_ietf_ABYTES

# Upper bounds, checked when reading, so that a crafted file cannot demand
# absurd work: its checksum is unkeyed, so anyone can write any costs into a
# file that passes it. Memory stops at libsodium's SENSITIVE (1 GiB), what
# chatcli itself writes at most; passes at twice SENSITIVE's.
_MAX_OPSLIMIT = 2 * argon2id.OPSLIMIT_SENSITIVE
_MAX_MEMLIMIT = argon2id.MEMLIMIT_SENSITIVE
_MAX_CIPHERTEXT = 64 * 1024 * 1024


@dataclass(frozen=True)
class Argon2Limits:
    """Argon2id cost parameters: iterations and memory in bytes."""

    opslimit: int
    memlimit: int

    def __post_init__(self) -> None:
        if not argon2id.OPSLIMIT_MIN <= self.opslimit <= _MAX_OPSLIMIT:
            raise ValueError("Argon2id opslimit out of range")
        if not argon2id.MEMLIMIT_MIN <= self.memlimit <= _MAX_MEMLIMIT:
            raise ValueError("Argon2id memlimit out of range")


#: The product default: libsodium's MODERATE (3 passes, 256 MiB).
MODERATE = Argon2Limits(argon2id.OPSLIMIT_MODERATE, argon2id.MEMLIMIT_MODERATE)
#: libsodium's SENSITIVE (4 passes, 1 GiB), for users who want more.
SENSITIVE = Argon2Limits(argon2id.OPSLIMIT_SENSITIVE, argon2id.MEMLIMIT_SENSITIVE)


def _passphrase_key(passphrase: str, salt: bytes, limits: Argon2Limits) -> bytes:
    # NFKC so that the same passphrase typed on another keyboard or OS works.
    secret = unicodedata.normalize("NFKC", passphrase).encode("utf-8")
    return argon2id.kdf(
        sodium.crypto_aead_xchacha20poly1305_ietf_KEYBYTES,
        secret,
        salt,
        opslimit=limits.opslimit,
        memlimit=limits.memlimit,
    )


def _checksum(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=CHECKSUM_SIZE).digest()


def seal_with_passphrase(
    secret: bytes, passphrase: str, *, magic: bytes, limits: Argon2Limits = MODERATE
) -> bytes:
    """Encrypt ``secret`` under ``passphrase`` into a self-describing blob."""
    if not passphrase:
        raise EmptyPassphrase()
    if len(magic) != 4:
        raise ValueError("magic must be 4 bytes")
    if len(secret) > _MAX_CIPHERTEXT - _TAG_SIZE:
        raise ValueError("secret too large for a keystore")
    salt = sodium.randombytes(argon2id.SALTBYTES)
    nonce = sodium.randombytes(sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES)
    header = _HEADER.pack(
        magic,
        FORMAT_VERSION,
        KDF_ARGON2ID13,
        limits.opslimit,
        limits.memlimit,
        salt,
        nonce,
        len(secret) + _TAG_SIZE,
    )
    key = _passphrase_key(passphrase, salt, limits)
    ciphertext = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(secret, header, nonce, key)
    body = header + ciphertext
    return body + _checksum(body)


def read_limits(blob: bytes, *, magic: bytes) -> Argon2Limits:
    """Validate a blob's structure and checksum and return its Argon2id limits.

    Raises :class:`CorruptData` for anything but an intact blob of this kind.
    """
    if len(blob) < HEADER_SIZE + _TAG_SIZE + CHECKSUM_SIZE:
        raise CorruptData("The file is truncated or is not a chatcli key file.")
    found_magic, version, kdf, opslimit, memlimit, _salt, _nonce, length = _HEADER.unpack_from(
        blob
    )
    if found_magic != magic:
        raise CorruptData("The file is not a chatcli key file of the expected kind.")
    if version != FORMAT_VERSION or kdf != KDF_ARGON2ID13:
        raise CorruptData("The key file was written by an unsupported version of chatcli.")
    if len(blob) != HEADER_SIZE + length + CHECKSUM_SIZE or length < _TAG_SIZE:
        raise CorruptData("The key file is truncated or damaged.")
    if not hmac.compare_digest(_checksum(blob[:-CHECKSUM_SIZE]), blob[-CHECKSUM_SIZE:]):
        raise CorruptData("The key file is damaged (its checksum does not match).")
    try:
        return Argon2Limits(opslimit, memlimit)
    except ValueError:
        raise CorruptData("The key file asks for unreasonable key-derivation costs.") from None


def derive_keystore_key(blob: bytes, passphrase: str, *, magic: bytes = KEYSTORE_MAGIC) -> bytes:
    """The key-encryption key of a blob: Argon2id(passphrase) with the salt and
    costs its header names (the slow part of opening it).

    The blob is checked first (:func:`read_limits`), so a damaged or foreign
    file is :class:`CorruptData` before any key derivation is spent on it.
    The result opens the blob with :func:`open_with_key` until the blob is
    rewritten (every write draws a fresh salt).
    """
    limits = read_limits(blob, magic=magic)
    _m, _v, _k, _o, _mem, salt, _nonce, _len = _HEADER.unpack_from(blob)
    return _passphrase_key(passphrase, salt, limits)


def open_with_key(blob: bytes, key: bytes, *, magic: bytes = KEYSTORE_MAGIC) -> bytes:
    """Decrypt a blob with a key from :func:`derive_keystore_key` (no Argon2id).

    Raises :class:`CorruptData` if the blob is malformed, and :class:`WrongKey`
    (a :class:`WrongPassphrase`) if it is intact but the key does not open it.
    """
    read_limits(blob, magic=magic)
    if len(key) != sodium.crypto_aead_xchacha20poly1305_ietf_KEYBYTES:
        raise WrongKey()
    header = blob[:HEADER_SIZE]
    _m, _v, _k, _o, _mem, _salt, nonce, _len = _HEADER.unpack(header)
    try:
        return sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
            blob[HEADER_SIZE:-CHECKSUM_SIZE], header, nonce, bytes(key)
        )
    except nacl.exceptions.CryptoError:
        raise WrongKey() from None


def open_with_passphrase(blob: bytes, passphrase: str, *, magic: bytes) -> bytes:
    """Decrypt a blob made by :func:`seal_with_passphrase`.

    Raises :class:`CorruptData` if the blob is malformed, truncated or fails its
    checksum, and :class:`WrongPassphrase` if it is intact but does not open.
    """
    key = derive_keystore_key(blob, passphrase, magic=magic)
    try:
        return open_with_key(blob, key, magic=magic)
    except WrongKey:
        raise WrongPassphrase(
            "The passphrase is wrong (or the file was deliberately modified)."
        ) from None


def atomic_write(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically: temp file, fsync, rename, fsync dir.

    The file is created with ``mode`` (0600 by default), never wider, so that a
    secret is not readable by others even for an instant.
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{sodium.randombytes(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)  # in case the umask was stricter than wanted; never wider
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_keystore(
    path: str | os.PathLike[str],
    secret: bytes,
    passphrase: str,
    *,
    limits: Argon2Limits = MODERATE,
) -> None:
    """Encrypt ``secret`` with ``passphrase`` and write it atomically, mode 0600."""
    atomic_write(path, seal_with_passphrase(secret, passphrase, magic=KEYSTORE_MAGIC,
                                            limits=limits))


def read_keystore_blob(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a keystore file (bounded read; ``OSError`` if unreadable)."""
    with open(path, "rb") as handle:
        return handle.read(HEADER_SIZE + _MAX_CIPHERTEXT + CHECKSUM_SIZE + 1)


def read_keystore(path: str | os.PathLike[str], passphrase: str) -> bytes:
    """Read and decrypt a keystore file.

    Raises :class:`CorruptData` (truncated, damaged, not a keystore),
    :class:`WrongPassphrase`, or ``OSError`` if the file cannot be read.
    """
    return open_with_passphrase(read_keystore_blob(path), passphrase, magic=KEYSTORE_MAGIC)


def change_passphrase(
    path: str | os.PathLike[str],
    old_passphrase: str,
    new_passphrase: str,
    *,
    limits: Argon2Limits = MODERATE,
) -> None:
    """Re-encrypt a keystore under a new passphrase (fresh salt and nonce), atomically."""
    secret = read_keystore(path, old_passphrase)
    write_keystore(path, secret, new_passphrase, limits=limits)


__all__ = [
    "BACKUP_MAGIC",
    "KEYSTORE_MAGIC",
    "MODERATE",
    "SENSITIVE",
    "Argon2Limits",
    "atomic_write",
    "change_passphrase",
    "derive_keystore_key",
    "open_with_key",
    "open_with_passphrase",
    "read_keystore",
    "read_keystore_blob",
    "read_limits",
    "seal_with_passphrase",
    "write_keystore",
]
