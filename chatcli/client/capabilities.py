"""Deposit capabilities: how the relay knows them (their hash), and the one an
invite's accepter switches to."""

from __future__ import annotations

import hashlib


def cap_hash(capability: bytes) -> bytes:
    return hashlib.sha256(capability).digest()


CONTACT_CAP_PURPOSE = "chatcli/invite/contact-capability/v1"


def invite_contact_capability(prekey_private: bytes) -> bytes:
    """The deposit capability an invite's acceptor switches to after the first
    exchange. Derived from the invite's one-time prekey, which only the inviter
    ever holds, so it is registered with the invite and needs no storage of its own."""
    from chatcli.crypto.kdf import derive

    return derive(prekey_private, CONTACT_CAP_PURPOSE)
