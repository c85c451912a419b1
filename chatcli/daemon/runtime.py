"""The daemon's life: one unlocked identity kept online, its API on a Unix socket.

Tasks, all under ``client.online()``: the receive loop (the only reader of
the own relay's pushes: it stays connected, reconnects with backoff and
publishes every event to the hub), the outbox retry loop (sends what an
unreachable relay left queued), the socket server and, when asked for
(``--web PORT`` or the ``web.start`` method), the web front end on
127.0.0.1 (:mod:`chatcli.web`), fed by the same hub. Every API method runs
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
    from chatcli.client.home import Home
    from chatcli.client.service import ChatClient
    from chatcli.web import WebServer

RETRY_INTERVAL = 5.0
"""Seconds between two attempts to send what the outbox still holds."""

WEB_UPLOADS = "web-uploads"
"""Folder of CHATCLI_HOME where the page's files wait until they are sent."""

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

    @property
    def local(self) -> LocalApi:
        """The API of the unlocked identity; a ``locked`` error while locked."""
        local = self.daemon.local
        if local is None:
            from chatcli.api.errors import ApiError

            if not self.daemon.home.exists():
                raise ApiError("no_identity", "There is no identity here yet: create one "
                               "in the web page (`chatcli web`) or with `chatcli init`.")
            raise ApiError("locked", "chatcli is locked: unlock it with your passphrase "
                           "(in the web page: `chatcli web`).")
        return local

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        if method == "daemon.status":
            return self.daemon.status()
        if method == "daemon.stop":
            self.daemon.stop()
            return {"pid": os.getpid(), "stopping": True}
        if method == "unlock":
            valid = _daemon_params(method, params)
            return await self.daemon.unlock(valid.passphrase)
        if method == "lock":
            _daemon_params(method, params)
            return await self.daemon.lock_identity()
        if method == "account.create":
            return await self.daemon.create_identity(_daemon_params(method, params))
        if method == "receive":
            return await self._receive(params)
        if method == "web.start":
            return await self._web_start(params)
        if method == "web.login":
            _daemon_params(method, params)
            server = self.daemon.web
            if server is None:
                from chatcli.api.errors import ApiError

                raise ApiError("usage_error", "The daemon serves no web page: start it "
                               "with `chatcli web` (or the method `web.start`).")
            return {"url": server.login_url(), "page": server.url}
        result = await self.local.call(method, params)
        if method == "send":
            self.daemon.published_send(params, result)
        return result

    async def _web_start(self, params: dict[str, Any]) -> dict[str, Any]:
        from chatcli.api import schema as s

        valid = _daemon_params("web.start", params)
        assert isinstance(valid, s.WebStart)
        started = self.daemon.web is None
        if started:
            await self.daemon.start_web(valid.port)
        assert self.daemon.web is not None
        return {"page": self.daemon.web.url, "port": self.daemon.web.port, "started": started}

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


def _daemon_params(method: str, params: dict[str, Any]) -> Any:
    """The parameters of a daemon-only method, validated as LocalApi does its own."""
    import msgspec

    from chatcli.api import schema as s
    from chatcli.api.errors import ApiError

    try:
        return msgspec.convert(params or {}, s.METHODS[method].params)
    except msgspec.ValidationError as exc:
        raise ApiError("invalid_params", f"Bad parameters for {method}: {exc}.",
                       exit_code=2) from None


class Daemon:
    """One identity, online until :meth:`stop` (or SIGTERM/SIGINT).

    Started with a ``client`` it is unlocked at once; started with only a
    ``home`` it is *locked*: it serves its socket (and web page) and answers
    ``locked`` to everything but ``unlock``, ``daemon.*`` and ``web.*``.
    ``unlock {passphrase}`` opens the keystore and goes online; ``lock``
    goes offline and forgets the keys (the client is dropped)."""

    def __init__(self, client: ChatClient | None, *, home: Home | None = None,
                 web_port: int | None = None) -> None:
        if client is not None:
            home = client.home
        assert home is not None, "a locked daemon needs its home"
        self.home = home
        self.client = client
        self.local: LocalApi | None = (LocalApi(client, resident=True)
                                       if client is not None else None)
        self._own_client = False
        self._lock_requested = trio.Event()
        self._session_done = trio.Event()
        self._unlock_lock = trio.Lock()
        self.web_port = web_port
        self.web: WebServer | None = None
        self._nursery: trio.Nursery | None = None
        self._web_lock = trio.Lock()
        self.hub = EventHub()
        self.api = ResidentApi(self)
        self.lock = InstanceLock(home.root)
        self.socket_path: Path = home.daemon_socket
        self.started_at = time.time()
        self.connected = False
        self._synced = trio.Event()
        self._stopping = trio.Event()

    # ------------------------------------------------------------ control

    def stop(self) -> None:
        self._stopping.set()

    async def caught_up(self) -> None:
        """Wait (a little) until the first catch-up with the relay is done."""
        if self.client is None:
            return
        with trio.move_on_after(CATCH_UP_WAIT):
            await self._synced.wait()

    def status(self) -> dict[str, Any]:
        from chatcli.client import models as db

        found: dict[str, Any] = {
            "pid": os.getpid(), "home": str(self.home.root), "socket": str(self.socket_path),
            "name": "", "fingerprint": "", "relay": "", "connected": self.connected,
            "synced": self._synced.is_set(), "subscribers": len(self.hub),
            "backlog": self.hub.backlog, "outbox": 0,
            "uptime": round(time.time() - self.started_at, 1),
            "web": self.web.url if self.web is not None else None,
            "locked": self.client is None, "identity": self.home.exists()}
        client = self.client
        if client is not None:
            account = client.account()
            with client.store.read():
                found["outbox"] = db.Outbox.select().count()
            found.update(name=account.name, fingerprint=client.identity.public.fingerprint(),
                         relay=account.relay_url.split("#")[0])
        return found

    async def unlock(self, passphrase: str) -> dict[str, Any]:
        """Open the keystore with ``passphrase`` and go online (nothing to do
        when unlocked). A wrong passphrase is a ``crypto_error``."""
        from chatcli.api.errors import from_chatcli_error
        from chatcli.client.keys import read_secrets
        from chatcli.client.service import ChatClient
        from chatcli.errors import ChatcliError

        async with self._unlock_lock:
            if self.client is None:
                try:
                    secrets = await trio.to_thread.run_sync(
                        read_secrets, self.home.keystore, passphrase)
                    client = ChatClient.from_secrets(self.home, secrets)
                except ChatcliError as exc:
                    log("unlock refused")
                    raise from_chatcli_error(exc) from exc
                self._own_client = True
                self._start_session(client)
                assert self._nursery is not None, "the daemon is not running"
                await self._nursery.start(self._session, client)
                log("unlocked")
            assert self.client is not None
            return {"unlocked": True, "name": self.client.account().name}

    async def create_identity(self, p: Any) -> dict[str, Any]:
        """``account.create``: what ``chatcli init`` does, for a daemon started
        on an empty home; it is then unlocked with the new identity."""
        from chatcli.api.errors import ApiError, from_chatcli_error
        from chatcli.client.service import create_account
        from chatcli.client.unlock import MIN_LENGTH
        from chatcli.errors import ChatcliError

        if len(p.passphrase) < MIN_LENGTH:
            raise ApiError("usage_error",
                           f"Choose a passphrase of at least {MIN_LENGTH} characters.")
        async with self._unlock_lock:
            if self.client is not None or self.home.exists():
                raise ApiError("usage_error", f"An identity already exists in {self.home.root}.")
            try:
                with self.home.exclusive():
                    client, tofu = await create_account(
                        self.home, p.passphrase, name=p.name, relay_url=p.relay,
                        token=p.token or None)
            except ChatcliError as exc:
                log("account creation refused")
                raise from_chatcli_error(exc) from exc
            self._own_client = True
            self._start_session(client)
            assert self._nursery is not None, "the daemon is not running"
            await self._nursery.start(self._session, client)
            account = client.account()
            log("identity created; unlocked")
            return {"name": account.name, "fingerprint": client.identity.public.fingerprint(),
                    "relay": account.relay_url, "pinned_on_first_use": tofu}

    async def lock_identity(self) -> dict[str, Any]:
        """Go offline and drop the unlocked keys (nothing to do when locked)."""
        async with self._unlock_lock:
            if self.client is not None:
                self._lock_requested.set()
                await self._session_done.wait()
                log("locked")
            return {"locked": True}

    def _start_session(self, client: ChatClient) -> None:
        self.client = client
        self.local = LocalApi(client, resident=True)
        self._lock_requested = trio.Event()
        self._session_done = trio.Event()
        self._synced = trio.Event()
        self.connected = False

    async def start_web(self, port: int = 0) -> None:
        """Serve the web front end on 127.0.0.1:PORT (0: a free port), once."""
        from chatcli.web import WebServer

        async with self._web_lock:
            if self.web is not None:
                return
            assert self._nursery is not None, "the daemon is not running"
            home = self.home
            home.downloads.mkdir(exist_ok=True, mode=0o700)
            uploads = home.root / WEB_UPLOADS
            server = WebServer(self.api, upload_dir=uploads, download_dir=home.downloads,
                               events=self.hub)
            try:
                await self._nursery.start(server.serve, port)
            except OSError as exc:
                from chatcli.errors import UsageError

                raise UsageError(f"Cannot serve the web page on 127.0.0.1:{port}: "
                                 f"{exc.strerror or exc}.") from None
            self.web = server
            log(f"web front end on {server.url}")

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
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self.client is not None:
                    self._start_session(self.client)
                    await nursery.start(self._session, self.client)
                server = DaemonServer(self.api, self.hub, caught_up=self.caught_up)
                await nursery.start(server.serve_unix, self.socket_path)
                nursery.start_soon(self._signals)
                locked = " (locked: `unlock` opens it)" if self.client is None else ""
                log(f"serving {self.socket_path} (pid {os.getpid()}){locked}")
                if self.web_port is not None:
                    await self.start_web(self.web_port)
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

    async def _session(self, client: ChatClient, *,
                       task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """``client`` online with its loops, until :meth:`lock_identity` (or the end)."""
        try:
            async with client.online(), trio.open_nursery() as nursery:
                nursery.start_soon(self._receive_loop, client)
                nursery.start_soon(self._retry_loop, client)
                task_status.started()
                await self._lock_requested.wait()
                nursery.cancel_scope.cancel()
        finally:
            self.client = None
            self.local = None
            self.connected = False
            self._session_done.set()
            if self._own_client:
                self._own_client = False
                client.close()

    async def _receive_loop(self, client: ChatClient) -> None:
        from chatcli.api.events import KeyWatch, event_json
        from chatcli.client.attachments import download_for_event
        from chatcli.client.service import MessageEvent, NoticeEvent, SyncedEvent

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

    async def _retry_loop(self, client: ChatClient) -> None:
        from chatcli.client import models as db

        while True:
            await trio.sleep(RETRY_INTERVAL)
            with client.store.read():
                waiting = db.Outbox.select().exists()
            if waiting:
                await client.flush_outbox(time_limit=RETRY_INTERVAL * 2)


def serve(client: ChatClient | None, on_ready: Callable[[Daemon], None] | None = None, *,
          web_port: int | None = None, home: Home | None = None) -> None:
    """Run a daemon for ``client`` (None: locked, for ``home``) in this process
    until it is stopped.

    Raises :class:`chatcli.daemon.instance.DaemonRunningError` at once when
    another daemon owns the home, and the ChatcliError that ended it otherwise
    (the installation was replaced, the account was deleted...)."""
    from chatcli.errors import ChatcliError

    daemon = Daemon(client, home=home, web_port=web_port)
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
