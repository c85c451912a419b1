"""Session set-up glue between X3DH, the Double Ratchet and the client messages.

Pure functions over keys and bytes: no database, no network, no clock. The
service stores what they return.

* :func:`start_from_invite`: the accepter of an invite runs X3DH against the
  invite's one-time prekey and becomes the ratchet initiator, the prekey
  serving as the inviter's first ratchet key.
* :func:`start_restore`: a client restored from a backup (it has no sessions)
  runs X3DH against a contact's signed *restore prekey* instead.
* :func:`answer_prekey`: the receiving side of either: X3DH respond, ratchet
  responder, and the first plaintext.
"""

from __future__ import annotations

import hashlib

from chatcli.client.messages import BODY_VERSION, PrekeyBody
from chatcli.crypto import x3dh
from chatcli.crypto.errors import BadSignature
from chatcli.crypto.keys import DHKeyPair, IdentityKeyPair, IdentityPublicKey
from chatcli.crypto.ratchet import RatchetSession
from chatcli.errors import CryptoError

RESTORE_PREKEY_LABEL = b"chatcli/restore-prekey/v1"


class HandshakeRefused(CryptoError):
    """A prekey message is not acceptable (wrong key, bad signature, replay)."""


def sign_restore_prekey(own: IdentityKeyPair, public: bytes) -> bytes:
    """The identity's signature over its restore prekey's public key."""
    return own.sign(RESTORE_PREKEY_LABEL + public)


def verify_restore_prekey(identity: IdentityPublicKey, public: bytes, signature: bytes) -> None:
    """Raise :class:`HandshakeRefused` unless ``signature`` is ``identity``'s over ``public``."""
    try:
        identity.verify(RESTORE_PREKEY_LABEL + public, signature)
    except BadSignature:
        raise HandshakeRefused(
            "A contact's restore prekey is not signed by its identity.") from None


def handshake_digest(body: PrekeyBody) -> bytes:
    """What identifies a handshake for replay refusal: its ephemeral key."""
    return hashlib.sha256(b"chatcli/handshake/v1" + body.ephemeral).digest()


def start_from_invite(
    own: IdentityKeyPair, their_identity: IdentityPublicKey, invite_id: bytes, prekey: bytes,
    first_plaintext: bytes,
) -> tuple[RatchetSession, PrekeyBody]:
    """The accepter's session and its prekey message carrying ``first_plaintext``."""
    result = x3dh.initiate(own, their_identity, prekey)
    session = RatchetSession.initiator(result.shared_secret, prekey, result.associated_data)
    body = PrekeyBody(
        v=BODY_VERSION, invite_id=invite_id, restore_prekey=None, identity=own.public.raw,
        ephemeral=result.ephemeral_public, message=session.encrypt(first_plaintext),
    )
    return session, body


def start_restore(
    own: IdentityKeyPair, their_identity: IdentityPublicKey, their_restore_prekey: bytes,
    first_plaintext: bytes,
) -> tuple[RatchetSession, PrekeyBody]:
    """A new session with a contact from its signed restore prekey."""
    result = x3dh.initiate(own, their_identity, their_restore_prekey)
    session = RatchetSession.initiator(
        result.shared_secret, their_restore_prekey, result.associated_data)
    body = PrekeyBody(
        v=BODY_VERSION, invite_id=None, restore_prekey=their_restore_prekey,
        identity=own.public.raw, ephemeral=result.ephemeral_public,
        message=session.encrypt(first_plaintext),
    )
    return session, body


def answer_prekey(
    own: IdentityKeyPair, prekey: DHKeyPair, their_identity: IdentityPublicKey, body: PrekeyBody,
) -> tuple[RatchetSession, bytes]:
    """The responder's session and the first plaintext of a prekey message.

    Raises :class:`~chatcli.crypto.errors.DecryptionFailed` when the message was
    not made for this prekey and identity."""
    if body.identity != their_identity.raw:
        raise HandshakeRefused("A handshake names a sender different from its envelope.")
    result = x3dh.respond(own, prekey, their_identity, body.ephemeral)
    session = RatchetSession.responder(result.shared_secret, prekey, result.associated_data)
    plaintext = session.decrypt(body.message)
    return session, plaintext
