"""Two-way pairwise sessions between group members (``docs/protocol.md``, part 3,
"Group pairwise sessions").

Members who are not contacts reach each other from member records. Following
X3DH and the Double Ratchet (Signal specifications), one member (the
initiator) runs X3DH against the other's signed prekey and sends; the other
answers in the SAME ratchet session, so DH ratchet steps happen in both
directions and, once the signed prekey is rotated and its private key deleted
(:mod:`chatcli.client.prekeys`), nothing kept can open the earlier messages.

Every :class:`~chatcli.client.groups.wire.Direct` names its session by the X3DH
that started it: the responder's signed prekey and the initiator's ephemeral
key, in both directions. A name this member does not know is a handshake.

* Simultaneous initiation (both started a session before seeing the other's):
  each side answers the other's handshake and reads its message; the session
  started by the smaller identity key (bytewise) stays active on both sides;
  the other one is kept inactive so that its messages in flight are read.
* A handshake naming a signed prekey whose private key is gone (the member
  record it came from is older than the grace period) cannot be answered: this
  side starts its own session to the peer, marked as replacing the refused one
  (``refused``), and the peer, seeing that, makes it its active session and
  sends again what the refused one carried (its sender keys).
* A new handshake while the active session is confirmed means the peer lost its
  state: the new session becomes the active one.
* A member record (or a contact's address) naming a signed prekey never seen
  for that member means it may have lost its sessions (restored from a
  backup, added again): the next message starts a new session. Prekeys seen
  before do not, so records of different ages (a contact's newest address, an
  older group record) never make sessions restart in turn.

Runs inside the caller's write transaction, with the group tables bound.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from chatcli.client import messages as m
from chatcli.client import models as db
from chatcli.client import prekeys, sessions
from chatcli.client.groups import models as gdb
from chatcli.client.groups import wire
from chatcli.client.store import Sealer, Store
from chatcli.crypto.keys import IdentityKeyPair, IdentityPublicKey
from chatcli.crypto.ratchet import RatchetSession

PEER_HANDSHAKE_LABEL = b"chatcli/group-peer-handshake/v1"
KEPT_INACTIVE = 4  # inactive sessions kept per peer (messages still in flight)
PREKEYS_REMEMBERED = 16  # signed prekeys remembered per member (see GroupPeer)


@dataclass(frozen=True)
class Opened:
    """What :meth:`PairwiseSessions.open` made of a direct message.

    ``plaintext`` None: nothing to read (``replayed``: a handshake seen before;
    ``refused``: a handshake naming a signed prekey this device no longer has).
    ``resend``: what this side sent to the peer must be sent again, in the
    session now active (the peer could not open the one this side started; or,
    with ``refused``, a new session of this side is to replace the peer's)."""

    plaintext: bytes | None
    replayed: bool = False
    refused: bool = False
    resend: bool = False


def _handshake_digest(ephemeral: bytes) -> bytes:
    return hashlib.sha256(PEER_HANDSHAKE_LABEL + ephemeral).digest()


class PairwiseSessions:
    """The pairwise sessions of one identity with the other members."""

    def __init__(self, store: Store, identity: IdentityKeyPair) -> None:
        self.store = store
        self.sealer: Sealer = store.sealer
        self.identity = identity
        self.me = identity.public.raw

    # ------------------------------------------------------------------ rows

    def _active(self, peer: bytes) -> gdb.GroupSession | None:
        return gdb.GroupSession.get_or_none(gdb.GroupSession.peer == peer,
                                            gdb.GroupSession.active == True)  # noqa: E712

    def _load(self, row: gdb.GroupSession) -> RatchetSession:
        return RatchetSession.from_bytes(self.sealer.open(
            row.state_sealed, "group.session", gdb.session_row(row.peer, row.ephemeral)))

    def _store(self, row: gdb.GroupSession, session: RatchetSession) -> None:
        row.state_sealed = self.sealer.seal(session.to_bytes(), "group.session",
                                            gdb.session_row(row.peer, row.ephemeral))

    def _deactivate(self, peer: bytes) -> None:
        gdb.GroupSession.update(active=False).where(gdb.GroupSession.peer == peer).execute()

    def _prune(self, peer: bytes) -> None:
        """Keep the active session and the KEPT_INACTIVE newest inactive ones."""
        old = (gdb.GroupSession.select(gdb.GroupSession.id)
               .where(gdb.GroupSession.peer == peer,
                      gdb.GroupSession.active == False)  # noqa: E712
               .order_by(gdb.GroupSession.id.desc()).offset(KEPT_INACTIVE))
        gdb.GroupSession.delete().where(gdb.GroupSession.id.in_(old)).execute()

    def active_session_id(self, peer: bytes) -> bytes | None:
        """The ephemeral key naming the active session with ``peer`` (for tests)."""
        row = self._active(peer)
        return None if row is None else bytes(row.ephemeral)

    # ------------------------------------------------------------------ sending

    def _new_prekey(self, record: wire.MemberRecord, peer: gdb.GroupPeer | None) -> bool:
        """Note ``record``'s signed prekey; True when this member had others
        before but never this one (a new record: it may have lost its sessions)."""
        if peer is None:
            return False
        seen = bytes(peer.prekeys_seen or b"")
        known = {seen[i:i + 32] for i in range(0, len(seen), 32)}
        if record.restore_prekey in known:
            return False
        peer.prekeys_seen = (seen + record.restore_prekey)[-32 * PREKEYS_REMEMBERED:]
        peer.save()
        return bool(known)

    def seal(self, record: wire.MemberRecord, plaintext: bytes, *, now: int,
             peer: gdb.GroupPeer | None = None) -> wire.Direct:
        """``plaintext`` in the active session with ``record``'s member, starting
        one (X3DH to its signed prekey) when there is none, or when the record
        names a signed prekey never seen for that member. ``peer``: its
        GroupPeer row when the caller has it (one query less per message)."""
        if peer is None:
            peer = gdb.GroupPeer.get_or_none(gdb.GroupPeer.identity == record.identity)
        row = self._active(record.identity)
        if self._new_prekey(record, peer) and row is not None:
            self._deactivate(record.identity)
            row = None
        if row is None:
            refusal = None if peer is None or peer.refused is None else bytes(peer.refused)
            if peer is not None and refusal is not None:
                peer.refused = None
                peer.save()
            their = IdentityPublicKey.from_bytes(record.identity)
            sessions.verify_restore_prekey(their, record.restore_prekey,
                                           record.restore_prekey_signature)
            session, body = sessions.start_restore(self.identity, their,
                                                   record.restore_prekey, plaintext)
            row = gdb.GroupSession(
                peer=record.identity, ephemeral=body.ephemeral, prekey=record.restore_prekey,
                initiator=True, confirmed=False, active=True,
                refused=refusal, created_at=now)
            message = body.message
        else:
            session = self._load(row)
            message = session.encrypt(plaintext)
        self._store(row, session)
        row.save()
        assert row.prekey is not None
        # The refusal travels until the peer answers in this session.
        refused = None if row.confirmed else row.refused
        return wire.Direct(identity=self.me, restore_prekey=row.prekey,
                           ephemeral=row.ephemeral, message=message, refused=refused)

    # ------------------------------------------------------------------ receiving

    def open(self, sender: IdentityPublicKey, layer: wire.Direct, *, now: int) -> Opened:
        """Read a direct message from ``sender``; raises ``CryptoError`` when it
        does not decrypt (the session state is then unchanged)."""
        if layer.identity != sender.raw:
            raise wire.InvalidGroupMessage("A group message names a sender different from "
                                           "its envelope.")
        row = gdb.GroupSession.get_or_none(gdb.GroupSession.peer == sender.raw,
                                           gdb.GroupSession.ephemeral == layer.ephemeral)
        if row is not None:
            session = self._load(row)
            plaintext = session.decrypt(layer.message)
            self._store(row, session)
            row.confirmed = True
            row.save()
            return Opened(plaintext)
        return self._answer(sender, layer, now)

    def _answer(self, sender: IdentityPublicKey, layer: wire.Direct, now: int) -> Opened:
        """A handshake: X3DH respond with the signed prekey it names."""
        digest = _handshake_digest(layer.ephemeral)
        if db.SeenHandshake.get_or_none(db.SeenHandshake.digest == digest) is not None:
            return Opened(None, replayed=True)
        prekey = prekeys.private_for(self.store, layer.restore_prekey)
        if prekey is None:
            # Its private key is deleted (forward secrecy): this handshake can never
            # be opened. Start a session of our own that says so, unless the peer
            # has written in our active one (nothing here is authenticated: a
            # forged handshake must not replace a working session).
            db.SeenHandshake.create(digest=digest, seen_at=now)
            active = self._active(sender.raw)
            if active is not None and active.confirmed:
                return Opened(None, refused=True)
            self._deactivate(sender.raw)
            peer = gdb.GroupPeer.get_or_none(gdb.GroupPeer.identity == sender.raw)
            if peer is None:
                peer = gdb.GroupPeer.create(identity=sender.raw, name="")
            peer.refused = layer.ephemeral
            peer.save()
            return Opened(None, refused=True, resend=True)
        body = m.PrekeyBody(v=m.BODY_VERSION, invite_id=None,
                            restore_prekey=layer.restore_prekey, identity=layer.identity,
                            ephemeral=layer.ephemeral, message=layer.message)
        session, plaintext = sessions.answer_prekey(self.identity, prekey, sender, body)
        db.SeenHandshake.create(digest=digest, seen_at=now)
        active = self._active(sender.raw)
        replaced = None if layer.refused is None else gdb.GroupSession.get_or_none(
            gdb.GroupSession.peer == sender.raw, gdb.GroupSession.ephemeral == layer.refused,
            gdb.GroupSession.initiator == True)  # noqa: E712
        resend = False
        if replaced is not None:
            # The peer could not open a session we started (our copy of its signed
            # prekey was too old): use its session, and send again what ours carried.
            adopt = resend = True
            replaced.delete_instance()
        elif active is None:
            adopt = True
        elif active.initiator and not active.confirmed:
            # Both started at once: the session of the smaller identity key wins,
            # on both sides alike.
            adopt = sender.raw < self.me
        else:
            adopt = True  # the peer started afresh (it lost its session state)
        if adopt:
            self._deactivate(sender.raw)
        row = gdb.GroupSession(
            peer=sender.raw, ephemeral=layer.ephemeral, prekey=layer.restore_prekey,
            initiator=False, confirmed=True, active=adopt, created_at=now)
        self._store(row, session)
        row.save()
        self._prune(sender.raw)
        return Opened(plaintext, resend=resend)


__all__ = [
    "KEPT_INACTIVE", "PEER_HANDSHAKE_LABEL", "PREKEYS_REMEMBERED", "Opened", "PairwiseSessions",
]
