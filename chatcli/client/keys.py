"""The secrets in the keystore file, and reading/writing them.

The keystore (``chatcli.crypto.keystore``: Argon2id + XChaCha20-Poly1305,
mode 0600) holds a msgspec-encoded :class:`KeystoreSecrets`: the identity
key, the mailbox key and the local storage key that seals the database's
sensitive columns.

``CHATCLI_INSECURE_FAST_KDF=1`` is **for tests only**: keystores and backups
*created* while it is set use libsodium's minimum Argon2id costs. The costs
are stored in each file, so unlocking always follows the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import msgspec

from chatcli.errors import StorageError

ENV_FAST_KDF = "CHATCLI_INSECURE_FAST_KDF"
Key32 = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]


class KeystoreSecrets(msgspec.Struct, array_like=True, frozen=True, tag="keystore-v1"):
    identity: Key32
    mailbox: Key32
    local_key: Key32


def kdf_limits() -> object:
    """The Argon2id costs for new keystores and backups (MODERATE unless the
    test-only environment variable asks for the minimum)."""
    from chatcli.crypto import keystore

    if os.environ.get(ENV_FAST_KDF) == "1":
        import nacl.pwhash.argon2id as argon2id

        return keystore.Argon2Limits(argon2id.OPSLIMIT_MIN, argon2id.MEMLIMIT_MIN)
    return keystore.MODERATE


def encode_secrets(identity_seed: bytes, mailbox_seed: bytes, local_key: bytes) -> bytes:
    return msgspec.msgpack.encode(KeystoreSecrets(identity_seed, mailbox_seed, local_key))


def write_keys(path: Path, secrets: bytes, passphrase: str) -> None:
    from chatcli.crypto import keystore

    keystore.write_keystore(path, secrets, passphrase, limits=kdf_limits())  # type: ignore[arg-type]


def read_secrets(path: Path, passphrase: str) -> KeystoreSecrets:
    """Unlock the keystore; raises ``WrongPassphrase`` / ``CorruptData``."""
    from chatcli.crypto import keystore
    from chatcli.crypto.errors import CorruptData

    try:
        raw = keystore.read_keystore(path, passphrase)
    except FileNotFoundError:
        raise StorageError(f"The keystore {path} is missing.") from None
    try:
        return msgspec.msgpack.decode(raw, type=KeystoreSecrets)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise CorruptData("The keystore's content is not understood by this chatcli.") from None
