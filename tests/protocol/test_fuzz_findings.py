"""Inputs found while fuzzing the decoder (issue 3) that broke its contract,
kept as regression tests.

Deep nesting: a frame whose MessagePack arrays nest about a thousand levels
deep (1 byte per level, so about 1 KB, far below the frame size limit) makes
msgspec raise RecursionError, which the decoders did not turn into
RemoteProtocolError. Three places: the untyped decode in
``codec._salvage_request_id`` (after the typed decode failed), and the typed
decoders of both sides when they skip trailing array elements (which the
codec ignores for forward compatibility).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest

from chatcli.crypto.keys import RelayKeyPair
from chatcli.protocol import State, codes
from chatcli.protocol.codec import RemoteProtocolError, decode_client_frame, decode_relay_frame
from chatcli.protocol.connection import ClientProtocol, RelayProtocol

# More levels than the interpreter's recursion limit, whatever the stack depth.
LEVELS = sys.getrecursionlimit() + 10
NESTED = b"\x91" * LEVELS + b"\x90"                     # [[[...[]...]]]
PING_WITH_NESTED_TAIL = b"\x93\xa4ping\x01" + NESTED    # ["ping", 1, [[...]]]
PONG_WITH_NESTED_TAIL = b"\x93\xa4pong\x01" + NESTED    # ["pong", 1, [[...]]]

@pytest.mark.parametrize(("decode", "data"), [
    pytest.param(decode_client_frame, NESTED, id="client-salvage"),
    pytest.param(decode_client_frame, PING_WITH_NESTED_TAIL, id="client-trailing"),
    pytest.param(decode_relay_frame, PONG_WITH_NESTED_TAIL, id="relay-trailing"),
])
def test_deeply_nested_frame_is_a_protocol_error(
        decode: Callable[[bytes], object], data: bytes) -> None:
    assert len(data) < 4096
    with pytest.raises(RemoteProtocolError) as info:
        decode(data)
    assert info.value.code == codes.BAD_FRAME


def test_relay_protocol_closes_on_deeply_nested_frame() -> None:
    key = RelayKeyPair.generate()
    relay = RelayProtocol(key.public.raw, key.sign)
    relay.receive_data(ClientProtocol().start())
    relay.accept_hello()
    with pytest.raises(RemoteProtocolError) as info:
        relay.receive_data(NESTED)
    assert info.value.fatal and relay.state is State.CLOSED


def test_client_protocol_closes_on_deeply_nested_frame() -> None:
    client = ClientProtocol()
    client.start()
    with pytest.raises(RemoteProtocolError):
        client.receive_data(PONG_WITH_NESTED_TAIL)
    assert client.state is State.CLOSED
