"""The live relay on the input the decoder fuzzing found (see
tests/protocol/test_fuzz_findings.py): a frame nested about a thousand levels
deep. The relay must answer it like any undecodable frame, with a fatal
``bad_frame`` Error, and keep serving. (RecursionError used to escape
``RelayProtocol.receive_data``, and the connection was dropped unanswered.)"""

from __future__ import annotations

from pathlib import Path

from trio_websocket import ConnectionClosed

from chatcli.protocol import codes, frames
from tests.protocol.test_fuzz_findings import NESTED
from tests.relay.helpers import make_config, running_relay


async def test_deeply_nested_frame_answered_with_bad_frame(tmp_path: Path) -> None:
    reply: frames.Frame | None = None
    async with running_relay(make_config(tmp_path)) as h:
        client = await h.connect()
        await client.send_raw(NESTED)
        try:
            reply = await client.recv_unchecked()
        except ConnectionClosed:
            reply = None
        # The relay still serves other connections.
        other = await h.connect()
        pong = await other.request(frames.Ping(req=other.req()))
    assert isinstance(pong, frames.Pong)
    assert isinstance(reply, frames.Error), reply
    assert reply.code == codes.BAD_FRAME and reply.req is None
