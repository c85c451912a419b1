"""`chatcli chat GROUP`: the chat session with a group, on the in-memory relay."""

from __future__ import annotations

from pathlib import Path

import trio

from chatcli.client.chat_ui import ChatSession, resolve_target
from chatcli.client.groups.service import GroupService
from chatcli.client.service import MessageEvent
from tests.client.conftest import drain, make_client, pair
from tests.client.fakerelay import FakeRelay
from tests.client.test_chat_session import RecordingView, Running, wait_for


async def test_group_chat(tmp_path: Path, relay: FakeRelay, nursery: trio.Nursery) -> None:
    alice = await make_client(tmp_path, "alice", relay)
    bob = await make_client(tmp_path, "bob", relay)
    carol = await make_client(tmp_path, "carol", relay)
    await pair(alice, bob, "bob", "alice")
    await pair(alice, carol, "carol", "alice")
    GroupService(alice).create("team", ["bob", "carol"])
    async with alice.online():
        await alice.flush_outbox()
    for client in (bob, carol, alice, bob, carol, alice):
        await drain(client)
    async with carol.online():
        await GroupService(carol).send_text("team", "earlier from carol")

    target = resolve_target(bob, "team")
    assert target.kind == "group"
    view = RecordingView()
    session = ChatSession(bob, target, view, retry_max=0.3)
    running = Running(session, view)
    nursery.start_soon(running.run)
    await wait_for(lambda: session.status.connection == "online")
    assert view.has("group team")
    # Carol is not bob's contact: marked, with the start of her fingerprint.
    short = " ".join(carol.identity.public.fingerprint().split()[:2])
    await wait_for(lambda: view.has(f"~carol [{short}]: earlier from carol"))

    async with alice.online():
        await GroupService(alice).send_text("team", "live from alice")
    await wait_for(lambda: view.has("alice: live from alice"))

    session.submit("hello from bob's chat")
    await wait_for(lambda: view.has("me: hello from bob's chat"))
    await wait_for(lambda: view.has("at team's relay") or session.status.pending == 0)
    await running.stop()
    got = [(e.group, e.contact, e.text) for e in await drain(carol)
           if isinstance(e, MessageEvent)]
    assert ("team", "bob", "hello from bob's chat") in got
    for client in (alice, bob, carol):
        client.close()
