"""Safety numbers: symmetric, 60 digits, change with either key, Signal's algorithm."""

from __future__ import annotations

import hashlib

import pytest

from chatcli.crypto.errors import BadSignature
from chatcli.crypto.keys import IdentityKeyPair, IdentityPublicKey
from chatcli.crypto.safety import (
    check_safety_qr,
    format_safety_number,
    safety_number,
    safety_qr_payload,
)

A = IdentityKeyPair.generate().public
B = IdentityKeyPair.generate().public


def _reference_half(key: IdentityPublicKey) -> str:
    """Signal's NumericFingerprintGenerator, written out independently."""
    h = b"\x00\x00" + key.raw + key.raw
    for _ in range(5200):
        h = hashlib.sha512(h + key.raw).digest()
    return "".join(str(int.from_bytes(h[i : i + 5], "big") % 100000).zfill(5)
                   for i in (0, 5, 10, 15, 20, 25))


def test_symmetric_and_sixty_digits() -> None:
    number = safety_number(A, B)
    assert number == safety_number(B, A)
    assert len(number) == 60 and number.isdigit()
    halves = sorted((_reference_half(A), _reference_half(B)))
    assert number == halves[0] + halves[1]


def test_changes_when_either_key_changes() -> None:
    c = IdentityKeyPair.generate().public
    number = safety_number(A, B)
    assert safety_number(A, c) != number
    assert safety_number(c, B) != number


def test_format() -> None:
    formatted = format_safety_number(safety_number(A, B))
    groups = formatted.split(" ")
    assert len(groups) == 12 and all(len(g) == 5 and g.isdigit() for g in groups)
    assert format_safety_number(formatted) == formatted
    with pytest.raises(ValueError):
        format_safety_number("123")


def test_qr_payload_symmetric_and_checked() -> None:
    payload = safety_qr_payload(A, B)
    assert payload == safety_qr_payload(B, A)
    assert len(payload) == 68 and payload.startswith(b"CSN1")
    check_safety_qr(B, A, payload)
    c = IdentityKeyPair.generate().public
    with pytest.raises(BadSignature):
        check_safety_qr(A, c, payload)
