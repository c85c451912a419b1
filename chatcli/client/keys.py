"""The secrets in the keystore file, and reading/writing them.

The keystore (``chatcli.crypto.keystore``: Argon2id + XChaCha20-Poly1305,
mode 0600) holds a msgspec-encoded :class:`KeystoreSecrets`: the identity
key, the mailbox key and the local storage key that seals the database's
sensitive columns.

``CHATCLI_INSECURE_FAST_KDF=1`` is **for tests only**: keystores and backups
*created* while it is set use libsodium's minimum Argon2id costs. It takes
effect only when chatcli runs from a source checkout that holds the test
suite (``tests/conftest.py`` beside the ``chatcli`` package): an installed
chatcli ignores it, so no environment can weaken a user's keystore. The costs
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


def fast_kdf_allowed() -> bool:
    """Whether the test-only minimum costs may be used: only in a source
    checkout with the test suite, never in an installed chatcli."""
    checkout = Path(__file__).resolve().parent.parent.parent
    return (checkout / "tests" / "conftest.py").is_file() and (
        checkout / "pyproject.toml"
    ).is_file()


def kdf_limits(*, backup: bool = False) -> object:
    """The Argon2id costs for new keystores (MODERATE) and backups (SENSITIVE:
    a backup file travels and may be attacked offline for years), unless the
    test-only environment variable asks for the minimum in a test checkout."""
    from chatcli.crypto import keystore

    if os.environ.get(ENV_FAST_KDF) == "1" and fast_kdf_allowed():
        import nacl.pwhash.argon2id as argon2id

        return keystore.Argon2Limits(argon2id.OPSLIMIT_MIN, argon2id.MEMLIMIT_MIN)
    return keystore.SENSITIVE if backup else keystore.MODERATE


def encode_secrets(identity_seed: bytes, mailbox_seed: bytes, local_key: bytes) -> bytes:
    return msgspec.msgpack.encode(KeystoreSecrets(identity_seed, mailbox_seed, local_key))


def write_keys(path: Path, secrets: bytes, passphrase: str) -> None:
    from chatcli.crypto import keystore

    keystore.write_keystore(path, secrets, passphrase, limits=kdf_limits())  # type: ignore[arg-type]


def _read_blob(path: Path) -> bytes:
    from chatcli.crypto import keystore

    try:
        return keystore.read_keystore_blob(path)
    except FileNotFoundError:
        raise StorageError(f"The keystore {path} is missing.") from None


def _decode(raw: bytes) -> KeystoreSecrets:
    from chatcli.crypto.errors import CorruptData

    try:
        return msgspec.msgpack.decode(raw, type=KeystoreSecrets)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise CorruptData("The keystore's content is not understood by this chatcli.") from None


def read_secrets(path: Path, passphrase: str) -> KeystoreSecrets:
    """Unlock the keystore; raises ``WrongPassphrase`` / ``CorruptData``."""
    from chatcli.crypto import keystore

    return _decode(keystore.open_with_passphrase(_read_blob(path), passphrase,
                                                 magic=keystore.KEYSTORE_MAGIC))


def unlock_key(path: Path, passphrase: str) -> tuple[KeystoreSecrets, bytes]:
    """Unlock the keystore and also return its key-encryption key (the
    Argon2id output that ``chatcli agent`` holds); same errors as
    :func:`read_secrets`."""
    from chatcli.crypto import keystore
    from chatcli.crypto.errors import WrongKey, WrongPassphrase

    blob = _read_blob(path)
    key = keystore.derive_keystore_key(blob, passphrase)
    try:
        raw = keystore.open_with_key(blob, key)
    except WrongKey:
        raise WrongPassphrase(
            "The passphrase is wrong (or the file was deliberately modified).") from None
    return _decode(raw), key


def read_secrets_with_key(path: Path, key: bytes) -> KeystoreSecrets:
    """Open the keystore with a key-encryption key (no Argon2id); raises
    ``WrongKey`` when the key no longer opens it (re-encrypted or replaced)."""
    from chatcli.crypto import keystore

    return _decode(keystore.open_with_key(_read_blob(path), key))
