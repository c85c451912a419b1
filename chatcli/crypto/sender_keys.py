"""Sender keys for groups: one signed hash ratchet per member, as in Signal's groups.

Each member sending to a group holds a :class:`SenderKeyState`: a random
16-byte chain id, a chain key with an iteration counter, and an Ed25519
signing key belonging to this chain only. It sends the other members a
*distribution message* (chain id, iteration, chain key, signing public key)
over the pairwise Double Ratchet sessions, then encrypts each group message
once; every member decrypts it with its :class:`SenderKeyReceiver` for that
sender.

* Chain step: ``mk = HMAC-SHA256(ck, 0x01)``, ``ck' = HMAC-SHA256(ck, 0x02)``.
* Message encryption: HKDF-SHA256 (zero salt, ``ikm = mk``,
  ``info = "chatcli/sender-key/v1/message-key"``) gives a 32-byte key and a
  24-byte nonce for XChaCha20-Poly1305-IETF; the associated data is the
  cleartext prefix (version, chain id, iteration). A message key is used once.
* Signature: Ed25519 over ``"chatcli/sender-key/v1/signature"`` followed by
  everything before the signature. The other members know the chain key but
  not the signing key, so none of them can forge a message as this sender.

A receiver keeps at most :data:`MAX_SKIPPED_TOTAL` keys of messages not yet
seen (the oldest evicted), refuses to jump more than :data:`MAX_SKIP`
iterations at once, refuses replays, and is transactional: after an error it
is unchanged. Rolling the sender key (after a member left) is generating a new
state: it has a new chain id, chain key and signing key, so a receiver that has
only an older distribution cannot read it.

Byte layouts are in ``docs/protocol.md``, part 1, "Sender keys (groups)".

**Distribution messages and serialised states contain secrets: send them only
over an end-to-end encrypted session, store them only encrypted.**
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import Annotated, Final, TypeVar

import msgspec
import nacl.bindings as sodium
import nacl.exceptions
import nacl.signing

from chatcli.crypto.errors import (
    CorruptData,
    DecryptionFailed,
    InvalidKey,
    ReplayedMessage,
    SessionNotReady,
    TooManySkipped,
)
from chatcli.crypto.kdf import hkdf_sha256
from chatcli.crypto.keys import SigningPublicKey

VERSION: Final = 1
"""Version of the message, distribution and state layouts."""

MAX_SKIP: Final = 1000
"""The most iterations one message may make a receiver skip."""

MAX_SKIPPED_TOTAL: Final = 2000
"""The most skipped message keys a receiver stores; the oldest is evicted beyond it."""

CHAIN_ID_SIZE: Final = 16
KEY_SIZE: Final = 32
SIGNATURE_SIZE: Final = 64
MESSAGE_KEY_LABEL: Final = b"chatcli/sender-key/v1/message-key"
SIGNATURE_LABEL: Final = b"chatcli/sender-key/v1/signature"

_MAX_ITERATION: Final = 0xFFFFFFFF
_NONCE_SIZE: Final = sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
_TAG_SIZE: Final = sodium.crypto_aead_xchacha20poly1305_ietf_ABYTES
_PREFIX = struct.Struct(">B16sI")  # version, chain id, iteration
_DISTRIBUTION = struct.Struct(">B16sI32s32s")  # version, chain id, iteration, ck, signing pk
DISTRIBUTION_SIZE: Final = _DISTRIBUTION.size  # 85
MESSAGE_OVERHEAD: Final = _PREFIX.size + _TAG_SIZE + SIGNATURE_SIZE  # 101


def _chain_step(ck: bytes) -> tuple[bytes, bytes]:
    """The next chain key and the message key of this iteration."""
    next_ck = hmac.new(ck, b"\x02", hashlib.sha256).digest()
    mk = hmac.new(ck, b"\x01", hashlib.sha256).digest()
    return next_ck, mk


def _cipher(mk: bytes) -> tuple[bytes, bytes]:
    out = hkdf_sha256(mk, salt=bytes(KEY_SIZE), info=MESSAGE_KEY_LABEL, length=KEY_SIZE + 24)
    return out[:KEY_SIZE], out[KEY_SIZE:]


def message_chain_id(message: bytes) -> bytes:
    """The chain id a group message names, to pick the receiver that opens it.

    Raises :class:`CorruptData` if ``message`` is not a group message.
    """
    if not isinstance(message, bytes) or len(message) < MESSAGE_OVERHEAD:
        raise CorruptData("The group message is damaged or truncated.")
    if message[0] != VERSION:
        raise CorruptData("The group message uses an unknown format version.")
    return message[1 : 1 + CHAIN_ID_SIZE]


class SenderKeyState:
    """The sending side of one member's sender key chain.

    **Holds secrets; never log** :meth:`to_bytes` **or** :meth:`distribution`.
    """

    __slots__ = ("_chain_id", "_chain_key", "_iteration", "_signing")

    def __init__(
        self, chain_id: bytes, iteration: int, chain_key: bytes, signing_seed: bytes
    ) -> None:
        if len(chain_id) != CHAIN_ID_SIZE or len(chain_key) != KEY_SIZE:
            raise InvalidKey("A sender key has the wrong length.")
        if len(signing_seed) != KEY_SIZE:
            raise InvalidKey("A sender key has the wrong length.")
        if not 0 <= iteration <= _MAX_ITERATION:
            raise CorruptData("The sender key is damaged.")
        self._chain_id = chain_id
        self._iteration = iteration
        self._chain_key = chain_key
        self._signing = nacl.signing.SigningKey(signing_seed)

    @classmethod
    def generate(cls) -> SenderKeyState:
        """A new chain: random chain id, chain key and signing key, iteration 0."""
        return cls(
            sodium.randombytes(CHAIN_ID_SIZE),
            0,
            sodium.randombytes(KEY_SIZE),
            sodium.randombytes(KEY_SIZE),
        )

    @property
    def chain_id(self) -> bytes:
        """The random 16-byte id of this chain (not secret)."""
        return self._chain_id

    @property
    def iteration(self) -> int:
        """The iteration the next message will carry."""
        return self._iteration

    @property
    def signing_public(self) -> SigningPublicKey:
        """The Ed25519 key that verifies this chain's messages."""
        return SigningPublicKey(bytes(self._signing.verify_key))

    def distribution(self) -> bytes:
        """The distribution message (85 bytes) for the other members. **Secret.**

        It lets its holder read every message from the current iteration on,
        never earlier ones.
        """
        return _DISTRIBUTION.pack(
            VERSION,
            self._chain_id,
            self._iteration,
            self._chain_key,
            bytes(self._signing.verify_key),
        )

    def encrypt(self, plaintext: bytes) -> bytes:
        """Encrypt and sign one group message; the chain moves on by one.

        **Store the state (``to_bytes``) after encrypting and before sending:
        encrypting again from an older saved state would reuse a message key.**
        """
        if self._iteration >= _MAX_ITERATION:
            raise SessionNotReady("This group key is used up; a new one must be made.")
        next_ck, mk = _chain_step(self._chain_key)
        prefix = _PREFIX.pack(VERSION, self._chain_id, self._iteration)
        key, nonce = _cipher(mk)
        body = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
            bytes(plaintext), prefix, nonce, key
        )
        signed = prefix + body
        signature = self._signing.sign(SIGNATURE_LABEL + signed).signature
        self._chain_key = next_ck
        self._iteration += 1
        return signed + signature

    def to_bytes(self) -> bytes:
        """The state, versioned MessagePack. **Contains secrets.**"""
        return _ENCODER.encode(
            _SenderStateV1(
                version=VERSION,
                chain_id=self._chain_id,
                iteration=self._iteration,
                chain_key=self._chain_key,
                signing_seed=bytes(self._signing),
            )
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> SenderKeyState:
        """Restore a state from :meth:`to_bytes`; raises :class:`CorruptData`."""
        st = _decode(data, _SenderStateV1)
        try:
            return cls(st.chain_id, st.iteration, st.chain_key, st.signing_seed)
        except InvalidKey:
            raise CorruptData("The saved group key is damaged.") from None

    def __repr__(self) -> str:
        return f"SenderKeyState(chain_id={self._chain_id.hex()}, iteration={self._iteration})"


class SenderKeyReceiver:
    """One member's view of another member's sender key chain.

    :meth:`decrypt` verifies the signature first, then opens the message;
    it is transactional (unchanged after any error).
    """

    __slots__ = ("_chain_id", "_chain_key", "_iteration", "_signing_public", "_skipped")

    def __init__(
        self,
        chain_id: bytes,
        iteration: int,
        chain_key: bytes,
        signing_public: SigningPublicKey,
        skipped: dict[int, bytes],
    ) -> None:
        self._chain_id = chain_id
        self._iteration = iteration
        self._chain_key = chain_key
        self._signing_public = signing_public
        self._skipped = skipped

    @classmethod
    def from_distribution(cls, data: bytes) -> SenderKeyReceiver:
        """A receiver from a distribution message; raises :class:`CorruptData`."""
        if not isinstance(data, bytes) or len(data) != DISTRIBUTION_SIZE:
            raise CorruptData("The group key message is damaged.")
        version, chain_id, iteration, chain_key, signing_raw = _DISTRIBUTION.unpack(data)
        if version != VERSION:
            raise CorruptData("The group key message uses an unknown format version.")
        try:
            signing_public = SigningPublicKey(signing_raw)
        except InvalidKey:
            raise CorruptData("The group key message is damaged.") from None
        return cls(chain_id, iteration, chain_key, signing_public, {})

    @property
    def chain_id(self) -> bytes:
        return self._chain_id

    @property
    def signing_public(self) -> SigningPublicKey:
        return self._signing_public

    @property
    def iteration(self) -> int:
        """The next iteration expected in order."""
        return self._iteration

    @property
    def skipped_keys(self) -> int:
        """How many keys of not yet received messages are stored."""
        return len(self._skipped)

    def verify(self, message: bytes) -> None:
        """Check that ``message`` is of this chain and signed by its signing key,
        without decrypting it or moving the chain on.

        Raises :class:`DecryptionFailed` (another chain id), :class:`BadSignature`
        or :class:`CorruptData` (not a group message).
        """
        chain_id = message_chain_id(message)
        if not hmac.compare_digest(chain_id, self._chain_id):
            raise DecryptionFailed(
                "This group message uses a sender key this device was not given."
            )
        signed, signature = message[:-SIGNATURE_SIZE], message[-SIGNATURE_SIZE:]
        self._signing_public.verify(SIGNATURE_LABEL + signed, signature)

    def decrypt(self, message: bytes) -> bytes:
        """Verify and decrypt one group message of this chain.

        Raises :class:`DecryptionFailed` (another chain, e.g. a rolled key this
        device was not given), :class:`BadSignature` (forged or altered),
        :class:`ReplayedMessage`, :class:`TooManySkipped` or
        :class:`CorruptData` (not a group message).
        """
        self.verify(message)
        signed = message[:-SIGNATURE_SIZE]
        (_, _, iteration) = _PREFIX.unpack(signed[: _PREFIX.size])
        body = signed[_PREFIX.size :]

        skipped = self._skipped
        chain_key, next_iteration = self._chain_key, self._iteration
        if iteration < self._iteration:
            if iteration not in skipped:
                raise ReplayedMessage()
            skipped = dict(skipped)
            mk = skipped.pop(iteration)
        else:
            if iteration - self._iteration > MAX_SKIP:
                raise TooManySkipped()
            skipped = dict(skipped)
            while next_iteration < iteration:
                chain_key, skipped_mk = _chain_step(chain_key)
                skipped[next_iteration] = skipped_mk
                next_iteration += 1
                if len(skipped) > MAX_SKIPPED_TOTAL:
                    del skipped[next(iter(skipped))]
            chain_key, mk = _chain_step(chain_key)
            next_iteration += 1

        key, nonce = _cipher(mk)
        try:
            plaintext = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
                body, signed[: _PREFIX.size], nonce, key
            )
        except (nacl.exceptions.CryptoError, ValueError):
            raise DecryptionFailed() from None
        self._skipped, self._chain_key, self._iteration = skipped, chain_key, next_iteration
        return plaintext

    def to_bytes(self) -> bytes:
        """The receiver, versioned MessagePack. **Contains secrets.**"""
        return _ENCODER.encode(
            _ReceiverStateV1(
                version=VERSION,
                chain_id=self._chain_id,
                iteration=self._iteration,
                chain_key=self._chain_key,
                signing_public=self._signing_public.raw,
                skipped=list(self._skipped.items()),
            )
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> SenderKeyReceiver:
        """Restore a receiver from :meth:`to_bytes`; raises :class:`CorruptData`."""
        st = _decode(data, _ReceiverStateV1)
        keys = [st.chain_key, *(mk for _, mk in st.skipped)]
        if len(st.chain_id) != CHAIN_ID_SIZE or any(len(k) != KEY_SIZE for k in keys):
            raise CorruptData("The saved group key is damaged.")
        try:
            signing_public = SigningPublicKey(st.signing_public)
        except InvalidKey:
            raise CorruptData("The saved group key is damaged.") from None
        return cls(st.chain_id, st.iteration, st.chain_key, signing_public, dict(st.skipped))

    def __repr__(self) -> str:
        return f"SenderKeyReceiver(chain_id={self._chain_id.hex()}, iteration={self._iteration})"


# --- serialisation -------------------------------------------------------------------

_U32 = Annotated[int, msgspec.Meta(ge=0, le=_MAX_ITERATION)]


class _SenderStateV1(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    version: int
    chain_id: bytes
    iteration: _U32
    chain_key: bytes
    signing_seed: bytes


class _ReceiverStateV1(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    version: int
    chain_id: bytes
    iteration: _U32
    chain_key: bytes
    signing_public: bytes
    skipped: list[tuple[_U32, bytes]]  # oldest first


_ENCODER = msgspec.msgpack.Encoder()


_T = TypeVar("_T")


def _decode(data: bytes, kind: type[_T]) -> _T:
    try:
        raw = msgspec.msgpack.decode(data)
    except (msgspec.DecodeError, TypeError, ValueError):  # bad UTF-8 raises UnicodeDecodeError
        raise CorruptData("The saved group key is damaged.") from None
    if not isinstance(raw, list) or not raw or raw[0] != VERSION:
        raise CorruptData("The saved group key is damaged or from an unknown version.")
    try:
        return msgspec.convert(raw, kind)
    except msgspec.ValidationError:
        raise CorruptData("The saved group key is damaged.") from None


__all__ = [
    "DISTRIBUTION_SIZE",
    "MAX_SKIP",
    "MAX_SKIPPED_TOTAL",
    "MESSAGE_OVERHEAD",
    "VERSION",
    "SenderKeyReceiver",
    "SenderKeyState",
    "message_chain_id",
]
