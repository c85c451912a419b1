"""X3DH key agreement (Signal specification, revision 1), for accepting invites.

Roles: the *inviter* (Signal's Bob) published an identity key ``IK_B`` and a
one-time X25519 prekey ``SPK_B`` in a signed invite; the *accepter* (Alice)
generates an ephemeral key ``EK_A``::

    DH1 = DH(IK_A, SPK_B)    DH2 = DH(EK_A, IK_B)    DH3 = DH(EK_A, SPK_B)
    SK  = HKDF-SHA256(F || DH1 || DH2 || DH3, salt = 32 zero bytes,
                      info = "chatcli/x3dh/v1", 32 bytes),  F = 32 bytes of 0xFF
    AD  = IK_A || IK_B       (the 32-byte Ed25519 identity public keys)

Identity keys take part in DH through the Ed25519 -> X25519 conversion. The
prekey plays the role of the signed prekey (the invite signature covers it)
and is also one-time, so there is no separate DH4. A DH output of all zeros
(a low-order key) is refused with ``InvalidKey``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from chatcli.crypto.kdf import hkdf_sha256
from chatcli.crypto.keys import DHKeyPair, IdentityKeyPair, IdentityPublicKey

X3DH_INFO = b"chatcli/x3dh/v1"
_F = b"\xff" * 32  # Signal: distinguishes the KDF input from an XEdDSA prefix
_SALT = bytes(32)


@dataclass(frozen=True)
class X3DHResult:
    """The outcome of X3DH: the 32-byte shared secret (initialises the ratchet),
    the accepter's ephemeral public key (sent in the first message), and the
    associated data ``IK_A || IK_B`` both sides bind into every message."""

    shared_secret: bytes = field(repr=False)
    ephemeral_public: bytes
    associated_data: bytes


def _kdf(dh1: bytes, dh2: bytes, dh3: bytes) -> bytes:
    return hkdf_sha256(_F + dh1 + dh2 + dh3, salt=_SALT, info=X3DH_INFO, length=32)


def initiate(
    own: IdentityKeyPair,
    their_identity: IdentityPublicKey,
    their_prekey: bytes,
    *,
    ephemeral: DHKeyPair | None = None,
) -> X3DHResult:
    """The accepter's side: agree on a secret with the inviter of an invite.

    ``ephemeral`` is for tests only; by default a fresh key is generated, and
    it must never be reused.
    """
    eph = ephemeral if ephemeral is not None else DHKeyPair.generate()
    dh1 = own.dh_x25519(their_prekey)
    dh2 = eph.dh(their_identity.x25519_public)
    dh3 = eph.dh(their_prekey)
    return X3DHResult(
        shared_secret=_kdf(dh1, dh2, dh3),
        ephemeral_public=eph.public,
        associated_data=own.public.raw + their_identity.raw,
    )


def respond(
    own: IdentityKeyPair,
    own_prekey: DHKeyPair,
    their_identity: IdentityPublicKey,
    their_ephemeral: bytes,
) -> X3DHResult:
    """The inviter's side, on receiving the accepter's first message.

    The caller deletes ``own_prekey`` afterwards (it is one-time).
    """
    dh1 = own_prekey.dh(their_identity.x25519_public)
    dh2 = own.dh_x25519(their_ephemeral)
    dh3 = own_prekey.dh(their_ephemeral)
    return X3DHResult(
        shared_secret=_kdf(dh1, dh2, dh3),
        ephemeral_public=their_ephemeral,
        associated_data=their_identity.raw + own.public.raw,
    )


__all__ = ["X3DH_INFO", "X3DHResult", "initiate", "respond"]
