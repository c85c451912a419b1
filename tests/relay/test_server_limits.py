"""Limits and failures: every one gets a typed error or a closed connection,
and the relay keeps serving everyone else."""

from __future__ import annotations

import os
from pathlib import Path

import peewee
import pytest
import trio
from trio_websocket import ConnectionClosed

from chatcli.protocol import codes, frames
from chatcli.relay.server import WS_SLACK, Connection
from tests.relay.helpers import Harness, eventually, make_config, running_relay

# Every test here runs on SQLite and on PostgreSQL (conftest.relay_backend).
pytestmark = pytest.mark.usefixtures("relay_backend")


async def still_serving(h: Harness) -> None:
    owner, mailbox, cap = await h.owner()
    sender = await h.connect()
    assert await sender.deposit(mailbox, cap, b"still here") == [None]
    assert [m.payload for m in await owner.delivered(1)] == [b"still here"]


async def test_too_many_connections(tmp_path: Path) -> None:
    async with running_relay(make_config(tmp_path, max_connections=2)) as h:
        first = await h.connect()
        await h.connect()
        extra = await h.connect(handshake=False)
        error = await extra.recv_unchecked()
        assert isinstance(error, frames.Error) and error.code == codes.TOO_MANY_CONNECTIONS
        assert error.req is None
        with trio.fail_after(5), pytest.raises(ConnectionClosed) as info:
            await extra.ws.get_message()
        assert info.value.reason.code == 1013
        await first.close()
        await eventually(lambda: len(h.relay.connections) <= 1)
        again = await h.connect()
        assert isinstance(await again.request(frames.Ping(req=again.req())), frames.Pong)


async def test_handshake_timeout(tmp_path: Path) -> None:
    async with running_relay(make_config(tmp_path, handshake_timeout=0.2)) as h:
        idle = await h.connect(handshake=False)
        error = await idle.recv_unchecked()
        assert isinstance(error, frames.Error) and error.code == codes.HANDSHAKE_TIMEOUT
        with trio.fail_after(5), pytest.raises(ConnectionClosed):
            await idle.ws.get_message()
        await still_serving(h)


async def test_oversized_frames(tmp_path: Path) -> None:
    async with running_relay(make_config(tmp_path, max_frame=4096)) as h:
        client = await h.connect()
        assert client.proto.max_frame == 4096
        await client.send_raw(b"\x92\xa4ping\x01" + b"\x00" * 5000)
        error = await client.recv_unchecked()
        assert isinstance(error, frames.Error) and error.code == codes.FRAME_TOO_LARGE
        huge = await h.connect()
        await huge.send_raw(b"\x00" * (4096 + WS_SLACK + 1))
        with trio.fail_after(5), pytest.raises(ConnectionClosed) as info:
            await huge.ws.get_message()
        assert info.value.reason.code == 1009
        await still_serving(h)


async def test_payload_over_the_announced_limit(tmp_path: Path) -> None:
    async with running_relay(make_config(tmp_path, max_payload=100)) as h:
        owner, mailbox, cap = await h.owner()
        assert owner.proto.max_payload == 100
        sender = await h.connect()
        item = frames.DepositItem(mailbox=mailbox, cap=cap, payload=b"x" * 101)
        await sender.send_raw(frames_encode(frames.Deposit(req=9, items=[item])))
        error = await sender.recv_unchecked()
        assert isinstance(error, frames.Error)
        assert (error.req, error.code) == (9, codes.FRAME_TOO_LARGE)
        assert await sender.deposit(mailbox, cap, b"x" * 100) == [None]


def frames_encode(frame: frames.Frame) -> bytes:
    from chatcli.protocol.codec import encode

    return encode(frame)


async def test_connection_rate_limit(tmp_path: Path) -> None:
    config = make_config(tmp_path, connection_rate=1.0, connection_burst=5.0)
    async with running_relay(config) as h:
        flood = await h.connect()
        for req in range(1, 21):
            await flood.send(frames.Ping(req=req))
        answers = [await flood.recv() for _ in range(20)]
        limited = [a for a in answers if isinstance(a, frames.Error)]
        assert all(a.code == codes.RATE_LIMITED for a in limited)
        assert 10 <= len(limited) <= 16
        await still_serving(h)


async def test_capability_rate_limit(tmp_path: Path) -> None:
    config = make_config(tmp_path, capability_rate=0.01, capability_burst=3.0)
    async with running_relay(config) as h:
        _, mailbox, cap = await h.owner()
        sender = await h.connect()
        errors = await sender.deposit(mailbox, cap, *[b"x"] * 5)
        assert errors == [None, None, None, codes.RATE_LIMITED, codes.RATE_LIMITED]


async def test_slow_consumer_is_cut_off(tmp_path: Path) -> None:
    config = make_config(tmp_path, send_timeout=0.5, capability_rate=10_000.0,
                         capability_burst=10_000.0)
    async with running_relay(config) as h:
        _owner, mailbox, cap = await h.owner()    # and then never reads again
        sender = await h.connect()
        payload = os.urandom(60_000)
        with trio.fail_after(30):
            while h.relay.metrics.refused_connections.labels("slow_consumer")._value.get() < 1:
                assert await sender.deposit(mailbox, cap, *[payload] * 8) == [None] * 8
        await eventually(lambda: all(c.mailbox != mailbox for c in h.relay.connections))
        await still_serving(h)
        stats = await h.relay.worker.run(h.relay.store.stats)
        assert stats.messages >= 8        # nothing lost: still queued for the owner


async def test_a_failing_handler_closes_only_its_request(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    # Fault injection patches the relay's own storage objects, so the tests
    # that do it run the storage in a thread (storage_process=False);
    # test_storage_process.py covers failures of the storage process.
    async with running_relay(make_config(tmp_path, storage_process=False)) as h:
        owner, _, _ = await h.owner()

        def broken(*args: object) -> None:
            raise RuntimeError("boom")

        monkeypatch.setattr(h.relay.mailboxes, "add_caps", broken)
        error = await owner.request(frames.CapAdd(req=owner.req(), cap_hashes=[bytes(32)]))
        assert isinstance(error, frames.Error) and error.code == codes.INTERNAL_ERROR
        assert isinstance(await owner.request(frames.Ping(req=owner.req())), frames.Pong)
        monkeypatch.undo()
        await still_serving(h)


async def test_storage_failure_answers_try_again(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    async with running_relay(make_config(tmp_path, storage_process=False)) as h:
        owner, mailbox, cap = await h.owner()

        def down(*args: object) -> None:
            raise peewee.OperationalError("disk I/O error")

        monkeypatch.setattr(h.relay.store, "insert_messages", down)
        sender = await h.connect()
        error = await sender.request(frames.Deposit(req=sender.req(), items=[
            frames.DepositItem(mailbox=mailbox, cap=cap, payload=b"x")]))
        assert isinstance(error, frames.Error) and error.code == codes.TRY_AGAIN
        monkeypatch.undo()
        assert await sender.deposit(mailbox, cap, b"after") == [None]
        assert [m.payload for m in await owner.delivered(1)] == [b"after"]


async def test_a_crash_outside_dispatch_does_not_end_the_server(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with running_relay(make_config(tmp_path)) as h:
        original = Connection.run

        async def crash(self: Connection) -> None:
            raise RuntimeError("handler bug")

        monkeypatch.setattr(Connection, "run", crash)
        victim = await h.connect(handshake=False)
        with trio.fail_after(5), pytest.raises(ConnectionClosed):
            await victim.ws.get_message()
        monkeypatch.setattr(Connection, "run", original)
        await still_serving(h)


async def test_delivery_retries_when_storage_fails(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    async with running_relay(make_config(tmp_path, storage_process=False)) as h:
        owner, mailbox, cap = await h.owner()
        key = owner.key
        assert key is not None
        await owner.close()
        sender = await h.connect()
        assert await sender.deposit(mailbox, cap, b"waiting") == [None]
        real = h.relay.store.fetch_messages
        failures = [1]

        def flaky(*args: object) -> object:
            if failures:
                failures.pop()
                raise peewee.OperationalError("database is locked")
            return real(*args)  # type: ignore[arg-type]

        monkeypatch.setattr(h.relay.store, "fetch_messages", flaky)
        back = await h.connect()
        assert isinstance(await back.auth(mailbox, key), frames.Ok)
        assert [m.payload for m in await back.delivered(1)] == [b"waiting"]
        assert not failures
