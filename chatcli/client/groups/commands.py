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

from chatcli.client.groups.core import ACTIVE, JOINING, OPS_PER_MESSAGE
from chatcli.client.groups.inbox import GroupInbox


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
            row = gdb.GroupMessage.create(
                uuid=message_id, group=group, sender=self.me, outgoing=True,
                text_sealed=self.sealer.seal_text(text, "group.message_text", message_id),
                sent_at=sent_at, recipients=len(others))
            if attachment is not None:
                gdb.store_attachment(self.sealer, row, attachment)
        return SendReport(id=message_id, recipients=len(others))
