"""The groups' shared core: a group's rows and its membership (replayed from
the signed operations, cached), member records and how members are named,
the own sender key, and queueing deposits for members (sealed now, sent by
the shell). Synchronous, inside the caller's transaction.

The pieces of :class:`~chatcli.client.groups.service.GroupService` build on
it: :mod:`~chatcli.client.groups.inbox` (receiving),
:mod:`~chatcli.client.groups.commands` (create, add, remove, leave, send),
:mod:`~chatcli.client.groups.queries` (what the commands show),
:mod:`~chatcli.client.groups.delivery` (deposit batches and their answers).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

from peewee import fn

from chatcli.client import messages as m
from chatcli.client import models as db
from chatcli.client.events import Event, NoticeEvent
from chatcli.client.groups import models as gdb
from chatcli.client.groups import wire
from chatcli.client.groups.membership import Create, Membership, Op, Outcome
from chatcli.client.groups.models import name_in_use
from chatcli.client.groups.pairwise import PairwiseSessions
from chatcli.client.names import NAME_RE
from chatcli.client.store import Store, now_ms
from chatcli.crypto.envelope import seal_envelope
from chatcli.crypto.keys import IdentityPublicKey
from chatcli.crypto.sender_keys import SenderKeyState
from chatcli.errors import UsageError

if TYPE_CHECKING:
    from chatcli.client.core import ClientCore

OPS_PER_MESSAGE = 64  # keeps an ``ops`` message well inside one envelope
OPS_BYTES = 40 * 1024  # likewise, in bytes (a profile operation may carry a 32 KiB avatar)
ACTIVE = "active"
JOINING = "joining"
LEFT = "left"
REMOVED = "removed"


# store -> group row id -> (last op id, its digest, op count, membership)
_MEMBERSHIP_CACHE: WeakKeyDictionary[Store, dict[int, tuple[int, bytes, int, Membership]]] = (
    WeakKeyDictionary())

# store -> group row id -> (last op id, op count) of a committed broadcast that
# left every member of the group up to date (see GroupCore._broadcast_ops)
_BROADCAST_DONE: WeakKeyDictionary[Store, dict[int, tuple[int, int]]] = WeakKeyDictionary()


def broadcast_done(store: Store, done: dict[int, tuple[int, int]]) -> None:
    """Record what :meth:`GroupCore._broadcast_ops` returned, once the transaction
    it ran in has committed (a rolled-back broadcast must run again)."""
    _BROADCAST_DONE.setdefault(store, {}).update(done)


def ops_chunks(ops: list[bytes]) -> list[list[bytes]]:
    """``ops`` cut into messages of at most OPS_PER_MESSAGE operations and
    OPS_BYTES bytes (a larger operation travels alone)."""
    chunks: list[list[bytes]] = []
    size = 0
    for op in ops:
        if not chunks or len(chunks[-1]) >= OPS_PER_MESSAGE or size + len(op) > OPS_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(op)
        size += len(op)
    return chunks


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class GroupCore:
    """The groups of one unlocked identity: what every group concern shares."""

    def __init__(self, client: ClientCore) -> None:
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
        return wire.to_membership_op(author, op, group.admin, group_id=group.group_id,
                                     verify=False)

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
                mop = wire.to_membership_op(author, op, group.admin, group_id=group.group_id)
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
                    f"Group {group.name}: {self._display(author, state)} sent two different "
                    f"membership changes with the same number ({result.reason}); the second "
                    "was ignored.", warning=True))
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

    def _send_ops(self, record: wire.MemberRecord, group: gdb.Group, ops: list[bytes]) -> None:
        """Operations to one member, in messages of at most OPS_PER_MESSAGE
        operations and OPS_BYTES bytes (a profile carries its avatar)."""
        for chunk in ops_chunks(ops):
            self._send_direct(record, wire.Ops(group_id=group.group_id, ops=chunk))

    def _send_ops_to_members(self, group: gdb.Group, state: Membership, ops: list[bytes]
                             ) -> None:
        """Operations to every other member of ``state`` at once (joins, leaves,
        votes: they must not wait for an admin to pass them on)."""
        for member in sorted(state.members() - {self.me}):
            self._send_ops(self._record(state, member), group, ops)

    def _broadcast_ops(self) -> dict[int, tuple[int, int]]:
        """Admins: send each current member the operations it has not been sent yet
        (all of them to a new member), batched: joins handled together cost one
        message per member, not one per join and member.

        Runs before every delivery pass, so it must cost little when nothing is
        owed: a group whose operations (last id, count) did not change since a
        committed broadcast (:func:`broadcast_done`) is skipped without reading
        its members. Returns the groups now up to date, for that record."""
        known = _BROADCAST_DONE.get(self.store, {})
        heads: dict[int, tuple[int, int]] = {}
        query = (gdb.GroupOp.select(gdb.GroupOp.group, fn.MAX(gdb.GroupOp.id),
                                    fn.COUNT(gdb.GroupOp.id))
                 .group_by(gdb.GroupOp.group).tuples())
        head_rows: list[tuple[int, int, int]] = list(query)  # type: ignore[arg-type]
        for row in head_rows:
            heads[row[0]] = (row[1], row[2])
        done: dict[int, tuple[int, int]] = {}
        for group in gdb.Group.select().where(gdb.Group.is_admin == True,  # noqa: E712
                                              gdb.Group.status == ACTIVE):
            head = heads.get(group.id)
            if head is None:
                continue
            done[group.id] = head
            if known.get(group.id) == head:
                continue
            last = gdb.GroupOp(id=head[0])
            state = self._membership(group)
            if not state.is_admin(self.me):
                group.is_admin = False
                group.save()
                continue
            sent = {bytes(row.member): row for row in gdb.GroupOpSent.select().where(
                gdb.GroupOpSent.group == group)}
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
        return done

    # ================================================================== own sender key

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

    # ================================================================== members

    def _require_admin(self, group: gdb.Group, what: str) -> Membership:
        """The group's membership, when this member is one of its admins."""
        if group.status != ACTIVE:
            raise UsageError(f"You are not a member of {group.name} any more.")
        state = self._membership(group)
        if not state.is_admin(self.me):
            admins = ", ".join(sorted(self._display(a, state) for a in state.admins()))
            raise UsageError(f"Only the admins of {group.name} ({admins or 'none left'}) can "
                             f"{what}.")
        return state

    def _find_member(self, state: Membership, who: str, group_name: str, *,
                     invitees: bool = False) -> bytes:
        """A member named by contact name, announced name or fingerprint (and,
        with ``invitees``, someone invited who has not joined yet)."""
        pool = state.members() | (state.invitees() if invitees else frozenset())
        contact = db.Contact.get_or_none(db.Contact.name == who)
        if contact is not None and contact.identity in pool:
            return bytes(contact.identity)
        if contact is not None and state.is_invited(contact.identity):
            raise UsageError(f"{who} has not joined {group_name} yet, or its joining has not "
                             "reached you: run `chatcli receive`.")
        wanted = who.replace(" ", "").lower()
        found = [member for member in pool
                 if (state.record(member) is not None
                     and self._record(state, member).name == who)
                 or (len(wanted) >= 8 and IdentityPublicKey.from_bytes(member).fingerprint()
                     .replace(" ", "").lower().startswith(wanted))]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise UsageError(f"Several members of {group_name} are called {who!r}; give a "
                             "fingerprint (see `chatcli group members`).")
        raise UsageError(f"{who!r} is not a member of {group_name}.")

    def _profile(self, group: gdb.Group, state: Membership) -> wire.GroupProfile:
        """The group's profile: the one an admin set, else the creator's name."""
        raw = state.profile()
        if raw is None:
            return wire.GroupProfile(name=group.creator_name)
        return wire.decode_profile(raw)
