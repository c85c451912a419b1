"""Group deposits: the queued ones cut into Deposit frames (by count and
bytes), and what each answer means for them. The relay connection is the
shell's (:mod:`chatcli.client.groups.service`)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from chatcli.client.groups import models as gdb
from chatcli.protocol import codes, frames

if TYPE_CHECKING:
    pass

from chatcli.client.groups.core import GroupCore

FRAME_BUDGET = 512 * 1024  # bytes of payload per Deposit frame (the limit is 1 MiB)
PERMANENT_ERRORS = frozenset({codes.BAD_CAPABILITY, codes.UNKNOWN_MAILBOX})


def _cap_hash(capability: bytes) -> bytes:
    return hashlib.sha256(capability).digest()


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
