"""Groups in a key backup (``chatcli keys export``): enough to rejoin them.

A backup carries, per active group, its id, names, creator and signed
membership operations; not the sessions, sender keys or history. After
``keys import`` the restored member renews its own member record (a new
generation of its ``accept``) and sends it to every member, and keys are
exchanged again (``docs/protocol.md``, part 3,
"Groups", joining again).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import msgspec

from chatcli.client.groups import models as gdb
from chatcli.client.groups import wire
from chatcli.client.groups.core import ACTIVE, JOINING, GroupCore
from chatcli.client.groups.inbox import GroupInbox
from chatcli.client.store import now_ms

if TYPE_CHECKING:
    from chatcli.client.core import ClientCore


class BackupGroup(msgspec.Struct, array_like=True, frozen=True):
    group_id: bytes
    name: str
    creator_name: str
    admin: bytes
    ops: list[bytes]


__all__ = ["BackupGroup", "export_groups", "restore_groups"]


def export_groups(client: ClientCore) -> list[BackupGroup]:
    """The active groups, for a key backup (inside or outside a transaction)."""
    store = client.store
    if not gdb.has_tables(store):
        return []
    service = GroupCore(client)
    with gdb.bound(store):
        return [BackupGroup(group_id=g.group_id, name=g.name, creator_name=g.creator_name,
                            admin=g.admin, ops=service._ops(g))
                for g in gdb.Group.select().where(gdb.Group.status == ACTIVE)
                .order_by(gdb.Group.id)]


def restore_groups(client: ClientCore, groups: list[BackupGroup]) -> None:
    """After ``keys import`` (inside its write transaction): take the groups back
    and rejoin each with a new member record (new restore prekey and capability).

    It renews its record itself and tells every member; every member then gets
    this member's new sender key and sends it theirs (:meth:`GroupService._renewed`)."""
    if not groups:
        return
    service = GroupInbox(client)
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
            # Its own record renewed (a new generation of its accept), sent to
            # every member at once: nobody needs to be online for it.
            generation = state.join_generation(service.me)
            since = state.since(service.me)
            assert since is not None
            signed = service._add_op(group, wire.AcceptOp(
                since=since, record=service._own_record(group),
                generation=0 if generation is None else generation + 1))
            renewed = service._membership(group)
            service._send_ops_to_members(group, renewed, [signed])
            service._reconcile(group, renewed, renewed.members())
