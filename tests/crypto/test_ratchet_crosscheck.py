"""Cross-check of chatcli's Double Ratchet against python-doubleratchet (PyPI DoubleRatchet).

python-doubleratchet (Syndace) is an independent implementation of the same
Signal specification. It has no header encryption, and its fixed AEAD
(AES-256-CBC + HMAC) and header format differ from chatcli's, so the two
cannot exchange wire messages. What *is* common is the whole key schedule
of the specification, and this is what these tests compare:

* ``KDF_RK``: its root chain (HKDF-SHA256, root key as salt, DH output as
  input, our info label) derives 64 bytes, ``RK || CK``; ours derives 96,
  ``RK || CK || NHK``. By HKDF-Expand's construction the first 64 bytes must
  be identical, so its root and chain keys must equal ours.
* ``KDF_CK``: its chain KDF of separate HMACs with the constant ``02 01``
  yields ``HMAC(ck, 02)`` as the next chain key and ``HMAC(ck, 01)`` as the
  message key, which is our ``KDF_CK``.
* The DH ratchet: both implementations are run side by side over the same
  conversation (both directions, several DH ratchet steps, out-of-order
  delivery, a lost message), fed the *same* freshly generated ratchet key
  pairs in the same order (its ``_generate_priv`` takes the key our
  ``GENERATE_DH`` just made, and the test asserts that each implementation
  asks for a new key at exactly the same step). For every message sent and
  every message received, both derive the same message key, and the header
  fields (ratchet key, PN, N) agree. Finally each message key derived by
  python-doubleratchet opens the body of chatcli's real wire message
  (header-encrypted, random header nonce), with chatcli's ``DECRYPT``.

The header keys (the third output of ``KDF_RK_HE``, and the two shared header
keys) have no counterpart there; they come from the same HKDF that
``test_kdf.py`` checks against RFC 5869.
"""

from __future__ import annotations

import asyncio
import collections
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from doubleratchet import DoubleRatchet as _PkgDoubleRatchet
from doubleratchet.aead import AEAD as _PkgAEAD
from doubleratchet.kdf_chain import KDFChain
from doubleratchet.recommended import HashFunction, kdf_hkdf, kdf_separate_hmacs
from doubleratchet.recommended.diffie_hellman_ratchet_curve25519 import (
    DiffieHellmanRatchet as _PkgCurve25519Ratchet,
)
from doubleratchet.types import EncryptedMessage, Header
from hypothesis import given, settings
from hypothesis import strategies as st

from chatcli.crypto import ratchet
from chatcli.crypto.keys import DHKeyPair
from chatcli.crypto.ratchet import ENC_HEADER_SIZE, RatchetSession

AD = bytes(range(64))
# chatcli's ENCRYPT and DECRYPT, taken before any test wraps them.
ENCRYPT, DECRYPT = ratchet.encrypt_body, ratchet.decrypt_body

# --- python-doubleratchet configured with chatcli's primitives ---------------------


class RootKDF(kdf_hkdf.KDF):
    @staticmethod
    def _get_hash_function() -> HashFunction:
        return HashFunction.SHA_256

    @staticmethod
    def _get_info() -> bytes:
        return ratchet.ROOT_LABEL


class ChainKDF(kdf_separate_hmacs.KDF):
    @staticmethod
    def _get_hash_function() -> HashFunction:
        return HashFunction.SHA_256


CHAIN_CONSTANT = b"\x02\x01"  # first output: next chain key, second: message key

# Keys made by chatcli's GENERATE_DH, waiting to be taken by the package.
_FRESH_KEYS: collections.deque[bytes] = collections.deque()
# Message keys the package used, in order.
_PKG_KEYS: list[bytes] = []


class SharedKeysRatchet(_PkgCurve25519Ratchet):
    """The package's X25519 DH ratchet, drawing the ratchet keys chatcli drew."""

    @staticmethod
    def _generate_priv() -> bytes:
        assert _FRESH_KEYS, "python-doubleratchet made a ratchet key where chatcli did not"
        return _FRESH_KEYS.popleft()


class RecordingAEAD(_PkgAEAD):
    """chatcli's ENCRYPT/DECRYPT, recording the message key the package derived."""

    @staticmethod
    async def encrypt(plaintext: bytes, key: bytes, associated_data: bytes) -> bytes:
        _PKG_KEYS.append(key)
        return ENCRYPT(key, plaintext, associated_data)

    @staticmethod
    async def decrypt(ciphertext: bytes, key: bytes, associated_data: bytes) -> bytes:
        _PKG_KEYS.append(key)
        return DECRYPT(key, ciphertext, associated_data)


class PkgDoubleRatchet(_PkgDoubleRatchet):
    @staticmethod
    def _build_associated_data(associated_data: bytes, header: Header) -> bytes:
        return (
            associated_data
            + header.ratchet_pub
            + header.previous_sending_chain_length.to_bytes(4, "big")
            + header.sending_chain_length.to_bytes(4, "big")
        )


PKG_CONFIG: dict[str, Any] = {
    "diffie_hellman_ratchet_class": SharedKeysRatchet,
    "root_chain_kdf": RootKDF,
    "message_chain_kdf": ChainKDF,
    "message_chain_constant": CHAIN_CONSTANT,
    "dos_protection_threshold": ratchet.MAX_SKIP,
    "max_num_skipped_message_keys": ratchet.MAX_SKIPPED_TOTAL,
    "aead": RecordingAEAD,
}


@contextmanager
def recording_chatcli() -> Iterator[list[bytes]]:
    """Record chatcli's message keys and hand its fresh ratchet keys to the package."""
    used: list[bytes] = []
    saved = ratchet.encrypt_body, ratchet.decrypt_body, ratchet._generate_ratchet_key
    enc, dec, gen = saved

    def encrypt_body(mk: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
        used.append(mk)
        return enc(mk, plaintext, associated_data)

    def decrypt_body(mk: bytes, ciphertext: bytes, associated_data: bytes) -> bytes:
        used.append(mk)
        return dec(mk, ciphertext, associated_data)

    def generate() -> DHKeyPair:
        pair = gen()
        _FRESH_KEYS.append(pair.private_bytes())
        return pair

    ratchet.encrypt_body, ratchet.decrypt_body = encrypt_body, decrypt_body
    ratchet._generate_ratchet_key = generate
    _FRESH_KEYS.clear()
    _PKG_KEYS.clear()
    try:
        yield used
    finally:
        ratchet.encrypt_body, ratchet.decrypt_body, ratchet._generate_ratchet_key = saved
        _FRESH_KEYS.clear()
        _PKG_KEYS.clear()


# --- the KDF chains alone -------------------------------------------------------------


def test_root_kdf_matches_package_root_chain() -> None:
    async def package(rk: bytes, dh_out: bytes) -> tuple[bytes, bytes]:
        chain = KDFChain.create(RootKDF, rk)
        ck = await chain.step(dh_out, 32)
        return chain.model.key, ck

    for _ in range(20):
        rk, dh_out = os.urandom(32), os.urandom(32)
        new_rk, ck, _nhk = ratchet.kdf_rk_he(rk, dh_out)
        assert (new_rk, ck) == asyncio.run(package(rk, dh_out))


def test_chain_kdf_matches_package_message_chain() -> None:
    async def package(ck: bytes, steps: int) -> list[tuple[bytes, bytes]]:
        chain = KDFChain.create(ChainKDF, ck)
        out = []
        for _ in range(steps):
            mk = await chain.step(CHAIN_CONSTANT, 32)
            out.append((chain.model.key, mk))
        return out

    start = os.urandom(32)
    ck = start
    ours = []
    for _ in range(50):
        ck, mk = ratchet.kdf_ck(ck)
        ours.append((ck, mk))
    assert ours == asyncio.run(package(start, 50))


# --- whole conversations side by side ------------------------------------------------


class Lockstep:
    """chatcli's sessions and the package's, driven through one conversation."""

    def __init__(self, used: list[bytes]) -> None:
        self.used = used
        self.sk = os.urandom(32)
        self.bob_prekey = DHKeyPair.generate()
        self.ours: dict[str, RatchetSession] = {}
        self.theirs: dict[str, PkgDoubleRatchet] = {}
        self.sent: list[tuple[str, bytes, bytes, EncryptedMessage]] = []

    def _check_step(self) -> None:
        assert not _FRESH_KEYS, "chatcli made a ratchet key where python-doubleratchet did not"
        assert self.used == _PKG_KEYS, "the two implementations derived different message keys"

    def send(self, side: str) -> int:
        index = len(self.sent)
        plaintext = b"message %d from %s " % (index, side.encode()) + os.urandom(index % 7)
        if side == "A" and "A" not in self.ours:
            self.ours["A"] = RatchetSession.initiator(self.sk, self.bob_prekey.public, AD)
            s = self.ours["A"]._state
            expected = (s.dhs.public, s.pn, s.ns)
            wire = self.ours["A"].encrypt(plaintext)
            theirs, pkg_message = asyncio.run(
                PkgDoubleRatchet.encrypt_initial_message(
                    **PKG_CONFIG,
                    shared_secret=self.sk,
                    recipient_ratchet_pub=self.bob_prekey.public,
                    message=plaintext,
                    associated_data=AD,
                )
            )
            self.theirs["A"] = theirs
        else:
            s = self.ours[side]._state
            expected = (s.dhs.public, s.pn, s.ns)
            wire = self.ours[side].encrypt(plaintext)
            pkg_message = asyncio.run(self.theirs[side].encrypt_message(plaintext, AD))
        assert tuple(pkg_message.header) == expected
        self._check_step()
        self.sent.append((side, plaintext, wire, pkg_message))
        return index

    def deliver(self, index: int) -> None:
        sender, plaintext, wire, pkg_message = self.sent[index]
        side = "B" if sender == "A" else "A"
        if side == "B" and "B" not in self.ours:
            self.ours["B"] = RatchetSession.responder(self.sk, self.bob_prekey, AD)
            assert self.ours["B"].decrypt(wire) == plaintext
            theirs, pkg_plaintext = asyncio.run(
                PkgDoubleRatchet.decrypt_initial_message(
                    **PKG_CONFIG,
                    shared_secret=self.sk,
                    own_ratchet_priv=self.bob_prekey.private_bytes(),
                    message=pkg_message,
                    associated_data=AD,
                )
            )
            self.theirs["B"] = theirs
        else:
            assert self.ours[side].decrypt(wire) == plaintext
            pkg_plaintext = asyncio.run(self.theirs[side].decrypt_message(pkg_message, AD))
        assert pkg_plaintext == plaintext
        self._check_step()
        # The package's message key opens chatcli's header-encrypted wire message.
        body, enc_header = wire[ENC_HEADER_SIZE:], wire[:ENC_HEADER_SIZE]
        assert DECRYPT(_PKG_KEYS[-1], body, AD + enc_header) == plaintext

    def can_send(self, side: str) -> bool:
        return side == "A" or ("B" in self.ours and self.ours["B"].can_send)


def test_conversation_matches_package_key_for_key() -> None:
    with recording_chatcli() as used:
        run = Lockstep(used)
        a0, a1, a2 = run.send("A"), run.send("A"), run.send("A")
        run.deliver(a1)  # out of order: a0 skipped
        b0 = run.send("B")
        run.deliver(a0)  # the skipped key
        b1 = run.send("B")
        run.deliver(b1)  # b0 late
        a3 = run.send("A")
        run.deliver(a3)  # a2 still missing, a new chain: skipped across a DH step
        run.deliver(b0)
        run.deliver(a2)
        for _ in range(3):  # ping-pong: a DH ratchet step per turn
            run.deliver(run.send("B"))
            run.deliver(run.send("A"))
        run.send("A")  # lost for good
        run.deliver(run.send("A"))
        assert len(used) == 2 * len(run.sent) - 1


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=2**16), min_size=10, max_size=60))
def test_random_schedules_match_package(choices: list[int]) -> None:
    """Random interleavings of sends and deliveries (some messages never arrive)."""
    with recording_chatcli() as used:
        run = Lockstep(used)
        in_flight: list[int] = [run.send("A")]
        for choice in choices:
            action = choice % 4
            if action >= 2 and in_flight:
                run.deliver(in_flight.pop((choice // 4) % len(in_flight)))
            else:
                side = "A" if action == 0 else "B"
                if run.can_send(side):
                    in_flight.append(run.send(side))
