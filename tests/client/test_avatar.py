"""A profile picture is an image, by its first bytes, and at most 512 KiB."""

from __future__ import annotations

import pytest

from chatcli.client.profiles import check_avatar, image_kind, merge
from chatcli.crypto.profile import MAX_AVATAR, Profile
from chatcli.errors import UsageError


@pytest.mark.parametrize(("data", "kind"), [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "png"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", "jpeg"),
    (b"GIF89a\x01\x00", "gif"),
    (b"GIF87a\x01\x00", "gif"),
    (b"RIFF\x10\x00\x00\x00WEBPVP8 ", "webp"),
])
def test_images_are_known_by_their_magic_bytes(data: bytes, kind: str) -> None:
    assert image_kind(data) == kind
    assert check_avatar(data) == data


@pytest.mark.parametrize("data", [
    b"", b"\x89PNG fake", b"<svg xmlns='http://www.w3.org/2000/svg'/>", b"%PDF-1.7",
    b"RIFF\x10\x00\x00\x00WAVEfmt ", b"XXXX\x10\x00\x00\x00WEBP", b"MZ\x90\x00",
])
def test_anything_else_is_refused(data: bytes) -> None:
    assert image_kind(data) is None
    with pytest.raises(UsageError, match="PNG, JPEG, GIF or WebP"):
        check_avatar(data)
    with pytest.raises(UsageError):
        merge(Profile("A"), None, None, data)


def test_a_large_image_is_refused_with_a_hint() -> None:
    big = b"\x89PNG\r\n\x1a\n" + bytes(MAX_AVATAR)
    with pytest.raises(UsageError, match="at most 512 KiB"):
        check_avatar(big)
    assert merge(Profile("A"), None, "hi", big[:MAX_AVATAR]).avatar == big[:MAX_AVATAR]
