"""Sans-I/O JSON-RPC 2.0 codec for the daemon's line-delimited wire.

No sockets, no clocks: :class:`LineSplitter` turns received bytes into lines
(bounded, so a peer cannot make us buffer without limit), :func:`parse_line`
turns one line into the messages to dispatch or the error responses to send,
and the ``encode_*`` functions turn answers back into one line each.
Errors follow the JSON-RPC 2.0 specification; application errors use code
``1000 + exit code`` and carry ``data.error`` and ``data.exit`` (see
``/work/prompts/api-contract.md`` and ``docs/api.md``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

MAX_LINE = 1024 * 1024
"""Largest accepted line in bytes, newline excluded (1 MiB)."""

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
APPLICATION_BASE = 1000

_STANDARD_KINDS = {
    PARSE_ERROR: "parse_error",
    INVALID_REQUEST: "invalid_request",
    METHOD_NOT_FOUND: "method_not_found",
    INVALID_PARAMS: "invalid_params",
    INTERNAL_ERROR: "internal_error",
}

JsonId = str | int | None
Params = dict[str, Any] | list[Any]


@dataclass(frozen=True)
class RpcError:
    """A JSON-RPC error object; ``message`` is one line for users."""

    code: int
    message: str
    kind: str
    exit: int = 1
    extra: dict[str, Any] = field(default_factory=dict)
    """More members of ``data`` (e.g. ``relay_code``)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "data": {**self.extra, "error": self.kind, "exit": self.exit},
        }


def standard_error(code: int, message: str) -> RpcError:
    """One of the five errors the specification defines (exit code 1; 2 for params)."""
    exit_code = 2 if code == INVALID_PARAMS else 1
    return RpcError(code, message, _STANDARD_KINDS[code], exit_code)


def application_error(kind: str, message: str, exit_code: int) -> RpcError:
    """An error of chatcli itself: code 1000 + the CLI's exit code."""
    return RpcError(APPLICATION_BASE + exit_code, message, kind, exit_code)


@dataclass(frozen=True)
class Request:
    """A call that wants an answer carrying ``id``."""

    id: str | int
    method: str
    params: Params = field(default_factory=dict)


@dataclass(frozen=True)
class Notification:
    """A call without an id: the peer wants no answer, not even an error."""

    method: str
    params: Params = field(default_factory=dict)


@dataclass(frozen=True)
class Invalid:
    """A message that broke the rules; answer it with ``error`` under ``id``."""

    id: JsonId
    error: RpcError


Message = Request | Notification | Invalid


@dataclass(frozen=True)
class Parsed:
    """One line parsed: its messages in order, and whether it was a batch.

    A batch's answers go back as one JSON array (omitted when empty); a single
    message's answer goes back alone.
    """

    messages: list[Message]
    batch: bool


def _valid_id(value: Any) -> bool:
    # bool is an int subclass in Python but not a JSON-RPC id.
    return value is None or isinstance(value, str) or (
        isinstance(value, int) and not isinstance(value, bool)
    )


def _invalid(reply_id: JsonId, message: str) -> Invalid:
    return Invalid(reply_id, standard_error(INVALID_REQUEST, message))


def _message(obj: Any) -> Message:
    if not isinstance(obj, dict):
        return Invalid(None, standard_error(INVALID_REQUEST, "A request must be a JSON object."))
    raw_id = obj.get("id")
    reply_id = raw_id if _valid_id(raw_id) else None
    if obj.get("jsonrpc") != "2.0":
        return _invalid(reply_id, 'A request needs "jsonrpc": "2.0".')
    method = obj.get("method")
    if not isinstance(method, str) or not method:
        return _invalid(reply_id, "A request needs a method name.")
    if not _valid_id(raw_id):
        return _invalid(None, "A request id must be a string or an integer.")
    params = obj.get("params", {})
    if not isinstance(params, (dict, list)):
        return _invalid(reply_id, "Params must be an object or an array.")
    if "id" not in obj:
        return Notification(method, params)
    if raw_id is None:
        # A null id is allowed by the specification but cannot be told apart
        # from answers to unparseable requests, so we refuse it.
        return Invalid(None, standard_error(INVALID_REQUEST, "A request id must not be null."))
    return Request(raw_id, method, params)


def parse_line(line: bytes) -> Parsed:
    """Parse one received line (without its newline) into messages."""
    if len(line) > MAX_LINE:
        return Parsed([Invalid(None, request_too_large())], batch=False)
    try:
        data = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        error = standard_error(PARSE_ERROR, "The request is not valid UTF-8 JSON.")
        return Parsed([Invalid(None, error)], batch=False)
    if isinstance(data, list):
        if not data:
            error = standard_error(INVALID_REQUEST, "A batch must not be empty.")
            return Parsed([Invalid(None, error)], batch=False)
        return Parsed([_message(item) for item in data], batch=True)
    return Parsed([_message(data)], batch=False)


def request_too_large() -> RpcError:
    """The answer to a line longer than :data:`MAX_LINE` (exit code 2, usage)."""
    return application_error(
        "request_too_large", f"The request is larger than {MAX_LINE} bytes.", 2
    )


def result_object(request_id: JsonId, result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def error_object(request_id: JsonId, error: RpcError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": error.to_json()}


def notification_object(method: str, params: Params) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": method, "params": params}


def request_object(request_id: str | int, method: str, params: Params) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}


def dumps(value: dict[str, Any] | list[dict[str, Any]]) -> str:
    """One message (or batch of answers) as compact ASCII JSON, no newline
    (a WebSocket text message)."""
    # ensure_ascii keeps the text free of raw U+2028 and other separators.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True)


def encode(value: dict[str, Any] | list[dict[str, Any]]) -> bytes:
    """One message (or batch of answers) as one line, newline included."""
    return dumps(value).encode("ascii") + b"\n"


class Oversized:
    """Marker from :class:`LineSplitter`: a line exceeded the limit and was dropped."""


class LineSplitter:
    """Splits a byte stream into lines, never holding more than ``max_line`` bytes.

    ``feed`` returns complete lines (without ``\\n``) and :class:`Oversized`
    markers in order. After an oversized line the rest of it, up to the next
    newline, is skipped; the caller decides whether to keep the connection.
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self._max = max_line
        self._buffer = bytearray()
        self._skipping = False

    def feed(self, data: bytes) -> list[bytes | Oversized]:
        out: list[bytes | Oversized] = []
        start = 0
        while start < len(data):
            newline = data.find(b"\n", start)
            end = len(data) if newline < 0 else newline
            if not self._skipping:
                self._buffer += data[start:end]
                if len(self._buffer) > self._max:
                    self._buffer.clear()
                    self._skipping = True
                    out.append(Oversized())
            if newline < 0:
                break
            if not self._skipping:
                out.append(bytes(self._buffer))
            self._buffer.clear()
            self._skipping = False
            start = newline + 1
        return out

    @property
    def pending(self) -> int:
        """Bytes of an unfinished line held (0 while skipping an oversized one)."""
        return len(self._buffer)


@dataclass(frozen=True)
class Response:
    """An answer received by a client: ``result`` or ``error`` for ``id``."""

    id: JsonId
    result: Any = None
    error: RpcError | None = None


def parse_incoming(line: bytes) -> Response | Notification:
    """Client side: parse one line from the daemon (an answer or an ``event``).

    Raises ``ValueError`` for anything that is neither; a client treats that
    as a broken daemon.
    """
    data = json.loads(line.decode("utf-8"))
    if not isinstance(data, dict) or data.get("jsonrpc") != "2.0":
        raise ValueError("not a JSON-RPC 2.0 message")
    if "method" in data:
        method, params = data["method"], data.get("params", {})
        if not isinstance(method, str) or not isinstance(params, (dict, list)):
            raise ValueError("malformed notification")
        return Notification(method, params)
    if not _valid_id(data.get("id")):
        raise ValueError("malformed id")
    if "error" in data:
        raw = data["error"]
        if not isinstance(raw, dict) or not isinstance(raw.get("code"), int):
            raise ValueError("malformed error")
        extra: dict[str, Any] = raw["data"] if isinstance(raw.get("data"), dict) else {}
        exit_code = extra.get("exit", 1)
        error = RpcError(
            raw["code"],
            str(raw.get("message", "")),
            str(extra.get("error", _STANDARD_KINDS.get(raw["code"], "error"))),
            exit_code if isinstance(exit_code, int) and not isinstance(exit_code, bool) else 1,
            {k: v for k, v in extra.items() if k not in ("error", "exit")},
        )
        return Response(data.get("id"), error=error)
    if "result" not in data:
        raise ValueError("an answer needs result or error")
    return Response(data.get("id"), result=data["result"])
