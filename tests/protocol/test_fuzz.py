"""Hypothesis fuzzing of the decoder and of the relay-side state machine:
nothing but the typed errors ever comes out."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from chatcli.crypto.keys import RelayKeyPair
from chatcli.protocol import State, codes, frames
from chatcli.protocol.codec import (
    RemoteProtocolError,
    decode_client_frame,
    decode_relay_frame,
    encode,
)
from chatcli.protocol.connection import ClientProtocol, RelayProtocol
from tests.protocol.strategies import client_frames

RELAY_KP = RelayKeyPair.generate()

msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=40)
    | st.text(max_size=20) | st.sampled_from(["hello", "deposit", "auth", "ping", "ok"]),
    lambda children: st.lists(children, max_size=6)
    | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=20,
)


def _check(exc: RemoteProtocolError) -> None:
    assert exc.code in codes.ALL_CODES
    frame = exc.error_frame()
    assert decode_relay_frame(encode(frame)) == frame


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_decoder_on_random_bytes(data: bytes) -> None:
    for decode in (decode_client_frame, decode_relay_frame):
        try:
            decode(data)
        except RemoteProtocolError as exc:
            _check(exc)


@settings(max_examples=300, deadline=None)
@given(msgpack_values)
def test_decoder_on_random_msgpack_structures(value: object) -> None:
    data = msgspec.msgpack.encode(value)
    try:
        decode_client_frame(data)
    except RemoteProtocolError as exc:
        _check(exc)


@settings(max_examples=200, deadline=None)
@given(client_frames, st.data())
def test_decoder_on_mutated_valid_frames(frame: frames.Frame, data: st.DataObject) -> None:
    raw = bytearray(encode(frame))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    try:
        decode_client_frame(bytes(raw))
    except RemoteProtocolError as exc:
        _check(exc)


@settings(max_examples=200, deadline=None)
@given(client_frames)
def test_valid_frames_round_trip(frame: frames.Frame) -> None:
    assert decode_client_frame(encode(frame)) == frame


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(client_frames.map(encode), st.binary(max_size=60)), max_size=20),
       st.lists(st.booleans(), min_size=20, max_size=20), st.booleans())
def test_relay_state_machine_on_random_frame_orders(
        messages: list[bytes], verdicts: list[bool], start_with_hello: bool) -> None:
    relay = RelayProtocol(RELAY_KP.public.raw, RELAY_KP.sign)
    if start_with_hello:
        relay.receive_data(ClientProtocol().start())
        relay.accept_hello()
    for data, verdict in zip(messages, verdicts, strict=False):
        before = relay.state
        try:
            frame = relay.receive_data(data)
        except RemoteProtocolError as exc:
            _check(exc)
            if exc.fatal:
                assert relay.state is State.CLOSED
            else:
                assert relay.state is before
            continue
        if isinstance(frame, frames.Hello):
            assert before is State.CONNECTING
            relay.accept_hello()
            assert relay.state is State.READY
        elif isinstance(frame, frames.Register | frames.Auth):
            assert before is State.READY
            assert relay.state is State.AUTHENTICATING
            if verdict:
                relay.login_succeeded(bytes(16))
                assert relay.state is State.AUTHENTICATED
            else:
                relay.login_failed()
                assert relay.state is State.READY
        else:
            assert before in (State.READY, State.AUTHENTICATING, State.AUTHENTICATED)
            if isinstance(frame, frames.CapAdd | frames.Ack | frames.BlobPut):
                assert before is State.AUTHENTICATED
