"""The web front end's HTTP and WebSocket server (trio, h11, trio-websocket).

Bound to 127.0.0.1 only. Every request passes the checks of
:mod:`chatcli.web.policy` (Host, Origin, Sec-Fetch-Site); everything but
``/login`` needs the session cookie that a one-time login token buys.
One request per TCP connection (``Connection: close``), except ``/ws``,
which becomes the WebSocket that carries JSON-RPC to the API object.

Routes: ``GET /login?token=T``, ``GET /`` (the page), ``GET /static/NAME``,
``GET /ws`` (WebSocket), ``POST /upload?name=NAME`` (a file to attach; answers
``{"path"}``), ``GET /files?path=P`` (a received attachment, only inside the
downloads folder), ``GET /qr.svg?text=T`` (a QR code made by segno).
"""

from __future__ import annotations

import io
import json
import re
import secrets
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import h11
import trio
from trio_websocket import wrap_server_stream

from chatcli.web import policy
from chatcli.web.assets import read_asset
from chatcli.web.auth import WebAuth
from chatcli.web.bridge import Bridge, CallApi, EventSource, WebApi

MAX_HEAD_BYTES = 16 * 1024
MAX_UPLOAD_BYTES = 64 * 1024 * 1024
MAX_QR_TEXT = 1024
MAX_WS_MESSAGE = 1024 * 1024
HEAD_TIMEOUT = 10.0
BODY_TIMEOUT = 300.0

__all__ = ["EventSource", "WebApi", "WebServer"]

REFUSED_METHODS = frozenset({"daemon.stop", "receive", "web.login", "web.start"})
"""Daemon methods a browser has no use for: stopping the daemon, taking the
backlog meant for `chatcli receive`, minting login links."""

FILE_PARAMS = {"send": "file", "profile.set": "avatar", "groups.set": "avatar"}
"""Parameters that name a file the daemon reads: from a browser, only a file
it uploaded (inside ``upload_dir``), which is deleted once the call is done."""


class _PageApi:
    """The API as a browser may use it (see REFUSED_METHODS and FILE_PARAMS)."""

    def __init__(self, api: CallApi, upload_dir: Path) -> None:
        self._api = api
        self._upload_dir = upload_dir

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        if method in REFUSED_METHODS:
            raise ValueError(f"{method} is not available to the web page")
        key = FILE_PARAMS.get(method)
        upload = params.get(key) if key else None
        folder = None
        if upload is not None:
            folder = await trio.to_thread.run_sync(_upload_folder, self._upload_dir, upload)
            if folder is None:
                raise ValueError(f"{key} must be a file uploaded through /upload")
        try:
            return await self._api.call(method, params)
        finally:
            if folder is not None:
                await trio.to_thread.run_sync(_remove_upload, folder)

    def events(self, *, wait: float | None, read_receipts: bool) -> Any:
        return cast(WebApi, self._api).events(wait=wait, read_receipts=read_receipts)


def _upload_folder(root: Path, path: Any) -> Path | None:
    """The one-upload folder holding ``path``, if it is a file uploaded here."""
    if not isinstance(path, str):
        return None
    try:
        base = root.resolve()
        target = Path(path).resolve()
    except (OSError, ValueError):
        return None
    if target.parent.parent != base or not target.is_file():
        return None
    return target.parent


def _remove_upload(folder: Path) -> None:
    for child in folder.iterdir():
        child.unlink(missing_ok=True)
    folder.rmdir()


class _Replayed(trio.abc.Stream):
    """A stream that first yields bytes already read from it (the request head)."""

    def __init__(self, stream: trio.abc.Stream, prefix: bytes) -> None:
        self._stream = stream
        self._prefix = prefix

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._prefix:
            size = len(self._prefix) if max_bytes is None else max_bytes
            chunk, self._prefix = self._prefix[:size], self._prefix[size:]
            return chunk
        return bytes(await self._stream.receive_some(max_bytes))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._stream.aclose()


class _Request:
    """The parts of an h11 request the routes look at."""

    def __init__(self, event: h11.Request) -> None:
        self.method = event.method.decode("ascii", "replace")
        target = event.target.decode("ascii", "replace")
        split = urlsplit(target)
        self.path = split.path
        self.query = {k: v[0] for k, v in parse_qs(split.query).items()}
        self.headers: dict[str, str] = {}
        self.cookies: list[str] = []
        for name, value in event.headers:
            key = name.decode("ascii").lower()
            text = value.decode("latin-1")
            if key == "cookie":
                self.cookies.append(text)
            else:
                self.headers[key] = text


class WebServer:
    """Serves the page and the JSON-RPC WebSocket to one user's browser.

    ``api`` answers calls; subscriptions read ``events`` (the daemon's hub)
    when given, else ``api.events(...)`` (``api`` is then a :class:`WebApi`).
    ``upload_dir`` receives files the browser attaches (the API is then asked
    to send them by path); ``download_dir`` is the only folder ``/files``
    reads from (where received attachments are saved).
    """

    def __init__(self, api: CallApi, *, upload_dir: Path, download_dir: Path,
                 events: EventSource | None = None) -> None:
        self.api = api
        self.auth = WebAuth()
        self._page_api = _PageApi(api, upload_dir)
        self._events = events
        self._upload_dir = upload_dir
        self._download_dir = download_dir
        self.port = 0

    @property
    def url(self) -> str:
        """Where the page is (without a login token)."""
        return f"http://127.0.0.1:{self.port}/"

    def login_url(self) -> str:
        """A new one-time URL that logs a browser in (the server must be listening)."""
        token = self.auth.issue_token(trio.current_time())
        return f"http://127.0.0.1:{self.port}/login?token={token}"

    async def serve(self, port: int = 0, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on 127.0.0.1:PORT (0: any free port) until cancelled."""
        listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._handle, listeners)
            task_status.started(self.port)

    async def _handle(self, stream: trio.abc.Stream) -> None:
        try:
            head = None  # a connection that never sends its request (a browser's preconnect)
            with trio.move_on_after(HEAD_TIMEOUT):
                head = await _read_head(stream)
            if head is None:
                return
            conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
            conn.receive_data(head)
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                await _raw_reply(stream, conn, 400, "Bad request.", self.port)
                return
            if not isinstance(event, h11.Request):
                return
            request = _Request(event)
            await self._route(stream, conn, request, head)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async def _route(
        self, stream: trio.abc.Stream, conn: h11.Connection, request: _Request, head: bytes
    ) -> None:
        port = self.port
        now = trio.current_time()
        is_ws = request.path == "/ws"
        if not policy.host_ok(request.headers.get("host"), port):
            await _raw_reply(stream, conn, 421, "This server answers only at 127.0.0.1.", port)
            return
        needs_origin = is_ws or request.method != "GET"
        if not policy.origin_ok(
            request.headers.get("origin"), port, required=needs_origin
        ) or not policy.fetch_site_ok(request.headers.get("sec-fetch-site")):
            await _raw_reply(stream, conn, 403, "Requests from other sites are refused.", port)
            return
        if request.path == "/login" and request.method == "GET":
            session = self.auth.redeem(request.query.get("token", ""), now)
            if session is None:
                await _raw_reply(
                    stream, conn, 403,
                    "This login link was already used or has expired: run `chatcli web` again.",
                    port,
                )
                return
            await _reply(stream, conn, 303, b"", port, "text/plain",
                         [("Location", "/"), ("Set-Cookie", policy.session_cookie(session))])
            return
        if not self.auth.session_ok(policy.cookie_value(request.cookies), now):
            await _raw_reply(
                stream, conn, 401,
                "Not logged in: open the link that `chatcli web` prints (it works once).", port,
            )
            return
        if is_ws and request.method == "GET":
            await self._websocket(stream, head)
        elif request.method == "GET" and request.path in ("/", "/index.html"):
            await self._asset(stream, conn, "index.html")
        elif request.method == "GET" and request.path.startswith("/static/"):
            await self._asset(stream, conn, request.path.removeprefix("/static/"))
        elif request.method == "GET" and request.path == "/qr.svg":
            await self._qr(stream, conn, request.query.get("text", ""))
        elif request.method == "GET" and request.path == "/files":
            await self._file(stream, conn, request.query.get("path", ""))
        elif request.method == "POST" and request.path == "/upload":
            await self._upload(stream, conn, request)
        else:
            await _raw_reply(stream, conn, 404, "Not found.", port)

    async def _asset(self, stream: trio.abc.Stream, conn: h11.Connection, name: str) -> None:
        body = read_asset(name)
        if body is None:
            await _raw_reply(stream, conn, 404, "Not found.", self.port)
            return
        await _reply(stream, conn, 200, body, self.port, policy.content_type(name))

    async def _websocket(self, stream: trio.abc.Stream, head: bytes) -> None:
        async with trio.open_nursery() as nursery:
            ws_request = await wrap_server_stream(
                nursery, _Replayed(stream, head), max_message_size=MAX_WS_MESSAGE
            )
            ws = await ws_request.accept()
            try:
                await Bridge(self._page_api, ws, self._events).run()
            finally:
                with trio.move_on_after(2):
                    await ws.aclose()
            nursery.cancel_scope.cancel()

    async def _qr(self, stream: trio.abc.Stream, conn: h11.Connection, text: str) -> None:
        if not text or len(text) > MAX_QR_TEXT:
            await _raw_reply(stream, conn, 400, "Nothing to draw.", self.port)
            return
        import segno

        out = io.BytesIO()
        segno.make(text, error="m").save(out, kind="svg", scale=4, border=2, xmldecl=False,
                                         dark="#000", light="#fff")
        await _reply(stream, conn, 200, out.getvalue(), self.port, "image/svg+xml")

    async def _file(self, stream: trio.abc.Stream, conn: h11.Connection, path: str) -> None:
        target = await trio.to_thread.run_sync(_download_path, self._download_dir, path)
        if target is None:
            await _raw_reply(stream, conn, 404, "No such download.", self.port)
            return
        body = await trio.Path(target).read_bytes()
        inline = policy.INLINE_IMAGE_TYPES.get(target.suffix.lower())
        safe_name = re.sub(r'[^A-Za-z0-9._ -]', "_", target.name)
        extra = [("Content-Security-Policy", "sandbox; default-src 'none'")]
        if inline is None:
            extra.append(("Content-Disposition", f'attachment; filename="{safe_name}"'))
        await _reply(stream, conn, 200, body, self.port,
                     inline or "application/octet-stream", extra)

    async def _upload(
        self, stream: trio.abc.Stream, conn: h11.Connection, request: _Request
    ) -> None:
        name = re.sub(r"[^A-Za-z0-9._ -]", "_", Path(request.query.get("name", "")).name)
        name = name.lstrip(".") or "file"
        length = request.headers.get("content-length", "")
        if not length.isdigit() or int(length) > MAX_UPLOAD_BYTES:
            await _raw_reply(stream, conn, 413, "A file of at most 64 MiB is accepted.", self.port)
            return
        folder = self._upload_dir / secrets.token_hex(8)
        await trio.Path(folder).mkdir(parents=True, mode=0o700)
        target = folder / name
        with trio.fail_after(BODY_TIMEOUT):
            async with await trio.open_file(target, "wb") as out:
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(bytes(await stream.receive_some(65536)))
                    elif isinstance(event, h11.Data):
                        await out.write(event.data)
                    else:
                        break
        body = json.dumps({"path": str(target), "name": name}).encode()
        await _reply(stream, conn, 200, body, self.port, "application/json")


def _download_path(root: Path, path: str) -> Path | None:
    """``path`` resolved, if it names a file inside ``root`` (symlinks followed first)."""
    try:
        base = root.resolve()
        target = Path(path).resolve()
    except (OSError, ValueError):
        return None
    if base not in target.parents or not target.is_file():
        return None
    return target


async def _read_head(stream: trio.abc.Stream) -> bytes | None:
    """Bytes up to and including the end of the request head (None if it never ends)."""
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > MAX_HEAD_BYTES:
            return None
        chunk = await stream.receive_some(4096)
        if not chunk:
            return None
        data += chunk
    return data


async def _reply(
    stream: trio.abc.Stream,
    conn: h11.Connection,
    status: int,
    body: bytes,
    port: int,
    content_type: str,
    extra: list[tuple[str, str]] | None = None,
) -> None:
    headers = [
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
        *policy.security_headers(port),
        *(extra or []),
    ]
    response = h11.Response(status_code=status, headers=headers)
    await stream.send_all(conn.send(response) + conn.send(h11.Data(data=body))
                          + conn.send(h11.EndOfMessage()))


async def _raw_reply(
    stream: trio.abc.Stream, conn: h11.Connection, status: int, text: str, port: int
) -> None:
    await _reply(stream, conn, status, (text + "\n").encode(), port, "text/plain; charset=utf-8")
