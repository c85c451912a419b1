"""Forwarding JSON-RPC 2.0 between a browser's WebSocket and the API object.

Each text frame holds one JSON-RPC request, notification or batch. Requests
go to ``api.call(method, params)``; ``subscribe``/``unsubscribe`` are handled
here: a subscription reads events and sends each one as an ``event``
notification (the shape the daemon's Unix socket uses). Served by the daemon,
the events come from its :class:`~chatcli.daemon.hub.EventHub` (an
:class:`EventSource`), so browsers, CLI commands and scripts all see every
event; without one (tests, a bare server) each subscription reads
``api.events(...)``.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Protocol, cast

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from chatcli.errors import ChatcliError

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
APPLICATION_ERROR_BASE = 1000

MAX_SUBSCRIPTIONS = 4
MAX_CALLS_IN_FLIGHT = 16


class CallApi(Protocol):
    """What the web front end needs of the API layer when an :class:`EventSource`
    feeds its subscriptions (the daemon's ``ResidentApi``)."""

    async def call(self, method: str, params: dict[str, Any]) -> Any: ...


class WebApi(CallApi, Protocol):
    """An API layer that also streams events itself (``chatcli.api.LocalApi``)."""

    def events(self, *, wait: float | None, read_receipts: bool) -> AsyncIterator[dict[str, Any]]:
        ...


class HubSubscription(Protocol):
    """One subscription of an :class:`EventSource`: its id and its events."""

    @property
    def id(self) -> int: ...

    @property
    def events(self) -> trio.MemoryReceiveChannel[dict[str, Any]]: ...


class EventSource(Protocol):
    """Where subscriptions get their events when the daemon serves the page
    (``chatcli.daemon.hub.EventHub``): ``subscribe`` never blocks; the
    subscription's channel closes when it is dropped for not reading."""

    def subscribe(self, types: Iterable[str] | None = None, *,
                  on_drop: Callable[[], None] | None = None, consumer: bool = False,
                  backlog: bool = False) -> HubSubscription: ...

    def unsubscribe(self, sub_id: int) -> bool: ...


DROPPED = {"code": INTERNAL_ERROR, "message": "The page fell behind the event stream; "
           "it subscribes again.", "data": {"error": "events_dropped"}}


def _snake(name: str) -> str:
    name = name.removesuffix("Error") or name
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def error_object(exc: BaseException) -> dict[str, Any]:
    """The JSON-RPC error object for an exception raised by the API."""
    # chatcli.api's ApiError knows its JSON-RPC error object.
    to_json = getattr(exc, "to_json", None)
    if callable(to_json):
        obj = to_json()
        if isinstance(obj, dict):
            return obj
    if isinstance(exc, ChatcliError):
        kind = getattr(exc, "code", None)
        return {
            "code": APPLICATION_ERROR_BASE + exc.exit_code,
            "message": str(exc),
            "data": {
                "error": kind if isinstance(kind, str) else _snake(type(exc).__name__),
                "exit": exc.exit_code,
            },
        }
    return {
        "code": INTERNAL_ERROR,
        "message": "internal error",
        "data": {"error": "internal_error"},
    }


def _error(req_id: Any, code: int, message: str, kind: str) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": req_id,
        "error": {"code": code, "message": message, "data": {"error": kind}},
    }


class Bridge:
    """One browser connection: its calls in flight and its subscriptions."""

    def __init__(self, api: CallApi, ws: WebSocketConnection,
                 source: EventSource | None = None) -> None:
        self._api = api
        self._source = source
        self._ws = ws
        self._send_lock = trio.Lock()
        self._calls = trio.Semaphore(MAX_CALLS_IN_FLIGHT)
        self._subscriptions: dict[int, trio.CancelScope] = {}
        self._next_subscription = 1

    async def run(self) -> None:
        """Serve frames until the browser closes the socket."""
        async with trio.open_nursery() as nursery:
            try:
                while True:
                    frame = await self._ws.get_message()
                    await self._calls.acquire()
                    nursery.start_soon(self._answer_frame, frame, nursery)
            except ConnectionClosed:
                pass
            nursery.cancel_scope.cancel()

    async def _send(self, obj: Any) -> None:
        async with self._send_lock:
            with contextlib.suppress(ConnectionClosed):
                await self._ws.send_message(json.dumps(obj, separators=(",", ":")))

    async def _answer_frame(self, frame: str | bytes, nursery: trio.Nursery) -> None:
        try:
            try:
                message = json.loads(frame)
            except (ValueError, UnicodeDecodeError):
                await self._send(_error(None, PARSE_ERROR, "not valid JSON", "parse_error"))
                return
            if isinstance(message, list):
                if not message:
                    await self._send(
                        _error(None, INVALID_REQUEST, "empty batch", "invalid_request")
                    )
                    return
                replies = [await self._answer(item, nursery) for item in message]
                answered = [reply for reply in replies if reply is not None]
                if answered:
                    await self._send(answered)
                return
            reply = await self._answer(message, nursery)
            if reply is not None:
                await self._send(reply)
        finally:
            self._calls.release()

    async def _answer(self, message: Any, nursery: trio.Nursery) -> dict[str, Any] | None:
        """The response to one request (None for a notification)."""
        if (
            not isinstance(message, dict)
            or message.get("jsonrpc") != "2.0"
            or not isinstance(message.get("method"), str)
        ):
            req_id = message.get("id") if isinstance(message, dict) else None
            return _error(req_id, INVALID_REQUEST, "not a JSON-RPC 2.0 request", "invalid_request")
        req_id = message.get("id")
        is_notification = "id" not in message
        params = message.get("params", {})
        if not isinstance(params, dict):
            reply = _error(req_id, INVALID_PARAMS, "params must be an object", "invalid_params")
            return None if is_notification else reply
        method: str = message["method"]
        try:
            if method == "subscribe":
                result: Any = self._subscribe(params, nursery)
            elif method == "unsubscribe":
                result = self._unsubscribe(params)
            else:
                result = await self._api.call(method, params)
        except ValueError as exc:
            reply = _error(req_id, INVALID_PARAMS, str(exc), "invalid_params")
        except Exception as exc:
            reply = {"jsonrpc": "2.0", "id": req_id, "error": error_object(exc)}
        else:
            reply = {"jsonrpc": "2.0", "id": req_id, "result": result}
        return None if is_notification else reply

    def _subscribe(self, params: dict[str, Any], nursery: trio.Nursery) -> dict[str, int]:
        types = params.get("types")
        if types is not None and (
            not isinstance(types, list) or not all(isinstance(t, str) for t in types)
        ):
            raise ValueError("types must be a list of event type names")
        if len(self._subscriptions) >= MAX_SUBSCRIPTIONS:
            raise ValueError(f"at most {MAX_SUBSCRIPTIONS} subscriptions per connection")
        sub_id = self._next_subscription
        self._next_subscription += 1
        scope = trio.CancelScope()
        self._subscriptions[sub_id] = scope
        nursery.start_soon(self._pump_events, sub_id, None if types is None else set(types), scope)
        return {"subscription": sub_id}

    def _unsubscribe(self, params: dict[str, Any]) -> bool:
        sub_id = params.get("subscription")
        scope = self._subscriptions.pop(sub_id, None) if isinstance(sub_id, int) else None
        if scope is None:
            raise ValueError("no such subscription")
        scope.cancel()
        return True

    async def _pump_events(
        self, sub_id: int, types: set[str] | None, scope: trio.CancelScope
    ) -> None:
        with scope:
            if self._source is not None:
                await self._pump_hub(sub_id, types, self._source)
                return
            try:
                # The browser sends read receipts itself (`read`) once a message is shown.
                api = cast(WebApi, self._api)
                async for event in api.events(wait=math.inf, read_receipts=False):
                    if types is None or event.get("type") in types:
                        await self._send(_notification(sub_id, event))
            except Exception as exc:
                # The stream failed (relay gone for good, identity locked): tell
                # the page, which shows the error and subscribes again.
                await self._send(_notification(sub_id, {"type": "error", **error_object(exc)}))
        self._subscriptions.pop(sub_id, None)

    async def _pump_hub(self, sub_id: int, types: set[str] | None,
                        source: EventSource) -> None:
        # A consumer, as a chat window is: what the page shows does not wait
        # in the daemon's backlog for the next `chatcli receive`.
        sub = source.subscribe(types, consumer=True)
        try:
            async for event in sub.events:
                await self._send(_notification(sub_id, event))
            # The hub dropped this subscription (the page stopped reading).
            await self._send(_notification(sub_id, {"type": "error", **DROPPED}))
        finally:
            source.unsubscribe(sub.id)
            self._subscriptions.pop(sub_id, None)


def _notification(sub_id: int, event: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": "event", "params": {"subscription": sub_id, "event": event}}
