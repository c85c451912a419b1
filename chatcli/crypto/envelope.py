"""Sealed envelopes: what the relay stores for each deposit, and padding.

An envelope is a libsodium sealed box (``crypto_box_seal``: ephemeral X25519 +
XSalsa20-Poly1305) to the recipient mailbox's X25519 box key. The relay learns
the mailbox, the capability and the bucketed size, not the sender. Inside,
version 1::

    version   1   0x01
    sender   32   the sender's Ed25519 identity public key
    body          the client message (a prekey or ratchet message)

padded as a whole (ISO/IEC 7816-4: 0x80 then zeros) to the smallest bucket of
:data:`ENVELOPE_BUCKETS`. The largest bucket plus the 48 bytes of sealed-box
overhead is exactly ``MAX_PAYLOAD_SIZE`` (64 KiB) of the wire protocol.

**The sender field is a claim, not a proof.** Anyone can seal any sender key
to a mailbox. It only says which session to try: the body is authenticated by
that session (the ratchet's associated data binds both identity keys, and an
X3DH prekey message uses the sender's identity key in DH1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import nacl.bindings as sodium
import nacl.exceptions

from chatcli.crypto.errors import CorruptData, InvalidKey, TooLarge
from chatcli.crypto.keys import KEY_SIZE, IdentityPublicKey, MailboxKeyPair

ENVELOPE_VERSION = 1
SEAL_OVERHEAD = sodium.crypto_box_SEALBYTES  # 48: ephemeral public key + MAC
MAX_SEALED_SIZE = 64 * 1024  # protocol.frames.MAX_PAYLOAD_SIZE; crypto does not import it

#: Padded sizes of the sealed plaintext. The relay sees one of these plus 48.
ENVELOPE_BUCKETS: tuple[int, ...] = (
    256,
    512,
    1024,
    2048,
    4096,
    8192,
    16384,
    32768,
    49152,
    MAX_SEALED_SIZE - SEAL_OVERHEAD,
)
_INNER_HEADER = 1 + KEY_SIZE
#: The largest body :func:`seal_envelope` accepts.
MAX_BODY_SIZE = ENVELOPE_BUCKETS[-1] - _INNER_HEADER - 1


def bucket_for(length: int, buckets: Sequence[int] = ENVELOPE_BUCKETS) -> int:
    """The padded size for ``length`` bytes of data: the smallest bucket > length.

    Strictly greater, because the padding always adds at least the 0x80 byte.
    """
    for bucket in buckets:
        if length < bucket:
            return bucket
    raise TooLarge()


def pad(data: bytes, buckets: Sequence[int] = ENVELOPE_BUCKETS) -> bytes:
    """Pad ``data`` to its bucket: ISO/IEC 7816-4 (0x80, then zeros)."""
    return bytes(sodium.sodium_pad(data, bucket_for(len(data), buckets)))


def unpad(data: bytes, buckets: Sequence[int] = ENVELOPE_BUCKETS) -> bytes:
    """Undo :func:`pad`; raises :class:`CorruptData` if the padding is not valid."""
    if len(data) not in buckets:
        raise CorruptData("The message has an unexpected size.")
    try:
        return bytes(sodium.sodium_unpad(data, len(data)))
    except (nacl.exceptions.CryptoError, nacl.exceptions.ValueError, ValueError):
        raise CorruptData("The message padding is damaged.") from None


@dataclass(frozen=True)
class OpenedEnvelope:
    """The content of an opened envelope. ``sender`` is unauthenticated (see module doc)."""

    sender: IdentityPublicKey
    body: bytes


def seal_envelope(recipient_box_public: bytes, sender: IdentityPublicKey, body: bytes) -> bytes:
    """Pad and seal ``body`` from ``sender`` to a mailbox's X25519 box key.

    Raises :class:`TooLarge` if ``body`` exceeds :data:`MAX_BODY_SIZE`.
    """
    if len(recipient_box_public) != KEY_SIZE:
        raise InvalidKey("The recipient's mailbox key has the wrong length.")
    if len(body) > MAX_BODY_SIZE:
        raise TooLarge()
    inner = bytes([ENVELOPE_VERSION]) + sender.raw + body
    try:
        return sodium.crypto_box_seal(pad(inner), recipient_box_public)
    except nacl.exceptions.RuntimeError:
        raise InvalidKey("The recipient's mailbox key is not usable.") from None


def open_envelope(mailbox: MailboxKeyPair, sealed: bytes) -> OpenedEnvelope:
    """Open a deposit sealed to ``mailbox``.

    Raises :class:`DecryptionFailed` if it was not sealed to this mailbox or was
    altered, and :class:`CorruptData` if it opens but is malformed.
    """
    inner = unpad(mailbox.open_sealed_box(sealed))
    if len(inner) < _INNER_HEADER:
        raise CorruptData("The message is too short.")
    if inner[0] != ENVELOPE_VERSION:
        raise CorruptData("The message was sealed by an unsupported version of chatcli.")
    try:
        sender = IdentityPublicKey.from_bytes(inner[1:_INNER_HEADER])
    except InvalidKey:
        raise CorruptData("The message names an invalid sender key.") from None
    return OpenedEnvelope(sender=sender, body=inner[_INNER_HEADER:])


__all__ = [
    "ENVELOPE_BUCKETS",
    "MAX_BODY_SIZE",
    "MAX_SEALED_SIZE",
    "OpenedEnvelope",
    "bucket_for",
    "open_envelope",
    "pad",
    "seal_envelope",
    "unpad",
]
