"""Group commands that change things: create, add, remove, leave, and queueing a
group text (encrypted once with the own sender key, sealed to each member)."""

from __future__ import annotations

import os
import uuid as uuidlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from chatcli.client import messages as m
from chatcli.client import models as db
from chatcli.client.groups import models as gdb
from chatcli.client.groups import wire
from chatcli.client.groups.models import name_in_use
from chatcli.client.names import validate_name
from chatcli.client.store import now_ms
from chatcli.errors import UsageError

if TYPE_CHECKING:
    pass

from chatcli.client.groups.core import ACTIVE, JOINING, ops_chunks
from chatcli.client.groups.inbox import GroupInbox
from chatcli.client.groups.membership import Membership, Outcome


@dataclass
class SendReport:
    """What sending one group message achieved."""

    id: str
    recipients: int  # deposits made: one per other member
    stored: int = 0  # deposits the members' relays stored


class GroupCommands(GroupInbox):
    """Changing groups and queueing group texts."""

    def create(self, name: str, contact_names: list[str]) -> gdb.Group:
        """Create a group (this identity is its admin) and queue the invitations."""
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
        """Sign the invitation (an ordered operation naming the contact) unless one
        is pending, and send the contact everything known, creation first."""
        if contact.identity == self.me:
            raise UsageError("You cannot invite yourself.")
        state = self._membership(group)
        # A current member is invited again when it lost its state (restored
        # without its groups): a new instance, a member again once it accepts.
        if not state.is_invited(contact.identity):
            self._add_op(group, wire.InvitationOp(seq=state.next_seq,
                                                  member=contact.identity))
        ops = self._ops(group)
        creation = next(op for op in ops if isinstance(
            wire.open_op(op, group.group_id, verify=False)[1], wire.CreateOp))
        ops = [creation, *(op for op in ops if op != creation)]
        record = self._contact_record(contact)
        first = ops_chunks(ops)[0]
        self._send_direct(record, wire.Invite(group_id=group.group_id, ops=first))
        self._send_ops(record, group, ops[len(first):])

    def add(self, name: str, contact_name: str) -> None:
        with self.store.write(), gdb.bound(self.store):
            group = self._group(name)
            before = self._require_admin(group, "invite members")
            self._invite(group, self._invitable(contact_name))
            # A member invited again is out until it accepts: keys roll.
            self._reconcile(group, self._membership(group), before.members())

    def remove(self, name: str, who: str) -> None:
        with self.store.write(), gdb.bound(self.store):
            group = self._group(name)
            before = self._require_admin(group, "remove members")
            member = self._find_member(before, who, name, invitees=True)
            if member == self.me:
                raise UsageError("To leave a group, use `chatcli group leave`.")
            signed = self._signed_admin_op(group, before, wire.RemoveOp(
                seq=before.next_seq, member=member))
            state = self._membership(group)
            # The removed member learns of it now, the others with the broadcast;
            # an invitee not joined yet (no record) through its contact address.
            if before.record(member) is not None:
                self._send_ops(self._record(before, member), group, [signed])
            else:
                contact = db.Contact.get_or_none(db.Contact.identity == member)
                if contact is not None and not contact.blocked:
                    self._send_ops(self._contact_record(contact), group, [signed])
            self._reconcile(group, state, before.members())
            self._broadcast_ops()

    def set_admin(self, name: str, who: str, *, admin: bool = True) -> None:
        """Make a member an admin, or take the role back (``admin=False``)."""
        with self.store.write(), gdb.bound(self.store):
            group = self._group(name)
            before = self._require_admin(group, "change who the admins are")
            member = self._find_member(before, who, name)
            if admin:
                op: wire.AnyOp = wire.PromoteOp(seq=before.next_seq, member=member)
            else:
                op = wire.DemoteOp(seq=before.next_seq, member=member)
            self._signed_admin_op(group, before, op)
            state = self._membership(group)
            self._reconcile(group, state, before.members())
            self._broadcast_ops()

    def set_profile(self, name: str, *, title: str | None = None,
                    description: str | None = None, avatar: bytes | None = None,
                    clear_avatar: bool = False) -> wire.GroupProfile:
        """Set the group's profile (admins): what is not given stays. The API
        checks first that an avatar is an image (``profiles.image_kind``)."""
        if avatar is not None and len(avatar) > wire.MAX_GROUP_AVATAR:
            raise UsageError(f"The group avatar is too large: {len(avatar) // 1024} KiB, "
                             f"at most {wire.MAX_GROUP_AVATAR // 1024} KiB (scale it down, "
                             "e.g. to 128x128).")
        if title is not None and not 1 <= len(title) <= 200:
            raise UsageError("A group name has 1 to 200 characters.")
        if description is not None and len(description) > wire.MAX_DESCRIPTION:
            raise UsageError(f"A group description has at most {wire.MAX_DESCRIPTION} "
                             "characters.")
        with self.store.write(), gdb.bound(self.store):
            group = self._group(name)
            before = self._require_admin(group, "change the group's profile")
            current = self._profile(group, before)
            profile = wire.GroupProfile(
                name=title if title is not None else current.name,
                description=description if description is not None else current.description,
                avatar=None if clear_avatar else (avatar if avatar is not None
                                                  else current.avatar))
            if profile == current:
                return profile
            self._signed_admin_op(group, before, wire.ProfileOp(seq=before.next_seq,
                                                                profile=profile))
            self._broadcast_ops()
            return profile

    def _signed_admin_op(self, group: gdb.Group, before: Membership, op: wire.AnyOp) -> bytes:
        """Sign and keep an admin's ordered operation; refuse one that the rules
        would reject at its place (the reason is shown)."""
        trial = before.copy()
        result = trial.apply(wire.to_membership_op(self.me, op, group.admin,
                                                   group_id=group.group_id, verify=False))
        if result.outcome is Outcome.REJECTED:
            raise UsageError(f"Not allowed: {result.reason}.")
        return self._add_op(group, op)

    def vote_admin(self, name: str, who: str) -> None:
        """Back a member as admin; a majority of the members' votes makes it one
        (for a group whose admins are gone)."""
        with self.store.write(), gdb.bound(self.store):
            group = self._group(name)
            if group.status != ACTIVE:
                raise UsageError(f"You are not a member of {name} any more.")
            state = self._membership(group)
            member = self._find_member(state, who, name)
            if state.is_admin(member):
                raise UsageError(f"{who} is already an admin of {name}.")
            signed = self._add_op(group, wire.VoteOp(candidate=member, base=state.next_seq))
            self._send_ops_to_members(group, state, [signed])
            self._reconcile(group, self._membership(group), state.members())

    def leave(self, name: str, successor: str | None = None) -> str | None:
        """Leave the group. The last admin first hands the role over: to
        ``successor`` or else to the longest-standing member. Returns who took it."""
        with self.store.write(), gdb.bound(self.store):
            group = self._group(name)
            if group.status != ACTIVE:
                raise UsageError(f"You are not a member of {name} any more.")
            before = self._membership(group)
            since = before.since(self.me)
            assert since is not None
            others = before.members() - {self.me}
            heir: bytes | None = None
            if successor is not None:
                heir = self._find_member(before, successor, name)
                if heir == self.me:
                    raise UsageError("Name another member as your successor.")
                if not before.is_admin(self.me):
                    raise UsageError(f"Only an admin of {name} hands the role over.")
            elif before.is_admin(self.me) and not before.admins() - {self.me} and others:
                heir = min(others, key=lambda m: (before.since(m), m))
            signed: list[bytes] = []
            if heir is not None and not before.is_admin(heir):
                signed.append(self._signed_admin_op(group, before, wire.PromoteOp(
                    seq=before.next_seq, member=heir)))
            signed.append(self._add_op(group, wire.LeaveOp(member=self.me, since=since)))
            for target in others:
                self._send_ops(self._record(before, target), group, signed)
            self._reconcile(group, self._membership(group), before.members())
            return self._label(heir, before)[0] if heir is not None else None

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
                    f"You are not a member of {name} yet: your invitation has not arrived "
                    "whole; run `chatcli receive` later.")
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
            row = gdb.GroupMessage.create(
                uuid=message_id, group=group, sender=self.me, outgoing=True,
                text_sealed=self.sealer.seal_text(text, "group.message_text", message_id),
                sent_at=sent_at, recipients=len(others))
            if attachment is not None:
                gdb.store_attachment(self.sealer, row, attachment)
        return SendReport(id=message_id, recipients=len(others))
