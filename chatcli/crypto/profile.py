"""Profile sealing: display name, status and avatar under a per-user profile key.

The relay stores only the opaque blob; contacts receive the profile key over
their pairwise session. Rolling the key (after removing a contact) is
generating a new :class:`ProfileKey`, re-sealing, and sending the new key to
the remaining contacts.

Blob layout, version 1::

    version   1   0x01
    nonce    24   random
    ciphertext    XChaCha20-Poly1305 (IETF), associated data = b"chatcli/profile/v1"

The key is ``derive(profile_key, "chatcli/profile/v1/encryption")``. The
plaintext is the MessagePack array ``[display_name, status, avatar or nil]``,
padded (ISO/IEC 7816-4) to a power of two from 1 KiB to 1 MiB, so the blob
size leaks only that bucket.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import msgspec
import nacl.bindings as sodium
import nacl.exceptions

from chatcli.crypto.envelope import pad, unpad
from chatcli.crypto.errors import CorruptData, DecryptionFailed, InvalidKey, TooLarge
from chatcli.crypto.kdf import derive

PROFILE_VERSION = 1
PROFILE_AD = b"chatcli/profile/v1"
MAX_DISPLAY_NAME = 100
MAX_STATUS = 500
MAX_AVATAR = 512 * 1024
PROFILE_BUCKETS: tuple[int, ...] = tuple(1024 << i for i in range(11))  # 1 KiB .. 1 MiB
_NONCE = sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
_TAG = sodium.crypto_aead_xchacha20poly1305_ietf_ABYTES


class ProfileKey:
    """A random 32-byte key that opens one version of a user's profile."""

    __slots__ = ("_raw",)

    def __init__(self, raw: bytes) -> None:
        if not isinstance(raw, bytes) or len(raw) != 32:
            raise InvalidKey("A profile key has 32 bytes.")
        self._raw = raw

    @classmethod
    def generate(cls) -> ProfileKey:
        return cls(sodium.randombytes(32))

    @classmethod
    def from_bytes(cls, raw: bytes) -> ProfileKey:
        return cls(raw)

    @property
    def raw(self) -> bytes:
        """The 32 key bytes, to send to contacts inside a session. **Secret.**"""
        return self._raw

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ProfileKey):
            return NotImplemented
        return sodium.sodium_memcmp(self._raw, other._raw)

    __hash__ = None  # type: ignore[assignment]  # secret keys are not dict keys

    def __repr__(self) -> str:
        return "ProfileKey(...)"


class _Wire(msgspec.Struct, array_like=True, frozen=True):
    display_name: Annotated[str, msgspec.Meta(max_length=MAX_DISPLAY_NAME)]
    status: Annotated[str, msgspec.Meta(max_length=MAX_STATUS)]
    avatar: Annotated[bytes, msgspec.Meta(max_length=MAX_AVATAR)] | None


_decoder = msgspec.msgpack.Decoder(_Wire)
_encoder = msgspec.msgpack.Encoder()


@dataclass(frozen=True)
class Profile:
    """What a user shows their contacts. ``avatar`` is image bytes (format not checked)."""

    display_name: str
    status: str = ""
    avatar: bytes | None = None


def seal_profile(key: ProfileKey, profile: Profile) -> bytes:
    """Encrypt and pad ``profile``; raises :class:`TooLarge` past the field limits."""
    if (
        len(profile.display_name) > MAX_DISPLAY_NAME
        or len(profile.status) > MAX_STATUS
        or (profile.avatar is not None and len(profile.avatar) > MAX_AVATAR)
    ):
        raise TooLarge(
            f"The profile is too large: at most {MAX_DISPLAY_NAME} characters of name, "
            f"{MAX_STATUS} of status and {MAX_AVATAR // 1024} KiB of avatar."
        )
    plain = pad(_encoder.encode(_Wire(profile.display_name, profile.status, profile.avatar)),
                PROFILE_BUCKETS)
    nonce = sodium.randombytes(_NONCE)
    ciphertext = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
        plain, PROFILE_AD, nonce, derive(key.raw, "chatcli/profile/v1/encryption")
    )
    return bytes([PROFILE_VERSION]) + nonce + ciphertext


def open_profile(key: ProfileKey, blob: bytes) -> Profile:
    """Decrypt a profile blob. Raises :class:`DecryptionFailed` (wrong key or
    altered) or :class:`CorruptData` (malformed)."""
    if len(blob) < 1 + _NONCE + _TAG or blob[0] != PROFILE_VERSION:
        raise CorruptData("The profile data is damaged or from an unsupported version.")
    try:
        plain = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
            blob[1 + _NONCE :], PROFILE_AD, blob[1 : 1 + _NONCE],
            derive(key.raw, "chatcli/profile/v1/encryption"),
        )
    except nacl.exceptions.CryptoError:
        raise DecryptionFailed(
            "The profile could not be decrypted: the key is outdated or the data was altered."
        ) from None
    try:
        wire = _decoder.decode(unpad(plain, PROFILE_BUCKETS))
    except (msgspec.DecodeError, ValueError):
        raise CorruptData("The profile data is malformed.") from None
    return Profile(wire.display_name, wire.status, wire.avatar)


def roll_profile(profile: Profile) -> tuple[ProfileKey, bytes]:
    """A new profile key and the profile sealed under it (old key holders lose access)."""
    key = ProfileKey.generate()
    return key, seal_profile(key, profile)


__all__ = [
    "MAX_AVATAR",
    "MAX_DISPLAY_NAME",
    "MAX_STATUS",
    "Profile",
    "ProfileKey",
    "open_profile",
    "roll_profile",
    "seal_profile",
]
