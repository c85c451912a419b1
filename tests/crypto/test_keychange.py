"""Signed identity key changes (chatcli.crypto.keychange)."""

from __future__ import annotations

import dataclasses

import pytest

from chatcli.crypto.errors import BadSignature
from chatcli.crypto.keychange import MAX_AGE_SECONDS, sign_key_change, verify_key_change
from chatcli.crypto.keys import IdentityKeyPair

NOW = 1_800_000_000


def test_a_change_signed_by_the_old_key_verifies_and_nothing_else_does() -> None:
    old, new, other = (IdentityKeyPair.generate() for _ in range(3))
    change = sign_key_change(old, new.public, now=NOW)
    verify_key_change(change, now=NOW)
    for forged in (
        dataclasses.replace(change, new=other.public),       # another new key
        dataclasses.replace(change, old=other.public),       # another old key
        dataclasses.replace(change, issued_at=NOW + 1),      # another time
        dataclasses.replace(change, signature=other.sign(b"x")),
        dataclasses.replace(change, new=old.public),         # no change at all
    ):
        with pytest.raises(BadSignature):
            verify_key_change(forged, now=NOW)


def test_a_change_outside_the_time_window_is_refused() -> None:
    old, new = IdentityKeyPair.generate(), IdentityKeyPair.generate()
    with pytest.raises(BadSignature, match="future"):
        verify_key_change(sign_key_change(old, new.public, now=NOW + 2 * 86400), now=NOW)
    with pytest.raises(BadSignature, match="too old"):
        verify_key_change(sign_key_change(old, new.public, now=NOW - MAX_AGE_SECONDS - 1),
                          now=NOW)
    with pytest.raises(ValueError):
        sign_key_change(old, old.public, now=NOW)
