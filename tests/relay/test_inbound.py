"""Input before (and after) authentication is bounded: fragments, bytes, time,
idleness, and the bytes of unfinished messages over all connections."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionClosed
from wsproto.events import BytesMessage

from chatcli.protocol import codes, frames
from chatcli.protocol.codec import encode
from chatcli.relay.inbound import GuardedWebSocket, InputBudget
from tests.relay.helpers import Client, Harness, eventually, make_config, running_relay


async def send_fragment(client: Client, data: bytes, *, last: bool = False) -> None:
    """One WebSocket frame of a binary message (wsproto: Continuation after the first)."""
    await client.ws._send(BytesMessage(data=data, message_finished=last))


async def closed_with(client: Client) -> int:
    """The close code, reading (and skipping) any frames before the close."""
    with trio.fail_after(10):
        while True:
            try:
                await client.ws.get_message()
            except ConnectionClosed as exc:
                return int(exc.reason.code)


def server_side(h: Harness) -> list[GuardedWebSocket]:
    return [c.ws for c in h.relay.connections if isinstance(c.ws, GuardedWebSocket)]


async def test_too_many_fragments_close_1008(tmp_path: Path) -> None:
    # Default settings: 1-byte continuation fragments used to be kept one
    # bytes object each (~50 bytes of memory per byte sent), without end.
    async with running_relay(make_config(tmp_path)) as h:
        client = await h.connect()
        limit = h.relay.config.max_fragments
        for _ in range(limit + 1):
            await send_fragment(client, b"\x00")
        assert await closed_with(client) == 1008
        await eventually(lambda: h.relay.input_budget.used == 0)


async def test_fragments_are_assembled_in_place(tmp_path: Path) -> None:
    async with running_relay(make_config(tmp_path)) as h:
        client = await h.connect()
        for _ in range(40):
            await send_fragment(client, b"\x00")
        await eventually(lambda: sum(ws.held_bytes for ws in server_side(h)) == 40)
        assert h.relay.input_budget.used == 40
        await client.close()
        await eventually(lambda: h.relay.input_budget.used == 0)


def frames_ping() -> bytes:
    return encode(frames.Ping(req=1))


async def test_fragmented_frame_is_answered(tmp_path: Path) -> None:
    async with running_relay(make_config(tmp_path)) as h:
        client = await h.connect()
        data = frames_ping()
        for i in range(0, len(data) - 1):
            await send_fragment(client, data[i:i + 1])
        await send_fragment(client, data[-1:], last=True)
        assert isinstance(await client.recv_unchecked(), frames.Pong)
        await eventually(lambda: h.relay.input_budget.used == 0)


async def test_unfinished_message_has_a_deadline(tmp_path: Path) -> None:
    async with running_relay(make_config(tmp_path, message_timeout=0.3)) as h:
        client = await h.connect()
        await send_fragment(client, b"\x92" + b"\x00" * 1000)
        error = await client.recv_unchecked()
        assert isinstance(error, frames.Error) and error.code == codes.MESSAGE_TIMEOUT
        assert await closed_with(client) == 1008
        await eventually(lambda: h.relay.input_budget.used == 0)


async def test_idle_connections_time_out_and_pings_count(tmp_path: Path) -> None:
    config = make_config(tmp_path, idle_timeout=0.5, keepalive_timeout=1.0)
    async with running_relay(config) as h:
        idle = await h.connect()
        pinging = await h.connect()
        owner = await h.connect()
        await owner.register()
        await owner.next_push(frames.Synced)
        for _ in range(8):            # 1.2 s: past both windows, pings only
            await pinging.ws.ping()
            await owner.ws.ping()
            await trio.sleep(0.15)
        error = await idle.recv_unchecked()
        assert isinstance(error, frames.Error) and error.code == codes.IDLE_TIMEOUT
        assert await closed_with(idle) == 1000
        assert isinstance(await pinging.request(frames.Ping(req=pinging.req())), frames.Pong)
        assert isinstance(await owner.request(frames.Ping(req=owner.req())), frames.Pong)
        # An authenticated connection that stays silent goes too, after its window.
        assert await closed_with(owner) == 1000


async def test_input_budget_refuses_new_messages_first(tmp_path: Path) -> None:
    config = make_config(tmp_path, max_frame=4096, input_budget=16 * 1024)
    async with running_relay(config) as h:
        holders = [await h.connect() for _ in range(4)]
        for client in holders:     # 4 x 3 KiB of unfinished messages
            await send_fragment(client, b"\x92" + b"\x00" * 3071)
        await eventually(lambda: h.relay.input_budget.used == 4 * 3072)
        # 12 KiB used of 16: a new message would eat into the reserve kept for
        # messages in progress, so it is refused (1013) ...
        late = await h.connect()
        await send_fragment(late, b"\x92" + b"\x00" * 3071)
        assert await closed_with(late) == 1013
        # ... while one in progress may still grow.
        await send_fragment(holders[0], b"\x00" * 1024)
        await eventually(lambda: h.relay.input_budget.used == 4 * 3072 + 1024)
        assert h.relay.input_budget.used <= config.input_budget
        for client in holders:
            await client.close()
        await eventually(lambda: h.relay.input_budget.used == 0)
        fresh = await h.connect()
        assert isinstance(await fresh.request(frames.Ping(req=fresh.req())), frames.Pong)


def test_budget_reserve_for_messages_in_progress() -> None:
    budget = InputBudget(800)
    assert budget.take(700, new_message=True)
    assert not budget.take(1, new_message=True)     # 700 + 1 > 800 - 100
    assert budget.take(100, new_message=False)
    assert not budget.take(1, new_message=False)
    budget.give_back(800)
    assert budget.used == 0 and budget.refused == 2


async def test_oversized_message_closes_1009(tmp_path: Path) -> None:
    async with running_relay(make_config(tmp_path, max_frame=4096)) as h:
        client = await h.connect()
        await send_fragment(client, b"\x00" * (4096 + 64 * 1024 + 1))
        assert await closed_with(client) == 1009
        await eventually(lambda: h.relay.input_budget.used == 0)


async def test_client_keepalive_outlasts_the_idle_windows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from chatcli.client import relay_client

    monkeypatch.setattr(relay_client, "KEEPALIVE_INTERVAL", 0.1)
    config = make_config(tmp_path, idle_timeout=0.4, keepalive_timeout=0.4)
    async with running_relay(config) as h, relay_client.connect(h.relay.address) as conn:
        await trio.sleep(1.2)     # three windows, pings only
        assert isinstance(await conn.request(lambda req: frames.Ping(req=req)), frames.Pong)
