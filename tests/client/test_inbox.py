"""The inbox decides without a relay connection and without reading the clock:
a batch of deliveries and ``now`` in; events, store changes and queued answers
out (the sans-I/O core under the Trio shell)."""

from __future__ import annotations

import time
from pathlib import Path

from chatcli.client import models as db
from chatcli.client.service import NoticeEvent
from chatcli.crypto.invite import parse_invite
from chatcli.protocol import frames
from tests.client.conftest import make_client
from tests.client.fakerelay import FakeRelay


async def test_a_batch_is_processed_offline_at_the_time_it_is_given(
        tmp_path: Path, relay: FakeRelay) -> None:
    alice = await make_client(tmp_path, "alice", relay)
    bob = await make_client(tmp_path, "bob", relay)
    carol = await make_client(tmp_path, "carol", relay)
    async with alice.online():
        for_bob = await alice.create_invite("bob", expires_in=60)
        for_carol = await alice.create_invite("carol", expires_in=60)
    async with bob.online():
        await bob.accept_invite(for_bob, "alice")
    async with carol.online():
        await carol.accept_invite(for_carol, "alice")
    # The two handshakes as the relay would push them; alice stays offline.
    queued = relay.mailboxes[bytes(alice.account().mailbox)].queue
    from_bob, from_carol = [frames.Delivered(id=relay_id, payload=payload, received_at=at)
                            for relay_id, (payload, at) in sorted(queued.items())]
    now = int(time.time())

    late = (parse_invite(for_bob, now=now).expires_at + 1) * 1000
    events = alice.process_deliveries([from_bob], now=late)
    assert [e.text for e in events if isinstance(e, NoticeEvent)] == [
        "An expired invite (bob) was used; refused."]
    in_time = (parse_invite(for_carol, now=now).expires_at - 1) * 1000
    events = alice.process_deliveries([from_carol], now=in_time)
    assert any(isinstance(e, NoticeEvent) and "carol accepted your invite" in e.text
               for e in events)
    assert alice.contact_names() == ["carol"]
    with alice.store.read():
        # The answer to carol waits in the outbox for the shell to deliver.
        assert [row.kind for row in db.Outbox.select()] == ["info"]
        assert db.Processed.get(db.Processed.relay_id == from_carol.id).processed_at == in_time
    for client in (alice, bob, carol):
        client.close()
