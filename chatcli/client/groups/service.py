"""Group chats: the glue between the membership machine, sender keys, pairwise
sessions, the local store and the relays (``docs/protocol.md``, part 3, "Groups").

:class:`GroupService` wraps an unlocked :class:`~chatcli.client.service.ChatClient`.
Its synchronous methods run inside one ``BEGIN IMMEDIATE`` transaction each
(or inside the client's, for :meth:`GroupService.handle_body`, called from
the receive path); the ``async`` ones need the client to be online.

* The creator (admin) sends an :class:`~wire.Invite` to each invited contact
  over a pairwise session; the contact answers with a :class:`~wire.Join`
  carrying its member record (address, a deposit capability it issued for the
  group, its signed restore prekey); the admin orders it into an ``add``
  operation and sends it to every member.
* Members (contacts or not) reach each other from those records: X3DH against
  the signed prekey, then one two-way Double Ratchet session per pair
  (:mod:`chatcli.client.groups.pairwise`).
* Every member sends its sender-key distribution to every other member over
  those sessions; a group text is encrypted once with the sender key and the
  same ciphertext is sealed to each member's mailbox key, deposited per relay
  in one ``Deposit`` frame.
* Whenever a member is gone (removed or left), every remaining member makes a
  new sender key and gives it only to the remaining members.
"""

from __future__ import annotations

import hashlib
import os
import uuid as uuidlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

import msgspec
import trio

from chatcli.client import messages as m
from chatcli.client import models as db
from chatcli.client import prekeys, sessions
from chatcli.client.groups import models as gdb
from chatcli.client.groups import wire
from chatcli.client.groups.backup import BackupGroup
from chatcli.client.groups.membership import Create, Membership, MembershipError, Op, Outcome
from chatcli.client.groups.pairwise import PairwiseSessions
from chatcli.client.service import MessageEvent, NoticeEvent
from chatcli.client.store import Store, now_ms
from chatcli.crypto.envelope import seal_envelope
from chatcli.crypto.errors import BadSignature, ReplayedMessage
from chatcli.crypto.keys import IdentityPublicKey
from chatcli.crypto.sender_keys import SenderKeyReceiver, SenderKeyState, message_chain_id
from chatcli.errors import CryptoError, RelayError, UsageError
from chatcli.protocol import codes, frames

if TYPE_CHECKING:
    from chatcli.client.service import ChatClient, Event

OPS_PER_MESSAGE = 64  # keeps an ``ops`` message well inside one envelope
FRAME_BUDGET = 512 * 1024  # bytes of payload per Deposit frame (the limit is 1 MiB)
MAX_PENDING = 5000
PERMANENT_ERRORS = frozenset({codes.BAD_CAPABILITY, codes.UNKNOWN_MAILBOX})
ACTIVE = "active"
JOINING = "joining"
LEFT = "left"
REMOVED = "removed"


@dataclass
class SendReport:
    """What sending one group message achieved."""

    id: str
    recipients: int  # deposits made: one per other member
    stored: int = 0  # deposits the members' relays stored


@dataclass(frozen=True)
class MemberInfo:
    identity: bytes
    name: str             # contact name, or the name the member announced
    contact: str | None   # local contact name when the member is a contact
    fingerprint: str
    admin: bool
    me: bool
    verified: bool

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "contact": self.contact, "fingerprint": self.fingerprint,
                "admin": self.admin, "me": self.me, "verified": self.verified}


# store -> group row id -> (last op id, its digest, op count, membership)
_MEMBERSHIP_CACHE: WeakKeyDictionary[Store, dict[int, tuple[int, bytes, int, Membership]]] = (
    WeakKeyDictionary())


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _cap_hash(capability: bytes) -> bytes:
    return hashlib.sha256(capability).digest()


def name_in_use(client: ChatClient, name: str) -> bool:
    """Whether a group is called ``name`` locally (for name uniqueness)."""
    store = client.store
    if not gdb.has_tables(store):
        return False
    with gdb.bound(store):
        return bool(gdb.Group.select().where(gdb.Group.name == name).exists())


def is_group(client: ChatClient, name: str) -> bool:
    """Whether ``name`` is a group of this identity (reads the local database)."""
    with client.store.read():
        return name_in_use(client, name)


class GroupService:
    """The groups of one unlocked identity (see the module docstring). Cheap to
    make: the receive path makes one per group deposit."""

    def __init__(self, client: ChatClient) -> None:
        self.client = client
        self.store = client.store
        self.sealer = client.sealer
        self.me = client.identity.public.raw
        gdb.ensure_tables(self.store)
        self.pairwise = PairwiseSessions(self.store, client.identity)

    # ================================================================== helpers

    def _group(self, name: str) -> gdb.Group:
        group = gdb.Group.get_or_none(gdb.Group.name == name)
        if group is None:
            raise UsageError(f"No group is called {name!r}; see `chatcli group list`.")
        return group

    def _ops(self, group: gdb.Group) -> list[bytes]:
        rows = gdb.GroupOp.select().where(gdb.GroupOp.group == group).order_by(gdb.GroupOp.id)
        return [self.sealer.open(r.signed_sealed, "group.op",
                                 gdb.op_row(group.id, r.digest)) for r in rows]

    def _membership(self, group: gdb.Group) -> Membership:
        """The group's membership from its stored operations (a private copy).

        Cached per store and group, extended with the operations stored since,
        and rebuilt when the rows no longer match (e.g. after a rollback)."""
        cache = _MEMBERSHIP_CACHE.setdefault(self.store, {})
        last = (gdb.GroupOp.select(gdb.GroupOp.id, gdb.GroupOp.digest)
                .where(gdb.GroupOp.group == group).order_by(gdb.GroupOp.id.desc()).first())
        if last is None:
            raise UsageError(f"The group {group.name} has no membership record yet.")
        cached = cache.get(group.id)
        if cached is not None:
            last_id, last_digest, count, state = cached
            if (last_id, last_digest) == (last.id, last.digest):
                return state.copy()
            anchor = gdb.GroupOp.get_or_none(gdb.GroupOp.id == last_id)
            newer = list(gdb.GroupOp.select().where(gdb.GroupOp.group == group,
                                                    gdb.GroupOp.id > last_id)
                         .order_by(gdb.GroupOp.id))
            total = gdb.GroupOp.select().where(gdb.GroupOp.group == group).count()
            if anchor is not None and anchor.digest == last_digest and \
                    total == count + len(newer):
                state = state.copy()
                for row in newer:
                    state.apply(self._stored_op(group, row))
                cache[group.id] = (last.id, last.digest, total, state)
                return state.copy()
        rows = list(gdb.GroupOp.select().where(gdb.GroupOp.group == group)
                    .order_by(gdb.GroupOp.id))
        state = Membership.replay([self._stored_op(group, row) for row in rows])
        cache[group.id] = (last.id, last.digest, len(rows), state)
        return state.copy()

    def _stored_op(self, group: gdb.Group, row: gdb.GroupOp) -> Op:
        signed = self.sealer.open(row.signed_sealed, "group.op",
                                  gdb.op_row(group.id, row.digest))
        # Verified before it was stored; the local seal keeps it intact.
        author, op = wire.open_op(signed, group.group_id, verify=False)
        return wire.to_membership_op(author, op, group.admin)

    def _store_ops(self, group: gdb.Group, signed: Iterable[bytes]) -> list[Event]:
        """Verify and keep new operations; notices for those refused."""
        state = self._membership(group) if gdb.GroupOp.select().where(
            gdb.GroupOp.group == group).exists() else None
        events: list[Event] = []
        stored = {bytes(row.digest) for row in gdb.GroupOp.select(gdb.GroupOp.digest).where(
            gdb.GroupOp.group == group)}
        for data in signed:
            digest = _digest(data)
            if digest in stored:
                continue
            stored.add(digest)
            try:
                author, op = wire.open_op(data, group.group_id)
                mop = wire.to_membership_op(author, op, group.admin)
            except wire.InvalidGroupMessage as exc:
                events.append(NoticeEvent(f"Group {group.name}: {exc} It was ignored.",
                                          warning=True))
                continue
            if state is None:
                if not isinstance(mop, Create):
                    continue
                state = Membership.start(mop)
                gdb.GroupOp.create(group=group, digest=digest,
                                   signed_sealed=self.sealer.seal(
                                       data, "group.op", gdb.op_row(group.id, digest)))
                continue
            result = state.apply(mop)
            if result.outcome is Outcome.CONFLICT:
                events.append(NoticeEvent(
                    f"Group {group.name}: the creator sent two different membership changes "
                    f"with the same number ({result.reason}); the second was ignored.",
                    warning=True))
                continue
            if result.outcome is Outcome.DUPLICATE:
                continue
            gdb.GroupOp.create(group=group, digest=digest,
                               signed_sealed=self.sealer.seal(
                                       data, "group.op", gdb.op_row(group.id, digest)))
        return events

    def _add_op(self, group: gdb.Group, op: wire.AnyOp) -> bytes:
        signed = wire.sign_op(self.client.identity, group.group_id, op)
        digest = _digest(signed)
        gdb.GroupOp.create(group=group, digest=digest,
                           signed_sealed=self.sealer.seal(
                               signed, "group.op", gdb.op_row(group.id, digest)))
        return signed

    def _own_record(self, group: gdb.Group) -> wire.MemberRecord:
        account = self.store.account()
        return wire.MemberRecord(
            identity=self.me, name=account.name, relay_url=account.relay_url,
            mailbox=account.mailbox, box_key=self.client.mailbox_key.box_public,
            cap=self.sealer.open(group.own_cap_sealed, "group.own_cap",
                                 gdb.group_row(group.group_id)),
            restore_prekey=account.restore_prekey_public,
            restore_prekey_signature=account.restore_prekey_signature,
        )

    def _record(self, state: Membership, member: bytes) -> wire.MemberRecord:
        raw = state.record(member)
        if raw is None:
            raise UsageError("That member is unknown in this group.")
        return wire.decode_record(raw)

    def _contact_record(self, contact: db.Contact) -> wire.MemberRecord:
        if contact.restore_prekey is None or len(contact.restore_prekey) != 96:
            raise UsageError(f"The handshake with {contact.name} is not complete yet; run "
                             "`chatcli receive` (both of you) first.")
        return wire.MemberRecord(
            identity=contact.identity, name=contact.name, relay_url=contact.relay_url,
            mailbox=contact.mailbox, box_key=contact.box_key,
            cap=self.sealer.open(contact.deposit_cap_sealed, "contact.deposit_cap",
                                 contact.id),
            restore_prekey=contact.restore_prekey[:32],
            restore_prekey_signature=contact.restore_prekey[32:],
        )

    def _label(self, identity: bytes, state: Membership | None = None) -> tuple[str, bool]:
        """(how to show a member, whether it is a contact)."""
        if identity == self.me:
            return "me", False
        contact = db.Contact.get_or_none(db.Contact.identity == identity)
        if contact is not None:
            return contact.name, True
        if state is not None and state.record(identity) is not None:
            return self._record(state, identity).name, False
        peer = gdb.GroupPeer.get_or_none(gdb.GroupPeer.identity == identity)
        if peer is not None and peer.name:
            return peer.name, False
        return IdentityPublicKey.from_bytes(identity).fingerprint(), False

    def _display(self, identity: bytes, state: Membership | None = None) -> str:
        """How a notice names a member: a contact's name as it is; anyone else with
        ``~``, the name it announced and the start of its fingerprint (the form
        of :attr:`GroupMessageEvent.display_name`), so that no member's chosen
        name passes for a contact's."""
        name, is_contact = self._label(identity, state)
        if is_contact or identity == self.me:
            return name
        fingerprint = IdentityPublicKey.from_bytes(identity).fingerprint()
        if name == fingerprint:
            return f"~[{fingerprint}]"
        return f"~{name} [{' '.join(fingerprint.split()[:2])}]"

    def _unique_group_name(self, wanted: str) -> str:
        from chatcli.client.service import NAME_RE

        base = wanted if NAME_RE.fullmatch(wanted) else "group"
        name, n = base, 2
        while self.client.name_taken(name) or name_in_use(self.client, name):
            name, n = f"{base[:60]}-{n}", n + 1
        return name

    def _deposit(self, record: wire.MemberRecord, layer: wire.AnyLayer, *, kind: str) -> None:
        self._deposit_many([record], layer, kind=kind)

    def _deposit_many(self, records: list[wire.MemberRecord], layer: wire.AnyLayer, *,
                      kind: str, message_uuid: str | None = None) -> None:
        """Queue ``layer`` once per member: the same body, sealed to each."""
        body = m.encode(m.GroupBody(v=m.BODY_VERSION, message=wire.encode(layer)))
        stamp = now_ms()
        first = self.store.next_id(gdb.GroupOutbox)
        rows = [{
            "id": first + n, "relay_url": record.relay_url, "mailbox": record.mailbox,
            "cap_sealed": self.sealer.seal(record.cap, "group.outbox_cap", first + n),
            "payload_sealed": self.sealer.seal(
                seal_envelope(record.box_key, self.client.identity.public, body),
                "group.outbox_payload", first + n),
            "message_uuid": message_uuid, "kind": kind, "created_at": stamp,
        } for n, record in enumerate(records)]
        for start in range(0, len(rows), 200):
            gdb.GroupOutbox.insert_many(rows[start:start + 200]).execute()

    # ================================================================== pairwise

    def _send_direct(self, record: wire.MemberRecord, content: wire.DirectContent) -> None:
        """Encrypt ``content`` in the pairwise session with ``record``'s member and queue it."""
        peer = gdb.GroupPeer.get_or_none(gdb.GroupPeer.identity == record.identity)
        if peer is None:
            gdb.GroupPeer.create(identity=record.identity, name=record.name)
        elif record.name and not peer.name:
            peer.name = record.name
            peer.save()
        layer = self.pairwise.seal(record, wire.encode(content), now=now_ms())
        self._deposit(record, layer, kind="direct")

    def _resend_sender_keys(self, peer: bytes) -> None:
        """Give ``peer`` the own sender key again in every group both are members
        of (what a session the peer could not open carried)."""
        for group in gdb.Group.select().where(gdb.Group.status == ACTIVE):
            state = self._membership(group)
            if state.is_member(peer) and state.is_member(self.me):
                gdb.GroupDistributed.delete().where(gdb.GroupDistributed.group == group,
                                                    gdb.GroupDistributed.member == peer
                                                    ).execute()
                self._ensure_sender_key(group, state)

    def _send_ops(self, record: wire.MemberRecord, group: gdb.Group, ops: list[bytes]) -> None:
        """Operations to one member, in messages of at most OPS_PER_MESSAGE."""
        for start in range(0, len(ops), OPS_PER_MESSAGE):
            self._send_direct(record, wire.Ops(group_id=group.group_id,
                                               ops=ops[start:start + OPS_PER_MESSAGE]))

    def _broadcast_ops(self) -> None:
        """Admin: send each current member the operations it has not been sent yet
        (all of them to a new member), batched: joins handled together cost one
        message per member, not one per join and member."""
        for group in gdb.Group.select().where(gdb.Group.admin == self.me,
                                              gdb.Group.status == ACTIVE):
            last = (gdb.GroupOp.select(gdb.GroupOp.id).where(gdb.GroupOp.group == group)
                    .order_by(gdb.GroupOp.id.desc()).first())
            if last is None:
                continue
            sent = {bytes(row.member): row for row in gdb.GroupOpSent.select().where(
                gdb.GroupOpSent.group == group)}
            state = self._membership(group)
            rows: list[gdb.GroupOp] | None = None
            for member in sorted(state.members() - {self.me}):
                mark = sent.get(member)
                if mark is not None and mark.last_op >= last.id:
                    continue
                if rows is None:
                    rows = list(gdb.GroupOp.select().where(gdb.GroupOp.group == group)
                                .order_by(gdb.GroupOp.id))
                after = mark.last_op if mark is not None else 0
                ops = [self.sealer.open(r.signed_sealed, "group.op",
                                 gdb.op_row(group.id, r.digest)) for r in rows
                       if r.id > after]
                self._send_ops(self._record(state, member), group, ops)
                if mark is None:
                    gdb.GroupOpSent.create(group=group, member=member, last_op=last.id)
                else:
                    mark.last_op = last.id
                    mark.save()

    # ================================================================== receiving

    def handle_body(self, sender: IdentityPublicKey, message: bytes,
                    received_at: int) -> list[Event]:
        """Handle a ``GroupBody`` (inside the client's write transaction).

        Anything wrong with it raises a ``CryptoError`` (or a msgspec error), which
        the receive path reports and drops, like any unreadable message."""
        try:
            return self._handle_body(sender, message, received_at)
        except (UsageError, MembershipError) as exc:
            raise wire.InvalidGroupMessage(f"A group message was refused: {exc}") from None

    def _handle_body(self, sender: IdentityPublicKey, message: bytes,
                     received_at: int) -> list[Event]:
        with gdb.bound(self.store):
            layer = wire.decode_layer(message)
            try:
                # A savepoint: what failed half-way is undone, and the notice
                # below names who sent it and where.
                with self.store.db.atomic():
                    return self._handle_layer(sender, layer, received_at)
            except (ReplayedMessage, wire.InvalidGroupMessage):
                raise
            except CryptoError as exc:
                return [self._unreadable(sender.raw, layer, exc)]

    def _unreadable(self, sender: bytes, layer: wire.AnyLayer, exc: CryptoError) -> NoticeEvent:
        """A notice for a group message that cannot be read: who sent it, in which
        group, and what to do."""
        group = (gdb.Group.get_or_none(gdb.Group.group_id == layer.group_id)
                 if isinstance(layer, wire.Cipher) and layer.group_id is not None else None)
        state = self._membership(group) if group is not None else None
        who = self._display(sender, state)
        where = f" in {group.name}" if group is not None else ""
        reason = str(exc).rstrip(".")
        if isinstance(layer, wire.Cipher):
            advice = f"ask {who} to send it again."
        else:
            advice = (f"if you restored this identity from a backup, ask the group's creator "
                      f"to add you again; otherwise ask {who} to send it again.")
        return NoticeEvent(f"A group message from {who}{where} could not be read and was "
                           f"dropped ({reason}): {advice}", warning=True)

    def _handle_layer(self, sender: IdentityPublicKey, layer: wire.AnyLayer,
                      received_at: int) -> list[Event]:
        if isinstance(layer, wire.Cipher):
            return self._on_cipher(layer.message, received_at, sender=sender.raw,
                                   group_id=layer.group_id)
        opened = self.pairwise.open(sender, layer, now=now_ms())
        if opened.refused:
            # Its session used a signed prekey whose private key is gone; ours
            # (started now, or with the next message to it) replaces it.
            if opened.resend:
                self._resend_sender_keys(sender.raw)
            return [NoticeEvent("A group member started a session with an expired "
                                "prekey of this device; a new session is being set up.",
                                warning=True)]
        if opened.plaintext is None:
            return [NoticeEvent("A replayed group handshake was refused.", warning=True)]
        if gdb.GroupPeer.get_or_none(gdb.GroupPeer.identity == sender.raw) is None:
            gdb.GroupPeer.create(identity=sender.raw, name="")
        if opened.resend:
            self._resend_sender_keys(sender.raw)
        content = wire.decode_direct(opened.plaintext)
        if isinstance(content, wire.Invite):
            return self._on_invite(sender, content)
        group = gdb.Group.get_or_none(gdb.Group.group_id == content.group_id)
        if group is None:
            return []
        if isinstance(content, wire.Join):
            return self._on_join(group, sender, content)
        if isinstance(content, wire.Ops):
            return self._on_ops(group, sender, content.ops)
        return self._on_sender_key(group, sender, content, received_at)

    def _on_invite(self, sender: IdentityPublicKey, invite: wire.Invite) -> list[Event]:
        contact = db.Contact.get_or_none(db.Contact.identity == sender.raw)
        if contact is None or contact.blocked:
            return [NoticeEvent("An invitation to a group from someone who is not a contact "
                                "was refused.", warning=True)]
        if not invite.ops:
            raise wire.InvalidGroupMessage("A group invitation is empty.")
        author, create = wire.open_op(invite.ops[0], invite.group_id)
        if not isinstance(create, wire.CreateOp) or author != sender.raw:
            raise wire.InvalidGroupMessage("A group invitation does not come from its creator.")
        events: list[Event] = []
        group = gdb.Group.get_or_none(gdb.Group.group_id == invite.group_id)
        if group is None:
            name = self._unique_group_name(create.name)
            group = gdb.Group.create(
                group_id=invite.group_id, name=name, creator_name=create.name,
                admin=sender.raw, status=JOINING,
                own_cap_sealed=self.sealer.seal(os.urandom(32), "group.own_cap",
                                                gdb.group_row(invite.group_id)),
                created_at=now_ms())
            text = f"{contact.name} added you to the group {create.name!r}"
            if name != create.name:
                text += (f"; it is called {name!r} here because {create.name!r} is already "
                         "the name of one of your contacts or groups")
            events.append(NoticeEvent(text + ".", contact=contact.name))
        elif group.status == ACTIVE:
            return self._store_ops(group, invite.ops)
        elif group.status in (LEFT, REMOVED):
            group.status = JOINING
            group.own_cap_sealed = self.sealer.seal(os.urandom(32), "group.own_cap",
                                                    gdb.group_row(group.group_id))
            group.own_cap_registered = False
            group.save()
            events.append(NoticeEvent(f"{contact.name} added you to the group {group.name} "
                                      "again.", contact=contact.name))
        events.extend(self._store_ops(group, invite.ops))
        state = self._membership(group)
        admin_record = self._record(state, group.admin)
        self._send_direct(admin_record, wire.Join(group_id=group.group_id,
                                                  record=self._own_record(group)))
        events.extend(self._reconcile(group, state, state.members()))
        return events

    def _on_join(self, group: gdb.Group, sender: IdentityPublicKey, join: wire.Join
                 ) -> list[Event]:
        if group.admin != self.me or group.status != ACTIVE:
            return []
        before = self._membership(group)
        if before.is_member(sender.raw) and before.record(sender.raw) == wire.encode(
                join.record):
            return []  # a repeated join
        # A member who joins again (invited again, e.g. after restoring from a
        # backup on a new machine) gets its record renewed: new prekey and keys.
        invited = gdb.GroupInvitee.get_or_none(gdb.GroupInvitee.group == group,
                                               gdb.GroupInvitee.identity == sender.raw)
        # A current member may renew its own record (restored from a backup): the
        # pairwise session authenticates it as that member.
        if (invited is None and not before.is_member(sender.raw)) or \
                join.record.identity != sender.raw:
            return [NoticeEvent(f"Someone who was not invited tried to join the group "
                                f"{group.name}; refused.", warning=True)]
        sessions.verify_restore_prekey(sender, join.record.restore_prekey,
                                       join.record.restore_prekey_signature)
        if invited is not None:
            invited.delete_instance()
        self._add_op(group, wire.AddOp(seq=before.next_seq, record=join.record))
        # The operation reaches every member with the next flush (_broadcast_ops).
        state = self._membership(group)
        self._renewed(group, before, state)
        return self._reconcile(group, state, before.members())

    def _renewed(self, group: gdb.Group, before: Membership, state: Membership) -> None:
        """Members whose record changed (they joined again, e.g. from a restored
        backup, and lost their keys) are given this member's sender key again."""
        for member in before.members() & state.members() - {self.me}:
            if before.record(member) != state.record(member):
                gdb.GroupDistributed.delete().where(gdb.GroupDistributed.group == group,
                                                    gdb.GroupDistributed.member == member
                                                    ).execute()

    def _on_ops(self, group: gdb.Group, sender: IdentityPublicKey, ops: list[bytes]
                ) -> list[Event]:
        before = self._membership(group)
        events = self._store_ops(group, ops)
        state = self._membership(group)
        self._renewed(group, before, state)
        # Leaves reach the admin, which passes them on to every member with its next
        # flush (_broadcast_ops), so that a member added meanwhile learns them too.
        events.extend(self._reconcile(group, state, before.members()))
        return events

    def _on_sender_key(self, group: gdb.Group, sender: IdentityPublicKey,
                       content: wire.SenderKey, received_at: int) -> list[Event]:
        receiver = SenderKeyReceiver.from_distribution(content.distribution)
        existing = gdb.GroupSenderKey.get_or_none(
            gdb.GroupSenderKey.group == group, gdb.GroupSenderKey.sender == sender.raw,
            gdb.GroupSenderKey.chain_id == receiver.chain_id)
        if existing is not None:
            return []
        # A key from someone not (yet) known as a member, or not any more, is
        # kept: its add may still be on its way, or messages it sent while it was
        # a member may still come; each message's version decides (_on_cipher).
        gdb.GroupSenderKey.create(
            group=group, sender=sender.raw, chain_id=receiver.chain_id,
            state_sealed=self.sealer.seal(
                receiver.to_bytes(), "group.receiver",
                gdb.sender_key_row(group.id, sender.raw, receiver.chain_id)),
            created_at=now_ms())
        return self._retry_pending([receiver.chain_id])

    def _on_cipher(self, message: bytes, received_at: int, *, sender: bytes | None = None,
                   group_id: bytes | None = None, retry: bool = False) -> list[Event]:
        """A sender-key message: shown when its sender was a member at the version
        it names, refused when not, kept while this member cannot tell yet.

        ``sender`` and ``group_id`` (from the envelope and the unauthenticated
        layer) only name them in a notice when the message cannot be read yet."""
        chain_id = message_chain_id(message)
        found = self._chain_for(chain_id, message)
        if found is None:
            missing = [] if retry else self._missing_key(chain_id, sender, group_id)
            return missing + self._buffer(chain_id, message, received_at)
        row, receiver = found
        group = row.group
        if group.status not in (ACTIVE, JOINING):
            return []
        state = self._membership(group)
        expected = receiver.iteration
        iteration = int.from_bytes(message[17:21], "big")
        # Decrypted in memory only: the chain's state is kept only once decided.
        content = wire.decode_cipher(receiver.decrypt(message))
        name = self._display(row.sender, state)
        if content.version is not None:
            verdict = state.member_at(row.sender, content.version)
        elif state.is_member(row.sender):
            verdict = True  # an older client's message: judged by today's list
        else:
            verdict = False if state.was_member(row.sender) else None
        if verdict is None:
            # The membership changes it was sent after have not reached this member yet.
            return self._buffer(chain_id, message, received_at)
        row.state_sealed = self.sealer.seal(
            receiver.to_bytes(), "group.receiver",
            gdb.sender_key_row(row.__data__["group"], row.sender, row.chain_id))
        row.save()
        if not verdict:
            return [NoticeEvent(f"A message in {group.name} from {name}, sent when {name} was "
                                "not a member, was refused.", warning=True)]
        _, is_contact = self._label(row.sender, state)
        events: list[Event] = []
        if iteration > expected:
            events.append(NoticeEvent(
                f"{iteration - expected} earlier message(s) from {name} in {group.name} have "
                "not arrived (yet).", warning=True))
        elif iteration < expected:
            events.append(NoticeEvent(
                f"The next message from {name} in {group.name} arrived late, after later ones.",
                warning=True))
        if gdb.GroupMessage.get_or_none(gdb.GroupMessage.uuid == content.id) is not None:
            return events
        contact_name, _ = self._label(row.sender, state)
        gdb.GroupMessage.create(
            uuid=content.id, group=group, sender=row.sender, outgoing=False,
            text_sealed=self.sealer.seal_text(content.text, "group.message_text",
                                              content.id),
            sent_at=content.sent_at, received_at=received_at)
        events.append(GroupMessageEvent(
            id=content.id, contact=contact_name, text=content.text, sent_at=content.sent_at,
            received_at=received_at, group=group.name,
            attachment=({"name": content.attachment.name, "size": content.attachment.size}
                        if content.attachment is not None else None),
            attachment_ref=content.attachment,
            fingerprint=IdentityPublicKey.from_bytes(row.sender).fingerprint(),
            from_contact=is_contact))
        return events

    def _missing_key(self, chain_id: bytes, sender: bytes | None, group_id: bytes | None
                     ) -> list[Event]:
        """A notice, once per chain, for a message whose sender key is unknown."""
        if sender is None or gdb.GroupPending.select().where(
                gdb.GroupPending.chain_id == chain_id).exists():
            return []
        group = (gdb.Group.get_or_none(gdb.Group.group_id == group_id)
                 if group_id is not None else None)
        if group is None:
            who = self._display(sender)
            return [NoticeEvent(
                f"A message from {who} in a group this device does not know cannot be read. "
                "If you restored this identity from a backup, ask the group's creator to add "
                f"you again, then ask {who} to send it again.", warning=True)]
        who = self._display(sender, self._membership(group))
        return [NoticeEvent(
            f"A message from {who} in {group.name} cannot be read yet: the key it needs has "
            f"not arrived. It is kept and shown if the key comes; if it does not, ask {who} "
            "to send it again.", warning=True)]

    def _chain_for(self, chain_id: bytes, message: bytes
                   ) -> tuple[gdb.GroupSenderKey, SenderKeyReceiver] | None:
        """The received chain whose signing key signed ``message``, or None when no
        chain of that id is known. Several members may have announced the same
        chain id (one of them to squat it): only the signature tells whose it is.
        Raises ``BadSignature`` when chains of that id are known but none signed it."""
        rows = list(gdb.GroupSenderKey.select().where(gdb.GroupSenderKey.chain_id == chain_id)
                    .order_by(gdb.GroupSenderKey.id))
        if not rows:
            return None
        failure: BadSignature | None = None
        for row in rows:
            receiver = SenderKeyReceiver.from_bytes(self.sealer.open(
                row.state_sealed, "group.receiver",
                gdb.sender_key_row(row.__data__["group"], row.sender, row.chain_id)))
            try:
                receiver.verify(message)
            except BadSignature as exc:
                failure = exc
                continue
            return row, receiver
        assert failure is not None
        raise failure

    def _buffer(self, chain_id: bytes, message: bytes, received_at: int) -> list[Event]:
        """Keep a message that cannot be decided yet; a notice if the oldest kept
        ones had to go (at most MAX_PENDING are kept)."""
        iteration = int.from_bytes(message[17:21], "big")
        pending_id = self.store.next_id(gdb.GroupPending)
        gdb.GroupPending.create(id=pending_id, chain_id=chain_id, iteration=iteration,
                                message_sealed=self.sealer.seal(message, "group.pending",
                                                                pending_id),
                                received_at=received_at)
        count = gdb.GroupPending.select().count()
        if count > MAX_PENDING:
            oldest = gdb.GroupPending.select(gdb.GroupPending.id).order_by(
                gdb.GroupPending.id).limit(count - MAX_PENDING)
            dropped = gdb.GroupPending.delete().where(
                gdb.GroupPending.id.in_(oldest)).execute()
            return [NoticeEvent(
                f"{dropped} group message(s) waiting for their keys were dropped: more than "
                f"{MAX_PENDING} were waiting. Ask the members who wrote recently to send "
                "again what you did not see.", warning=True)]
        return []

    def _retry_pending(self, chain_ids: list[bytes] | None = None) -> list[Event]:
        """Open buffered messages whose sender key (or sender's membership) is now known,
        in order per chain."""
        query = gdb.GroupPending.select()
        if chain_ids is not None:
            query = query.where(gdb.GroupPending.chain_id.in_(chain_ids))
        events: list[Event] = []
        for row in list(query.order_by(gdb.GroupPending.chain_id, gdb.GroupPending.iteration,
                                       gdb.GroupPending.id)):
            if not gdb.GroupSenderKey.select().where(
                    gdb.GroupSenderKey.chain_id == row.chain_id).exists():
                continue
            message = self.sealer.open(row.message_sealed, "group.pending", row.id)
            row.delete_instance()
            try:
                with self.store.db.atomic():
                    # Kept again (a new row) while its sender's membership is unknown.
                    events.extend(self._on_cipher(message, row.received_at, retry=True))
            except (CryptoError, msgspec.DecodeError, msgspec.ValidationError) as exc:
                chain = gdb.GroupSenderKey.select().where(
                    gdb.GroupSenderKey.chain_id == row.chain_id).first()
                who = self._display(chain.sender, self._membership(chain.group))
                reason = str(exc).rstrip(".") if isinstance(exc, CryptoError) else "malformed"
                events.append(NoticeEvent(
                    f"A group message from {who} in {chain.group.name} could not be read "
                    f"and was dropped ({reason}): ask {who} to send it again.", warning=True))
        return events

    def _reconcile(self, group: gdb.Group, state: Membership, before: frozenset[bytes]
                   ) -> list[Event]:
        """Bring this member's side in line with the member list: status, notices,
        a new sender key after anyone left, distributions to members who lack it."""
        events: list[Event] = []
        members = state.members()
        for gone in sorted(before - members):
            if gone != self.me:
                events.append(NoticeEvent(
                    f"{self._display(gone, state)} is no longer a member of {group.name}."))
        if self.me not in members:
            if group.status == ACTIVE:
                group.status = LEFT if state.since(self.me) is not None else REMOVED
                group.sender_sealed = None
                group.save()
                gdb.GroupDistributed.delete().where(
                    gdb.GroupDistributed.group == group).execute()
                if group.status == REMOVED:
                    events.append(NoticeEvent(f"You were removed from the group {group.name}.",
                                              warning=True))
            return events
        for new in sorted(members - before - {self.me}):
            _, is_contact = self._label(new, state)
            if group.status == ACTIVE:
                shown = self._display(new, state) + ("" if is_contact else (
                    " (not a contact; fingerprint "
                    f"{IdentityPublicKey.from_bytes(new).fingerprint()})"))
                events.append(NoticeEvent(f"{shown} joined the group {group.name}."))
        if group.status != ACTIVE:
            group.status = ACTIVE
            group.save()
            others = sorted(self._display(m, state) for m in members - {self.me})
            events.append(NoticeEvent(f"You are now a member of the group {group.name}, "
                                      f"with {', '.join(others) or 'nobody else yet'}."))
        for member in members - before - {self.me}:
            gdb.GroupPeer.update(name=self._record(state, member).name).where(
                gdb.GroupPeer.identity == member, gdb.GroupPeer.name == "").execute()
        self._ensure_sender_key(group, state)
        events.extend(self._retry_pending())
        return events

    def _ensure_sender_key(self, group: gdb.Group, state: Membership) -> SenderKeyState:
        members = state.members()
        given = {row.member for row in gdb.GroupDistributed.select().where(
            gdb.GroupDistributed.group == group)}
        sender = (SenderKeyState.from_bytes(self.sealer.open(
                      group.sender_sealed, "group.sender", gdb.group_row(group.group_id)))
                  if group.sender_sealed is not None else None)
        if sender is None or given - members:
            # Someone who holds the current key is gone: a new key, for those who remain.
            sender = SenderKeyState.generate()
            gdb.GroupDistributed.delete().where(gdb.GroupDistributed.group == group).execute()
            given = set()
            group.sender_sealed = self.sealer.seal(sender.to_bytes(), "group.sender",
                                                   gdb.group_row(group.group_id))
            group.save()
        for member in sorted(members - given - {self.me}):
            self._send_direct(self._record(state, member), wire.SenderKey(
                group_id=group.group_id, distribution=sender.distribution()))
            gdb.GroupDistributed.create(group=group, member=member, chain_id=sender.chain_id)
        return sender

    # ================================================================== commands

    def create(self, name: str, contact_names: list[str]) -> gdb.Group:
        """Create a group (this identity is its admin) and queue the invitations."""
        from chatcli.client.service import validate_name

        validate_name(name)
        with self.store.write(), gdb.bound(self.store):
            if self.client.name_taken(name) or name_in_use(self.client, name):
                raise UsageError(f"The name {name!r} is already used by a contact or a group; "
                                 "choose another.")
            contacts = [self._invitable(c) for c in dict.fromkeys(contact_names)]
            group_id = os.urandom(16)
            group = gdb.Group.create(
                group_id=group_id, name=name, creator_name=name, admin=self.me,
                status=ACTIVE, own_cap_sealed=self.sealer.seal(os.urandom(32), "group.own_cap",
                                                               gdb.group_row(group_id)),
                created_at=now_ms())
            self._add_op(group, wire.CreateOp(name=name, record=self._own_record(group)))
            for contact in contacts:
                self._invite(group, contact)
        return group

    def _invitable(self, contact_name: str) -> db.Contact:
        contact = self.client.get_contact(contact_name)
        if contact.blocked:
            raise UsageError(f"{contact_name} is blocked.")
        self._contact_record(contact)
        return contact

    def _invite(self, group: gdb.Group, contact: db.Contact) -> None:
        if gdb.GroupInvitee.get_or_none(gdb.GroupInvitee.group == group,
                                        gdb.GroupInvitee.identity == contact.identity) is None:
            gdb.GroupInvitee.create(group=group, identity=contact.identity)
        ops = self._ops(group)
        record = self._contact_record(contact)
        self._send_direct(record, wire.Invite(group_id=group.group_id, ops=ops[:OPS_PER_MESSAGE]))
        self._send_ops(record, group, ops[OPS_PER_MESSAGE:])

    def add(self, name: str, contact_name: str) -> None:
        with self.store.write(), gdb.bound(self.store):
            group = self._group(name)
            self._require_admin(group, "add")
            contact = self._invitable(contact_name)
            # A current member is invited again: when it answers, its record is
            # renewed (how a member restored from a backup gets back in).
            self._invite(group, contact)

    def _require_admin(self, group: gdb.Group, verb: str) -> None:
        if group.status != ACTIVE:
            raise UsageError(f"You are not a member of {group.name} any more.")
        if group.admin != self.me:
            admin = self._display(group.admin, self._membership(group))
            raise UsageError(f"Only the group's creator ({admin}) can {verb} members.")

    def _find_member(self, state: Membership, who: str, group_name: str) -> bytes:
        contact = db.Contact.get_or_none(db.Contact.name == who)
        if contact is not None and state.is_member(contact.identity):
            return bytes(contact.identity)
        wanted = who.replace(" ", "").lower()
        found = [member for member in state.members()
                 if self._record(state, member).name == who
                 or (len(wanted) >= 8 and IdentityPublicKey.from_bytes(member).fingerprint()
                     .replace(" ", "").lower().startswith(wanted))]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise UsageError(f"Several members of {group_name} are called {who!r}; give a "
                             "fingerprint (see `chatcli group members`).")
        raise UsageError(f"{who!r} is not a member of {group_name}.")

    def remove(self, name: str, who: str) -> None:
        with self.store.write(), gdb.bound(self.store):
            group = self._group(name)
            self._require_admin(group, "remove")
            before = self._membership(group)
            member = self._find_member(before, who, name)
            if member == self.me:
                raise UsageError("To leave a group you created, use `chatcli group leave`.")
            signed = self._add_op(group, wire.RemoveOp(seq=before.next_seq, member=member))
            state = self._membership(group)
            # The removed member learns of it now, the others with the broadcast.
            self._send_ops(self._record(before, member), group, [signed])
            self._reconcile(group, state, before.members())
            self._broadcast_ops()

    def leave(self, name: str) -> None:
        with self.store.write(), gdb.bound(self.store):
            group = self._group(name)
            if group.status != ACTIVE:
                raise UsageError(f"You are not a member of {name} any more.")
            before = self._membership(group)
            since = before.since(self.me)
            assert since is not None
            signed = self._add_op(group, wire.LeaveOp(member=self.me, since=since))
            for target in before.members() - {self.me}:
                self._send_ops(self._record(before, target), group, [signed])
            gdb.GroupInvitee.delete().where(gdb.GroupInvitee.group == group).execute()
            self._reconcile(group, self._membership(group), before.members())

    def enqueue_text(self, name: str, text: str,
                     attachment: m.AttachmentRef | None = None) -> SendReport:
        """Encrypt ``text`` once with the own sender key and queue one sealed deposit
        per other member; store it in the history."""
        if len(text) > wire.MAX_GROUP_TEXT:
            raise UsageError(f"The message is too long (the limit is {wire.MAX_GROUP_TEXT} "
                             "characters).")
        message_id = str(uuidlib.uuid4())
        sent_at = now_ms()
        with self.store.write(), gdb.bound(self.store):
            group = self._group(name)
            if group.status != ACTIVE:
                raise UsageError(
                    f"You are not a member of {name} any more." if group.status != JOINING else
                    f"You are not a member of {name} yet: its creator has not confirmed your "
                    "joining; run `chatcli receive` later.")
            state = self._membership(group)
            sender = self._ensure_sender_key(group, state)
            ciphertext = sender.encrypt(wire.encode(wire.GroupText(
                id=message_id, sent_at=sent_at, text=text, attachment=attachment,
                version=state.next_seq)))
            group.sender_sealed = self.sealer.seal(sender.to_bytes(), "group.sender",
                                                   gdb.group_row(group.group_id))
            group.save()
            others = sorted(state.members() - {self.me})
            self._deposit_many([self._record(state, member) for member in others],
                               wire.Cipher(message=ciphertext, group_id=group.group_id),
                               kind="text",
                               message_uuid=message_id)
            gdb.GroupMessage.create(
                uuid=message_id, group=group, sender=self.me, outgoing=True,
                text_sealed=self.sealer.seal_text(text, "group.message_text", message_id),
                sent_at=sent_at, recipients=len(others))
        return SendReport(id=message_id, recipients=len(others))

    # ================================================================== network

    async def flush(self) -> dict[str, str]:
        """Register own group capabilities, then deposit everything queued,
        batched per relay. Returns unreachable relays; never raises RelayError."""
        unreachable: dict[str, str] = {}
        try:
            await self._sync_caps()
        except RelayError as exc:
            unreachable[self.client.relay_url] = str(exc)
            return unreachable
        with self.store.write(), gdb.bound(self.store):
            self._broadcast_ops()
        with self.store.read(), gdb.bound(self.store):
            rows = list(gdb.GroupOutbox.select().order_by(gdb.GroupOutbox.id))
        by_relay: dict[str, list[gdb.GroupOutbox]] = {}
        for row in rows:
            by_relay.setdefault(row.relay_url, []).append(row)
        pool = self.client._require_pool()
        for url, items in by_relay.items():
            try:
                conn = await pool.anonymous(url)
                for chunk, deposit in self._batches(items):
                    answer = await conn.request(
                        lambda req, d=deposit: frames.Deposit(req=req, items=d))  # type: ignore[misc]
                    assert isinstance(answer, frames.DepositResult)
                    self._record_results(chunk, answer.errors)
            except RelayError as exc:
                pool.drop(url)
                unreachable[url] = str(exc)
                with self.store.write(), gdb.bound(self.store):
                    gdb.GroupOutbox.update(attempts=gdb.GroupOutbox.attempts + 1,
                                           last_error=str(exc)[:500]).where(
                        gdb.GroupOutbox.id.in_([r.id for r in items])).execute()
        return unreachable

    def _batches(self, rows: list[gdb.GroupOutbox]
                 ) -> Iterator[tuple[list[gdb.GroupOutbox], list[frames.DepositItem]]]:
        """Deposit frames of at most MAX_BATCH items and FRAME_BUDGET bytes."""
        chunk: list[gdb.GroupOutbox] = []
        items: list[frames.DepositItem] = []
        size = 0
        for row in rows:
            payload = self.sealer.open(row.payload_sealed, "group.outbox_payload", row.id)
            cost = len(payload) + 64
            if chunk and (len(chunk) >= frames.MAX_BATCH or size + cost > FRAME_BUDGET):
                yield chunk, items
                chunk, items, size = [], [], 0
            chunk.append(row)
            items.append(frames.DepositItem(
                mailbox=row.mailbox,
                cap=self.sealer.open(row.cap_sealed, "group.outbox_cap", row.id),
                payload=payload))
            size += cost
        if chunk:
            yield chunk, items

    def _record_results(self, chunk: list[gdb.GroupOutbox], errors: list[str | None]) -> None:
        with self.store.write(), gdb.bound(self.store):
            for row, error in zip(chunk, errors, strict=False):
                if error is None or error in PERMANENT_ERRORS:
                    gdb.GroupOutbox.delete().where(gdb.GroupOutbox.id == row.id).execute()
                    if row.message_uuid and error is None:
                        gdb.GroupMessage.update(stored=gdb.GroupMessage.stored + 1).where(
                            gdb.GroupMessage.uuid == row.message_uuid).execute()
                else:
                    gdb.GroupOutbox.update(attempts=gdb.GroupOutbox.attempts + 1,
                                           last_error=error).where(
                        gdb.GroupOutbox.id == row.id).execute()

    async def _sync_caps(self) -> None:
        """CapAdd the capabilities of groups joined; CapRevoke those of groups left."""
        with self.store.read(), gdb.bound(self.store):
            todo = list(gdb.Group.select().where(
                gdb.Group.own_cap_registered == (gdb.Group.status.in_([LEFT, REMOVED]))))
        if not todo:
            return
        add = [g for g in todo if g.status in (ACTIVE, JOINING)]
        revoke = [g for g in todo if g.status in (LEFT, REMOVED)]
        conn = await self.client.own_relay()
        for groups, frame_type, registered in ((add, frames.CapAdd, True),
                                               (revoke, frames.CapRevoke, False)):
            for start in range(0, len(groups), frames.MAX_BATCH):
                chunk = groups[start:start + frames.MAX_BATCH]
                hashes = [_cap_hash(self.sealer.open(g.own_cap_sealed, "group.own_cap",
                                                        gdb.group_row(g.group_id)))
                          for g in chunk]
                await conn.request(lambda req, h=hashes, f=frame_type: f(  # type: ignore[misc]
                    req=req, cap_hashes=h))
                with self.store.write(), gdb.bound(self.store):
                    gdb.Group.update(own_cap_registered=registered).where(
                        gdb.Group.id.in_([g.id for g in chunk])).execute()

    async def deliver(self, *, message_id: str | None = None, time_limit: float = 20.0) -> None:
        """Retry until nothing (or nothing of ``message_id``) waits; RelayError otherwise."""
        delay = 0.25
        last = "a member's relay did not store it in time"
        with trio.move_on_after(time_limit):
            while True:
                unreachable = await self.flush()
                with self.store.read(), gdb.bound(self.store):
                    query = gdb.GroupOutbox.select()
                    if message_id is not None:
                        query = query.where(gdb.GroupOutbox.message_uuid == message_id)
                    if not query.exists():
                        return
                    failing = query.first()
                if unreachable:
                    last = next(iter(unreachable.values())).rstrip(".")
                elif failing is not None and failing.last_error:
                    last = f"a member's relay answered {failing.last_error}"
                await trio.sleep(delay)
                delay = min(delay * 2, 4.0)
        raise RelayError(f"{last}; the rest stays queued and the next chatcli command that "
                         "connects will send it.")

    async def send_text(self, name: str, text: str, *, time_limit: float = 20.0,
                        attachment: m.AttachmentRef | None = None) -> SendReport:
        """Send once every member's relay stored it; ``RelayError`` otherwise (the
        rest stays queued)."""
        report = self.enqueue_text(name, text, attachment)
        await self.deliver(message_id=report.id, time_limit=time_limit)
        with self.store.read(), gdb.bound(self.store):
            row = gdb.GroupMessage.get(gdb.GroupMessage.uuid == report.id)
            report.stored = row.stored
        return report

    # ================================================================== queries

    def groups(self) -> list[dict[str, Any]]:
        with self.store.read(), gdb.bound(self.store):
            out = []
            for group in gdb.Group.select().order_by(gdb.Group.name):
                state = self._membership(group)
                admin, _ = self._label(group.admin, state)
                out.append({"name": group.name, "creator_name": group.creator_name,
                            "admin": admin, "is_admin": group.admin == self.me,
                            "status": group.status, "members": len(state.members()),
                            "invited": gdb.GroupInvitee.select().where(
                                gdb.GroupInvitee.group == group).count()})
            return out

    def members(self, name: str) -> list[MemberInfo]:
        with self.store.read(), gdb.bound(self.store):
            group = self._group(name)
            state = self._membership(group)
            out = []
            for member in state.members():
                label, is_contact = self._label(member, state)
                contact = db.Contact.get_or_none(db.Contact.identity == member)
                peer = gdb.GroupPeer.get_or_none(gdb.GroupPeer.identity == member)
                verified = bool(contact.verified and not contact.key_changed) if contact \
                    else bool(peer is not None and peer.verified)
                out.append(MemberInfo(
                    identity=member,
                    name=self.store.account().name if member == self.me else label,
                    contact=label if is_contact else None,
                    fingerprint=IdentityPublicKey.from_bytes(member).fingerprint(),
                    admin=member == group.admin, me=member == self.me, verified=verified))
            return sorted(out, key=lambda i: (not i.me, not i.admin, i.name))

    def invited(self, name: str) -> list[str]:
        with self.store.read(), gdb.bound(self.store):
            group = self._group(name)
            return sorted(self._label(r.identity)[0] for r in gdb.GroupInvitee.select().where(
                gdb.GroupInvitee.group == group))

    def safety_number(self, name: str, who: str) -> tuple[str, bytes, MemberInfo]:
        """The safety number with a member (contact or not)."""
        from chatcli.crypto.safety import safety_number, safety_qr_payload

        with self.store.read(), gdb.bound(self.store):
            group = self._group(name)
            member = self._find_member(self._membership(group), who, name)
        if member == self.me:
            raise UsageError("That is you.")
        info = next(i for i in self.members(name) if i.identity == member)
        theirs = IdentityPublicKey.from_bytes(member)
        return (safety_number(self.client.identity.public, theirs),
                safety_qr_payload(self.client.identity.public, theirs), info)

    def confirm_member(self, name: str, who: str) -> None:
        """Mark a member verified (its contact entry when it is a contact)."""
        with self.store.write(), gdb.bound(self.store):
            group = self._group(name)
            member = self._find_member(self._membership(group), who, name)
            contact = db.Contact.get_or_none(db.Contact.identity == member)
            if contact is not None:
                if contact.key_changed:
                    raise UsageError(f"The key of {contact.name} changed: use "
                                     f"`chatcli verify {contact.name}`.")
                contact.verified = True
                contact.save()
                return
            peer = gdb.GroupPeer.get_or_none(gdb.GroupPeer.identity == member)
            if peer is None:
                peer = gdb.GroupPeer.create(identity=member,
                                            name=self._label(member)[0])
            peer.verified = True
            peer.save()

    def history(self, name: str, limit: int = 50) -> list[dict[str, Any]]:
        with self.store.read(), gdb.bound(self.store):
            group = self._group(name)
            state = self._membership(group)
            rows = list(gdb.GroupMessage.select().where(gdb.GroupMessage.group == group)
                        .order_by(gdb.GroupMessage.sent_at.desc(), gdb.GroupMessage.id.desc())
                        .limit(limit))
            out = []
            for row in reversed(rows):
                sender, _ = self._label(row.sender, state)
                out.append({
                    "id": row.uuid, "group": group.name,
                    "from": "me" if row.outgoing else sender,
                    "to": group.name if row.outgoing else "me",
                    "direction": "out" if row.outgoing else "in",
                    "text": self.sealer.open_text(row.text_sealed, "group.message_text",
                                                  row.uuid),
                    "sent_at": row.sent_at, "received_at": row.received_at,
                    "state": (("sent" if row.stored >= row.recipients else "queued")
                              if row.outgoing else "received"),
                })
            return out


@dataclass(frozen=True)
class GroupMessageEvent(MessageEvent):
    """A group message: ``contact`` is the sender's contact name, or the name it
    announced when it is not a contact."""

    fingerprint: str = ""
    from_contact: bool = True

    @property
    def display_name(self) -> str:
        """A contact's name as it is; a member who is not a contact is marked
        with ``~`` and the start of its fingerprint, so that a name it chose
        can never pass for a contact's (``~bob [1a2b 3c4d]`` is not ``bob``)."""
        if self.from_contact:
            return self.contact
        short = " ".join(self.fingerprint.split()[:2])
        return f"~{self.contact} [{short}]"

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        data["fingerprint"] = self.fingerprint
        data["from_contact"] = self.from_contact
        return data


def group_of_member(client: ChatClient, who: str) -> str | None:
    """The first active group (by name) with a member called ``who`` who is not a
    contact, so that ``chatcli verify WHO`` can show its safety number."""
    with client.store.read():
        if not gdb.has_tables(client.store) or db.Contact.get_or_none(
                db.Contact.name == who) is not None:
            return None
        with gdb.bound(client.store):
            names = [g.name for g in gdb.Group.select().where(gdb.Group.status == ACTIVE)
                     .order_by(gdb.Group.name)]
    service = GroupService(client)
    for name in names:
        with client.store.read(), gdb.bound(client.store):
            try:
                member = service._find_member(service._membership(service._group(name)), who,
                                              name)
            except UsageError:
                continue
            if member != service.me:
                return name
    return None


def group_message_states(client: ChatClient, ids: list[str]) -> dict[str, str]:
    """uuid -> "sent" (every member's relay stored it) or "pending", for own group
    messages among ``ids`` (for the chat's marks)."""
    with client.store.read():
        if not gdb.has_tables(client.store):
            return {}
        with gdb.bound(client.store):
            rows = gdb.GroupMessage.select().where(gdb.GroupMessage.uuid.in_(ids),
                                                   gdb.GroupMessage.outgoing == True)  # noqa: E712
            return {row.uuid: "sent" if row.stored >= row.recipients else "pending"
                    for row in rows}


def group_copies_stored(client: ChatClient, message_id: str) -> tuple[int, int] | None:
    """(copies stored by members' relays, members) of an own group message, or
    None when ``message_id`` is not one. Fewer stored than members after a send
    means some members' relays refused their copy for good."""
    with client.store.read():
        if not gdb.has_tables(client.store):
            return None
        with gdb.bound(client.store):
            row = gdb.GroupMessage.get_or_none(gdb.GroupMessage.uuid == message_id,
                                               gdb.GroupMessage.outgoing == True)  # noqa: E712
            return None if row is None else (row.stored, row.recipients)


def export_groups(client: ChatClient) -> list[BackupGroup]:
    """The active groups, for a key backup (inside or outside a transaction)."""
    store = client.store
    if not gdb.has_tables(store):
        return []
    service = GroupService(client)
    with gdb.bound(store):
        return [BackupGroup(group_id=g.group_id, name=g.name, creator_name=g.creator_name,
                            admin=g.admin, ops=service._ops(g))
                for g in gdb.Group.select().where(gdb.Group.status == ACTIVE)
                .order_by(gdb.Group.id)]


def restore_groups(client: ChatClient, groups: list[BackupGroup]) -> None:
    """After ``keys import`` (inside its write transaction): take the groups back
    and rejoin each with a new member record (new restore prekey and capability).

    A member asks the creator to renew its record (``join``); the creator renews
    its own at once. Either way every member then gets this member's new sender
    key and sends it theirs (:meth:`GroupService._renewed`)."""
    if not groups:
        return
    service = GroupService(client)
    with gdb.bound(client.store):
        for saved in groups:
            if gdb.Group.get_or_none(gdb.Group.group_id == saved.group_id) is not None:
                continue
            group = gdb.Group.create(
                group_id=saved.group_id, name=service._unique_group_name(saved.name),
                creator_name=saved.creator_name, admin=saved.admin, status=JOINING,
                own_cap_sealed=service.sealer.seal(os.urandom(32), "group.own_cap",
                                                   gdb.group_row(saved.group_id)),
                created_at=now_ms())
            service._store_ops(group, saved.ops)
            if not gdb.GroupOp.select().where(gdb.GroupOp.group == group).exists():
                group.delete_instance()
                continue
            state = service._membership(group)
            if not state.is_member(service.me):
                group.delete_instance()
                continue
            if group.admin == service.me:
                service._add_op(group, wire.AddOp(seq=state.next_seq,
                                                  record=service._own_record(group)))
                renewed = service._membership(group)
                service._reconcile(group, renewed, renewed.members())
            else:
                service._send_direct(service._record(state, group.admin), wire.Join(
                    group_id=group.group_id, record=service._own_record(group)))


async def flush_groups(client: ChatClient) -> None:
    """Deliver queued group deposits (best effort; the client's outbox flush calls
    it). First applies the signed prekey schedule (:func:`prekeys.rotate`)."""
    prekeys.apply_schedule(client, now=now_ms())
    with client.store.read():
        if not gdb.has_tables(client.store):
            return
        with gdb.bound(client.store):
            admin = gdb.Group.select().where(gdb.Group.admin == client.identity.public.raw,
                                             gdb.Group.status == ACTIVE).exists()
            idle = not admin and not gdb.GroupOutbox.select().exists() and not (
                gdb.Group.select().where(gdb.Group.own_cap_registered == (
                    gdb.Group.status.in_([LEFT, REMOVED]))).exists())
    if not idle:
        await GroupService(client).flush()
