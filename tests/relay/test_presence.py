from __future__ import annotations

import os

from chatcli.protocol import frames
from chatcli.relay.presence import LocalPresence, entry_for
from chatcli.relay.store.base import PresenceRecord


class Sink:
    def __init__(self) -> None:
        self.entries: list[frames.PresenceEntry] = []

    def presence_changed(self, entry: frames.PresenceEntry) -> None:
        self.entries.append(entry)


def test_online_offline_pushes_to_watchers() -> None:
    hub, sink, mb = LocalPresence(), Sink(), os.urandom(16)
    hub.subscribe(sink, mb, b"c")
    hub.connected(mb, hidden=False)
    hub.connected(mb, hidden=False)      # a second device: no change
    assert hub.is_online(mb)
    assert not hub.disconnected(mb, 100)
    assert hub.disconnected(mb, 200)
    assert sink.entries == [frames.PresenceEntry(mb, True, None),
                            frames.PresenceEntry(mb, False, 200)]
    assert hub.counts() == (0, 1)


def test_hidden_owner_is_invisible() -> None:
    hub, sink, mb = LocalPresence(), Sink(), os.urandom(16)
    hub.subscribe(sink, mb, b"c")
    hub.connected(mb, hidden=True)
    hub.disconnected(mb, 5)
    assert sink.entries == []
    hub.connected(mb, hidden=False)
    hub.set_hidden(mb, True, 5)
    assert sink.entries[-1] == frames.PresenceEntry(mb, None, None)
    hub.set_hidden(mb, False, 5)
    assert sink.entries[-1] == frames.PresenceEntry(mb, True, None)


def test_revoke_and_forget_end_subscriptions() -> None:
    hub, a, b, mb = LocalPresence(), Sink(), Sink(), os.urandom(16)
    hub.subscribe(a, mb, b"cap-a")
    hub.subscribe(b, mb, b"cap-b")
    hub.revoke(mb, {b"cap-a"})
    assert a.entries == [frames.PresenceEntry(mb, None, None)]
    hub.connected(mb, hidden=False)
    assert len(a.entries) == 1 and len(b.entries) == 1
    hub.forget(mb)
    assert b.entries[-1] == frames.PresenceEntry(mb, None, None)
    assert hub.counts()[1] == 0


def test_unsubscribe() -> None:
    hub, sink, mb = LocalPresence(), Sink(), os.urandom(16)
    hub.subscribe(sink, mb, b"c")
    hub.unsubscribe(sink, {mb})
    hub.connected(mb, hidden=False)
    assert sink.entries == [] and hub.counts() == (1, 0)


def test_entry_for() -> None:
    mb = os.urandom(16)
    seen = PresenceRecord(hidden=False, last_seen=42)
    assert entry_for(mb, valid=True, online=False, record=seen) == frames.PresenceEntry(
        mb, False, 42)
    assert entry_for(mb, valid=True, online=True, record=seen) == frames.PresenceEntry(
        mb, True, None)
    assert entry_for(mb, valid=False, online=True, record=seen).online is None
    assert entry_for(mb, valid=True, online=True,
                     record=PresenceRecord(True, 42)).last_seen is None
