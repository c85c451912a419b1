"""The Double Ratchet with header encryption (Signal specification, revision 4).

This module follows https://signal.org/docs/specifications/doubleratchet/
section 4 ("Double Ratchet with header encryption"): ``RatchetInitAlice`` is
:meth:`RatchetSession.initiator`, ``RatchetInitBob`` is
:meth:`RatchetSession.responder`, ``RatchetEncryptHE`` is
:meth:`RatchetSession.encrypt` and ``RatchetDecryptHE`` is
:meth:`RatchetSession.decrypt`. The primitives are the ones the specification
recommends (section 5.2), with XChaCha20-Poly1305 from libsodium as the AEAD:

* ``KDF_RK_HE(rk, dh_out)``: HKDF-SHA256 with ``salt = rk``, ``ikm = dh_out``,
  ``info = "chatcli/ratchet/v1/root"``, 96 bytes split into the new root key,
  the new chain key and the next header key, in that order.
* ``KDF_CK(ck)``: ``mk = HMAC-SHA256(ck, 0x01)``, ``ck' = HMAC-SHA256(ck, 0x02)``.
* ``ENCRYPT(mk, plaintext, AD || enc_header)``: HKDF-SHA256 with a zero salt,
  ``ikm = mk`` and ``info = "chatcli/ratchet/v1/message-key"`` gives a 32-byte
  key and a 24-byte nonce for XChaCha20-Poly1305-IETF (each message key is used
  exactly once, so the derived nonce is never reused).
* ``HENCRYPT(hk, header)``: XChaCha20-Poly1305-IETF under the header key with a
  random 24-byte nonce, the version byte as associated data.
* ``shared_hka = derive(SK, "chatcli/ratchet/v1/header-key-a")`` and
  ``shared_nhkb = derive(SK, "chatcli/ratchet/v1/next-header-key-b")``.

Bounds: at most :data:`MAX_SKIP` message keys are skipped in one chain per
message (else :class:`TooManySkipped`); at most :data:`MAX_SKIPPED_TOTAL`
skipped keys are stored, the oldest evicted first; the header keys of the last
:data:`MAX_OLD_CHAINS` receiving chains are remembered so that a replayed
message is recognised as such (:class:`ReplayedMessage`) rather than as
garbage, and a chain forgotten from that list also loses its skipped keys
(the specification's advice to delete skipped keys after some ratchet steps).

Every byte layout is in ``docs/protocol.md``, part 1, "Double Ratchet".

**The serialised state (``to_bytes``) contains private keys: store it only
encrypted, never log it.**
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import struct
from typing import Annotated, Final

import msgspec
import nacl.bindings as sodium
import nacl.exceptions

from chatcli.crypto.errors import (
    CorruptData,
    DecryptionFailed,
    InvalidKey,
    ReplayedMessage,
    SessionNotReady,
    TooManySkipped,
)
from chatcli.crypto.kdf import derive, hkdf_sha256
from chatcli.crypto.keys import DHKeyPair

VERSION: Final = 1
"""Version of the message layout and of the serialised state."""

MAX_SKIP: Final = 1000
"""The most message keys one message may make a receiving chain skip."""

MAX_SKIPPED_TOTAL: Final = 2000
"""The most skipped message keys stored; the oldest is evicted beyond it."""

MAX_OLD_CHAINS: Final = 64
"""How many previous receiving chains are remembered (header key, skipped keys)."""

ROOT_LABEL: Final = b"chatcli/ratchet/v1/root"
MESSAGE_KEY_LABEL: Final = b"chatcli/ratchet/v1/message-key"
HEADER_KEY_A_PURPOSE: Final = "chatcli/ratchet/v1/header-key-a"
NEXT_HEADER_KEY_B_PURPOSE: Final = "chatcli/ratchet/v1/next-header-key-b"

KEY_SIZE: Final = 32
_NONCE_SIZE: Final = sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES  # 24
_TAG_SIZE: Final = sodium.crypto_aead_xchacha20poly1305_ietf_ABYTES  # 16
_MESSAGE_KEY_CONSTANT: Final = b"\x01"
_CHAIN_KEY_CONSTANT: Final = b"\x02"
_MAX_COUNTER: Final = 0xFFFFFFFF

_VERSION_BYTE: Final = bytes([VERSION])
_HEADER = struct.Struct(">32sII")  # DHs public key, PN, N
HEADER_SIZE: Final = _HEADER.size  # 40
ENC_HEADER_SIZE: Final = 1 + _NONCE_SIZE + HEADER_SIZE + _TAG_SIZE  # 81
MESSAGE_OVERHEAD: Final = ENC_HEADER_SIZE + _TAG_SIZE  # 97

_NEXT_CHAIN: Final = -1  # "the header opened under NHKr": a DH ratchet step follows


# --- the specification's functions -------------------------------------------------


def kdf_rk_he(rk: bytes, dh_out: bytes) -> tuple[bytes, bytes, bytes]:
    """``KDF_RK_HE``: the new root key, chain key and next header key."""
    out = hkdf_sha256(dh_out, salt=rk, info=ROOT_LABEL, length=3 * KEY_SIZE)
    return out[:KEY_SIZE], out[KEY_SIZE : 2 * KEY_SIZE], out[2 * KEY_SIZE :]


def kdf_ck(ck: bytes) -> tuple[bytes, bytes]:
    """``KDF_CK``: the next chain key and the message key."""
    next_ck = hmac.new(ck, _CHAIN_KEY_CONSTANT, hashlib.sha256).digest()
    mk = hmac.new(ck, _MESSAGE_KEY_CONSTANT, hashlib.sha256).digest()
    return next_ck, mk


def _message_cipher_key(mk: bytes) -> tuple[bytes, bytes]:
    """The XChaCha20-Poly1305 key and nonce a message key stands for."""
    out = hkdf_sha256(mk, salt=bytes(KEY_SIZE), info=MESSAGE_KEY_LABEL, length=KEY_SIZE + 24)
    return out[:KEY_SIZE], out[KEY_SIZE:]


def encrypt_body(mk: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """``ENCRYPT(mk, plaintext, associated_data)``."""
    key, nonce = _message_cipher_key(mk)
    return sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, associated_data, nonce, key)


def decrypt_body(mk: bytes, ciphertext: bytes, associated_data: bytes) -> bytes:
    """``DECRYPT(mk, ciphertext, associated_data)``; raises :class:`DecryptionFailed`."""
    key, nonce = _message_cipher_key(mk)
    try:
        return sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
            ciphertext, associated_data, nonce, key
        )
    except (nacl.exceptions.CryptoError, ValueError):
        raise DecryptionFailed() from None


def _hencrypt(hk: bytes, header: bytes) -> bytes:
    nonce = sodium.randombytes(_NONCE_SIZE)
    sealed = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(header, _VERSION_BYTE, nonce, hk)
    return _VERSION_BYTE + nonce + sealed


def _hdecrypt(hk: bytes, enc_header: bytes) -> bytes | None:
    """``HDECRYPT``: the header, or None if it was not sealed under ``hk``."""
    nonce = enc_header[1 : 1 + _NONCE_SIZE]
    try:
        return sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
            enc_header[1 + _NONCE_SIZE :], _VERSION_BYTE, nonce, hk
        )
    except (nacl.exceptions.CryptoError, ValueError):
        return None


@dataclasses.dataclass(slots=True, repr=False)
class _State:
    """The specification's state variables, plus the bookkeeping of old chains.

    Receiving chains are numbered (``hkr_no``) so that skipped keys are found
    by the chain whose header key opened the header, never by comparing keys.
    """

    dhs: DHKeyPair
    dhr: bytes | None
    rk: bytes
    cks: bytes | None
    ckr: bytes | None
    ns: _U32
    nr: _U32
    pn: _U32
    hks: bytes | None
    hkr: bytes | None
    nhks: bytes
    nhkr: bytes
    hkr_no: int
    mkskipped: dict[tuple[int, int], bytes]
    old_chains: list[tuple[int, bytes]]  # (chain number, HKr), oldest first

    def copy(self) -> _State:
        return dataclasses.replace(
            self, mkskipped=dict(self.mkskipped), old_chains=list(self.old_chains)
        )


def _skip_message_keys(s: _State, until: int) -> None:
    """``SkipMessageKeysHE``, with the total bound on stored keys."""
    if s.nr + MAX_SKIP < until:
        raise TooManySkipped()
    if s.ckr is not None:
        while s.nr < until:
            s.ckr, mk = kdf_ck(s.ckr)
            s.mkskipped[(s.hkr_no, s.nr)] = mk
            s.nr += 1
            if len(s.mkskipped) > MAX_SKIPPED_TOTAL:
                del s.mkskipped[next(iter(s.mkskipped))]


def _dh_ratchet(s: _State, their_public: bytes) -> None:
    """``DHRatchetHE``; the receiving chain it ends is remembered as an old chain."""
    if s.hkr is not None:
        s.old_chains.append((s.hkr_no, s.hkr))
        if len(s.old_chains) > MAX_OLD_CHAINS:
            forgotten, _ = s.old_chains.pop(0)
            for slot in [slot for slot in s.mkskipped if slot[0] == forgotten]:
                del s.mkskipped[slot]
    s.pn = s.ns
    s.ns = 0
    s.nr = 0
    s.hks = s.nhks
    s.hkr = s.nhkr
    s.hkr_no += 1
    s.dhr = their_public
    try:
        s.rk, s.ckr, s.nhkr = kdf_rk_he(s.rk, s.dhs.dh(s.dhr))
        s.dhs = _generate_ratchet_key()
        s.rk, s.cks, s.nhks = kdf_rk_he(s.rk, s.dhs.dh(s.dhr))
    except InvalidKey:
        raise DecryptionFailed() from None


def _generate_ratchet_key() -> DHKeyPair:
    """``GENERATE_DH``: a fresh X25519 ratchet key pair."""
    return DHKeyPair.generate()


def _check_key(value: object, what: str) -> bytes:
    if not isinstance(value, bytes):
        raise TypeError(f"{what} must be bytes, not {type(value).__name__}")
    if len(value) != KEY_SIZE:
        raise InvalidKey(f"The {what} has {len(value)} bytes instead of {KEY_SIZE}.")
    return value


# --- the session -------------------------------------------------------------------


class RatchetSession:
    """One side of a Double Ratchet session with header encryption.

    Build it with :meth:`initiator` (the side that sends first) or
    :meth:`responder`, or restore it with :meth:`from_bytes`. The associated
    data (from X3DH) is bound into every message.

    :meth:`decrypt` is transactional: when it raises, the session is exactly
    as before, so a damaged, forged or replayed message cannot disturb it.
    """

    __slots__ = ("_ad", "_state")

    def __init__(self, state: _State, associated_data: bytes) -> None:
        self._state = state
        self._ad = associated_data

    @classmethod
    def initiator(
        cls, shared_secret: bytes, their_ratchet_public: bytes, associated_data: bytes
    ) -> RatchetSession:
        """``RatchetInitAlice``: the side that sends the first message.

        ``their_ratchet_public`` is the responder's first ratchet key (in
        chatcli, the invite's one-time prekey).
        """
        sk = _check_key(shared_secret, "shared secret")
        their = _check_key(their_ratchet_public, "ratchet public key")
        dhs = _generate_ratchet_key()
        rk, cks, nhks = kdf_rk_he(sk, dhs.dh(their))
        state = _State(
            dhs=dhs,
            dhr=their,
            rk=rk,
            cks=cks,
            ckr=None,
            ns=0,
            nr=0,
            pn=0,
            hks=derive(sk, HEADER_KEY_A_PURPOSE),
            hkr=None,
            nhks=nhks,
            nhkr=derive(sk, NEXT_HEADER_KEY_B_PURPOSE),
            hkr_no=0,
            mkskipped={},
            old_chains=[],
        )
        return cls(state, bytes(associated_data))

    @classmethod
    def responder(
        cls, shared_secret: bytes, own_ratchet: DHKeyPair, associated_data: bytes
    ) -> RatchetSession:
        """``RatchetInitBob``: the side whose ratchet key the initiator knows.

        It can decrypt at once and send after the first message arrived.
        """
        sk = _check_key(shared_secret, "shared secret")
        if not isinstance(own_ratchet, DHKeyPair):
            raise TypeError("own_ratchet must be a DHKeyPair")
        state = _State(
            dhs=own_ratchet,
            dhr=None,
            rk=sk,
            cks=None,
            ckr=None,
            ns=0,
            nr=0,
            pn=0,
            hks=None,
            hkr=None,
            nhks=derive(sk, NEXT_HEADER_KEY_B_PURPOSE),
            nhkr=derive(sk, HEADER_KEY_A_PURPOSE),
            hkr_no=0,
            mkskipped={},
            old_chains=[],
        )
        return cls(state, bytes(associated_data))

    @property
    def can_send(self) -> bool:
        """Whether :meth:`encrypt` works (a responder waits for a first message)."""
        return self._state.cks is not None

    @property
    def skipped_keys(self) -> int:
        """How many skipped message keys are stored (lost or late messages)."""
        return len(self._state.mkskipped)

    def encrypt(self, plaintext: bytes) -> bytes:
        """``RatchetEncryptHE``: the message (encrypted header, then body).

        **Store the session (``to_bytes``) after encrypting and before sending:
        encrypting again from an older saved state would reuse a message key.**
        """
        s = self._state
        if s.cks is None or s.hks is None:
            raise SessionNotReady()
        if s.ns >= _MAX_COUNTER:
            raise SessionNotReady("This session has sent too many messages; start a new one.")
        s.cks, mk = kdf_ck(s.cks)
        enc_header = _hencrypt(s.hks, _HEADER.pack(s.dhs.public, s.pn, s.ns))
        s.ns += 1
        return enc_header + encrypt_body(mk, bytes(plaintext), self._ad + enc_header)

    def decrypt(self, message: bytes) -> bytes:
        """``RatchetDecryptHE``: the plaintext of ``message``.

        Raises :class:`DecryptionFailed` (damaged, forged, or not for this
        session), :class:`ReplayedMessage` (its key was already used or
        discarded), :class:`TooManySkipped` (more than :data:`MAX_SKIP` lost
        messages in a row) or :class:`CorruptData` (not a ratchet message).
        On any error the session is unchanged.
        """
        if not isinstance(message, bytes):
            raise TypeError("message must be bytes")
        if len(message) < MESSAGE_OVERHEAD:
            raise CorruptData("The message is too short to be a session message.")
        if message[0] != VERSION:
            raise CorruptData("The message uses an unknown format version.")
        enc_header = message[:ENC_HEADER_SIZE]
        body = message[ENC_HEADER_SIZE:]
        s = self._state.copy()
        chain, header = self._decrypt_header(s, enc_header)
        dh, pn, n = _HEADER.unpack(header)
        mk = s.mkskipped.pop((chain, n), None)
        if mk is None:
            if chain == _NEXT_CHAIN:
                _skip_message_keys(s, pn)
                _dh_ratchet(s, dh)
            elif chain != s.hkr_no or n < s.nr:
                raise ReplayedMessage()
            _skip_message_keys(s, n)
            assert s.ckr is not None  # set by the DH ratchet step
            s.ckr, mk = kdf_ck(s.ckr)
            s.nr += 1
        plaintext = decrypt_body(mk, body, self._ad + enc_header)
        self._state = s
        return plaintext

    @staticmethod
    def _decrypt_header(s: _State, enc_header: bytes) -> tuple[int, bytes]:
        """``DecryptHeader`` over every header key the session knows.

        Returns the number of the receiving chain whose header key opened it,
        or ``_NEXT_CHAIN`` for NHKr.
        """
        candidates: list[tuple[int, bytes]] = []
        if s.hkr is not None:
            candidates.append((s.hkr_no, s.hkr))
        candidates.append((_NEXT_CHAIN, s.nhkr))
        candidates.extend(reversed(s.old_chains))
        for chain, hk in candidates:
            header = _hdecrypt(hk, enc_header)
            if header is not None and len(header) == HEADER_SIZE:
                return chain, header
        raise DecryptionFailed()

    # --- serialisation ---------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The whole session state, versioned MessagePack. **Contains secrets.**"""
        s = self._state
        return _ENCODER.encode(
            _StateV1(
                version=VERSION,
                ad=self._ad,
                dhs=s.dhs.private_bytes(),
                dhr=s.dhr,
                rk=s.rk,
                cks=s.cks,
                ckr=s.ckr,
                ns=s.ns,
                nr=s.nr,
                pn=s.pn,
                hks=s.hks,
                hkr=s.hkr,
                nhks=s.nhks,
                nhkr=s.nhkr,
                hkr_no=s.hkr_no,
                skipped=[(chain, n, mk) for (chain, n), mk in s.mkskipped.items()],
                old_chains=list(s.old_chains),
            )
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> RatchetSession:
        """Restore a session from :meth:`to_bytes`; raises :class:`CorruptData`."""
        try:
            raw = msgspec.msgpack.decode(data)
        except (msgspec.DecodeError, TypeError, ValueError):  # bad UTF-8 raises UnicodeDecodeError
            raise CorruptData("The saved session is damaged.") from None
        if not isinstance(raw, list) or not raw or raw[0] != VERSION:
            raise CorruptData("The saved session is damaged or from an unknown version.")
        try:
            st = msgspec.convert(raw, _StateV1)
        except msgspec.ValidationError:
            raise CorruptData("The saved session is damaged.") from None
        keys = [st.dhs, st.rk, st.nhks, st.nhkr, *(mk for _, _, mk in st.skipped)]
        optional = [st.dhr, st.cks, st.ckr, st.hks, st.hkr]
        keys += [k for k in optional if k is not None] + [hk for _, hk in st.old_chains]
        if any(len(k) != KEY_SIZE for k in keys):
            raise CorruptData("The saved session is damaged.")
        state = _State(
            dhs=DHKeyPair.from_private_bytes(st.dhs),
            dhr=st.dhr,
            rk=st.rk,
            cks=st.cks,
            ckr=st.ckr,
            ns=st.ns,
            nr=st.nr,
            pn=st.pn,
            hks=st.hks,
            hkr=st.hkr,
            nhks=st.nhks,
            nhkr=st.nhkr,
            hkr_no=st.hkr_no,
            mkskipped={(chain, n): mk for chain, n, mk in st.skipped},
            old_chains=[(chain, hk) for chain, hk in st.old_chains],
        )
        return cls(state, st.ad)

    def __repr__(self) -> str:
        return f"RatchetSession(can_send={self.can_send}, skipped_keys={self.skipped_keys})"


_U32 = Annotated[int, msgspec.Meta(ge=0, le=_MAX_COUNTER)]


class _StateV1(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    """Serialised session, version 1 (a MessagePack array, fields in this order)."""

    version: int
    ad: bytes
    dhs: bytes
    dhr: bytes | None
    rk: bytes
    cks: bytes | None
    ckr: bytes | None
    ns: _U32
    nr: _U32
    pn: _U32
    hks: bytes | None
    hkr: bytes | None
    nhks: bytes
    nhkr: bytes
    hkr_no: _U32
    skipped: list[tuple[_U32, _U32, bytes]]
    old_chains: list[tuple[_U32, bytes]]


_ENCODER = msgspec.msgpack.Encoder()

__all__ = [
    "ENC_HEADER_SIZE",
    "MAX_OLD_CHAINS",
    "MAX_SKIP",
    "MAX_SKIPPED_TOTAL",
    "MESSAGE_OVERHEAD",
    "VERSION",
    "RatchetSession",
]
