"""Receiving group messages: pairwise layers (invitations, joins, operations,
sender keys) and sender-key messages, judged against the membership at the
version they name, kept while that cannot be told yet; and bringing this
member's side in line when the membership changes."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import msgspec

from chatcli.client import models as db
from chatcli.client import sessions
from chatcli.client.events import Event, GroupMessageEvent, NoticeEvent
from chatcli.client.groups import models as gdb
from chatcli.client.groups import wire
from chatcli.client.groups.membership import Membership, MembershipError
from chatcli.client.store import now_ms
from chatcli.crypto.errors import BadSignature, ReplayedMessage
from chatcli.crypto.keys import IdentityPublicKey
from chatcli.crypto.sender_keys import SenderKeyReceiver, message_chain_id
from chatcli.errors import CryptoError, UsageError

if TYPE_CHECKING:
    pass

from chatcli.client.groups.core import ACTIVE, JOINING, LEFT, REMOVED, GroupCore

MAX_PENDING = 5000


class GroupInbox(GroupCore):
    """What arriving group messages do (inside the client's receive transaction)."""

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
            advice = (f"if you restored this identity from a backup, ask one of the group's admins "
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
        if not isinstance(create, wire.CreateOp):
            raise wire.InvalidGroupMessage("A group invitation does not start with its creation.")
        events: list[Event] = []
        group = gdb.Group.get_or_none(gdb.Group.group_id == invite.group_id)
        if group is None:
            name = self._unique_group_name(create.name)
            group = gdb.Group.create(
                group_id=invite.group_id, name=name, creator_name=create.name,
                admin=author, status=JOINING,
                own_cap_sealed=self.sealer.seal(os.urandom(32), "group.own_cap",
                                                gdb.group_row(invite.group_id)),
                created_at=now_ms())
            text = f"{contact.name} added you to the group {create.name!r}"
            if name != create.name:
                text += (f"; it is called {name!r} here because {create.name!r} is already "
                         "the name of one of your contacts or groups")
            events.append(NoticeEvent(text + ".", contact=contact.name))
        elif group.admin != author:
            raise wire.InvalidGroupMessage("A group invitation names another creation.")
        elif group.status == ACTIVE:
            return self._on_ops(group, sender, invite.ops)
        elif group.status in (LEFT, REMOVED):
            group.status = JOINING
            group.own_cap_sealed = self.sealer.seal(os.urandom(32), "group.own_cap",
                                                    gdb.group_row(group.group_id))
            group.own_cap_registered = False
            group.save()
            events.append(NoticeEvent(f"{contact.name} added you to the group {group.name} "
                                      "again.", contact=contact.name))
        events.extend(self._store_ops(group, invite.ops))
        events.extend(self._accept_invitation(group, inviter=sender.raw))
        return events

    def _accept_invitation(self, group: gdb.Group, inviter: bytes | None = None
                           ) -> list[Event]:
        """A joining member whose invitation (by an admin) has arrived accepts it:
        its own signed record goes to every member at once, so it can send and
        receive without waiting for anyone (``docs/protocol.md``, "Joining")."""
        state = self._membership(group)
        if not state.is_invited(self.me):
            if state.is_member(self.me):
                return self._reconcile(group, state, state.members())
            return []  # the invitation itself is still on its way
        if inviter is not None and not state.is_admin(inviter):
            raise wire.InvalidGroupMessage("A group invitation does not come from an admin.")
        since = state.since(self.me)
        assert since is not None
        before = state.members()
        signed = self._add_op(group, wire.AcceptOp(since=since,
                                                   record=self._own_record(group)))
        state = self._membership(group)
        self._send_ops_to_members(group, state, [signed])
        return self._reconcile(group, state, before)

    def _on_join(self, group: gdb.Group, sender: IdentityPublicKey, join: wire.Join
                 ) -> list[Event]:
        """An older client's answer to an invitation: an admin vouches for its record
        with an ``add`` (newer clients sign their own ``accept``)."""
        if group.status != ACTIVE:
            return []
        before = self._membership(group)
        if not before.is_admin(self.me):
            return []
        if before.is_member(sender.raw) and before.record(sender.raw) == wire.encode(
                join.record):
            return []  # a repeated join
        if not (before.is_invited(sender.raw) or before.is_member(sender.raw)) or \
                join.record.identity != sender.raw:
            return [NoticeEvent(f"Someone who was not invited tried to join the group "
                                f"{group.name}; refused.", warning=True)]
        sessions.verify_restore_prekey(sender, join.record.restore_prekey,
                                       join.record.restore_prekey_signature)
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
        self._check_accepts(group, state, before)
        self._renewed(group, before, state)
        events.extend(self._profile_notice(group, before, state))
        if before.is_admin(self.me) != state.is_admin(self.me) and state.is_member(self.me):
            events.append(NoticeEvent(
                f"You are now an admin of the group {group.name}." if state.is_admin(self.me)
                else f"You are no longer an admin of the group {group.name}."))
        if group.status == JOINING:
            return events + self._accept_invitation(group)
        # Everything reaches the admins, which pass it on to every member with their
        # next flush (_broadcast_ops), so that a member added meanwhile learns it too.
        events.extend(self._reconcile(group, state, before.members()))
        return events

    def _check_accepts(self, group: gdb.Group, state: Membership, before: Membership
                       ) -> None:
        """A member's own record must carry a restore prekey it signed: checked
        before its record is used (a bad one is a refused message)."""
        for member in state.members() - {self.me}:
            raw = state.record(member)
            if raw is not None and raw != before.record(member):
                record = wire.decode_record(raw)
                sessions.verify_restore_prekey(IdentityPublicKey.from_bytes(member),
                                               record.restore_prekey,
                                               record.restore_prekey_signature)

    def _profile_notice(self, group: gdb.Group, before: Membership, state: Membership
                        ) -> list[Event]:
        if state.profile() == before.profile() or state.profile() is None:
            return []
        profile = wire.decode_profile(state.profile() or b"")
        return [NoticeEvent(f"The profile of the group {group.name} changed: "
                            f"{profile.name!r}.")]

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
        stored = gdb.GroupMessage.create(
            uuid=content.id, group=group, sender=row.sender, outgoing=False,
            text_sealed=self.sealer.seal_text(content.text, "group.message_text",
                                              content.id),
            sent_at=content.sent_at, received_at=received_at)
        if content.attachment is not None:
            gdb.store_attachment(self.sealer, stored, content.attachment)
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
                "If you restored this identity from a backup, ask one of the group's admins to add "
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
        events.extend(self._admin_role(group, state))
        self._ensure_sender_key(group, state)
        events.extend(self._retry_pending())
        return events

    def _admin_role(self, group: gdb.Group, state: Membership) -> list[Event]:
        """Keep the local admin flag; sign the recovery a majority voted for."""
        events: list[Event] = []
        if not state.is_admin(self.me) and len(state.votes_for(self.me)) * 2 > len(
                state.members()):
            votes = [data for data in self._ops(group)
                     if isinstance((opened := wire.open_op(data, group.group_id,
                                                           verify=False))[1], wire.VoteOp)
                     and opened[1].candidate == self.me and state.is_member(opened[0])]
            recover = wire.RecoverOp(seq=state.next_seq, candidate=self.me, votes=votes)
            trial = state.copy()
            trial.apply(wire.to_membership_op(self.me, recover, group.admin,
                                              group_id=group.group_id, verify=False))
            if trial.is_admin(self.me):  # else the votes are stale: nothing is signed
                self._add_op(group, recover)
                state = self._membership(group)
                events.append(NoticeEvent(f"A majority of the members of {group.name} made "
                                          "you an admin."))
        if group.is_admin != state.is_admin(self.me):
            group.is_admin = state.is_admin(self.me)
            group.save()
        return events

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
