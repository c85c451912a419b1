"""Sealed sender in the client: deposits (messages, receipts, group fan-out)
and presence queries travel on connections that never logged in; the owner's
connection cannot carry them even by mistake."""

from __future__ import annotations

import pytest

from chatcli.client.groups.service import GroupService
from chatcli.client.service import ChatClient, ReceiptEvent
from chatcli.protocol import LocalProtocolError, frames
from tests.client.conftest import Trio, drain, pair
from tests.client.fakerelay import FakeRelay
from tests.client.test_group_service import (
    make_group,
    send,
    settle,
    texts,
)

ANONYMOUS_FRAMES = {"Deposit", "PresenceQuery", "PresenceSubscribe"}
LOGIN_FRAMES = {"Register", "Auth"}


def check_anonymous(relay: FakeRelay) -> dict[str, int]:
    """Every anonymous frame the relay saw came on a connection that never
    logged in, before or after; returns how many of each kind it saw."""
    logged_in = {s.conn for s in relay.seen if s.frame in LOGIN_FRAMES}
    counts: dict[str, int] = {}
    for seen in relay.seen:
        if seen.frame in ANONYMOUS_FRAMES:
            assert not seen.after_login and seen.refused is None, seen
            assert seen.conn not in logged_in, seen
            counts[seen.frame] = counts.get(seen.frame, 0) + 1
    return counts


async def test_sends_receipts_and_presence_go_on_anonymous_connections(
        clients: tuple[ChatClient, ChatClient], relay: FakeRelay) -> None:
    alice, bob = clients
    await pair(alice, bob)
    async with alice.online():
        await alice.own_relay()  # the owner's connection is open meanwhile
        await alice.send_text("bob", "hello")
        seen = await alice.presence()
        subscribed = await alice.subscribe_presence(["bob"])
    assert seen["bob"].known and subscribed["bob"].known
    bob.auto_read = True
    await drain(bob)  # bob's read and delivery receipts, sent while he is logged in
    events = await drain(alice)
    assert any(isinstance(e, ReceiptEvent) for e in events)
    counts = check_anonymous(relay)
    assert counts["Deposit"] >= 4 and counts["PresenceQuery"] == 1
    assert counts["PresenceSubscribe"] == 1


async def test_group_sends_go_on_anonymous_connections(
        trio_of: Trio, relay: FakeRelay) -> None:
    alice, bob, carol = trio_of
    await make_group(alice, bob, carol)
    relay.seen.clear()
    await send(bob, "team", "from bob")
    assert await texts(carol) == [("team", "bob", "from bob")]
    await settle(alice, bob, carol, rounds=1)
    assert check_anonymous(relay)["Deposit"] >= 1  # one frame fans out to both
    assert GroupService(bob).history("team")[-1]["text"] == "from bob"


async def test_the_owner_connection_refuses_anonymous_frames(
        clients: tuple[ChatClient, ChatClient]) -> None:
    alice, bob = clients
    await pair(alice, bob)
    contact = alice.get_contact("bob")
    item = frames.DepositItem(mailbox=contact.mailbox, cap=b"c" * 32, payload=b"x")
    target = frames.PresenceTarget(mailbox=contact.mailbox, cap=b"c" * 32)
    async with alice.online():
        own = await alice.own_relay()
        for make in (lambda req: frames.Deposit(req=req, items=[item]),
                     lambda req: frames.PresenceQuery(req=req, targets=[target]),
                     lambda req: frames.PresenceSubscribe(req=req, targets=[target])):
            with pytest.raises(LocalProtocolError):
                await own.request(make)
        anonymous = await alice.anonymous(alice.relay_url)
        assert anonymous is not own
        with pytest.raises(LocalProtocolError):
            await anonymous.request(lambda req: frames.Ack(req=req, ids=[1]))
        assert not hasattr(anonymous, "authenticate")
