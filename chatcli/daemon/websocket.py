"""The daemon's opt-in JSON-RPC API on a loopback WebSocket, behind a bearer token.

``chatcli daemon --websocket PORT`` serves the same JSON-RPC as the Unix
socket (a :class:`~chatcli.daemon.server.Session` per connection) on
``ws://127.0.0.1:PORT/``: one JSON-RPC message or batch per text message,
answers and ``event`` notifications as text messages.

Who may connect. The Unix socket checks the peer's uid; TCP has no such
thing, and every local user (and every container sharing the host's network)
can reach 127.0.0.1. So the daemon draws a random 256-bit token at each start
and writes it to ``CHATCLI_HOME/daemon.token`` (mode 0600: the daemon's own
uid, and root, can read it); a handshake must carry
``Authorization: Bearer TOKEN`` or gets HTTP 401 before the upgrade. The
token is compared in constant time and never logged; it dies with the daemon
(the file is removed at stop, a stale one at the next start).

No browsers. Any handshake carrying an ``Origin`` header gets HTTP 403.
Browsers always send one on a WebSocket handshake, and a web page may open
WebSockets to 127.0.0.1 (cross-site WebSocket hijacking) or make its own
host name point there (DNS rebinding); scripts and bots send none. The
browser's way in is the web front end, with its own login.

Limits: a message over 1 MiB closes that connection with 1009, a binary one
with 1003; a handshake must finish within :data:`HANDSHAKE_TIMEOUT`; a
subscriber that does not read is dropped, as on the Unix socket.
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
)

from chatcli.daemon import jsonrpc
from chatcli.daemon.server import DaemonServer, Session
from chatcli.errors import ChatcliError

HOST = "127.0.0.1"
"""The only address served: loopback, IPv4."""

TOKEN_BYTES = 32
"""256 bits of token."""

MAX_MESSAGE = jsonrpc.MAX_LINE
"""Largest message accepted (1 MiB); a larger one closes the connection (1009)."""

HANDSHAKE_TIMEOUT = 10.0
"""Seconds a client has to complete its HTTP handshake."""

CLOSE_TIMEOUT = 5.0
"""Seconds given to the closing handshake before the TCP connection is dropped."""

CLOSE_UNSUPPORTED = 1003
"""Close code for a binary message: the API speaks JSON text only."""

GONE = (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError)
"""What trio-websocket raises when the peer went away."""


def new_token() -> str:
    """A fresh bearer token: 32 random bytes, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def write_token(path: Path, token: str) -> None:
    """Replace ``path`` with ``token``: created 0600, then renamed into place,
    so that no reader ever sees a partial token or a wider mode."""
    temporary = path.with_name(path.name + ".new")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, token.encode("ascii") + b"\n")
    finally:
        os.close(fd)
    os.replace(temporary, path)


@dataclass(frozen=True)
class Refusal:
    """Why a handshake is turned away: an HTTP status and a one-line body."""

    status: int
    reason: str

    def headers(self) -> list[tuple[bytes, bytes]]:
        extra = [(b"content-type", b"text/plain; charset=utf-8")]
        if self.status == 401:
            extra.append((b"www-authenticate", b'Bearer realm="chatcli daemon"'))
        return extra


BROWSER = Refusal(403, "Browsers are not served here; use the web front end.")
UNAUTHORIZED = Refusal(401, "A bearer token is required (CHATCLI_HOME/daemon.token).")


def check_handshake(headers: Sequence[tuple[bytes, bytes]], token: str) -> Refusal | None:
    """None when a handshake with these headers may upgrade, else why not.

    Any ``Origin`` header (a browser) is refused first; then exactly one
    ``Authorization: Bearer TOKEN`` header must be present (scheme case-
    insensitive, RFC 7235), compared in constant time."""
    names = [name.lower() for name, _ in headers]
    if b"origin" in names:
        return BROWSER
    given = [value for name, value in headers if name.lower() == b"authorization"]
    if len(given) != 1:
        return UNAUTHORIZED
    scheme, _, credentials = given[0].strip().partition(b" ")
    ok = hmac.compare_digest(credentials.strip(), token.encode("ascii"))
    if scheme.lower() != b"bearer" or not ok:
        return UNAUTHORIZED
    return None


async def serve_messages(ws: WebSocketConnection, server: DaemonServer) -> None:
    """The WebSocket's transport: one JSON-RPC message or batch per text message."""

    async def send(value: dict[str, Any] | list[dict[str, Any]]) -> None:
        await ws.send_message(jsonrpc.dumps(value))

    async def receive() -> bytes | None:
        message = await ws.get_message()
        if isinstance(message, bytes):
            await ws.aclose(CLOSE_UNSUPPORTED, "JSON-RPC text messages only")
            return None
        return message.encode("utf-8")

    await Session(server, send, gone=GONE).run(receive)


class WebSocketApi:
    """Serves a :class:`DaemonServer`'s API on ``ws://127.0.0.1:PORT/``."""

    def __init__(self, server: DaemonServer, token: str) -> None:
        self.server = server
        self._token = token
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://{HOST}:{self.port}/"

    async def handle(self, request: WebSocketRequest) -> None:
        """One connection. A peer that goes away, even mid-handshake, ends it
        quietly: an exception out of here would stop the whole server."""
        try:
            refusal = check_handshake(request.headers, self._token)
            if refusal is not None:
                await request.reject(refusal.status, extra_headers=refusal.headers(),
                                     body=refusal.reason.encode("utf-8") + b"\n")
                # trio-websocket 0.12 (pinned by the lock file) leaves the TCP
                # connection of a rejected handshake open until the client
                # closes it; hang up at once, as an HTTP server says no.
                await request._connection._close_stream()
                return
            ws = await request.accept()
            await serve_messages(ws, self.server)
        except GONE:
            pass

    async def serve(self, port: int, *,
                    task_status: trio.TaskStatus[WebSocketServer] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        """Listen on 127.0.0.1:``port`` (0: a free one; :attr:`port` is then
        the bound one) until cancelled; Trio's ``started`` convention."""
        try:
            listeners = await trio.open_tcp_listeners(port, host=HOST)
        except OSError as exc:
            raise ChatcliError(f"Cannot serve the WebSocket API on {HOST}:{port}: "
                               f"{exc.strerror or exc}.") from None
        self.port = int(listeners[0].socket.getsockname()[1])
        server = WebSocketServer(self.handle, listeners, max_message_size=MAX_MESSAGE,
                                 connect_timeout=HANDSHAKE_TIMEOUT,
                                 disconnect_timeout=CLOSE_TIMEOUT)
        await server.run(task_status=task_status)
