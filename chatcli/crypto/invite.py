"""One-time contact invites: signed, compact, printable as a ``chatcli:`` link.

Link = ``"chatcli:" + base64url(body || signature)`` without padding, where
``body`` is a MessagePack array (version 1)::

    [1, relay_url, mailbox(16), capability(32), mailbox_key(32),
     identity(32), prekey(32), invite_id(16), expires_at]

and ``signature`` is the inviter's 64-byte Ed25519 signature over
``b"chatcli/invite/v1\\x00" || body``. Parsing checks the signature over the
body exactly as received, then decodes it strictly, then the expiry.
Refusing a reused invite is the client's job (it remembers ``invite_id`` and
deletes the one-time prekey); this module is stateless.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Annotated

import msgspec
import nacl.bindings as sodium

from chatcli.crypto.errors import BadSignature, InvalidInvite, InvalidKey, InviteExpired
from chatcli.crypto.keys import IdentityKeyPair, IdentityPublicKey

INVITE_VERSION = 1
LINK_PREFIX = "chatcli:"
SIGNATURE_LABEL = b"chatcli/invite/v1\x00"
MAX_RELAY_URL = 300
MAX_LINK_LENGTH = 2048

_B16 = Annotated[bytes, msgspec.Meta(min_length=16, max_length=16)]
_B32 = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]


class _Body(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    version: Annotated[int, msgspec.Meta(ge=0, le=255)]
    relay_url: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_RELAY_URL)]
    mailbox: _B16
    capability: _B32
    mailbox_key: _B32
    identity: _B32
    prekey: _B32
    invite_id: _B16
    expires_at: Annotated[int, msgspec.Meta(ge=0, lt=2**53)]


_decoder = msgspec.msgpack.Decoder(_Body)
_encoder = msgspec.msgpack.Encoder()


@dataclass(frozen=True)
class Invite:
    """A verified (or freshly made) invite. ``expires_at`` is in Unix seconds."""

    relay_url: str
    mailbox: bytes
    capability: bytes = field(repr=False)  # a deposit credential: never logged
    mailbox_key: bytes
    identity: IdentityPublicKey
    prekey: bytes
    invite_id: bytes
    expires_at: int
    signature: bytes

    def _body(self) -> bytes:
        return _encoder.encode(
            _Body(
                INVITE_VERSION,
                self.relay_url,
                self.mailbox,
                self.capability,
                self.mailbox_key,
                self.identity.raw,
                self.prekey,
                self.invite_id,
                self.expires_at,
            )
        )

    def to_link(self) -> str:
        """The ``chatcli:`` link: ASCII, no padding, safe to paste and to put in a QR code."""
        payload = self._body() + self.signature
        return LINK_PREFIX + base64.urlsafe_b64encode(payload).decode("ascii").rstrip("=")


def _check_relay_url(url: str) -> None:
    if not (url.startswith(("ws://", "wss://")) and "#" in url):
        raise InvalidInvite("The invite's relay address is not a ws:// or wss:// URL "
                            "with a fingerprint.")


def create_invite(
    identity_kp: IdentityKeyPair,
    *,
    relay_url: str,
    mailbox: bytes,
    capability: bytes,
    mailbox_key: bytes,
    prekey_public: bytes,
    expires_at: int,
) -> Invite:
    """Make and sign a one-time invite with a fresh random ``invite_id``."""
    body = _Body(
        INVITE_VERSION,
        relay_url,
        mailbox,
        capability,
        mailbox_key,
        identity_kp.public.raw,
        prekey_public,
        sodium.randombytes(16),
        expires_at,
    )
    encoded = _encoder.encode(body)
    try:
        _decoder.decode(encoded)  # the same validation a reader applies
    except msgspec.ValidationError as exc:
        raise ValueError(f"invalid invite field: {exc}") from None
    _check_relay_url(relay_url)
    return Invite(
        relay_url=relay_url,
        mailbox=mailbox,
        capability=capability,
        mailbox_key=mailbox_key,
        identity=identity_kp.public,
        prekey=prekey_public,
        invite_id=body.invite_id,
        expires_at=expires_at,
        signature=identity_kp.sign(SIGNATURE_LABEL + encoded),
    )


def parse_invite(link: str, *, now: int) -> Invite:
    """Decode a link, verify its signature, and check it has not expired at ``now``.

    Raises :class:`InvalidInvite` (malformed, tampered, badly signed) or
    :class:`InviteExpired`.
    """
    link = "".join(link.split())  # tolerate line breaks from pasting
    if not link.startswith(LINK_PREFIX) or len(link) > MAX_LINK_LENGTH:
        raise InvalidInvite("This is not a chatcli invite link.")
    text = link[len(LINK_PREFIX) :]
    try:
        payload = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidInvite() from None
    if len(payload) <= 64:
        raise InvalidInvite()
    encoded, signature = payload[:-64], payload[-64:]
    # The identity key sits at a fixed place only after decoding; decode first,
    # but trust nothing in it until the signature over these exact bytes checks.
    try:
        body = _decoder.decode(encoded)
    except (msgspec.DecodeError, ValueError):  # msgspec raises UnicodeDecodeError for bad UTF-8
        raise InvalidInvite() from None
    if body.version != INVITE_VERSION:
        raise InvalidInvite("The invite was made by an unsupported version of chatcli.")
    try:
        identity = IdentityPublicKey.from_bytes(body.identity)
        identity.verify(SIGNATURE_LABEL + encoded, signature)
    except (InvalidKey, BadSignature):
        raise InvalidInvite() from None
    _check_relay_url(body.relay_url)
    if now >= body.expires_at:
        raise InviteExpired()
    return Invite(
        relay_url=body.relay_url,
        mailbox=body.mailbox,
        capability=body.capability,
        mailbox_key=body.mailbox_key,
        identity=identity,
        prekey=body.prekey,
        invite_id=body.invite_id,
        expires_at=body.expires_at,
        signature=signature,
    )


__all__ = ["LINK_PREFIX", "Invite", "create_invite", "parse_invite"]
