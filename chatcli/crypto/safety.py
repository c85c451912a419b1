"""Safety numbers: Signal's numeric fingerprint over both identity keys.

For each side: ``h = version(2 bytes, 0) || key || identifier``, then 5200
times ``h = SHA-512(h || key)``; the first 30 bytes give 30 digits as six
chunks, each a 5-byte big-endian integer mod 100000, zero-padded to 5 digits.
The 60-digit safety number is the two 30-digit halves in ascending order, so
both sides compute the same. ``key`` is the 32-byte Ed25519 identity key and,
having no phone number, chatcli uses the key itself as the identifier.

The QR payload (version 1) is ``b"CSN1" || min(h_a[:32], h_b[:32]) ||
max(...)``: the same bytes on both sides, compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac

from chatcli.crypto.errors import BadSignature
from chatcli.crypto.keys import IdentityPublicKey

FINGERPRINT_VERSION = 0
ITERATIONS = 5200
QR_MAGIC = b"CSN1"


def _iterated_hash(key: IdentityPublicKey) -> bytes:
    digest = FINGERPRINT_VERSION.to_bytes(2, "big") + key.raw + key.raw
    for _ in range(ITERATIONS):
        digest = hashlib.sha512(digest + key.raw).digest()
    return digest


def _digits(digest: bytes) -> str:
    return "".join(
        f"{int.from_bytes(digest[i : i + 5], 'big') % 100000:05d}" for i in range(0, 30, 5)
    )


def safety_number(a: IdentityPublicKey, b: IdentityPublicKey) -> str:
    """The 60-digit safety number of two identity keys; symmetric in ``a`` and ``b``."""
    halves = sorted((_digits(_iterated_hash(a)), _digits(_iterated_hash(b))))
    return halves[0] + halves[1]


def format_safety_number(number: str) -> str:
    """Group a 60-digit safety number as 12 groups of 5 digits separated by spaces."""
    digits = "".join(number.split())
    if len(digits) != 60 or not digits.isdigit():
        raise ValueError("a safety number has 60 digits")
    return " ".join(digits[i : i + 5] for i in range(0, 60, 5))


def safety_qr_payload(a: IdentityPublicKey, b: IdentityPublicKey) -> bytes:
    """Bytes to show as a QR code; equal on both sides (68 bytes)."""
    first, second = sorted((_iterated_hash(a)[:32], _iterated_hash(b)[:32]))
    return QR_MAGIC + first + second


def check_safety_qr(a: IdentityPublicKey, b: IdentityPublicKey, scanned: bytes) -> None:
    """Compare a scanned QR payload with the expected one; raise if they differ."""
    if not hmac.compare_digest(safety_qr_payload(a, b), scanned):
        raise BadSignature(
            "The scanned code does not match: the keys are not the ones you expect."
        )


__all__ = ["check_safety_qr", "format_safety_number", "safety_number", "safety_qr_payload"]
