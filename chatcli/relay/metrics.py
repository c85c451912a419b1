"""Prometheus metrics and the tiny HTTP endpoint serving ``/metrics`` and
``/healthz`` on ``--metrics-port``.

Each relay instance has its own registry (tests run several relays in one
process). Metric labels are frame types and error codes only: never mailbox
ids, capabilities or addresses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["RelayMetrics", "serve_metrics"]

log = logging.getLogger("chatcli.relay.metrics")


class RelayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.connections = Gauge("chatcli_relay_connections", "Open connections.", registry=r)
        self.authenticated = Gauge("chatcli_relay_authenticated_connections",
                                   "Connections authenticated as a mailbox owner.", registry=r)
        self.online_mailboxes = Gauge("chatcli_relay_online_mailboxes",
                                      "Mailboxes with at least one connection.", registry=r)
        self.subscriptions = Gauge("chatcli_relay_presence_subscriptions",
                                   "Presence subscriptions.", registry=r)
        self.frames = Counter("chatcli_relay_frames_received", "Frames received, by type.",
                              ["type"], registry=r)
        self.errors = Counter("chatcli_relay_errors", "Error answers sent, by code.",
                              ["code"], registry=r)
        self.deposits = Counter("chatcli_relay_deposits", "Deposits stored.", registry=r)
        self.deposit_bytes = Counter("chatcli_relay_deposit_bytes",
                                     "Bytes of deposits stored.", registry=r)
        self.deposits_refused = Counter("chatcli_relay_deposits_refused",
                                        "Deposits refused, by code.", ["code"], registry=r)
        self.delivered = Counter("chatcli_relay_messages_delivered",
                                 "Messages sent to owners (including repeats).", registry=r)
        self.acked = Counter("chatcli_relay_messages_acked", "Messages acknowledged and deleted.",
                             registry=r)
        self.expired = Counter("chatcli_relay_messages_expired",
                               "Undelivered messages deleted after the retention time.",
                               registry=r)
        self.commit_items = Histogram("chatcli_relay_commit_items",
                                      "Deposits and acks per group commit.",
                                      buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096),
                                      registry=r)
        self.commit_seconds = Histogram("chatcli_relay_commit_seconds",
                                        "Duration of a group commit.",
                                        buckets=(.0005, .001, .002, .005, .01, .02, .05, .1,
                                                 .25, .5, 1, 2.5), registry=r)
        self.refused_connections = Counter("chatcli_relay_refused_connections",
                                           "Connections refused, by reason.", ["reason"],
                                           registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


async def _respond(stream: trio.SocketStream, metrics: RelayMetrics,
                   healthy: Callable[[], bool]) -> None:
    try:
        with trio.move_on_after(5):
            request = b""
            while b"\r\n\r\n" not in request and len(request) < 8192:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    return
                request += chunk
            line = request.split(b"\r\n", 1)[0].split(b" ")
            method, path = (line[0], line[1]) if len(line) >= 2 else (b"", b"")
            path = path.split(b"?", 1)[0]
            if method not in (b"GET", b"HEAD"):
                status, ctype, body = b"405 Method Not Allowed", b"text/plain", b"GET only\n"
            elif path == b"/metrics":
                status, ctype, body = b"200 OK", CONTENT_TYPE_LATEST.encode(), metrics.render()
            elif path == b"/healthz":
                ok = healthy()
                status = b"200 OK" if ok else b"503 Service Unavailable"
                ctype, body = b"text/plain", b"ok\n" if ok else b"unavailable\n"
            else:
                status, ctype, body = b"404 Not Found", b"text/plain", b"not found\n"
            head = (b"HTTP/1.1 " + status + b"\r\nContent-Type: " + ctype
                    + b"\r\nContent-Length: " + str(len(body)).encode()
                    + b"\r\nConnection: close\r\n\r\n")
            await stream.send_all(head + (b"" if method == b"HEAD" else body))
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    except Exception:
        log.exception("metrics endpoint failed")
    finally:
        with trio.move_on_after(1) as scope:
            scope.shield = True
            await stream.aclose()


async def serve_metrics(metrics: RelayMetrics, host: str, port: int,
                        healthy: Callable[[], bool], *,
                        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``/metrics`` and ``/healthz`` until cancelled; started() with the port."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]

    async def handler(stream: trio.SocketStream) -> None:
        await _respond(stream, metrics, healthy)

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handler, listeners)
        task_status.started(bound)
