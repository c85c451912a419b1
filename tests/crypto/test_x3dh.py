"""X3DH: both sides agree, a third party does not, and the spec's formula holds."""

from __future__ import annotations

import pytest

from chatcli.crypto.errors import InvalidKey
from chatcli.crypto.kdf import hkdf_sha256
from chatcli.crypto.keys import DHKeyPair, IdentityKeyPair
from chatcli.crypto.x3dh import initiate, respond


def test_both_sides_agree() -> None:
    alice, bob = IdentityKeyPair.generate(), IdentityKeyPair.generate()
    prekey = DHKeyPair.generate()
    a = initiate(alice, bob.public, prekey.public)
    b = respond(bob, prekey, alice.public, a.ephemeral_public)
    assert a.shared_secret == b.shared_secret
    assert len(a.shared_secret) == 32
    assert a.associated_data == b.associated_data == alice.public.raw + bob.public.raw
    assert a.shared_secret.hex() not in repr(a)


def test_matches_the_signal_formula() -> None:
    alice, bob = IdentityKeyPair.generate(), IdentityKeyPair.generate()
    prekey, eph = DHKeyPair.generate(), DHKeyPair.generate()
    result = initiate(alice, bob.public, prekey.public, ephemeral=eph)
    dh1 = prekey.dh(alice.public.x25519_public)  # DH(IK_A, SPK_B)
    dh2 = eph.dh(bob.public.x25519_public)  # DH(EK_A, IK_B)
    dh3 = eph.dh(prekey.public)  # DH(EK_A, SPK_B)
    expected = hkdf_sha256(
        b"\xff" * 32 + dh1 + dh2 + dh3, salt=bytes(32), info=b"chatcli/x3dh/v1", length=32
    )
    assert result.shared_secret == expected
    assert result.ephemeral_public == eph.public


def test_third_party_and_wrong_keys_do_not_agree() -> None:
    alice, bob, mallory = (IdentityKeyPair.generate() for _ in range(3))
    prekey = DHKeyPair.generate()
    a = initiate(alice, bob.public, prekey.public)
    # Mallory has the prekey's public part and the ephemeral, but not Bob's identity.
    m = respond(mallory, prekey, alice.public, a.ephemeral_public)
    assert m.shared_secret != a.shared_secret
    # Bob with a different prekey does not agree either.
    b = respond(bob, DHKeyPair.generate(), alice.public, a.ephemeral_public)
    assert b.shared_secret != a.shared_secret
    # Bob believing the message came from Mallory does not agree (identity binding).
    b2 = respond(bob, prekey, mallory.public, a.ephemeral_public)
    assert b2.shared_secret != a.shared_secret


def test_fresh_ephemeral_each_time() -> None:
    alice, bob = IdentityKeyPair.generate(), IdentityKeyPair.generate()
    prekey = DHKeyPair.generate()
    one = initiate(alice, bob.public, prekey.public)
    two = initiate(alice, bob.public, prekey.public)
    assert one.ephemeral_public != two.ephemeral_public
    assert one.shared_secret != two.shared_secret


def test_low_order_keys_refused() -> None:
    alice, bob = IdentityKeyPair.generate(), IdentityKeyPair.generate()
    with pytest.raises(InvalidKey):
        initiate(alice, bob.public, bytes(32))
    with pytest.raises(InvalidKey):
        respond(bob, DHKeyPair.generate(), alice.public, bytes(32))
