"""The daemon's life: one unlocked identity kept online, its API on a Unix socket.

Tasks, all under ``client.online()``: the receive loop (the only reader of
the own relay's pushes: it stays connected, reconnects with backoff and
publishes every event to the hub), the outbox retry loop (sends what an
unreachable relay left queued), and the socket server. Every API method runs
on the same resident client, so deliveries are serialised by the client's
delivery guard and every front end sees the same store.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from chatcli.api.local import LocalApi
from chatcli.daemon.hub import EventHub
from chatcli.daemon.instance import InstanceLock
from chatcli.daemon.server import DaemonServer

if TYPE_CHECKING:
    from chatcli.client.service import ChatClient

RETRY_INTERVAL = 5.0
"""Seconds between two attempts to send what the outbox still holds."""

CATCH_UP_WAIT = 10.0
"""How long a ``receive`` waits for the daemon's first catch-up with its relay."""


def log(message: str) -> None:
    """One line for the daemon's log (stderr): never message content or keys."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"{stamp} chatcli daemon: {message}", file=__import__("sys").stderr, flush=True)


class ResidentApi:
    """The API as the daemon serves it: :class:`LocalApi` on the resident
    client, plus what only a daemon has (``daemon.status``, ``daemon.stop``,
    own sends published as ``sent`` events, ``receive`` from the backlog)."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.local = LocalApi(daemon.client, resident=True)

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        if method == "daemon.status":
            return self.daemon.status()
        if method == "daemon.stop":
            self.daemon.stop()
            return {"pid": os.getpid(), "stopping": True}
        if method == "receive":
            return await self._receive(params)
        # One truncating WAL checkpoint per request, not one per transaction
        # (a send makes four): each costs an fsync (docs/threat-model.md).
        with self.daemon.client.store.deferred_scrub():
            result = await self.local.call(method, params)
        if method == "send":
            self.daemon.published_send(params, result)
        return result

    async def _receive(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """What waited for a consumer, then (with ``wait``) what arrives."""
        from chatcli.api import schema as s

        valid = self.local._validate("receive", params)
        assert isinstance(valid, s.Receive)
        await self.daemon.caught_up()
        hub = self.daemon.hub
        sub = hub.subscribe(consumer=True, backlog=True)
        events: list[dict[str, Any]] = []
        try:
            for _ in range(sub.replayed):
                events.append(sub.events.receive_nowait())
            if valid.wait:
                with trio.move_on_after(valid.wait):
                    async for event in sub.events:
                        events.append(event)
        finally:
            hub.unsubscribe(sub.id)
        return events


class Daemon:
    """One identity, online until :meth:`stop` (or SIGTERM/SIGINT)."""

    def __init__(self, client: ChatClient) -> None:
        self.client = client
        self.hub = EventHub()
        self.api = ResidentApi(self)
        self.lock = InstanceLock(client.home.root)
        self.socket_path: Path = client.home.daemon_socket
        self.started_at = time.time()
        self.connected = False
        self._synced = trio.Event()
        self._stopping = trio.Event()

    # ------------------------------------------------------------ control

    def stop(self) -> None:
        self._stopping.set()

    async def caught_up(self) -> None:
        """Wait (a little) until the first catch-up with the relay is done."""
        with trio.move_on_after(CATCH_UP_WAIT):
            await self._synced.wait()

    def status(self) -> dict[str, Any]:
        from chatcli.client import models as db

        account = self.client.account()
        with self.client.store.read():
            pending = db.Outbox.select().count()
        return {"pid": os.getpid(), "home": str(self.client.home.root),
                "socket": str(self.socket_path), "name": account.name,
                "fingerprint": self.client.identity.public.fingerprint(),
                "relay": account.relay_url.split("#")[0], "connected": self.connected,
                "synced": self._synced.is_set(), "subscribers": len(self.hub),
                "backlog": self.hub.backlog, "outbox": pending,
                "uptime": round(time.time() - self.started_at, 1)}

    def published_send(self, params: dict[str, Any], result: Any) -> None:
        """Tell every front end about a message sent through this daemon."""
        if not isinstance(result, dict) or "id" not in result:
            return
        event: dict[str, Any] = {"type": "sent", "id": result["id"], "to": result["to"],
                                 "text": params.get("text") or "",
                                 "sent_at": int(time.time() * 1000),
                                 "stored": bool(result.get("stored"))}
        if params.get("file"):
            event["file"] = Path(str(params["file"])).name
        if "members" in result:
            event["group"] = result["to"]
        self.hub.publish(event)

    # ------------------------------------------------------------ running

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Go online and serve until stopped; the caller holds :attr:`lock`."""
        try:
            async with self.client.online(), trio.open_nursery() as nursery:
                server = DaemonServer(self.api, self.hub, caught_up=self.caught_up)
                await nursery.start(server.serve_unix, self.socket_path)
                nursery.start_soon(self._signals)
                nursery.start_soon(self._receive_loop)
                nursery.start_soon(self._retry_loop)
                log(f"serving {self.socket_path} (pid {os.getpid()})")
                task_status.started()
                await self._stopping.wait()
                # Let the answer to `daemon.stop` leave before the sockets close.
                await trio.sleep(0.1)
                nursery.cancel_scope.cancel()
        finally:
            log("stopped")

    async def _signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum != signal.SIGHUP:
                    log(f"signal {signal.Signals(signum).name}: stopping")
                    self.stop()

    async def _receive_loop(self) -> None:
        from chatcli.api.events import KeyWatch, event_json
        from chatcli.client.attachments import download_for_event
        from chatcli.client.service import MessageEvent, NoticeEvent, SyncedEvent

        client = self.client
        keys = KeyWatch(client)
        async for event in client.listen(wait=math.inf):
            if isinstance(event, SyncedEvent):
                self.connected = True
                if not self._synced.is_set():
                    log("caught up with the relay")
                self._synced.set()
                continue
            if isinstance(event, NoticeEvent) and event.warning and event.contact is None:
                # listen() says so when the connection dropped and it reconnects.
                self.connected = False
                log("relay connection lost; reconnecting")
                self._synced.set()  # nothing to wait for until it is back
            if isinstance(event, MessageEvent) and event.attachment is not None:
                event = await download_for_event(client, event, None)
            self.hub.publish(event_json(event, keys))

    async def _retry_loop(self) -> None:
        from chatcli.client import models as db

        while True:
            await trio.sleep(RETRY_INTERVAL)
            with self.client.store.read():
                waiting = db.Outbox.select().exists()
            if waiting:
                await self.client.flush_outbox(time_limit=RETRY_INTERVAL * 2)


def serve(client: ChatClient, on_ready: Callable[[Daemon], None] | None = None) -> None:
    """Run a daemon for ``client`` in this process until it is stopped.

    Raises :class:`chatcli.daemon.instance.DaemonRunningError` at once when
    another daemon owns the home, and the ChatcliError that ended it otherwise
    (the installation was replaced, the account was deleted...)."""
    from chatcli.errors import ChatcliError

    daemon = Daemon(client)
    daemon.lock.acquire()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(daemon.run)
            if on_ready is not None:
                on_ready(daemon)

    try:
        trio.run(main)
    except BaseExceptionGroup as group:
        found = group.subgroup(lambda e: isinstance(e, ChatcliError))
        while found is not None and isinstance(found, BaseExceptionGroup):
            found = found.exceptions[0] if found.exceptions else None
        if isinstance(found, ChatcliError):
            raise found from None
        raise
    finally:
        daemon.lock.release()
