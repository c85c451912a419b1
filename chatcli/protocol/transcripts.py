"""The exact byte strings that are signed during the handshake.

Each transcript starts with its own purpose label, so that a signature made
for one purpose can never be replayed as another; the fields follow, each
preceded by its length as a 2-byte big-endian integer. All of them bind the
relay's public key, so a signature made for one relay is worthless at
another, and the challenge or nonce, so a signature is worthless on another
connection.

- ``relay_hello``: signed by the relay's key, proves to the client that it
  talks to the holder of the relay key (the one its fingerprint names).
- ``register``: signed by a new mailbox's auth key, proves possession.
- ``auth``: signed by a mailbox's auth key, proves ownership.
"""

from __future__ import annotations

from typing import Final

RELAY_HELLO_LABEL: Final = b"chatcli/relay-hello/v1"
REGISTER_LABEL: Final = b"chatcli/relay-register/v1"
AUTH_LABEL: Final = b"chatcli/relay-auth/v1"

__all__ = ["AUTH_LABEL", "REGISTER_LABEL", "RELAY_HELLO_LABEL", "auth", "register",
           "relay_hello"]


def _require(name: str, value: bytes, length: int) -> bytes:
    if not isinstance(value, bytes) or len(value) != length:
        raise ValueError(f"{name} must be {length} bytes")
    return value


def _transcript(label: bytes, *fields: bytes) -> bytes:
    out = bytearray(label)
    for field in fields:
        out += len(field).to_bytes(2, "big")
        out += field
    return bytes(out)


def relay_hello(relay_key: bytes, client_nonce: bytes, challenge: bytes, version: int) -> bytes:
    """What the relay signs in Welcome: its key, the client's Hello nonce, the
    challenge it hands out, and the chosen protocol version."""
    if not 1 <= version <= 255:
        raise ValueError("version must be between 1 and 255")
    return _transcript(RELAY_HELLO_LABEL, _require("relay_key", relay_key, 32),
                       _require("client_nonce", client_nonce, 32),
                       _require("challenge", challenge, 32), bytes([version]))


def register(relay_key: bytes, challenge: bytes, auth_key: bytes) -> bytes:
    """What a new mailbox's auth key signs in Register."""
    return _transcript(REGISTER_LABEL, _require("relay_key", relay_key, 32),
                       _require("challenge", challenge, 32),
                       _require("auth_key", auth_key, 32))


def auth(relay_key: bytes, challenge: bytes, mailbox: bytes,
         installation: bytes | None = None, supersede: bool = False) -> bytes:
    """What a mailbox's auth key signs in Auth; with an installation id, also
    that id and the supersede flag (so neither can be changed in transit)."""
    fields = [_require("relay_key", relay_key, 32), _require("challenge", challenge, 32),
              _require("mailbox", mailbox, 16)]
    if installation is not None:
        fields += [_require("installation", installation, 16), bytes([int(supersede)])]
    elif supersede:
        raise ValueError("supersede needs an installation")
    return _transcript(AUTH_LABEL, *fields)
