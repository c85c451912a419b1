"""Deposit capabilities: how the relay knows them (their hash), and the one an
invite's accepter switches to."""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chatcli.client import models as db


def cap_hash(capability: bytes) -> bytes:
    return hashlib.sha256(capability).digest()


CONTACT_CAP_PURPOSE = "chatcli/invite/contact-capability/v1"


def invite_contact_capability(prekey_private: bytes) -> bytes:
    """The deposit capability an invite's acceptor switches to after the first
    exchange. Derived from the invite's one-time prekey, which only the inviter
    ever holds, so it is registered with the invite and needs no storage of its own."""
    from chatcli.crypto.kdf import derive

    return derive(prekey_private, CONTACT_CAP_PURPOSE)


def retire_issued_capability(contact: db.Contact, replacement: bytes) -> None:
    """Inside a write transaction, when ``contact`` moves to a new identity key
    that gets ``replacement``: the capability issued to the previous key is to
    be revoked on our relay (by ``ChatClient._retire_expired_invites``), so
    that the old key cannot deposit any more."""
    from chatcli.client import models as db
    from chatcli.client.store import now_ms

    old = contact.issued_cap_hash
    if old is not None and not hmac.compare_digest(bytes(old), cap_hash(replacement)):
        db.RetiredCapability.insert(cap_hash=bytes(old), retired_at=now_ms()
                                    ).on_conflict_ignore().execute()
