"""Round trips of every frame type and strict decoding."""

from __future__ import annotations

import msgspec
import pytest

from chatcli.protocol import codes, frames
from chatcli.protocol.codec import (
    RemoteProtocolError,
    decode_client_frame,
    decode_relay_frame,
    encode,
)

M = b"m" * 16
K = b"k" * 32
S = b"s" * 64
N = b"n" * 32
B = b"b" * 16

CLIENT_FRAMES: list[frames.Frame] = [
    frames.Hello(versions=[1], nonce=N),
    frames.Register(req=1, auth_key=K, signature=S),
    frames.Register(req=2, auth_key=K, signature=S, token="tok"),
    frames.Auth(req=3, mailbox=M, signature=S),
    frames.CapAdd(req=4, cap_hashes=[K, K]),
    frames.CapRevoke(req=5, cap_hashes=[K]),
    frames.Deposit(req=6, items=[frames.DepositItem(mailbox=M, cap=K, payload=b"x" * 100)]),
    frames.Ack(req=7, ids=[1, 2, 3]),
    frames.AccountDelete(req=8),
    frames.PresenceQuery(req=9, targets=[frames.PresenceTarget(mailbox=M, cap=K)]),
    frames.PresenceSubscribe(req=10, targets=[frames.PresenceTarget(mailbox=M, cap=K)]),
    frames.PresenceSettings(req=11, hidden=True),
    frames.BlobPut(req=12, blob=B, offset=0, data=b"abc", final=True, read_cap_hash=K,
                   ttl=3600),
    frames.BlobGet(req=13, blob=B, read_cap=K, offset=0, length=10),
    frames.BlobDelete(req=14, blob=B),
    frames.Ping(req=2**53 - 1),
]

RELAY_FRAMES: list[frames.Frame] = [
    frames.Welcome(version=1, relay_key=K, signature=S, challenge=N, max_frame=1000,
                   max_payload=100),
    frames.Registered(req=1, mailbox=M),
    frames.DepositResult(req=2, errors=[None, codes.QUOTA_EXCEEDED]),
    frames.Deliver(messages=[frames.Delivered(id=5, payload=b"p", received_at=17)]),
    frames.Synced(),
    frames.PresenceResult(req=3, entries=[frames.PresenceEntry(mailbox=M, online=True,
                                                               last_seen=None)]),
    frames.PresenceUpdate(entries=[frames.PresenceEntry(mailbox=M, online=None,
                                                        last_seen=None)]),
    frames.BlobData(req=4, data=b"data", size=4),
    frames.Pong(req=5),
    frames.Ok(req=6),
    frames.Error(req=None, code=codes.BAD_FRAME, message="bad"),
    frames.Error(req=7, code=codes.RATE_LIMITED, message="slow down"),
    frames.Bye(code=codes.SHUTTING_DOWN),
]


def test_every_frame_type_is_covered() -> None:
    client_types = {type(f) for f in CLIENT_FRAMES}
    relay_types = {type(f) for f in RELAY_FRAMES}
    assert client_types == set(frames.ClientFrame.__args__)  # type: ignore[attr-defined]
    assert relay_types == set(frames.RelayFrame.__args__)  # type: ignore[attr-defined]


@pytest.mark.parametrize("frame", CLIENT_FRAMES, ids=lambda f: type(f).__name__)
def test_client_frame_round_trip(frame: frames.Frame) -> None:
    assert decode_client_frame(encode(frame)) == frame


@pytest.mark.parametrize("frame", RELAY_FRAMES, ids=lambda f: type(f).__name__)
def test_relay_frame_round_trip(frame: frames.Frame) -> None:
    assert decode_relay_frame(encode(frame)) == frame


def test_wire_shape_is_a_tagged_array() -> None:
    assert msgspec.msgpack.decode(encode(frames.Ping(req=9))) == ["ping", 9]


def test_relay_frames_are_not_client_frames() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_client_frame(encode(frames.Ok(req=1)))
    assert info.value.code == codes.BAD_FRAME
    assert info.value.fatal


def test_size_is_checked_before_decoding() -> None:
    data = encode(frames.Ping(req=1)) + b"\x00" * 100
    with pytest.raises(RemoteProtocolError) as info:
        decode_client_frame(data, max_size=50)
    assert info.value.code == codes.FRAME_TOO_LARGE
    assert info.value.fatal
    assert info.value.error_frame() == frames.Error(req=None, code=codes.FRAME_TOO_LARGE,
                                                    message=str(info.value))


def test_garbage_is_a_fatal_bad_frame() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_client_frame(b"\xc1\xc1")
    assert (info.value.code, info.value.fatal, info.value.req) == (codes.BAD_FRAME, True, None)


def test_invalid_field_of_a_request_keeps_its_id() -> None:
    bad = msgspec.msgpack.encode(["deposit", 42, [[b"short", K, b"x"]]])
    with pytest.raises(RemoteProtocolError) as info:
        decode_client_frame(bad)
    assert info.value.req == 42
    assert not info.value.fatal
    assert info.value.error_frame().req == 42


def test_unknown_tag_is_bad_frame() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_client_frame(msgspec.msgpack.encode(["launch_missiles", 1]))
    assert info.value.code == codes.BAD_FRAME


def test_oversized_payload_field_is_refused() -> None:
    big = b"x" * (frames.MAX_PAYLOAD_SIZE + 1)
    bad = msgspec.msgpack.encode(["deposit", 1, [[M, K, big]]])
    with pytest.raises(RemoteProtocolError) as info:
        decode_client_frame(bad)
    assert info.value.req == 1


def test_trailing_fields_are_ignored_for_forward_compatibility() -> None:
    data = msgspec.msgpack.encode(["ping", 3, "a later optional field"])
    assert decode_client_frame(data) == frames.Ping(req=3)


def test_error_message_is_truncated_to_the_text_limit() -> None:
    exc = RemoteProtocolError("x" * 1000, code=codes.BAD_FRAME)
    assert len(exc.error_frame().message) == frames.MAX_TEXT
    decode_relay_frame(encode(exc.error_frame()))


def test_unknown_code_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown error code"):
        RemoteProtocolError("x", code="nope")
