"""Key derivation: HKDF-SHA256 (RFC 5869) and purpose-labelled derivation.

Every key chatcli derives names its purpose, so that two uses of one secret
never yield the same key (``derive(secret, "chatcli/...")``). The purpose
labels in use are listed in ``docs/protocol.md``, part 1.
"""

from __future__ import annotations

import hashlib
import hmac

_HASH_LEN = 32  # SHA-256 output size
_MAX_LENGTH = 255 * _HASH_LEN  # RFC 5869, section 2.3


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    """RFC 5869 HKDF-Extract with SHA-256; an empty salt means HashLen zeros."""
    return hmac.new(salt or bytes(_HASH_LEN), ikm, hashlib.sha256).digest()


def hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 HKDF-Expand with SHA-256."""
    if not 0 < length <= _MAX_LENGTH:
        raise ValueError(f"HKDF output length must be between 1 and {_MAX_LENGTH} bytes")
    if len(prk) < _HASH_LEN:
        raise ValueError("HKDF pseudorandom key must be at least 32 bytes")
    blocks: list[bytes] = []
    previous = b""
    for counter in range(1, -(-length // _HASH_LEN) + 1):
        previous = hmac.new(prk, previous + info + bytes([counter]), hashlib.sha256).digest()
        blocks.append(previous)
    return b"".join(blocks)[:length]


def hkdf_sha256(ikm: bytes, *, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 HKDF with SHA-256: extract with ``salt``, expand with ``info``."""
    return hkdf_expand(hkdf_extract(salt, ikm), info, length)


def derive(secret: bytes, purpose: str, length: int = 32) -> bytes:
    """Derive ``length`` bytes from ``secret`` for one named ``purpose``.

    HKDF-SHA256 with an all-zero salt and ``info = purpose`` (UTF-8). The
    purpose should be a ``chatcli/...`` label listed in ``docs/protocol.md``.
    """
    if not purpose:
        raise ValueError("a derivation purpose is required")
    return hkdf_sha256(secret, salt=b"", info=purpose.encode("utf-8"), length=length)


__all__ = ["derive", "hkdf_expand", "hkdf_extract", "hkdf_sha256"]
