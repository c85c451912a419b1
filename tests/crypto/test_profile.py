"""Profiles: round trip, padding buckets, wrong and rolled keys, limits."""

from __future__ import annotations

import pytest

from chatcli.crypto.errors import CorruptData, DecryptionFailed, InvalidKey, TooLarge
from chatcli.crypto.profile import (
    MAX_AVATAR,
    Profile,
    ProfileKey,
    open_profile,
    roll_profile,
    seal_profile,
)


def test_round_trip_and_opaque() -> None:
    key = ProfileKey.generate()
    profile = Profile("Alice", "at work", b"\x89PNG avatar")
    blob = seal_profile(key, profile)
    assert open_profile(ProfileKey.from_bytes(key.raw), blob) == profile
    assert b"Alice" not in blob and b"avatar" not in blob
    assert open_profile(key, seal_profile(key, Profile("Bob"))) == Profile("Bob", "", None)


def test_size_leaks_only_the_bucket() -> None:
    key = ProfileKey.generate()
    sizes = {len(seal_profile(key, Profile("x" * n, "y" * n))) for n in range(0, 100, 7)}
    assert len(sizes) == 1
    big = len(seal_profile(key, Profile("A", avatar=bytes(100_000))))
    assert big - 1 - 24 - 16 == 128 * 1024


def test_wrong_or_rolled_key_cannot_open() -> None:
    key = ProfileKey.generate()
    profile = Profile("Alice")
    blob = seal_profile(key, profile)
    with pytest.raises(DecryptionFailed):
        open_profile(ProfileKey.generate(), blob)
    new_key, new_blob = roll_profile(profile)
    assert new_key != key
    assert open_profile(new_key, new_blob) == profile
    with pytest.raises(DecryptionFailed):
        open_profile(key, new_blob)


def test_tampered_and_malformed() -> None:
    key = ProfileKey.generate()
    blob = bytearray(seal_profile(key, Profile("Alice")))
    blob[40] ^= 1
    with pytest.raises(DecryptionFailed):
        open_profile(key, bytes(blob))
    with pytest.raises(CorruptData):
        open_profile(key, b"\x02" + bytes(blob[1:]))
    with pytest.raises(CorruptData):
        open_profile(key, b"\x01short")


def test_limits() -> None:
    key = ProfileKey.generate()
    with pytest.raises(TooLarge):
        seal_profile(key, Profile("A", avatar=bytes(MAX_AVATAR + 1)))
    with pytest.raises(TooLarge):
        seal_profile(key, Profile("A" * 101))
    assert open_profile(key, seal_profile(key, Profile("A", avatar=bytes(MAX_AVATAR)))).avatar
    with pytest.raises(InvalidKey):
        ProfileKey.from_bytes(b"short")
    assert key.raw.hex() not in repr(key)
