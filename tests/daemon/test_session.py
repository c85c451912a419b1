"""The transport-free JSON-RPC session: fed from memory, answering into a list."""

from __future__ import annotations

import json
from typing import Any

import trio
import trio.testing

from chatcli.daemon import jsonrpc
from chatcli.daemon.hub import EventHub
from chatcli.daemon.server import DaemonServer, Session
from tests.daemon.test_server import EchoApi


class PeerGone(Exception):
    """The transport's word for a peer that went away."""


class Memory:
    """A transport in memory: messages in through a channel, answers into a list."""

    def __init__(self, hub: EventHub | None = None, *, blocked: bool = False,
                 gone_after: int | None = None) -> None:
        self.hub = hub or EventHub(queue_limit=4)
        self.inbox, self._incoming = trio.open_memory_channel[bytes | None](16)
        self.sent: list[Any] = []
        self.blocked = blocked
        self.gone_after = gone_after
        self.arrived = trio.Event()
        self.session = Session(DaemonServer(EchoApi(), self.hub), self.send, gone=(PeerGone,))

    async def send(self, value: dict[str, Any] | list[dict[str, Any]]) -> None:
        if self.gone_after is not None and len(self.sent) >= self.gone_after:
            raise PeerGone
        if self.blocked and "method" in value:  # a peer that reads no notification
            await trio.sleep_forever()
        self.sent.append(json.loads(jsonrpc.dumps(value)))
        self.arrived.set()

    async def receive(self) -> bytes | None:
        return await self._incoming.receive()

    async def ask(self, raw: bytes) -> Any:
        self.arrived = trio.Event()
        await self.inbox.send(raw)
        with trio.fail_after(5):
            await self.arrived.wait()
        return self.sent[-1]


async def test_calls_batches_notifications_and_errors() -> None:
    memory = Memory()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(memory.session.run, memory.receive)
        assert await memory.ask(b'{"jsonrpc":"2.0","id":1,"method":"echo","params":{"a":1}}') \
            == {"jsonrpc": "2.0", "id": 1, "result": {"a": 1}}
        error = (await memory.ask(b'{"jsonrpc":"2.0","id":2,"method":"contact"}'))["error"]
        assert error["data"] == {"error": "usage", "exit": 2} and error["code"] == 1002
        answers = await memory.ask(
            b'[{"jsonrpc":"2.0","id":3,"method":"echo"},{"jsonrpc":"2.0","method":"echo"},'
            b'{"jsonrpc":"2.0","id":4,"method":"echo","params":[1]}]')
        assert [a["id"] for a in answers] == [3, 4]
        assert answers[1]["error"]["code"] == jsonrpc.INVALID_PARAMS
        await memory.inbox.send(b'{"jsonrpc":"2.0","method":"echo"}')  # no answer
        await memory.inbox.send(b"  ")  # blank: ignored
        assert (await memory.ask(b"{nope"))["error"]["code"] == jsonrpc.PARSE_ERROR
        assert len(memory.sent) == 4
        await memory.inbox.send(None)  # the transport's end
    assert len(memory.hub) == 0


async def test_events_are_forwarded_until_unsubscribed_and_the_end_unsubscribes() -> None:
    memory = Memory()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(memory.session.run, memory.receive)
        first = (await memory.ask(b'{"jsonrpc":"2.0","id":1,"method":"subscribe",'
                                  b'"params":{"types":["message"]}}'))["result"]["subscription"]
        await memory.ask(b'{"jsonrpc":"2.0","id":2,"method":"subscribe"}')
        assert len(memory.hub) == 2
        memory.arrived = trio.Event()
        memory.hub.publish({"type": "typing"})  # only the second wants it
        memory.hub.publish({"type": "message", "text": "hi"})
        await trio.testing.wait_all_tasks_blocked()
        events = [(n["params"]["subscription"], n["params"]["event"]["type"])
                  for n in memory.sent if n.get("method") == "event"]
        assert sorted(events) == sorted([(first, "message"), (first + 1, "typing"),
                                         (first + 1, "message")])
        ok = await memory.ask(b'{"jsonrpc":"2.0","id":3,"method":"unsubscribe",'
                              b'"params":{"subscription":%d}}' % first)
        assert ok["result"] is True and len(memory.hub) == 1
        again = await memory.ask(b'{"jsonrpc":"2.0","id":4,"method":"unsubscribe",'
                                 b'"params":{"subscription":%d}}' % first)
        assert again["error"]["code"] == jsonrpc.INVALID_PARAMS
        await memory.inbox.send(None)
    assert len(memory.hub) == 0


async def test_a_peer_gone_mid_send_ends_the_session_quietly() -> None:
    memory = Memory(gone_after=1)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(memory.session.run, memory.receive)
            await memory.ask(b'{"jsonrpc":"2.0","id":1,"method":"subscribe"}')
            memory.hub.publish({"type": "message"})  # its notification finds the peer gone
    assert len(memory.hub) == 0 and len(memory.sent) == 1


async def test_a_subscriber_that_does_not_read_is_dropped() -> None:
    memory = Memory(blocked=True)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(memory.session.run, memory.receive)
            await memory.ask(b'{"jsonrpc":"2.0","id":1,"method":"subscribe"}')
            for n in range(10):  # queue_limit is 4: the hub gives up on it
                memory.hub.publish({"type": "message", "n": n})
    assert len(memory.hub) == 0
