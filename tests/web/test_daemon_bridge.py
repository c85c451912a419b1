"""The web server as the daemon mounts it: events from its EventHub, and what a
page may ask of the daemon's API."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
import trio.testing
from trio_websocket import WebSocketConnection, open_websocket

from chatcli.daemon.hub import EventHub
from chatcli.web import WebServer
from tests.web.conftest import RecordingApi, Web, http


@asynccontextmanager
async def hub_web(tmp_path: Path, hub: EventHub) -> AsyncIterator[Web]:
    api = RecordingApi()
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    server = WebServer(api, upload_dir=tmp_path / "uploads", download_dir=downloads,
                       events=hub)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        yield Web(server, api, downloads)
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def page(web: Web) -> AsyncIterator[WebSocketConnection]:
    cookie = await web.login()
    async with open_websocket(
        "127.0.0.1", web.port, "/ws", use_ssl=False,
        extra_headers=[(b"Origin", web.origin.encode()),
                       (b"Cookie", f"chatcli_session={cookie}".encode())],
    ) as ws:
        yield ws


async def rpc(ws: WebSocketConnection, req_id: int, method: str,
              params: dict[str, Any] | None = None) -> dict[str, Any]:
    await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": req_id, "method": method,
                                      "params": params or {}}))
    with trio.fail_after(5):
        while True:
            answer: dict[str, Any] = json.loads(await ws.get_message())
            if answer.get("id") == req_id:
                return answer


async def test_events_come_from_the_hub_and_the_page_is_a_consumer(tmp_path: Path) -> None:
    hub = EventHub()
    async with hub_web(tmp_path, hub) as web, page(web) as ws:
        assert (await rpc(ws, 1, "subscribe", {"types": ["message", "sent"]}))["result"] == {
            "subscription": 1}
        assert len(hub) == 1
        hub.publish({"type": "typing", "from": "bob", "active": True})
        hub.publish({"type": "message", "from": "bob", "text": "hi"})
        hub.publish({"type": "sent", "id": "m2", "to": "bob", "text": "from the CLI"})
        with trio.fail_after(5):
            first = json.loads(await ws.get_message())
            second = json.loads(await ws.get_message())
        assert first["params"] == {"subscription": 1,
                                   "event": {"type": "message", "from": "bob", "text": "hi"}}
        assert second["params"]["event"]["text"] == "from the CLI"
        # The page took the message: nothing waits for the next `chatcli receive`.
        assert hub.backlog == 0
        assert (await rpc(ws, 2, "unsubscribe", {"subscription": 1}))["result"] is True
        await trio.testing.wait_all_tasks_blocked()
        assert len(hub) == 0
        hub.publish({"type": "message", "from": "bob", "text": "later"})
        assert hub.backlog == 1
    assert len(hub) == 0


async def test_a_page_that_falls_behind_is_told_and_released(tmp_path: Path) -> None:
    hub = EventHub(queue_limit=2)
    async with hub_web(tmp_path, hub) as web, page(web) as ws:
        await rpc(ws, 1, "subscribe")
        # Published faster than anything reads: the hub drops the subscription.
        for n in range(5):
            hub.publish({"type": "message", "from": "bob", "text": str(n)})
        seen = []
        with trio.fail_after(5):
            while True:
                event = json.loads(await ws.get_message())["params"]["event"]
                seen.append(event)
                if event["type"] == "error":
                    break
        assert seen[-1]["data"] == {"error": "events_dropped"}
        texts = [e["text"] for e in seen[:-1]]
        assert 2 <= len(texts) < 5 and texts == [str(n) for n in range(len(texts))]
        assert len(hub) == 0
        # The page subscribes again.
        assert (await rpc(ws, 2, "subscribe"))["result"] == {"subscription": 2}


async def test_a_page_cannot_stop_the_daemon_or_mint_logins(tmp_path: Path) -> None:
    async with hub_web(tmp_path, EventHub()) as web, page(web) as ws:
        for n, method in enumerate(("daemon.stop", "web.login", "web.start", "receive")):
            error = (await rpc(ws, n, method))["error"]
            assert error["code"] == -32602, method
        assert web.api.calls == []


async def test_files_sent_from_a_page_must_be_its_uploads_and_are_removed(
    tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the page")
    async with hub_web(tmp_path, EventHub()) as web, page(web) as ws:
        for n, params in enumerate((
            {"to": "bob", "text": "", "file": str(secret)},
            {"to": "bob", "text": "", "file": str(tmp_path / "uploads" / ".." / "secret.txt")},
            {"to": "bob", "text": "", "file": 7},
        )):
            assert (await rpc(ws, n, "send", params))["error"]["code"] == -32602
        error = (await rpc(ws, 5, "profile.set", {"avatar": str(secret)}))["error"]
        assert error["code"] == -32602
        assert web.api.calls == []

        session = await web.login()
        response, body = await http(
            web.port, "POST", "/upload?name=cat.png",
            web.headers(Cookie=f"chatcli_session={session}", Origin=web.origin), b"\x89PNG",
        )
        assert response.status_code == 200
        path = Path(json.loads(body)["path"])
        answer = await rpc(ws, 6, "send", {"to": "bob", "text": "", "file": str(path)})
        assert answer["result"]["params"]["file"] == str(path)
        # Sent: the plaintext copy is gone.
        assert not await trio.Path(path.parent).exists()
        assert [m for m, _ in web.api.calls] == ["send"]
