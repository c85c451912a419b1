"""What the group commands show: the list of groups, members (with safety
numbers and verification), invitations, history and send states."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chatcli.client import models as db
from chatcli.client.groups import models as gdb
from chatcli.crypto.keys import IdentityPublicKey
from chatcli.errors import UsageError

if TYPE_CHECKING:
    from chatcli.client.core import ClientCore
    pass

from chatcli.client.groups.core import ACTIVE, GroupCore


@dataclass(frozen=True)
class MemberInfo:
    identity: bytes
    name: str             # contact name, or the name the member announced
    contact: str | None   # local contact name when the member is a contact
    fingerprint: str
    admin: bool
    me: bool
    verified: bool
    creator: bool = False

    @property
    def role(self) -> str:
        return "creator" if self.creator else "admin" if self.admin else "member"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "contact": self.contact, "fingerprint": self.fingerprint,
                "admin": self.admin, "me": self.me, "verified": self.verified,
                "role": self.role}


class GroupQueries(GroupCore):
    """Reading groups (and marking a member verified)."""

    def groups(self) -> list[dict[str, Any]]:
        with self.store.read(), gdb.bound(self.store):
            out = []
            for group in gdb.Group.select().order_by(gdb.Group.name):
                state = self._membership(group)
                admin, _ = self._label(group.admin, state)
                out.append({"name": group.name, "creator_name": group.creator_name,
                            "admin": admin, "is_admin": state.is_admin(self.me),
                            "status": group.status, "members": len(state.members()),
                            "invited": len(state.invitees()),
                            "title": self._profile(group, state).name})
            return out

    def info(self, name: str) -> dict[str, Any]:
        """The group's profile and roles (``group info``)."""
        with self.store.read(), gdb.bound(self.store):
            group = self._group(name)
            state = self._membership(group)
            profile = self._profile(group, state)
            creator, _ = self._label(group.admin, state)
            return {
                "name": group.name, "title": profile.name,
                "description": profile.description, "avatar": profile.avatar,
                "creator": creator, "status": group.status,
                "admins": sorted(self._label(a, state)[0] for a in state.admins()),
                "is_admin": state.is_admin(self.me), "members": len(state.members()),
                "invited": len(state.invitees()),
                "profile_set": state.profile() is not None,
            }

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
                    admin=state.is_admin(member), me=member == self.me, verified=verified,
                    creator=member == group.admin))
            return sorted(out, key=lambda i: (not i.me, not i.admin, i.name))

    def invited(self, name: str) -> list[str]:
        with self.store.read(), gdb.bound(self.store):
            group = self._group(name)
            state = self._membership(group)
            return sorted(self._label(member, state)[0] for member in state.invitees())

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

    def history(self, name: str, limit: int = 50, *, before: int | None = None
                ) -> list[dict[str, Any]]:
        with self.store.read(), gdb.bound(self.store):
            group = self._group(name)
            state = self._membership(group)
            query = gdb.GroupMessage.select().where(gdb.GroupMessage.group == group)
            if before is not None:
                query = query.where(gdb.GroupMessage.sent_at < before)
            rows = list(query.order_by(gdb.GroupMessage.sent_at.desc(),
                                       gdb.GroupMessage.id.desc()).limit(limit))
            files = gdb.attachments(self.sealer, rows)
            out: list[dict[str, Any]] = []
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
                if row.id in files:
                    out[-1]["attachment"] = files[row.id]
            return out


def group_of_member(client: ClientCore, who: str) -> str | None:
    """The first active group (by name) with a member called ``who`` who is not a
    contact, so that ``chatcli verify WHO`` can show its safety number."""
    with client.store.read():
        if not gdb.has_tables(client.store) or db.Contact.get_or_none(
                db.Contact.name == who) is not None:
            return None
        with gdb.bound(client.store):
            names = [g.name for g in gdb.Group.select().where(gdb.Group.status == ACTIVE)
                     .order_by(gdb.Group.name)]
    service = GroupQueries(client)
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


def group_message_states(client: ClientCore, ids: list[str]) -> dict[str, str]:
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


def group_copies_stored(client: ClientCore, message_id: str) -> tuple[int, int] | None:
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


def member_relay(client: ClientCore, group_name: str, fingerprint: str) -> str | None:
    """The relay of the member of ``group_name`` with this identity fingerprint
    (from the group's signed member records), or None when there is no such member."""
    service = GroupQueries(client)
    with client.store.read(), gdb.bound(client.store):
        try:
            state = service._membership(service._group(group_name))
        except UsageError:
            return None
        for member in state.members():
            if IdentityPublicKey.from_bytes(member).fingerprint() == fingerprint:
                return service._record(state, member).relay_url
    return None
