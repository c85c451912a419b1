"""Key objects: signing, DH agreement, fingerprints, validation."""

from __future__ import annotations

import base64
import hashlib

import nacl.bindings as sodium
import pytest

from chatcli.crypto.errors import BadSignature, DecryptionFailed, InvalidKey
from chatcli.crypto.keys import (
    DHKeyPair,
    IdentityKeyPair,
    IdentityPublicKey,
    MailboxKeyPair,
    RelayKeyPair,
    RelayPublicKey,
    SigningPublicKey,
    relay_fingerprint,
)

# A point of order 8 on Curve25519 (from the libsodium blacklist): DH with it is all zeros.
LOW_ORDER_X25519 = bytes.fromhex(
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"
)


def test_identity_sign_verify_and_restore() -> None:
    kp = IdentityKeyPair.generate()
    sig = kp.sign(b"hello")
    assert len(sig) == 64
    kp.public.verify(b"hello", sig)
    with pytest.raises(BadSignature):
        kp.public.verify(b"hellO", sig)
    with pytest.raises(BadSignature):
        kp.public.verify(b"hello", sig[:-1] + bytes([sig[-1] ^ 1]))
    with pytest.raises(BadSignature):
        kp.public.verify(b"hello", sig[:10])
    restored = IdentityKeyPair.from_private_bytes(kp.private_bytes())
    assert restored.public == kp.public
    assert hash(restored.public) == hash(kp.public)
    assert IdentityPublicKey.from_bytes(kp.public.raw) == kp.public
    assert kp.private_bytes().hex() not in repr(kp)


def test_identity_dh_agrees_and_differs_per_pair() -> None:
    a, b, c = (IdentityKeyPair.generate() for _ in range(3))
    ab = a.dh(b.public)
    assert ab == b.dh(a.public)
    assert len(ab) == 32
    assert a.dh(c.public) != ab
    eph = DHKeyPair.generate()
    assert a.dh_x25519(eph.public) == eph.dh(a.public.x25519_public)


def test_identity_x25519_is_the_standard_conversion() -> None:
    kp = IdentityKeyPair.generate()
    assert kp.public.x25519_public == sodium.crypto_sign_ed25519_pk_to_curve25519(kp.public.raw)


def test_fingerprint_is_short_stable_and_distinct() -> None:
    a = IdentityKeyPair.generate().public
    b = IdentityKeyPair.generate().public
    fp = a.fingerprint()
    groups = fp.split(" ")
    assert len(groups) == 8 and all(len(g) == 4 for g in groups)
    int("".join(groups), 16)
    assert fp == IdentityPublicKey.from_bytes(a.raw).fingerprint()
    assert fp != b.fingerprint()


def test_relay_fingerprint_format() -> None:
    relay = RelayKeyPair.generate()
    fp = relay_fingerprint(relay.public.raw)
    digest = hashlib.sha256(b"chatcli/relay-fingerprint/v1" + relay.public.raw).digest()
    assert fp == base64.b32encode(digest).decode().rstrip("=").lower()
    assert len(fp) == 52 and fp == fp.lower() and "=" not in fp
    assert relay.fingerprint() == fp == relay.public.fingerprint()
    sig = relay.sign(b"transcript")
    RelayPublicKey.from_bytes(relay.public.raw).verify(b"transcript", sig)
    assert RelayKeyPair.from_private_bytes(relay.private_bytes()).public == relay.public


def test_public_keys_of_different_roles_are_not_equal() -> None:
    kp = IdentityKeyPair.generate()
    assert SigningPublicKey(kp.public.raw) != kp.public
    assert RelayPublicKey(kp.public.raw) != kp.public


def test_lengths_and_points_are_checked() -> None:
    with pytest.raises(InvalidKey):
        IdentityPublicKey.from_bytes(b"\x01" * 31)
    with pytest.raises(InvalidKey):
        IdentityPublicKey.from_bytes(bytes(32))  # the identity point is low order
    with pytest.raises(InvalidKey):
        IdentityKeyPair.from_private_bytes(b"x" * 33)
    with pytest.raises(InvalidKey):
        DHKeyPair.from_private_bytes(b"x" * 16)
    with pytest.raises(TypeError):
        IdentityPublicKey.from_bytes("a" * 32)  # type: ignore[arg-type]
    with pytest.raises(InvalidKey):
        relay_fingerprint(b"short")


def test_dh_refuses_low_order_points() -> None:
    kp = DHKeyPair.generate()
    with pytest.raises(InvalidKey):
        kp.dh(LOW_ORDER_X25519)
    with pytest.raises(InvalidKey):
        kp.dh(bytes(32))
    with pytest.raises(InvalidKey):
        IdentityKeyPair.generate().dh_x25519(bytes(32))


def test_dh_keypair_roundtrip() -> None:
    a, b = DHKeyPair.generate(), DHKeyPair.generate()
    assert a.dh(b.public) == b.dh(a.public)
    again = DHKeyPair.from_private_bytes(a.private_bytes())
    assert again.public == a.public


def test_mailbox_keys_sign_and_open_sealed_boxes() -> None:
    mb = MailboxKeyPair.generate()
    assert len(mb.auth_public) == 32 and len(mb.box_public) == 32
    assert mb.box_public == sodium.crypto_sign_ed25519_pk_to_curve25519(mb.auth_public)
    SigningPublicKey(mb.auth_public).verify(b"challenge", mb.sign(b"challenge"))
    sealed = sodium.crypto_box_seal(b"deposit", mb.box_public)
    assert mb.open_sealed_box(sealed) == b"deposit"
    other = MailboxKeyPair.generate()
    with pytest.raises(DecryptionFailed):
        other.open_sealed_box(sealed)
    with pytest.raises(DecryptionFailed):
        mb.open_sealed_box(sealed[:-1] + bytes([sealed[-1] ^ 1]))
    with pytest.raises(DecryptionFailed):
        mb.open_sealed_box(b"short")
    restored = MailboxKeyPair.from_private_bytes(mb.private_bytes())
    assert restored.box_public == mb.box_public
