"""The sans-I/O relay wire protocol shared by relay and client.

Contains no networking code at all: feed bytes in, take frames out, turn
frames into bytes. ``frames`` and ``codes`` are the wire contract; ``codec``
encodes and strictly decodes frames; ``transcripts`` are the signed byte
strings of the handshake; ``connection`` holds the two state machines
(:class:`ClientProtocol`, :class:`RelayProtocol`); ``address`` parses relay
URLs.
"""

from chatcli.protocol._state import State
from chatcli.protocol.address import InvalidRelayAddress, RelayAddress, parse_relay_url
from chatcli.protocol.codec import (
    LocalProtocolError,
    RemoteProtocolError,
    decode_client_frame,
    decode_relay_frame,
    encode,
)
from chatcli.protocol.connection import ClientProtocol, RelayIdentityError, RelayProtocol

__all__ = [
    "ClientProtocol",
    "InvalidRelayAddress",
    "LocalProtocolError",
    "RelayAddress",
    "RelayIdentityError",
    "RelayProtocol",
    "RemoteProtocolError",
    "State",
    "decode_client_frame",
    "decode_relay_frame",
    "encode",
    "parse_relay_url",
]
