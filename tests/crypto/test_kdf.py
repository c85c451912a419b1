"""HKDF-SHA256 against the RFC 5869 appendix A vectors, and purpose separation."""

from __future__ import annotations

import pytest

from chatcli.crypto.kdf import derive, hkdf_expand, hkdf_extract, hkdf_sha256

# RFC 5869, appendix A, test cases 1-3: (ikm, salt, info, length, prk, okm)
RFC5869 = [
    (
        bytes([0x0B] * 22),
        bytes(range(0x00, 0x0D)),
        bytes(range(0xF0, 0xFA)),
        42,
        "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5",
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
        "34007208d5b887185865",
    ),
    (
        bytes(range(0x00, 0x50)),
        bytes(range(0x60, 0xB0)),
        bytes(range(0xB0, 0x100)),
        82,
        "06a6b88c5853361a06104c9ceb35b45cef760014904671014a193f40c15fc244",
        "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c"
        "59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71"
        "cc30c58179ec3e87c14c01d5c1f3434f1d87",
    ),
    (
        bytes([0x0B] * 22),
        b"",
        b"",
        42,
        "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04",
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
        "9d201395faa4b61a96c8",
    ),
]


@pytest.mark.parametrize(("ikm", "salt", "info", "length", "prk", "okm"), RFC5869)
def test_rfc5869_vectors(
    ikm: bytes, salt: bytes, info: bytes, length: int, prk: str, okm: str
) -> None:
    assert hkdf_extract(salt, ikm).hex() == prk
    assert hkdf_expand(bytes.fromhex(prk), info, length).hex() == okm
    assert hkdf_sha256(ikm, salt=salt, info=info, length=length).hex() == okm


def test_derive_separates_purposes_and_lengths() -> None:
    secret = bytes(range(32))
    a = derive(secret, "chatcli/test/a")
    b = derive(secret, "chatcli/test/b")
    assert len(a) == 32 and len(b) == 32 and a != b
    assert derive(secret, "chatcli/test/a") == a
    assert derive(secret, "chatcli/test/a", 64)[:32] == a
    assert derive(bytes(32), "chatcli/test/a") != a


def test_derive_is_hkdf_with_purpose_as_info() -> None:
    secret = b"s" * 32
    assert derive(secret, "p") == hkdf_sha256(secret, salt=bytes(32), info=b"p", length=32)


def test_bad_lengths_refused() -> None:
    with pytest.raises(ValueError):
        hkdf_sha256(b"x", salt=b"", info=b"", length=255 * 32 + 1)
    with pytest.raises(ValueError):
        hkdf_sha256(b"x", salt=b"", info=b"", length=0)
    with pytest.raises(ValueError):
        derive(b"x" * 32, "")
