"""The daemon's socket server over a real Unix socket (the API below it is a tiny echo)."""

from __future__ import annotations

import json
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from chatcli.daemon import jsonrpc
from chatcli.daemon.hub import EventHub
from chatcli.daemon.instance import DaemonRunningError, InstanceLock
from chatcli.daemon.server import DaemonServer, RpcFailure
from chatcli.errors import UsageError


class EchoApi:
    async def call(self, method: str, params: dict[str, Any]) -> Any:
        if method == "echo":
            return params
        if method == "contact":
            raise UsageError("No contact named bob.")
        raise RpcFailure(jsonrpc.standard_error(jsonrpc.METHOD_NOT_FOUND, f"No method {method}."))


class Client:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.splitter = jsonrpc.LineSplitter()
        self.lines: list[bytes] = []

    async def send(self, raw: bytes) -> None:
        await self.stream.send_all(raw + b"\n")

    async def read(self) -> Any:
        while not self.lines:
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            self.lines += [x for x in self.splitter.feed(data) if isinstance(x, bytes)]
        return json.loads(self.lines.pop(0))


class Served:
    def __init__(self, path: Path, hub: EventHub) -> None:
        self.path, self.hub = path, hub
        self.clients: list[Client] = []

    async def connect(self) -> Client:
        self.clients.append(Client(await trio.open_unix_socket(str(self.path))))
        return self.clients[-1]


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    hub = EventHub(queue_limit=4)
    path = tmp_path / "daemon.sock"
    async with trio.open_nursery() as nursery:
        await nursery.start(DaemonServer(EchoApi(), hub).serve_unix, path)
        server = Served(path, hub)
        yield server
        for client in server.clients:
            await client.stream.aclose()
        nursery.cancel_scope.cancel()


async def test_calls_errors_and_batches(served: Served) -> None:
    assert stat.S_IMODE(served.path.stat().st_mode) == 0o600
    c = await served.connect()
    await c.send(b'{"jsonrpc":"2.0","id":1,"method":"echo","params":{"a":1}}')
    assert await c.read() == {"jsonrpc": "2.0", "id": 1, "result": {"a": 1}}
    await c.send(b'{"jsonrpc":"2.0","id":2,"method":"contact","params":{}}')
    assert (await c.read())["error"] == {
        "code": 1002, "message": "No contact named bob.",
        "data": {"error": "usage", "exit": 2},
    }
    await c.send(b"{broken")
    assert (await c.read())["error"]["code"] == jsonrpc.PARSE_ERROR
    await c.send(b'[{"jsonrpc":"2.0","id":3,"method":"nope"},{"jsonrpc":"2.0","method":"echo"},'
                 b'{"jsonrpc":"2.0","id":4,"method":"echo","params":[1]}]')
    codes = [a["error"]["code"] for a in await c.read()]
    assert codes == [jsonrpc.METHOD_NOT_FOUND, jsonrpc.INVALID_PARAMS]
    await c.send(b'{"jsonrpc":"2.0","method":"echo"}')  # a notification gets no answer
    await c.send(b'{"jsonrpc":"2.0","id":5,"method":"echo","params":{}}')
    assert (await c.read())["id"] == 5


async def test_oversized_line_closes_only_that_connection(served: Served) -> None:
    bad, good = await served.connect(), await served.connect()
    await bad.stream.send_all(b"x" * (jsonrpc.MAX_LINE + 10))
    answer = await bad.read()
    assert answer["error"]["data"]["error"] == "request_too_large"
    assert await bad.read() is None
    await good.send(b'{"jsonrpc":"2.0","id":1,"method":"echo","params":{}}')
    assert (await good.read())["result"] == {}


async def test_subscribers_see_every_event_and_a_stuck_one_is_dropped(
    served: Served,
) -> None:
    hub = served.hub
    clients = [await served.connect() for _ in range(3)]
    for c in clients:
        await c.send(b'{"jsonrpc":"2.0","id":1,"method":"subscribe","params":{}}')
        assert "subscription" in (await c.read())["result"]
    reader_a, reader_b, _stuck = clients
    big = "x" * 60000
    for n in range(60):  # far more than the stuck client's socket buffer and queue
        hub.publish({"type": "message", "n": n, "text": big})
        for reader in (reader_a, reader_b):
            note = await reader.read()
            assert note["method"] == "event" and note["params"]["event"]["n"] == n
        await trio.testing.wait_all_tasks_blocked()
    assert len(hub) == 2


def test_second_instance_is_refused_and_stale_socket_removed(tmp_path: Path) -> None:
    (tmp_path / "daemon.sock").write_text("")
    first = InstanceLock(tmp_path)
    first.acquire()
    assert not (tmp_path / "daemon.sock").exists()
    with pytest.raises(DaemonRunningError, match="already runs"):
        InstanceLock(tmp_path).acquire()
    first.release()
    InstanceLock(tmp_path).acquire()
