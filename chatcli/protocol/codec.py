"""Encoding and strict decoding of frames (msgspec, MessagePack arrays).

One WebSocket binary message carries exactly one frame. Decoding checks the
size first, then validates every field against the types of
:mod:`chatcli.protocol.frames`. A frame the peer got wrong raises
:class:`RemoteProtocolError`, which carries the error code to answer with and,
when the request id could still be read, that id: the connection can then
answer that one request with an :class:`~chatcli.protocol.frames.Error` and go
on, instead of closing.

Trailing array elements beyond the fields a frame defines are ignored, so that
later protocol revisions can append optional fields (see ``docs/protocol.md``).
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from chatcli.errors import ProtocolError
from chatcli.protocol import codes, frames
from chatcli.protocol.frames import ClientFrame, RelayFrame

__all__ = [
    "LocalProtocolError",
    "RemoteProtocolError",
    "decode_client_frame",
    "decode_relay_frame",
    "encode",
]

# Tags of client frames that carry ``req`` as their second element.
_CLIENT_REQUEST_TAGS: Final = frozenset({
    "register", "auth", "cap_add", "cap_revoke", "deposit", "ack", "account_delete",
    "presence_query", "presence_subscribe", "presence_settings",
    "blob_put", "blob_get", "blob_delete", "ping",
})


class LocalProtocolError(ProtocolError):
    """This side tried to break the protocol (a bug in the caller): for example
    sending a frame that is not allowed in the connection's current state."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol.

    ``code`` is the :mod:`~chatcli.protocol.codes` code to answer with,
    ``req`` the request id it concerns (None when none could be read), and
    ``fatal`` says whether the connection must be closed after answering: it is
    False only for an error about one request whose id is known.
    """

    def __init__(self, message: str, *, code: str = codes.BAD_FRAME,
                 req: int | None = None, fatal: bool | None = None) -> None:
        super().__init__(message)
        if code not in codes.ALL_CODES:
            raise ValueError(f"unknown error code {code!r}")
        self.code = code
        self.req = req
        self.fatal = req is None if fatal is None else fatal

    def error_frame(self) -> frames.Error:
        """The :class:`~chatcli.protocol.frames.Error` frame to answer with."""
        return frames.Error(req=None if self.fatal else self.req, code=self.code,
                            message=str(self)[: frames.MAX_TEXT])


_encoder: Final = msgspec.msgpack.Encoder()
_client_decoder: Final = msgspec.msgpack.Decoder(ClientFrame)
_relay_decoder: Final = msgspec.msgpack.Decoder(RelayFrame)
_any_decoder: Final = msgspec.msgpack.Decoder()


def encode(frame: frames.Frame) -> bytes:
    """Encode one frame as the bytes of one WebSocket binary message."""
    return _encoder.encode(frame)


def _check_size(data: bytes, max_size: int) -> None:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise RemoteProtocolError("Frames must be binary messages.", code=codes.BAD_FRAME)
    if len(data) > max_size:
        raise RemoteProtocolError(
            f"The frame is {len(data)} bytes; the limit is {max_size}.",
            code=codes.FRAME_TOO_LARGE)


def _salvage_request_id(data: bytes) -> int | None:
    """The request id of a client frame that failed validation, if its outer
    shape (a known request tag, then an integer id) is intact."""
    try:
        raw: Any = _any_decoder.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    if (isinstance(raw, list) and len(raw) >= 2 and isinstance(raw[0], str)
            and raw[0] in _CLIENT_REQUEST_TAGS
            and type(raw[1]) is int and 0 <= raw[1] < 2**53):
        return int(raw[1])
    return None


def _describe(exc: Exception) -> str:
    if isinstance(exc, UnicodeDecodeError):
        text = "text is not valid UTF-8"
    elif isinstance(exc, RecursionError):
        # msgspec recurses once per nesting level: ~1,000 levels (1 KB) is enough.
        text = "nested too deeply"
    else:
        text = str(exc).replace("\n", " ")
    return f"Invalid frame: {text}"[: frames.MAX_TEXT]


def decode_client_frame(data: bytes, *, max_size: int = frames.MAX_FRAME_SIZE) -> ClientFrame:
    """Decode a frame sent by a client; raise :class:`RemoteProtocolError`."""
    _check_size(data, max_size)
    try:
        frame: ClientFrame = _client_decoder.decode(data)
        return frame
    except msgspec.ValidationError as exc:
        req = _salvage_request_id(data)
        raise RemoteProtocolError(_describe(exc), code=codes.BAD_FRAME, req=req) from None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise RemoteProtocolError(_describe(exc), code=codes.BAD_FRAME) from None


def decode_relay_frame(data: bytes, *, max_size: int = frames.MAX_FRAME_SIZE) -> RelayFrame:
    """Decode a frame sent by a relay; raise :class:`RemoteProtocolError`.

    A client cannot answer a relay's bad frame, so these errors are all fatal.
    """
    _check_size(data, max_size)
    try:
        frame: RelayFrame = _relay_decoder.decode(data)
        return frame
    except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError) as exc:
        raise RemoteProtocolError(_describe(exc), code=codes.BAD_FRAME) from None
