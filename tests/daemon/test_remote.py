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


async def test_a_conversation_subscription_over_the_socket(tmp_path: Path) -> None:
    """``contact`` narrows a subscription on the wire as in the hub; what it does
    not take waits in the backlog; the stream ends with DaemonGoneError."""
    path = tmp_path / "daemon.sock"
    hub = EventHub()
    async with trio.open_nursery() as nursery:
        await nursery.start(DaemonServer(EchoApi(), hub).serve_unix, path)
        api = remote.RemoteApi(path)
        hub.publish({"type": "message", "from": "bob", "group": None, "n": 0})
        window = await api.subscribe(contact="bob", consumer=True, backlog=True)
        assert window.replayed == 1
        hub.publish({"type": "message", "from": "carol", "group": None, "n": 1})
        hub.publish({"type": "sent", "to": "bob", "n": 2})
        assert [(await window.receive())["n"] for _ in range(2)] == [0, 2]
        assert hub.backlog == 1  # carol's message waits for a receive
        with pytest.raises(remote.RemoteError):
            await api.subscribe(contact="")
        nursery.cancel_scope.cancel()
    with pytest.raises(remote.DaemonGoneError):
        await window.receive()
    await window.aclose()
