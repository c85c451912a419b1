"""Cross-process wake-ups and presence over PostgreSQL LISTEN/NOTIFY.

Two hubs with different origins stand for two relay processes; they talk
through a real PostgreSQL database of their own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

import pytest
import trio

from chatcli.protocol import frames
from chatcli.relay.notify import MeshPresence, PgHub, pack_events
from chatcli.relay.store.base import NewMessage
from chatcli.relay.store.postgres import (
    PostgresStore,
    StoreUnavailable,
    decode_wakeups,
    encode_wakeups,
)
from tests.relay import pgutil

NOW = 1_700_000_000_000


class Target:
    """Records wake-ups, as the relay's router would act on them."""

    def __init__(self) -> None:
        self.woken: list[tuple[bytes, int | None]] = []
        self.owned: set[bytes] = set()
        self.event = trio.Event()

    def wake_from(self, mailbox: bytes, first_id: int | None) -> None:
        self.woken.append((mailbox, first_id))
        self.event.set()

    def mailboxes(self) -> Iterable[bytes]:
        return self.owned

    def mailbox_deleted(self, mailbox: bytes) -> None:
        self.owned.discard(mailbox)


class Sink:
    def __init__(self) -> None:
        self.entries: list[frames.PresenceEntry] = []

    def presence_changed(self, entry: frames.PresenceEntry) -> None:
        self.entries.append(entry)


async def wait_for(predicate: Callable[[], object], seconds: float = 5.0) -> None:
    """Poll until ``predicate()`` holds (state changed by other tasks or processes)."""
    for _ in range(int(seconds / 0.01)):
        if predicate():
            return
        await trio.sleep(0.01)
    raise AssertionError("condition not reached in time")


def test_wakeup_payloads_round_trip_and_split() -> None:
    ranges = {os.urandom(16): (i, i + 5) for i in range(400)}
    payloads = encode_wakeups("123-abc", ranges)
    assert len(payloads) > 1 and all(len(p) <= 8000 for p in payloads)
    merged: dict[bytes, tuple[int, int]] = {}
    for payload in payloads:
        origin, part = decode_wakeups(payload)
        assert origin == "123-abc"
        merged.update(part)
    assert merged == ranges
    events = [f"o,{os.urandom(16).hex()},1,0,-" for _ in range(500)]
    packed = pack_events("o1", events)
    assert len(packed) > 1 and all(len(p) <= 8000 for p in packed)
    assert sum(len(p.split("|", 1)[1].split(";")) for p in packed) == 500


def test_mesh_presence_replica_and_expiry() -> None:
    sent: list[str] = []
    mesh = MeshPresence(sent.append)
    sink = Sink()
    mailbox = os.urandom(16)
    mesh.subscribe(sink, mailbox, os.urandom(32))
    mesh.on_event("p2", f"o,{mailbox.hex()},1,0,-", 100.0)
    assert mesh.is_online(mailbox)
    assert sink.entries[-1] == frames.PresenceEntry(mailbox, True, None)
    mesh.connected(mailbox, False)       # also here: no second "online"
    assert len(sink.entries) == 1
    assert sent[-1] == f"o,{mailbox.hex()},1,0,-"
    assert mesh.disconnected(mailbox, 5)   # last here, still online at p2
    assert len(sink.entries) == 1 and mesh.is_online(mailbox)
    mesh.on_event("p3", "b", 105.0)
    assert mesh.expire(111.0, 10.0) == ["p2"]   # p2 silent for 11 s: gone
    assert not mesh.is_online(mailbox)
    assert sink.entries[-1] == frames.PresenceEntry(mailbox, False, 100_000)
    assert mesh.processes() == ["p3"]
    mesh.on_event("p3", "s", 112.0)          # a sync request is answered
    mesh.connected(mailbox, True)
    sent.clear()
    mesh.on_event("p3", "s", 113.0)
    assert sent == [f"o,{mailbox.hex()},1,1,-"]


async def test_two_hubs_wakeups_and_presence(pg_database: tuple[str, str]) -> None:
    name, url = pg_database
    store_a = PostgresStore(url, origin="proc-a")
    store_a.open(NOW)
    mailbox = os.urandom(16)
    store_a.create_mailbox(mailbox, os.urandom(32), NOW)
    hub_a = PgHub(url, "proc-a", heartbeat=0.2, expiry=2.0)
    hub_b = PgHub(url, "proc-b", heartbeat=0.2, expiry=2.0)
    target_a, target_b = Target(), Target()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(hub_a.run, target_a)
            await nursery.start(hub_b.run, target_b)

            # A deposit committed by process A wakes process B, not A itself.
            ids = await trio.to_thread.run_sync(
                store_a.insert_messages, [NewMessage(mailbox, b"x", NOW)] * 3)
            await wait_for(lambda: target_b.woken)
            assert target_b.woken == [(mailbox, ids[0])]
            assert target_a.woken == []

            # Rolled back: no wake-up.
            def rolled_back() -> None:
                try:
                    with store_a.transaction():
                        store_a.insert_messages([NewMessage(mailbox, b"y", NOW)])
                        raise RuntimeError
                except RuntimeError:
                    pass

            await trio.to_thread.run_sync(rolled_back)
            await trio.sleep(0.3)
            assert len(target_b.woken) == 1

            # Presence: a watcher on B sees A's owner come and go.
            sink = Sink()
            hub_b.presence.subscribe(sink, mailbox, os.urandom(32))
            hub_a.presence.connected(mailbox, False)
            await wait_for(lambda: hub_b.presence.is_online(mailbox))
            assert sink.entries == [frames.PresenceEntry(mailbox, True, None)]
            hub_a.presence.disconnected(mailbox, NOW + 5)
            await wait_for(lambda: not hub_b.presence.is_online(mailbox))
            assert sink.entries[-1] == frames.PresenceEntry(mailbox, False, NOW + 5)

            # The listener's connection is killed (as by a PostgreSQL restart):
            # it reconnects, re-reads the owned mailboxes, and wake-ups go on.
            target_b.owned.add(mailbox)
            hub_a.presence.connected(mailbox, False)
            await wait_for(lambda: hub_b.presence.is_online(mailbox))
            reconnects = hub_b.reconnects
            assert pgutil.terminate_backends(name) >= 2
            await wait_for(lambda: hub_b.reconnects > reconnects and hub_b.connected)
            assert (mailbox, None) in target_b.woken
            # ... and its replica of A's presence is rebuilt by a sync.
            await wait_for(lambda: hub_b.presence.is_online(mailbox))
            target_b.woken.clear()
            # The store's connection was killed too: one "try again", then it reconnects.
            with pytest.raises(StoreUnavailable):
                await trio.to_thread.run_sync(
                    store_a.insert_messages, [NewMessage(mailbox, b"z", NOW)])
            ids = await trio.to_thread.run_sync(
                store_a.insert_messages, [NewMessage(mailbox, b"z", NOW)])
            await wait_for(lambda: target_b.woken)
            assert target_b.woken == [(mailbox, ids[0])]
            nursery.cancel_scope.cancel()
    finally:
        store_a.close()


async def test_stopped_process_goes_offline(pg_database: tuple[str, str]) -> None:
    _name, url = pg_database
    mailbox = os.urandom(16)
    hub_b = PgHub(url, "proc-b", heartbeat=0.2, expiry=1.0)
    target_b = Target()
    async with trio.open_nursery() as outer:
        await outer.start(hub_b.run, target_b)
        sink = Sink()
        hub_b.presence.subscribe(sink, mailbox, os.urandom(32))
        async with trio.open_nursery() as inner:
            hub_a = PgHub(url, "proc-a", heartbeat=0.2, expiry=1.0)
            await inner.start(hub_a.run, Target())
            hub_a.presence.connected(mailbox, False)
            await wait_for(lambda: hub_b.presence.is_online(mailbox))
            inner.cancel_scope.cancel()   # graceful stop: announces "x"
        await wait_for(lambda: not hub_b.presence.is_online(mailbox))
        assert sink.entries[-1].online is False
        outer.cancel_scope.cancel()
