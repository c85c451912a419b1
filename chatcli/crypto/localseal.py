"""Sealing of values in the client's local database (message history, sessions).

``LocalSealer(key)`` derives one subkey per ``context`` (e.g. the table and
column name) with HKDF-SHA256, ``info = b"chatcli/localseal/v1\\x00" ||
context``, so a value sealed for one column does not open in another. Layout,
version 1::

    version   1   0x01
    nonce    24   random
    box           XSalsa20-Poly1305 (SecretBox) of the value

The 32-byte key lives in the keystore, so the database alone reveals only the
sizes of values and the structure of the tables.
"""

from __future__ import annotations

import nacl.bindings as sodium
import nacl.exceptions

from chatcli.crypto.errors import CorruptData, InvalidKey
from chatcli.crypto.kdf import hkdf_sha256

LOCALSEAL_VERSION = 1
_INFO = b"chatcli/localseal/v1\x00"
_NONCE = sodium.crypto_secretbox_NONCEBYTES
_MAC = sodium.crypto_secretbox_MACBYTES
SUBKEY_CACHE = 4096
"""Subkeys kept: contexts bound to a row (one per message) would otherwise
grow the cache with the history (the search index opens every text)."""


def generate_local_key() -> bytes:
    """A fresh random 32-byte key for :class:`LocalSealer`."""
    return sodium.randombytes(sodium.crypto_secretbox_KEYBYTES)


class LocalSealer:
    """Authenticated encryption of local database values, bound to a context."""

    __slots__ = ("_key", "_subkeys")

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) != sodium.crypto_secretbox_KEYBYTES:
            raise InvalidKey("The local storage key has the wrong length.")
        self._key = key
        self._subkeys: dict[bytes, bytes] = {}

    def _subkey(self, context: bytes) -> bytes:
        subkey = self._subkeys.get(context)
        if subkey is None:
            subkey = hkdf_sha256(self._key, salt=b"", info=_INFO + context, length=32)
            if len(self._subkeys) >= SUBKEY_CACHE:
                self._subkeys.clear()
            self._subkeys[context] = subkey
        return subkey

    def seal(self, data: bytes, *, context: bytes) -> bytes:
        """Encrypt ``data`` for ``context`` with a random nonce."""
        nonce = sodium.randombytes(_NONCE)
        box = sodium.crypto_secretbox(data, nonce, self._subkey(context))
        return bytes([LOCALSEAL_VERSION]) + nonce + box

    def open(self, data: bytes, *, context: bytes) -> bytes:
        """Decrypt a value sealed for ``context``; raises :class:`CorruptData` otherwise."""
        if len(data) < 1 + _NONCE + _MAC or data[0] != LOCALSEAL_VERSION:
            raise CorruptData("A value in the local database is damaged.")
        try:
            return sodium.crypto_secretbox_open(
                data[1 + _NONCE :], data[1 : 1 + _NONCE], self._subkey(context)
            )
        except nacl.exceptions.CryptoError:
            raise CorruptData(
                "A value in the local database is damaged or was sealed with another key."
            ) from None

    def __repr__(self) -> str:
        return "LocalSealer(...)"


__all__ = ["LocalSealer", "generate_local_key"]
