"""Signed identity key changes: the old identity key vouches for the new one.

A contact who moves to a new identity key while still holding the old one
signs ``chatcli/key-change/v1 || old key || new key || issued_at`` with the
OLD key. A client that knows the old key accepts the new one on that proof
alone; without it (the old key is lost) only the user's own re-verification
(``chatcli verify NAME --confirm``) accepts a new key. Pure: ``now`` is an
argument.
"""

from __future__ import annotations

from dataclasses import dataclass

from chatcli.crypto.errors import BadSignature
from chatcli.crypto.keys import IdentityKeyPair, IdentityPublicKey

KEY_CHANGE_LABEL = b"chatcli/key-change/v1"
# A record is proof for a short while after it is made: a change someone
# carried around for months is better re-verified in person.
MAX_AGE_SECONDS = 30 * 86400
MAX_CLOCK_SKEW_SECONDS = 86400


@dataclass(frozen=True)
class KeyChange:
    """``old`` says that ``new`` replaces it, at ``issued_at`` (seconds)."""

    old: IdentityPublicKey
    new: IdentityPublicKey
    issued_at: int
    signature: bytes


def _signed_bytes(old: IdentityPublicKey, new: IdentityPublicKey, issued_at: int) -> bytes:
    return KEY_CHANGE_LABEL + old.raw + new.raw + issued_at.to_bytes(8, "big")


def sign_key_change(old: IdentityKeyPair, new: IdentityPublicKey, *, now: int) -> KeyChange:
    """The record by which ``old`` hands over to ``new``."""
    if new == old.public:
        raise ValueError("a key change needs a different new key")
    return KeyChange(old=old.public, new=new, issued_at=now,
                     signature=old.sign(_signed_bytes(old.public, new, now)))


def verify_key_change(change: KeyChange, *, now: int) -> None:
    """Raise :class:`BadSignature` unless ``change`` is signed by its old key,
    names a different new key, and was made within the accepted time window."""
    if change.new == change.old:
        raise BadSignature("A key change names the same key twice.")
    if not 0 <= change.issued_at < 2**63:
        raise BadSignature("A key change carries an impossible time.")
    change.old.verify(_signed_bytes(change.old, change.new, change.issued_at), change.signature)
    if change.issued_at > now + MAX_CLOCK_SKEW_SECONDS:
        raise BadSignature("A key change is dated in the future.")
    if change.issued_at < now - MAX_AGE_SECONDS:
        raise BadSignature("A key change is too old to be accepted without re-verification.")
