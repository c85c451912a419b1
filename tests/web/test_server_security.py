"""The web server's checks, with a plain HTTP client (no browser)."""

from __future__ import annotations

import json
import re
from importlib import resources

import pytest
import trio
from trio_websocket import open_websocket

from chatcli.web.auth import WebAuth
from tests.web.conftest import Web, http

UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


async def test_login_token_gives_a_strict_cookie_once(web: Web) -> None:
    token = web.server.login_url().split("token=", 1)[1]
    response, _ = await http(web.port, "GET", f"/login?token={token}", web.headers())
    assert response.status_code == 303
    headers = dict(response.headers)
    assert headers[b"location"] == b"/"
    cookie = headers[b"set-cookie"].decode()
    assert re.fullmatch(
        r"chatcli_session=[A-Za-z0-9_-]{43}; HttpOnly; SameSite=Strict; Path=/", cookie
    )
    again, body = await http(web.port, "GET", f"/login?token={token}", web.headers())
    assert again.status_code == 403
    assert b"already used or has expired" in body
    assert b"set-cookie" not in dict(again.headers)


@pytest.mark.parametrize("target", ["/login", "/login?token=", "/login?token=made-up"])
async def test_login_without_a_token_we_issued_is_refused(web: Web, target: str) -> None:
    response, _ = await http(web.port, "GET", target, web.headers())
    assert response.status_code == 403


def test_login_tokens_expire_and_sessions_are_ours() -> None:
    auth = WebAuth(token_ttl=60, session_ttl=3600)
    late = auth.issue_token(now=1000.0)
    assert auth.redeem(late, now=1060.0) is None
    token = auth.issue_token(now=1000.0)
    session = auth.redeem(token, now=1059.0)
    assert session is not None and auth.session_ok(session, now=1059.0)
    assert not auth.session_ok(session, now=1059.0 + 3600)
    assert not auth.session_ok(token, now=1059.0)
    assert not auth.session_ok(None, now=1059.0)


async def test_the_page_needs_a_session_and_carries_a_strict_policy(web: Web) -> None:
    response, body = await http(web.port, "GET", "/", web.headers())
    assert response.status_code == 401
    assert b"<html" not in body
    cookie = await web.login()
    response, body = await http(
        web.port, "GET", "/", web.headers(Cookie=f"chatcli_session={cookie}")
    )
    assert response.status_code == 200
    assert b'<form id="unlock-form"' in body
    headers = dict(response.headers)
    csp = headers[b"content-security-policy"].decode()
    assert "default-src 'self'" in csp and "script-src 'self';" in csp
    assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert headers[b"x-frame-options"] == b"DENY"
    assert headers[b"x-content-type-options"] == b"nosniff"
    assert headers[b"referrer-policy"] == b"no-referrer"


@pytest.mark.parametrize(
    # A rebound DNS name, another port, another loopback name; "" stands for a
    # missing one (h11 insists on a Host header in HTTP/1.1).
    "host", ["evil.example", "evil.example:{port}", "127.0.0.1:1", "[::1]:{port}", ""]
)
async def test_wrong_host_is_refused_even_with_a_session(web: Web, host: str) -> None:
    cookie = await web.login()
    headers = [("Host", host.format(port=web.port)), ("Cookie", f"chatcli_session={cookie}")]
    response, _ = await http(web.port, "GET", "/", headers)
    assert response.status_code == 421
    response, _ = await http(
        web.port, "GET", "/ws", [*headers, ("Origin", web.origin), *UPGRADE.items()]
    )
    assert response.status_code == 421


async def test_localhost_is_our_name_too(web: Web) -> None:
    cookie = await web.login()
    response, _ = await http(
        web.port, "GET", "/static/app.js",
        [("Host", f"localhost:{web.port}"), ("Cookie", f"chatcli_session={cookie}")],
    )
    assert response.status_code == 200
    assert dict(response.headers)[b"content-type"].startswith(b"text/javascript")


async def test_a_connection_that_never_sends_a_request_is_closed_alone(
        web: Web, monkeypatch: pytest.MonkeyPatch) -> None:
    # Browsers open spare connections ahead of time and may never use them:
    # each is closed after the head timeout, and the server goes on serving.
    monkeypatch.setattr("chatcli.web.server.HEAD_TIMEOUT", 0.2)
    idle = await trio.open_tcp_stream("127.0.0.1", web.port)
    with trio.fail_after(5):
        assert await idle.receive_some(100) == b""
    await idle.aclose()
    cookie = await web.login()
    response, _ = await http(web.port, "GET", "/static/app.js",
                             web.headers(Cookie=f"chatcli_session={cookie}"))
    assert response.status_code == 200


@pytest.mark.parametrize(
    "origin", [None, "http://evil.example", "http://127.0.0.1:1", "null", "https://127.0.0.1:{port}"]
)
async def test_websocket_from_another_origin_is_refused(web: Web, origin: str | None) -> None:
    cookie = await web.login()
    extra = {"Cookie": f"chatcli_session={cookie}", **UPGRADE}
    if origin is not None:
        extra["Origin"] = origin.format(port=web.port)
    response, _ = await http(web.port, "GET", "/ws", [*web.headers(), *extra.items()])
    assert response.status_code == 403
    assert web.api.calls == []


async def test_cross_site_fetches_and_posts_are_refused(web: Web) -> None:
    cookie = await web.login()
    session = f"chatcli_session={cookie}"
    response, _ = await http(
        web.port, "GET", "/", web.headers(Cookie=session, Sec_Fetch_Site="cross-site")
    )
    assert response.status_code == 403
    response, _ = await http(web.port, "POST", "/upload?name=a.txt", web.headers(Cookie=session),
                             b"hello")
    assert response.status_code == 403
    assert not (web.server._upload_dir).exists()


async def test_websocket_without_a_session_is_refused(web: Web) -> None:
    response, _ = await http(
        web.port, "GET", "/ws", [*web.headers(Origin=web.origin), *UPGRADE.items()]
    )
    assert response.status_code == 401
    response, _ = await http(
        web.port, "GET", "/ws",
        [*web.headers(Origin=web.origin, Cookie="chatcli_session=not-a-session"),
         *UPGRADE.items()],
    )
    assert response.status_code == 401
    assert web.api.calls == []


async def test_websocket_forwards_json_rpc_and_events(web: Web) -> None:
    cookie = await web.login()
    async with open_websocket(
        "127.0.0.1", web.port, "/ws", use_ssl=False,
        extra_headers=[(b"Origin", web.origin.encode()),
                       (b"Cookie", f"chatcli_session={cookie}".encode())],
    ) as ws:
        await ws.send_message(json.dumps(
            {"jsonrpc": "2.0", "id": 1, "method": "history", "params": {"contact": "bob"}}
        ))
        assert json.loads(await ws.get_message()) == {
            "jsonrpc": "2.0", "id": 1,
            "result": {"method": "history", "params": {"contact": "bob"}},
        }
        await ws.send_message(json.dumps(
            {"jsonrpc": "2.0", "id": 2, "method": "send", "params": {"to": "changed", "text": "x"}}
        ))
        error = json.loads(await ws.get_message())["error"]
        assert error["code"] == 1004
        assert error["data"] == {"error": "key_changed", "exit": 4}
        assert "chatcli verify changed" in error["message"]
        await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": 9, "method": "status"}))
        assert json.loads(await ws.get_message())["error"] == {
            "code": 1001, "message": "chatcli is locked.", "data": {"error": "locked", "exit": 1}}
        await ws.send_message("{not json")
        assert json.loads(await ws.get_message())["error"]["code"] == -32700
        await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": 3, "method": "subscribe",
                                          "params": {"types": ["message"]}}))
        assert json.loads(await ws.get_message())["result"] == {"subscription": 1}
        await web.api.event_send.send({"type": "typing", "from": "bob", "active": True})
        await web.api.event_send.send({"type": "message", "from": "bob", "text": "<b>hi</b>"})
        with trio.fail_after(5):
            note = json.loads(await ws.get_message())
        assert note == {"jsonrpc": "2.0", "method": "event", "params": {
            "subscription": 1, "event": {"type": "message", "from": "bob", "text": "<b>hi</b>"}}}
    assert [method for method, _ in web.api.calls] == ["history", "send", "status"]


async def test_uploads_land_in_their_folder_and_files_come_only_from_downloads(web: Web) -> None:
    cookie = await web.login()
    session = f"chatcli_session={cookie}"
    response, body = await http(
        web.port, "POST", "/upload?name=../../holiday.png",
        web.headers(Cookie=session, Origin=web.origin), b"\x89PNG picture",
    )
    assert response.status_code == 200
    uploaded = json.loads(body)
    assert uploaded["name"] == "holiday.png"
    path = trio.Path(uploaded["path"])
    assert await path.read_bytes() == b"\x89PNG picture"
    assert web.server._upload_dir in (await path.resolve()).parents

    await trio.Path(web.downloads / "cat.png").write_bytes(b"\x89PNG cat")
    await trio.Path(web.downloads / "notes.svg").write_bytes(b"<svg/>")
    response, body = await http(
        web.port, "GET", f"/files?path={web.downloads / 'cat.png'}", web.headers(Cookie=session)
    )
    assert (response.status_code, body) == (200, b"\x89PNG cat")
    assert dict(response.headers)[b"content-type"] == b"image/png"
    response, _ = await http(
        web.port, "GET", f"/files?path={web.downloads / 'notes.svg'}", web.headers(Cookie=session)
    )
    assert dict(response.headers)[b"content-disposition"].startswith(b"attachment")
    for outside in (uploaded["path"], f"{web.downloads}/../uploads", "/etc/passwd"):
        response, _ = await http(
            web.port, "GET", f"/files?path={outside}", web.headers(Cookie=session)
        )
        assert response.status_code == 404


async def test_qr_codes_are_svg_made_here(web: Web) -> None:
    cookie = await web.login()
    response, body = await http(
        web.port, "GET", "/qr.svg?text=chatcli%3Aabc",
        web.headers(Cookie=f"chatcli_session={cookie}"),
    )
    assert response.status_code == 200
    assert dict(response.headers)[b"content-type"] == b"image/svg+xml"
    assert body.startswith(b"<svg") and b"<script" not in body


def test_the_page_has_no_inline_script_style_or_html_injection() -> None:
    static = resources.files("chatcli.web").joinpath("static")
    html = static.joinpath("index.html").read_text()
    assert re.search(r"<script(?![^>]*\bsrc=)", html) is None
    assert "<style" not in html and " style=" not in html
    assert re.search(r"\son[a-z]+=", html) is None
    assert "http://" not in html and "https://" not in html
    for name in ("app.js", "rpc.js", "render.js", "group_profile.js"):
        script = static.joinpath(name).read_text()
        assert "innerHTML" not in script and "insertAdjacentHTML" not in script
        assert "eval(" not in script and "document.write" not in script
