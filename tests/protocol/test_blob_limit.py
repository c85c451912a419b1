"""The relay announces its blob size limit in Welcome, compatibly both ways."""

from __future__ import annotations

import msgspec

from chatcli.crypto.keys import RelayKeyPair
from chatcli.protocol import frames
from chatcli.protocol.connection import ClientProtocol, RelayProtocol


def _handshake(relay: RelayProtocol, kp: RelayKeyPair) -> ClientProtocol:
    client = ClientProtocol(fingerprint=kp.fingerprint())
    relay.receive_data(client.start())
    client.receive_data(relay.accept_hello())
    return client


def test_the_client_learns_the_announced_blob_limit() -> None:
    kp = RelayKeyPair.generate()
    client = _handshake(RelayProtocol(kp.public.raw, kp.sign, max_blob=4096), kp)
    assert client.max_blob == 4096


def test_a_relay_that_does_not_announce_it_leaves_it_unknown() -> None:
    kp = RelayKeyPair.generate()
    client = _handshake(RelayProtocol(kp.public.raw, kp.sign), kp)
    assert client.max_blob is None


def test_old_and_new_welcome_frames_decode() -> None:
    """A Welcome of a relay that predates the field (six fields) still decodes,
    and one with the field decodes for a client that knows only six."""
    fields = [1, b"k" * 32, b"s" * 64, b"c" * 32, 1000, 100]
    old = msgspec.msgpack.encode(["welcome", *fields])
    assert msgspec.msgpack.decode(old, type=frames.Welcome).max_blob is None

    class OldWelcome(msgspec.Struct, array_like=True, tag_field="t", tag="welcome"):
        version: int
        relay_key: bytes
        signature: bytes
        challenge: bytes
        max_frame: int
        max_payload: int

    new = msgspec.msgpack.encode(frames.Welcome(
        version=1, relay_key=b"k" * 32, signature=b"s" * 64, challenge=b"c" * 32,
        max_frame=1000, max_payload=100, max_blob=5000))
    assert msgspec.msgpack.decode(new, type=OldWelcome).max_payload == 100
    assert msgspec.msgpack.decode(new, type=frames.Welcome).max_blob == 5000
