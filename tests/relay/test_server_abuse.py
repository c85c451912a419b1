"""What one source can make a relay hold: registrations and connections per
address, and the relay-wide storage budget (``relay_full``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionClosed

from chatcli.crypto.keys import MailboxKeyPair
from chatcli.protocol import codes, frames
from chatcli.relay.server import source_key
from tests.relay.helpers import make_config, running_relay

# Every test here runs on SQLite and on PostgreSQL (conftest.relay_backend).
pytestmark = pytest.mark.usefixtures("relay_backend")


async def test_registrations_are_limited_per_address(tmp_path: Path) -> None:
    config = make_config(tmp_path, registration_burst=3, registration_rate=0.001)
    async with running_relay(config) as h:
        for _ in range(3):
            await (await h.connect()).register()
        client = await h.connect()
        key = MailboxKeyPair.generate()
        await client.ws.send_message(client.proto.register(key.auth_public, key.sign, None))
        answer = await client.answer(client.proto._next_req - 1)
        assert isinstance(answer, frames.Error) and answer.code == codes.RATE_LIMITED
        stats = await h.relay.worker.run(h.relay.store.stats)
        assert stats.mailboxes == 3


async def test_one_address_cannot_hold_every_connection(tmp_path: Path) -> None:
    async with running_relay(make_config(tmp_path, max_connections_per_address=2)) as h:
        await h.connect()
        await h.connect()
        extra = await h.connect(handshake=False)
        error = await extra.recv_unchecked()
        assert isinstance(error, frames.Error) and error.code == codes.TOO_MANY_CONNECTIONS
        with trio.fail_after(5), pytest.raises(ConnectionClosed):
            await extra.ws.get_message()
        assert len(h.relay.connections) == 2


async def test_storage_budget_refuses_deposits_and_blobs_with_relay_full(
        tmp_path: Path) -> None:
    async with running_relay(make_config(tmp_path, storage_budget=1000)) as h:
        owner, mailbox, cap = await h.owner()
        sender = await h.connect()
        assert await sender.deposit(mailbox, cap, b"a" * 600) == [None]
        assert await sender.deposit(mailbox, cap, b"b" * 600, b"c" * 300) == [
            codes.RELAY_FULL, None]
        answer = await owner.request(frames.BlobPut(
            req=owner.req(), blob=os.urandom(16), offset=0, data=b"x" * 200, final=True,
            read_cap_hash=os.urandom(32), ttl=60))
        assert isinstance(answer, frames.Error) and answer.code == codes.RELAY_FULL
        stats = await h.relay.worker.run(h.relay.store.stats)
        assert (stats.message_bytes, stats.blob_bytes) == (900, 0)


def test_source_key_groups_an_ipv6_64() -> None:
    assert source_key("2001:db8::1") == source_key("2001:db8::ffff:1")
    assert source_key("2001:db8:0:1::1") != source_key("2001:db8::1")
    assert source_key("::ffff:192.0.2.1") == source_key("192.0.2.1")
    assert source_key("192.0.2.1") != source_key("192.0.2.2")


async def test_a_text_message_that_is_not_utf8_is_closed_with_1007(tmp_path: Path) -> None:
    async with running_relay(make_config(tmp_path)) as h:
        client = await h.connect()
        mask = os.urandom(4)
        payload = b"\xff\xfe"   # a masked client TEXT frame (opcode 1) of invalid UTF-8
        await client.ws._stream.send_all(
            bytes([0x81, 0x80 | len(payload)]) + mask
            + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
        with trio.fail_after(5), pytest.raises(ConnectionClosed) as info:
            while True:
                await client.ws.get_message()
        assert info.value.reason.code == 1007
        other = await h.connect()
        assert isinstance(await other.request(frames.Ping(req=other.req())), frames.Pong)
