"""Group chats: :class:`GroupService`, the groups of an unlocked identity, and
the network shell over the group core (``docs/protocol.md``, part 3, "Groups").

:class:`GroupService` wraps an unlocked identity
(:class:`~chatcli.client.core.ClientCore`, in practice a
:class:`~chatcli.client.service.ChatClient`). It is made of the synchronous
group core, one module per concern: :mod:`~chatcli.client.groups.core`
(rows, membership, member records, sender key, queueing),
:mod:`~chatcli.client.groups.inbox` (receiving, inside the client's receive
transaction), :mod:`~chatcli.client.groups.commands` (create, add, remove,
leave, send), :mod:`~chatcli.client.groups.queries` (what the commands
show) and :mod:`~chatcli.client.groups.delivery` (deposit batches and
their answers). Its synchronous methods run inside one ``BEGIN IMMEDIATE``
transaction each; the ``async`` ones, here, need the client to be online.

* An admin (the creator, or a member an admin promoted) signs an
  ``invitation`` naming a contact and sends it an :class:`~wire.Invite` over a
  pairwise session; the contact signs its own ``accept`` (its member record:
  address, a deposit capability it issued for the group, its signed restore
  prekey) and sends it to every member at once, so it is a member without
  waiting for anyone; admins pass every operation on to every member.
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

from typing import TYPE_CHECKING

import trio

from chatcli.client import messages as m
from chatcli.client import prekeys
from chatcli.client.events import GroupMessageEvent
from chatcli.client.groups.commands import GroupCommands, SendReport
from chatcli.client.groups.delivery import GroupDelivery, groups_idle
from chatcli.client.groups.models import is_group, name_in_use
from chatcli.client.groups.queries import (
    GroupQueries,
    MemberInfo,
    group_copies_stored,
    group_message_states,
    group_of_member,
)
from chatcli.client.store import now_ms
from chatcli.errors import RelayError
from chatcli.protocol import frames

if TYPE_CHECKING:
    from chatcli.client.core import ClientCore
    pass

__all__ = [
    "GroupMessageEvent", "GroupService", "MemberInfo", "SendReport", "flush_groups",
    "group_copies_stored", "group_message_states", "group_of_member", "is_group",
    "name_in_use",
]


class GroupService(GroupCommands, GroupQueries, GroupDelivery):
    """The groups of one unlocked identity (see the module docstring). Cheap to
    make: the receive path makes one per group deposit. The ``async`` methods
    are the I/O shell; the rest is the synchronous group core."""

    async def flush(self) -> dict[str, str]:
        """Register own group capabilities, then deposit everything queued,
        batched per relay. Returns unreachable relays; never raises RelayError."""
        async with self.client.delivering():
            return await self._flush()

    async def _flush(self) -> dict[str, str]:
        unreachable: dict[str, str] = {}
        try:
            await self._sync_caps()
        except RelayError as exc:
            unreachable[self.client.relay_url] = str(exc)
            return unreachable
        by_relay = self._deposits_by_relay()
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
                self._record_unreachable(items, str(exc))
        return unreachable

    async def _sync_caps(self) -> None:
        """CapAdd the capabilities of groups joined; CapRevoke those of groups left."""
        add, revoke = self._caps_to_sync()
        if not add and not revoke:
            return
        conn = await self.client.own_relay()
        for groups, frame_type, registered in ((add, frames.CapAdd, True),
                                               (revoke, frames.CapRevoke, False)):
            for start in range(0, len(groups), frames.MAX_BATCH):
                chunk = groups[start:start + frames.MAX_BATCH]
                hashes = self._cap_hashes(chunk)
                await conn.request(lambda req, h=hashes, f=frame_type: f(  # type: ignore[misc]
                    req=req, cap_hashes=h))
                self._caps_synced(chunk, registered=registered)

    async def deliver(self, *, message_id: str | None = None, time_limit: float = 20.0) -> None:
        """Retry until nothing (or nothing of ``message_id``) waits; RelayError otherwise."""
        delay = 0.25
        last = "a member's relay did not store it in time"
        with trio.move_on_after(time_limit):
            while True:
                unreachable = await self.flush()
                failing = self._first_waiting(message_id)
                if failing is None:
                    return
                if unreachable:
                    last = next(iter(unreachable.values())).rstrip(".")
                elif failing.last_error:
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
        report.stored = self._copies_stored(report.id)
        return report


async def flush_groups(client: ClientCore) -> None:
    """Deliver queued group deposits (best effort; the client's outbox flush calls
    it). First applies the signed prekey schedule (:func:`prekeys.rotate`)."""
    prekeys.apply_schedule(client, now=now_ms())
    if not groups_idle(client):
        await GroupService(client).flush()
