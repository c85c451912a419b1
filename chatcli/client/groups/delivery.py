"""Group deposits: the queued ones cut into Deposit frames (by count and
bytes), and what each answer means for them. The relay connection is the
shell's (:mod:`chatcli.client.groups.service`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from chatcli.client.capabilities import cap_hash
from chatcli.client.groups import models as gdb
from chatcli.client.groups.core import ACTIVE, JOINING, LEFT, REMOVED, GroupCore, broadcast_done
from chatcli.protocol import codes, frames

if TYPE_CHECKING:
    from chatcli.client.core import ClientCore

FRAME_BUDGET = 512 * 1024  # bytes of payload per Deposit frame (the limit is 1 MiB)
PERMANENT_ERRORS = frozenset({codes.BAD_CAPABILITY, codes.UNKNOWN_MAILBOX})


class GroupDelivery(GroupCore):
    """Deposit batches and their results."""

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

    def _deposits_by_relay(self) -> dict[str, list[gdb.GroupOutbox]]:
        """The admin's operations owed to members queued first, then every queued
        deposit, in order, grouped by relay."""
        with self.store.write(), gdb.bound(self.store):
            done = self._broadcast_ops()
        broadcast_done(self.store, done)
        with self.store.read(), gdb.bound(self.store):
            rows = list(gdb.GroupOutbox.select().order_by(gdb.GroupOutbox.id))
        by_relay: dict[str, list[gdb.GroupOutbox]] = {}
        for row in rows:
            by_relay.setdefault(row.relay_url, []).append(row)
        return by_relay

    def _record_unreachable(self, rows: list[gdb.GroupOutbox], reason: str) -> None:
        """Their relay could not be reached: one attempt more."""
        with self.store.write(), gdb.bound(self.store):
            gdb.GroupOutbox.update(attempts=gdb.GroupOutbox.attempts + 1,
                                   last_error=reason[:500]).where(
                gdb.GroupOutbox.id.in_([r.id for r in rows])).execute()

    def _first_waiting(self, message_id: str | None) -> gdb.GroupOutbox | None:
        """The first queued deposit (of ``message_id``, when given), if any."""
        with self.store.read(), gdb.bound(self.store):
            query = gdb.GroupOutbox.select()
            if message_id is not None:
                query = query.where(gdb.GroupOutbox.message_uuid == message_id)
            first: gdb.GroupOutbox | None = query.first()
            return first

    def _copies_stored(self, message_id: str) -> int:
        """How many members' relays stored an own group message."""
        with self.store.read(), gdb.bound(self.store):
            return int(gdb.GroupMessage.get(gdb.GroupMessage.uuid == message_id).stored)

    # ------------------------------------------------------------ own capabilities

    def _caps_to_sync(self) -> tuple[list[gdb.Group], list[gdb.Group]]:
        """Groups whose own capability the relay must register (joined) and
        those whose capability it must revoke (left or removed)."""
        with self.store.read(), gdb.bound(self.store):
            todo = list(gdb.Group.select().where(
                gdb.Group.own_cap_registered == (gdb.Group.status.in_([LEFT, REMOVED]))))
        return ([g for g in todo if g.status in (ACTIVE, JOINING)],
                [g for g in todo if g.status in (LEFT, REMOVED)])

    def _cap_hashes(self, groups: list[gdb.Group]) -> list[bytes]:
        return [cap_hash(self.sealer.open(g.own_cap_sealed, "group.own_cap",
                                           gdb.group_row(g.group_id)))
                for g in groups]

    def _caps_synced(self, groups: list[gdb.Group], *, registered: bool) -> None:
        with self.store.write(), gdb.bound(self.store):
            gdb.Group.update(own_cap_registered=registered).where(
                gdb.Group.id.in_([g.id for g in groups])).execute()


def groups_idle(client: ClientCore) -> bool:
    """Whether a group flush has nothing to do: no group this identity is an
    admin of (it may owe members operations), nothing queued, no capability to
    register or revoke."""
    with client.store.read():
        if not gdb.has_tables(client.store):
            return True
        with gdb.bound(client.store):
            admin = gdb.Group.select().where(gdb.Group.is_admin == True,  # noqa: E712
                                             gdb.Group.status == ACTIVE).exists()
            return bool(not admin and not gdb.GroupOutbox.select().exists() and not (
                gdb.Group.select().where(gdb.Group.own_cap_registered == (
                    gdb.Group.status.in_([LEFT, REMOVED]))).exists()))
