"""Close codes for WebSocket protocol errors that trio-websocket drops.

When wsproto finds a protocol error in what a client sent (a text message
that is not UTF-8: 1007; a malformed frame: 1002), it reports a
``CloseConnection`` event carrying the code, but trio-websocket 0.12 treats
it as a close *received* and, the connection still being open, closes the
TCP stream without sending any Close frame: the client sees 1006 (abnormal
closure) and never learns why. :func:`install` makes the server send the
Close frame with wsproto's code first, as RFC 6455 section 7.1.7 asks.
"""

from __future__ import annotations

import contextlib
from typing import Any

import wsproto.events
from trio_websocket import WebSocketConnection
from wsproto.connection import ConnectionState

__all__ = ["install"]

_ORIGINAL: Any = WebSocketConnection._handle_close_connection_event


async def _close_with_code(self: Any, event: wsproto.events.CloseConnection) -> None:
    if self._wsproto.state == ConnectionState.OPEN:
        # Not a Close from the peer (that moves wsproto to REMOTE_CLOSING):
        # a protocol error wsproto found locally. Say so before closing.
        # A fixed reason: wsproto's may quote the client's bytes, or be too long.
        reason = "text message is not UTF-8" if event.code == 1007 else "protocol error"
        with contextlib.suppress(Exception):   # the stream may be gone already
            await self._send(wsproto.events.CloseConnection(code=event.code, reason=reason))
    await _ORIGINAL(self, event)


def install() -> None:
    """Patch trio-websocket (idempotent)."""
    WebSocketConnection._handle_close_connection_event = _close_with_code  # type: ignore[method-assign]
