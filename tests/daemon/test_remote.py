"""RemoteApi against the real socket server: results, CLI-equivalent errors, events."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from chatcli.daemon import remote
from chatcli.daemon.hub import EventHub
from chatcli.daemon.server import DaemonServer
from tests.daemon.test_server import EchoApi


async def test_remote_calls_errors_and_events(tmp_path: Path) -> None:
    path = tmp_path / "daemon.sock"
    assert await remote.connect(path) is None
    hub = EventHub()
    async with trio.open_nursery() as nursery:
        await nursery.start(DaemonServer(EchoApi(), hub).serve_unix, path)
        api = await remote.connect(path)
        assert api is not None
        assert await api.call("echo", {"x": [1, "é"]}) == {"x": [1, "é"]}
        with pytest.raises(remote.RemoteError) as caught:
            await api.call("contact", {})
        assert (str(caught.value), caught.value.exit_code, caught.value.kind) == (
            "No contact named bob.", 2, "usage")
        stream = api.events()
        received: list[int] = []

        async def consume() -> None:
            async for event in stream:
                received.append(event["n"])
                if len(received) == 3:
                    return

        async with trio.open_nursery() as inner:
            inner.start_soon(consume)
            await trio.testing.wait_all_tasks_blocked()
            assert len(hub) == 1
            for n in range(3):
                hub.publish({"type": "message", "n": n})
        await stream.aclose()
        assert received == [0, 1, 2]
        nursery.cancel_scope.cancel()
