"""The errors of :mod:`chatcli.crypto`.

All derive from :class:`chatcli.errors.CryptoError`. Each carries a default
message written for the person at the terminal, so ``raise WrongPassphrase()``
is enough; a more specific sentence may be passed instead.
"""

from __future__ import annotations

from chatcli.errors import CryptoError


class _DefaultMessage(CryptoError):
    """A crypto error whose message defaults to the class's ``default``."""

    default = "A cryptographic operation failed."

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message if message is not None else self.default)


class WrongPassphrase(_DefaultMessage):
    """The passphrase does not open an intact keystore or backup."""

    default = "The passphrase is wrong."


class WrongKey(WrongPassphrase):
    """A derived key (e.g. one held by ``chatcli agent``) does not open the
    keystore: the file was re-encrypted or replaced since the key was derived."""

    default = "The key does not open this file (it was re-encrypted or replaced)."


class EmptyPassphrase(_DefaultMessage):
    """A passphrase to protect keys with was empty."""

    default = "The passphrase must not be empty."


class CorruptData(_DefaultMessage):
    """A file or message is truncated, damaged or not in the expected format."""

    default = "The data is damaged or truncated."


class TooLarge(_DefaultMessage):
    """Data is larger than the format can carry."""

    default = "The message is too large to send; send it as an attachment instead."


class BadSignature(_DefaultMessage):
    """A signature does not verify under the claimed key."""

    default = "The signature is not valid."


class InvalidInvite(_DefaultMessage):
    """An invite link is malformed, tampered with, or wrongly signed."""

    default = "The invite is not valid: it is damaged or was not issued by its sender."


class InviteExpired(_DefaultMessage):
    """An invite's expiry time has passed."""

    default = "The invite has expired; ask for a new one."


class DecryptionFailed(_DefaultMessage):
    """A message could not be authenticated or decrypted."""

    default = "A message could not be decrypted: it was damaged or not meant for this session."


class ReplayedMessage(_DefaultMessage):
    """A message was already received once."""

    default = "A message was received twice; the copy was ignored."


class TooManySkipped(_DefaultMessage):
    """A message would require skipping more message keys than allowed."""

    default = "Too many messages were lost in a row to decrypt this one."


class SessionNotReady(_DefaultMessage):
    """A ratchet session cannot send before the other side's first message arrived."""

    default = "This session cannot send yet: wait for the first message from the other side."


class InvalidKey(_DefaultMessage):
    """A key has the wrong length or is not a valid curve point."""

    default = "A key is malformed."


__all__ = [
    "BadSignature",
    "CorruptData",
    "DecryptionFailed",
    "EmptyPassphrase",
    "InvalidInvite",
    "InvalidKey",
    "InviteExpired",
    "ReplayedMessage",
    "SessionNotReady",
    "TooLarge",
    "TooManySkipped",
    "WrongKey",
    "WrongPassphrase",
]
