"""Sealed sender on the relay: a connection that logged in as a mailbox never
carries a deposit or a presence query for another mailbox, and one that did
those never logs in (``anonymous_only``); owner frames stay owner-only.

The frames are sent raw: the client state machine refuses to build them."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatcli.crypto.keys import MailboxKeyPair
from chatcli.protocol import codes, frames
from chatcli.protocol.codec import encode
from chatcli.relay.mailbox import cap_hash
from tests.relay.helpers import Client, capability, make_config, running_relay

pytestmark = pytest.mark.usefixtures("relay_backend")


async def raw_request(client: Client, frame: frames.ClientFrame) -> frames.Frame:
    """Send ``frame`` past the client state machine; its answer, unchecked."""
    await client.send_raw(encode(frame))
    while True:
        answer = await client.recv_unchecked()
        if getattr(answer, "req", None) == getattr(frame, "req"):  # noqa: B009
            return answer


def refused(answer: frames.Frame, code: str) -> bool:
    return isinstance(answer, frames.Error) and answer.code == code


async def test_deposit_and_presence_on_an_owner_connection_are_refused(tmp_path: Path
                                                                       ) -> None:
    async with running_relay(make_config(tmp_path)) as h:
        bob, bob_mailbox, bob_cap = await h.owner()
        alice, _alice_mailbox, _cap = await h.owner()  # registered: an owner's connection
        item = frames.DepositItem(mailbox=bob_mailbox, cap=bob_cap, payload=b"sealed")
        target = frames.PresenceTarget(mailbox=bob_mailbox, cap=bob_cap)
        for frame in (frames.Deposit(req=1001, items=[item]),
                      frames.PresenceQuery(req=1002, targets=[target]),
                      frames.PresenceSubscribe(req=1003, targets=[target])):
            answer = await raw_request(alice, frame)
            assert refused(answer, codes.ANONYMOUS_ONLY), answer
        # Nothing reached bob's mailbox; alice's connection is still usable.
        assert isinstance(await raw_request(alice, frames.Ping(req=1004)), frames.Pong)
        assert await (await h.connect()).deposit(bob_mailbox, bob_cap, b"anon") == [None]
        assert [m.payload for m in await bob.delivered(1)] == [b"anon"]

        # The same after Auth (not Register) on a fresh connection.
        key = bob.key
        assert key is not None
        again = await h.connect()
        assert isinstance(await again.auth(bob_mailbox, key), frames.Ok)
        answer = await raw_request(again, frames.Deposit(req=2001, items=[item]))
        assert refused(answer, codes.ANONYMOUS_ONLY), answer


async def test_a_failed_login_still_bars_deposits(tmp_path: Path) -> None:
    async with running_relay(make_config(tmp_path)) as h:
        _bob, bob_mailbox, bob_cap = await h.owner()
        conn = await h.connect()
        answer = await conn.auth(bob_mailbox, MailboxKeyPair.generate())  # wrong key
        assert refused(answer, codes.AUTH_FAILED)
        item = frames.DepositItem(mailbox=bob_mailbox, cap=bob_cap, payload=b"x")
        answer = await raw_request(conn, frames.Deposit(req=3001, items=[item]))
        assert refused(answer, codes.ANONYMOUS_ONLY), answer


async def test_an_anonymous_connection_never_logs_in(tmp_path: Path) -> None:
    async with running_relay(make_config(tmp_path)) as h:
        bob, bob_mailbox, bob_cap = await h.owner()
        key = bob.key
        assert key is not None
        sender = await h.connect()
        assert await sender.deposit(bob_mailbox, bob_cap, b"hi") == [None]
        auth = sender.proto  # the client side refuses too: build the Auth by hand
        from chatcli.protocol import transcripts

        assert auth.challenge is not None and auth.relay_key is not None
        signature = key.sign(transcripts.auth(auth.relay_key, auth.challenge, bob_mailbox))
        answer = await raw_request(sender, frames.Auth(req=4001, mailbox=bob_mailbox,
                                                       signature=signature))
        assert refused(answer, codes.ANONYMOUS_ONLY), answer
        # Owner frames stay refused on an anonymous connection, as before.
        answer = await raw_request(sender, frames.CapAdd(req=4002,
                                                         cap_hashes=[cap_hash(capability())]))
        assert refused(answer, codes.NOT_AUTHENTICATED), answer
        # It still deposits.
        assert await sender.deposit(bob_mailbox, bob_cap, b"again") == [None]
