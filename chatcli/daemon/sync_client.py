"""The CLI's side of a running daemon: blocking JSON-RPC over its Unix socket.

Standard library only (no trio), so that a command run while the daemon is
up starts fast: ``chatcli send`` through the daemon imports click, this
module and the JSON-RPC codec, and nothing of the crypto or the network.
:class:`DaemonCliApi` has the same ``call``/``stream`` surface as direct mode
(:class:`chatcli.cli.output.DirectApi`): same results, same errors, same exit
codes.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chatcli.client.agent import _connect
from chatcli.daemon import jsonrpc
from chatcli.errors import ChatcliError

ENV_DAEMON = "CHATCLI_DAEMON"
CONNECT_TIMEOUT = 2.0
RECEIVE_CHUNK = 65536

# Parameters that name files: made absolute here, since the daemon runs in /.
PATH_PARAMS = ("file", "avatar", "save_dir", "previous_keys")


class DaemonGoneError(ChatcliError):
    """The daemon went away in the middle of a request."""


def enabled() -> bool:
    """False when ``CHATCLI_DAEMON=0`` asks commands to work directly."""
    return os.environ.get(ENV_DAEMON, "1") != "0"


class _Connection:
    def __init__(self, path: Path) -> None:
        try:
            self.sock = _connect(path, CONNECT_TIMEOUT)
        except OSError as exc:
            raise DaemonGoneError(f"Cannot reach the chatcli daemon at {path}: "
                                  f"{exc.strerror or exc}.") from None
        self.sock.settimeout(None)
        self.splitter = jsonrpc.LineSplitter()
        self.lines: list[bytes] = []

    def close(self) -> None:
        self.sock.close()

    def send(self, message: dict[str, Any]) -> None:
        self.sock.sendall(jsonrpc.encode(message))

    def receive(self, timeout: float | None = None
                ) -> jsonrpc.Response | jsonrpc.Notification | None:
        """The next message, or None when ``timeout`` passed first."""
        while not self.lines:
            self.sock.settimeout(timeout)
            try:
                data = self.sock.recv(RECEIVE_CHUNK)
            except TimeoutError:
                return None
            except OSError as exc:
                raise DaemonGoneError(f"The chatcli daemon connection broke: {exc}.") from None
            if not data:
                raise DaemonGoneError("The chatcli daemon closed the connection (did it stop?).")
            for line in self.splitter.feed(data):
                if isinstance(line, jsonrpc.Oversized):
                    raise DaemonGoneError("The chatcli daemon sent an oversized answer.")
                if line.strip():
                    self.lines.append(line)
        try:
            return jsonrpc.parse_incoming(self.lines.pop(0))
        except ValueError:
            raise DaemonGoneError("The chatcli daemon sent a malformed answer.") from None


def _raise(error: jsonrpc.RpcError) -> None:
    from chatcli.api.errors import ApiChatcliError, ApiError

    raise ApiChatcliError(ApiError(error.kind, error.message, exit_code=error.exit,
                                   extra=error.extra))


def _absolute(params: dict[str, Any]) -> dict[str, Any]:
    fixed = dict(params)
    for key in PATH_PARAMS:
        value = fixed.get(key)
        if isinstance(value, str) and value:
            fixed[key] = os.path.abspath(os.path.expanduser(value))
    return fixed


class DaemonCliApi:
    """:class:`chatcli.cli.output.CliApi` over the daemon's socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._ids = itertools.count(1)

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        conn = _Connection(self.path)
        try:
            request_id = next(self._ids)
            conn.send(jsonrpc.request_object(request_id, method, _absolute(params or {})))
            while True:
                message = conn.receive()
                if isinstance(message, jsonrpc.Response) and message.id == request_id:
                    if message.error is not None:
                        _raise(message.error)
                    return message.result
        finally:
            conn.close()

    def stream(self, handler: Callable[[dict[str, Any]], None], *, wait: float | None,
               read_receipts: bool, save_dir: str | None) -> None:
        """What waited for a consumer first, then (with ``wait``) what arrives."""
        conn = _Connection(self.path)
        try:
            request_id = next(self._ids)
            conn.send(jsonrpc.request_object(request_id, "subscribe",
                                             {"consumer": True, "backlog": True}))
            replayed: int | None = None
            seen = 0
            deadline: float | None = None
            while True:
                if replayed is not None and seen >= replayed:
                    if not wait or wait <= 0:
                        return
                    if deadline is None:
                        deadline = time.monotonic() + wait
                timeout = None if deadline is None else deadline - time.monotonic()
                if timeout is not None and timeout <= 0:
                    return
                message = conn.receive(timeout)
                if message is None:
                    return
                if isinstance(message, jsonrpc.Response) and message.id == request_id:
                    if message.error is not None:
                        _raise(message.error)
                    result = message.result if isinstance(message.result, dict) else {}
                    replayed = int(result.get("replayed", 0))
                elif isinstance(message, jsonrpc.Notification) and message.method == "event":
                    params = message.params if isinstance(message.params, dict) else {}
                    event = params.get("event")
                    if isinstance(event, dict):
                        seen += 1
                        self._hand_out(event, handler, read_receipts, save_dir)
        finally:
            conn.close()

    def _hand_out(self, event: dict[str, Any], handler: Callable[[dict[str, Any]], None],
                  read_receipts: bool, save_dir: str | None) -> None:
        attachment = event.get("attachment")
        if save_dir and isinstance(attachment, dict) and attachment.get("path"):
            # The daemon saved it in CHATCLI_HOME/downloads; this receive wants it here.
            target = Path(save_dir).expanduser()
            target.mkdir(parents=True, exist_ok=True)
            source = Path(attachment["path"])
            moved = target / source.name
            if source.exists() and not moved.exists():
                shutil.move(str(source), moved)
                event = {**event, "attachment": {**attachment, "path": str(moved.resolve())}}
        handler(event)
        if read_receipts and event.get("type") == "message" and not event.get("group"):
            self.call("read", {"contact": event["from"], "ids": [event["id"]]})


def find(home_root: Path) -> DaemonCliApi | None:
    """The running daemon of this home, or None (then commands work directly)."""
    path = home_root / "daemon.sock"
    if not enabled() or not path.exists():
        return None
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(CONNECT_TIMEOUT)
        from chatcli.client.agent import socket_address

        with socket_address(path) as address:
            conn.connect(address)
        conn.close()
    except OSError:
        return None  # a stale socket of a daemon that died: work directly
    return DaemonCliApi(path)
