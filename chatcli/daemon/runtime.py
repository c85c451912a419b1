"""The daemon's life: one identity, its API on a Unix socket, online while unlocked.

A daemon is in one of three states: ``empty`` (no identity in its home yet:
``account.create`` makes one), ``locked`` (an identity whose keys it does not
hold: ``unlock`` with the passphrase) or ``unlocked``. While unlocked, a
*session* runs under ``client.online()``: the receive loop (the only reader
of the own relay's pushes: it stays connected, reconnects with backoff and
publishes every event to the hub) and the outbox retry loop. ``lock`` ends
the session and drops the keys; the socket server runs in every state, and
so does, opted into with ``--websocket PORT``, the same API on a loopback
WebSocket behind a bearer token (:mod:`chatcli.daemon.websocket`), and with
``--web PORT`` (or the ``web.start`` method) the web front end on 127.0.0.1
(:mod:`chatcli.web`), fed by the same hub.
Every API method runs on the same resident client, so deliveries are
serialised by the client's delivery guard and every front end sees the same
store.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from chatcli.api.errors import ApiError
from chatcli.api.local import LocalApi
from chatcli.daemon.hub import EventHub
from chatcli.daemon.instance import InstanceLock
from chatcli.daemon.server import DaemonServer

if TYPE_CHECKING:
    from chatcli.api.events import KeyWatch
    from chatcli.client.home import Home
    from chatcli.client.service import ChatClient
    from chatcli.client.store import Store
    from chatcli.daemon.websocket import WebSocketApi
    from chatcli.web import WebServer

RETRY_INTERVAL = 5.0
"""Seconds between two attempts to send what the outbox still holds."""

WEB_UPLOADS = "web-uploads"
"""Folder of CHATCLI_HOME where the page's files wait until they are sent."""

CONTACT_CHANGES = frozenset({"contacts.verify", "contacts.block", "contacts.unblock"})
"""Methods after which the daemon publishes a ``contact`` event."""

CATCH_UP_WAIT = 10.0
"""How long a ``receive`` waits for the daemon's first catch-up with its relay."""

# Methods a daemon answers in every state (the others need the unlocked keys).
ANY_STATE = frozenset({"version", "daemon.status", "daemon.stop", "unlock", "lock",
                       "account.create", "web.start", "web.login"})


def log(message: str) -> None:
    """One line for the daemon's log (stderr): never message content or keys."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"{stamp} chatcli daemon: {message}", file=sys.stderr, flush=True)


class ResidentApi:
    """The API as the daemon serves it: :class:`LocalApi` on the resident
    client, plus what only a daemon has (``daemon.*``, ``unlock``, ``lock``,
    ``account.create``, own sends published as ``sent`` events, ``receive``
    from the backlog)."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.local: LocalApi | None = None

    def _checked(self, method: str, params: dict[str, Any]) -> Any:
        """Validated parameters (same errors as LocalApi), in any state."""
        from chatcli.api import schema as s

        spec = s.METHODS.get(method)
        if spec is None:
            raise ApiError("method_not_found", f"There is no method {method!r}.", exit_code=2)
        import msgspec

        try:
            return msgspec.convert(params or {}, spec.params)
        except msgspec.ValidationError as exc:
            raise ApiError("invalid_params", f"Bad parameters for {method}: {exc}.",
                           exit_code=2) from None

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        daemon = self.daemon
        if method in ANY_STATE:
            valid = self._checked(method, params)
            if method == "version":
                from chatcli import __version__
                from chatcli.api.schema import API_VERSION

                return {"version": __version__, "api": API_VERSION}
            if method == "daemon.status":
                return daemon.status()
            if method == "daemon.stop":
                daemon.stop()
                return {"pid": os.getpid(), "stopping": True}
            if method == "unlock":
                await daemon.unlock(valid.passphrase)
                return daemon.status()
            if method == "lock":
                await daemon.lock_keys()
                return daemon.status()
            if method == "account.create":
                tofu = await daemon.create_account(valid)
                return {**daemon.status(), "pinned_on_first_use": tofu}
            if method == "web.start":
                started = daemon.web is None
                await daemon.start_web(valid.port)
                assert daemon.web is not None
                return {"page": daemon.web.url, "port": daemon.web.port, "started": started}
            if method == "web.login":
                if daemon.web is None:
                    raise ApiError("usage_error", "The daemon serves no web page: start it "
                                   "with `chatcli web` (or the method `web.start`).",
                                   exit_code=2)
                return {"url": daemon.web.login_url(), "page": daemon.web.url}
        local = self.local
        if local is None:
            self._checked(method, params)
            raise daemon.locked_error()
        if method == "receive":
            return await self._receive(local, params)
        # One truncating WAL checkpoint per request, not one per transaction
        # (a send makes four): each costs an fsync (docs/threat-model.md). It
        # runs right after the answer is written, not before.
        store = local.client.store
        try:
            with store.deferred_scrub(hand_off=True):
                result = await local.call(method, params)
        finally:
            daemon.scrub_soon(store)
        if method == "send":
            daemon.published_send(params, result)
        elif method in CONTACT_CHANGES and (method != "contacts.verify" or params.get("confirm")
                                            or params.get("reject")):
            # Other front ends showing this contact fetch it again, and the
            # next key change is told from this decision.
            if daemon.keys is not None and isinstance(params.get("contact"), str):
                daemon.keys.refresh(params["contact"])
            daemon.hub.publish({"type": "contact", "contact": params.get("contact")})
        return result

    async def _receive(self, local: LocalApi, params: dict[str, Any]) -> list[dict[str, Any]]:
        """What waited for a consumer, then (with ``wait``) what arrives."""
        from chatcli.api import schema as s

        valid = local._validate("receive", params)
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
    """One identity's home, served until :meth:`stop` (or SIGTERM/SIGINT);
    online while unlocked."""

    def __init__(self, home: Home, client: ChatClient | None = None, *,
                 websocket_port: int | None = None, web_port: int | None = None) -> None:
        self.home = home
        self.client: ChatClient | None = None
        self.web_port = web_port
        """Serve the web front end on http://127.0.0.1:PORT/ (0: a free port); None: not
        unless asked for later (``web.start``)."""
        self.web: WebServer | None = None
        self._web_lock = trio.Lock()
        self.websocket_port = websocket_port
        """Serve the API on ws://127.0.0.1:PORT/ too (0: a free port); None: not."""
        self.websocket: WebSocketApi | None = None
        self.token_path: Path = home.daemon_token
        self.hub = EventHub()
        self.api = ResidentApi(self)
        self.lock = InstanceLock(home.root)
        self.socket_path: Path = home.daemon_socket
        self.started_at = time.time()
        self.connected = False
        self._synced = trio.Event()
        self._stopping = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._session: trio.CancelScope | None = None
        self._session_ended: trio.Event | None = None
        self._unlocking = trio.Lock()
        self.keys: KeyWatch | None = None
        """The receive loop's memory of contacts' keys (for key_change events)."""
        if client is not None:
            self._adopt(client)

    # ------------------------------------------------------------ state

    @property
    def state(self) -> str:
        if self.client is not None:
            return "unlocked"
        return "locked" if self.home.exists() else "empty"

    def locked_error(self) -> ApiError:
        if self.state == "empty":
            return ApiError("no_identity", f"There is no identity in {self.home.root} yet: "
                            "create one (`account.create`, or `chatcli init`).", exit_code=2)
        return ApiError("locked", "The chatcli daemon is locked: unlock it with your "
                        "passphrase (`chatcli daemon unlock`).", exit_code=1)

    def _adopt(self, client: ChatClient) -> None:
        self.client = client
        self.api.local = LocalApi(client, resident=True)

    async def unlock(self, passphrase: str) -> None:
        """Open the keystore (Argon2id in a thread) and go online."""
        async with self._unlocking:
            if self.client is not None:
                return
            if not self.home.exists():
                raise self.locked_error()
            from chatcli.client.keys import read_secrets
            from chatcli.client.service import ChatClient
            from chatcli.errors import ChatcliError

            try:
                secrets = await trio.to_thread.run_sync(read_secrets, self.home.keystore,
                                                        passphrase)
            except ChatcliError as exc:
                from chatcli.api.errors import from_chatcli_error

                log("unlock refused")
                raise from_chatcli_error(exc) from None
            self._adopt(ChatClient.from_secrets(self.home, secrets))
            await self._start_session()
            log("unlocked")

    async def lock_keys(self) -> None:
        """End the session and drop the keys; the socket keeps serving."""
        async with self._unlocking:
            client = self.client
            if client is None:
                return
            if self._session is not None and self._session_ended is not None:
                self._session.cancel()
                await self._session_ended.wait()
            self.api.local = None
            self.client = None
            client.close()
            log("locked")

    async def create_account(self, params: Any) -> bool:
        """Register a mailbox on the relay and create the identity here, unlocked
        (what ``chatcli init`` does). True when the relay's key was pinned on
        first use (its address had no fingerprint)."""
        from chatcli.client.unlock import MIN_LENGTH

        if len(params.passphrase) < MIN_LENGTH:
            raise ApiError("usage_error",
                           f"Choose a passphrase of at least {MIN_LENGTH} characters.",
                           exit_code=2)
        async with self._unlocking:
            if self.home.exists():
                raise ApiError("usage_error", f"An identity already exists in "
                               f"{self.home.root}.", exit_code=2)
            from chatcli.client.service import create_account
            from chatcli.errors import ChatcliError

            try:
                with self.home.exclusive():
                    client, tofu = await create_account(
                        self.home, params.passphrase, name=params.name,
                        relay_url=params.relay, token=params.token or None)
            except ChatcliError as exc:
                from chatcli.api.errors import from_chatcli_error

                log("account creation refused")
                raise from_chatcli_error(exc) from None
            self._adopt(client)
            await self._start_session()
            log("identity created; unlocked")
            return tofu

    # ------------------------------------------------------------ control

    def stop(self) -> None:
        self._stopping.set()

    async def caught_up(self) -> None:
        """Wait (a little) until the session's first catch-up with the relay is done."""
        with trio.move_on_after(CATCH_UP_WAIT):
            await self._synced.wait()

    def scrub_soon(self, store: Store) -> None:
        """Run the WAL checkpoint a request left (:meth:`Store.scrub_if_due`)
        once the task answering it has written its answer and yields."""
        if self._nursery is None:
            store.scrub_if_due()
            return

        async def scrub() -> None:
            store.scrub_if_due()

        self._nursery.start_soon(scrub)

    def status(self) -> dict[str, Any]:
        from chatcli.client import models as db

        found: dict[str, Any] = {
            "pid": os.getpid(), "home": str(self.home.root), "socket": str(self.socket_path),
            "state": self.state, "name": None, "fingerprint": None, "relay": None,
            "connected": self.connected, "synced": self._synced.is_set(),
            "subscribers": len(self.hub), "backlog": self.hub.backlog, "outbox": 0,
            "uptime": round(time.time() - self.started_at, 1),
            "websocket": None if self.websocket is None else {
                "url": self.websocket.url, "token_file": str(self.token_path)},
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

    # ------------------------------------------------------------ running

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Serve until stopped; the caller holds :attr:`lock`."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                server = DaemonServer(self.api, self.hub, caught_up=self.caught_up)
                await nursery.start(server.serve_unix, self.socket_path)
                nursery.start_soon(self._signals)
                if self.client is not None:
                    await self._start_session()
                log(f"serving {self.socket_path} (pid {os.getpid()}, {self.state})")
                if self.websocket_port is not None:
                    await self._start_websocket(server, nursery)
                if self.web_port is not None:
                    await self.start_web(self.web_port)
                task_status.started()
                await self._stopping.wait()
                # Let the answer to `daemon.stop` leave before the sockets close.
                await trio.sleep(0.1)
                nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            self.token_path.unlink(missing_ok=True)
            log("stopped")

    async def _start_websocket(self, server: DaemonServer, nursery: trio.Nursery) -> None:
        """A fresh token in its file first, then the listener."""
        from chatcli.daemon.websocket import WebSocketApi, new_token, write_token

        assert self.websocket_port is not None
        token = new_token()
        write_token(self.token_path, token)
        api = WebSocketApi(server, token)
        del token
        await nursery.start(api.serve, self.websocket_port)
        self.websocket = api
        log(f"WebSocket API on {self.websocket.url} (bearer token in {self.token_path})")

    async def _start_session(self) -> None:
        assert self._nursery is not None and self.client is not None
        await self._nursery.start(self._run_session, self.client)

    async def _run_session(self, client: ChatClient,
                           task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                           ) -> None:
        """Online with ``client`` until cancelled (``lock``) or the daemon stops."""
        ended = self._session_ended = trio.Event()
        self._synced = trio.Event()
        try:
            with trio.CancelScope() as scope:
                self._session = scope
                async with client.online(), trio.open_nursery() as nursery:
                    nursery.start_soon(self._receive_loop, client)
                    nursery.start_soon(self._retry_loop, client)
                    task_status.started()
                    await trio.sleep_forever()
        finally:
            self._session = None
            self.connected = False
            ended.set()

    async def _signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum != signal.SIGHUP:
                    log(f"signal {signal.Signals(signum).name}: stopping")
                    self.stop()

    async def _receive_loop(self, client: ChatClient) -> None:
        from chatcli.api.events import KeyWatch, event_json
        from chatcli.client.attachments import download_for_event
        from chatcli.client.service import MessageEvent, NoticeEvent, SyncedEvent

        keys = self.keys = KeyWatch(client)
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


def serve(home: Home, client: ChatClient | None,
          on_ready: Callable[[Daemon], None] | None = None, *,
          websocket_port: int | None = None, web_port: int | None = None) -> None:
    """Run a daemon for ``home`` in this process until it is stopped; with
    ``client`` it starts unlocked, else locked (or empty); with
    ``websocket_port`` it serves the WebSocket API too, with ``web_port`` the
    web front end.

    Raises :class:`chatcli.daemon.instance.DaemonRunningError` at once when
    another daemon owns the home, and the ChatcliError that ended it otherwise
    (the installation was replaced, the account was deleted...)."""
    from chatcli.errors import ChatcliError

    daemon = Daemon(home, client, websocket_port=websocket_port, web_port=web_port)
    home.create()
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
        if daemon.client is not None and daemon.client is not client:
            daemon.client.close()  # one it unlocked itself (the caller closes its own)
