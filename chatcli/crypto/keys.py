"""Key objects: identities, mailbox keys, the relay key and X25519 DH keys.

Keys are objects, not bytes: constructors check type and exact length, public
keys compare in constant time, and ``repr`` never shows a secret. Identity keys
are Ed25519; Diffie-Hellman with them goes through the standard birational
conversion to X25519 (``crypto_sign_ed25519_{pk,sk}_to_curve25519``), the
choice Signal's XEdDSA paper describes the other way round.

**Never log or print the result of** ``private_bytes()``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import nacl.bindings as sodium
import nacl.exceptions
import nacl.signing

from chatcli.crypto.errors import BadSignature, DecryptionFailed, InvalidKey

KEY_SIZE = 32
SIGNATURE_SIZE = 64

_IDENTITY_FINGERPRINT_LABEL = b"chatcli/identity-fingerprint/v1"
_RELAY_FINGERPRINT_LABEL = b"chatcli/relay-fingerprint/v1"
_ZERO32 = bytes(KEY_SIZE)


def _exact(data: object, length: int, what: str) -> bytes:
    """Return ``data`` as bytes if it is bytes of exactly ``length``, else raise."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"{what} must be bytes, not {type(data).__name__}")
    raw = bytes(data)
    if len(raw) != length:
        raise InvalidKey(f"The {what} has {len(raw)} bytes instead of {length}.")
    return raw


def x25519(private: bytes, their_public: bytes) -> bytes:
    """Raw X25519 of a 32-byte scalar and a 32-byte point.

    Refuses (``InvalidKey``) a result of all zeros, which a low-order public key
    forces and which would make the shared secret known to everybody.
    """
    _exact(their_public, KEY_SIZE, "X25519 public key")
    try:
        shared = sodium.crypto_scalarmult(private, their_public)
    except nacl.exceptions.RuntimeError:
        raise InvalidKey("The peer's key is not usable for key agreement.") from None
    if hmac.compare_digest(shared, _ZERO32):
        raise InvalidKey("The peer's key is not usable for key agreement.")
    return shared


class SigningPublicKey:
    """An Ed25519 public key that verifies signatures.

    ``from_bytes`` refuses strings that are not a valid curve point of large
    order (libsodium's conversion check), so every instance is usable.
    """

    __slots__ = ("_raw", "_verify_key")

    def __init__(self, raw: bytes) -> None:
        raw = _exact(raw, KEY_SIZE, "Ed25519 public key")
        try:
            sodium.crypto_sign_ed25519_pk_to_curve25519(raw)
        except nacl.exceptions.RuntimeError:
            raise InvalidKey("The public key is not a valid Ed25519 key.") from None
        self._raw = raw
        self._verify_key = nacl.signing.VerifyKey(raw)

    @classmethod
    def from_bytes(cls, raw: bytes) -> SigningPublicKey:
        return cls(raw)

    @property
    def raw(self) -> bytes:
        """The 32-byte Ed25519 public key."""
        return self._raw

    def verify(self, data: bytes, signature: bytes) -> None:
        """Check a detached 64-byte signature over ``data``; raise ``BadSignature``."""
        if not isinstance(signature, bytes) or len(signature) != SIGNATURE_SIZE:
            raise BadSignature()
        try:
            self._verify_key.verify(data, signature)
        except nacl.exceptions.BadSignatureError:
            raise BadSignature() from None

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, SigningPublicKey)
        return hmac.compare_digest(self._raw, other._raw)

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._raw))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._raw.hex()[:16]}...)"


class IdentityPublicKey(SigningPublicKey):
    """A user's Ed25519 identity public key."""

    __slots__ = ()

    @classmethod
    def from_bytes(cls, raw: bytes) -> IdentityPublicKey:
        return cls(raw)

    @property
    def x25519_public(self) -> bytes:
        """The key converted to X25519, for Diffie-Hellman."""
        return sodium.crypto_sign_ed25519_pk_to_curve25519(self._raw)

    def fingerprint(self) -> str:
        """A short display fingerprint: 8 groups of 4 hex digits (64 bits).

        For recognising a key at a glance; verification uses the safety number.
        """
        digest = hashlib.sha256(_IDENTITY_FINGERPRINT_LABEL + self._raw).hexdigest()[:32]
        return " ".join(digest[i : i + 4] for i in range(0, 32, 4))


class RelayPublicKey(SigningPublicKey):
    """A relay's Ed25519 public key."""

    __slots__ = ()

    @classmethod
    def from_bytes(cls, raw: bytes) -> RelayPublicKey:
        return cls(raw)

    def fingerprint(self) -> str:
        """The full fingerprint used after ``#`` in relay URLs."""
        return relay_fingerprint(self._raw)


def relay_fingerprint(relay_key: bytes) -> str:
    """Lower-case unpadded base32 of SHA-256(label || relay Ed25519 key): 52 chars."""
    relay_key = _exact(relay_key, KEY_SIZE, "relay public key")
    digest = hashlib.sha256(_RELAY_FINGERPRINT_LABEL + relay_key).digest()
    return base64.b32encode(digest).decode("ascii").rstrip("=").lower()


class _Ed25519KeyPair:
    """Common part of the Ed25519 key pairs: a 32-byte seed and its signing key."""

    __slots__ = ("_signing_key",)

    def __init__(self, seed: bytes) -> None:
        self._signing_key = nacl.signing.SigningKey(_exact(seed, KEY_SIZE, "private key"))

    def private_bytes(self) -> bytes:
        """The 32-byte Ed25519 seed. **Secret: store only in the keystore.**"""
        return bytes(self._signing_key)

    def sign(self, data: bytes) -> bytes:
        """A detached 64-byte Ed25519 signature over ``data``."""
        return self._signing_key.sign(data).signature

    @property
    def _public_raw(self) -> bytes:
        return bytes(self._signing_key.verify_key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(public={self._public_raw.hex()[:16]}...)"


class IdentityKeyPair(_Ed25519KeyPair):
    """A user's Ed25519 identity key pair, also usable for X25519 DH."""

    __slots__ = ("_public",)

    def __init__(self, seed: bytes) -> None:
        super().__init__(seed)
        self._public = IdentityPublicKey(self._public_raw)

    @classmethod
    def generate(cls) -> IdentityKeyPair:
        return cls(sodium.randombytes(KEY_SIZE))

    @classmethod
    def from_private_bytes(cls, seed: bytes) -> IdentityKeyPair:
        return cls(seed)

    @property
    def public(self) -> IdentityPublicKey:
        return self._public

    def _x25519_private(self) -> bytes:
        return bytes(self._signing_key.to_curve25519_private_key())

    def dh(self, their: IdentityPublicKey) -> bytes:
        """X25519 between this identity and another, both converted from Ed25519."""
        return x25519(self._x25519_private(), their.x25519_public)

    def dh_x25519(self, their_public: bytes) -> bytes:
        """X25519 between this identity (converted) and a raw X25519 public key."""
        return x25519(self._x25519_private(), their_public)


class RelayKeyPair(_Ed25519KeyPair):
    """The relay's Ed25519 key pair; clients pin its fingerprint."""

    __slots__ = ("_public",)

    def __init__(self, seed: bytes) -> None:
        super().__init__(seed)
        self._public = RelayPublicKey(self._public_raw)

    @classmethod
    def generate(cls) -> RelayKeyPair:
        return cls(sodium.randombytes(KEY_SIZE))

    @classmethod
    def from_private_bytes(cls, seed: bytes) -> RelayKeyPair:
        return cls(seed)

    @property
    def public(self) -> RelayPublicKey:
        return self._public

    def fingerprint(self) -> str:
        return self._public.fingerprint()


class MailboxKeyPair(_Ed25519KeyPair):
    """The key of one mailbox: Ed25519 to authenticate to the relay, and its
    X25519 conversion as the box key that deposits are sealed to.

    It is not the identity key, so the relay cannot link a mailbox to a person.
    """

    __slots__ = ("_box_private", "_box_public")

    def __init__(self, seed: bytes) -> None:
        super().__init__(seed)
        self._box_public = sodium.crypto_sign_ed25519_pk_to_curve25519(self._public_raw)
        self._box_private = bytes(self._signing_key.to_curve25519_private_key())

    @classmethod
    def generate(cls) -> MailboxKeyPair:
        return cls(sodium.randombytes(KEY_SIZE))

    @classmethod
    def from_private_bytes(cls, seed: bytes) -> MailboxKeyPair:
        return cls(seed)

    @property
    def auth_public(self) -> bytes:
        """The Ed25519 public key the relay knows the mailbox by (32 bytes)."""
        return self._public_raw

    @property
    def box_public(self) -> bytes:
        """The X25519 public key deposits are sealed to (32 bytes)."""
        return self._box_public

    def open_sealed_box(self, sealed: bytes) -> bytes:
        """Open a libsodium sealed box addressed to this mailbox.

        Raises ``DecryptionFailed`` if it was not sealed to this key or was altered.
        """
        try:
            return sodium.crypto_box_seal_open(sealed, self._box_public, self._box_private)
        except (nacl.exceptions.CryptoError, nacl.exceptions.TypeError, ValueError):
            raise DecryptionFailed() from None


class DHKeyPair:
    """An X25519 key pair (prekeys, ephemeral keys, ratchet keys)."""

    __slots__ = ("_private", "_public")

    def __init__(self, private: bytes) -> None:
        self._private = _exact(private, KEY_SIZE, "X25519 private key")
        self._public = sodium.crypto_scalarmult_base(self._private)

    @classmethod
    def generate(cls) -> DHKeyPair:
        return cls(sodium.randombytes(KEY_SIZE))

    @classmethod
    def from_private_bytes(cls, private: bytes) -> DHKeyPair:
        return cls(private)

    def private_bytes(self) -> bytes:
        """The 32-byte X25519 scalar. **Secret.**"""
        return self._private

    @property
    def public(self) -> bytes:
        """The 32-byte X25519 public key."""
        return self._public

    def dh(self, their_public: bytes) -> bytes:
        """X25519 with ``their_public``; refuses an all-zero result (``InvalidKey``)."""
        return x25519(self._private, their_public)

    def __repr__(self) -> str:
        return f"DHKeyPair(public={self._public.hex()[:16]}...)"


__all__ = [
    "KEY_SIZE",
    "SIGNATURE_SIZE",
    "DHKeyPair",
    "IdentityKeyPair",
    "IdentityPublicKey",
    "MailboxKeyPair",
    "RelayKeyPair",
    "RelayPublicKey",
    "SigningPublicKey",
    "relay_fingerprint",
    "x25519",
]
