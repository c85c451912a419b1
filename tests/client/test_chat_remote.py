"""The chat window through the daemon (``RemoteChatSession``) against the real
socket server and event hub, with a scripted API behind them: what it shows
for each event, own sends shown once whatever arrives first, marks from
receipts, read marks, and the daemon going away."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from chatcli.api.errors import ApiError
from chatcli.client.chat_remote import DaemonLostError, RemoteChatSession
from chatcli.client.chat_ui import ChatTarget
from chatcli.daemon.hub import EventHub
from chatcli.daemon.remote import RemoteApi
from chatcli.daemon.server import DaemonServer
from tests.client.test_chat_session import RecordingView, wait_for

BOB = ChatTarget(name="bob", kind="contact", contact_id=0, mailbox=b"", relay_url="",
                 verified=True)


class ScriptedApi:
    """The daemon's API as the window uses it; ``send`` publishes its ``sent``
    event *before* answering, as the daemon does, and can be held."""

    def __init__(self, hub: EventHub) -> None:
        self.hub = hub
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.history: list[dict[str, Any]] = [
            {"id": "old-in", "from": "bob", "to": "me", "direction": "in", "text": "earlier",
             "sent_at": 1, "received_at": 2, "state": "received", "group": None},
        ]
        self.release_send = trio.Event()
        self.refuse_next_send = False
        self.stop_server: Callable[[], None] = lambda: None
        self._ids = itertools.count(1)

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        self.calls.append((method, params))
        if method == "history":
            return self.history
        if method == "send":
            if self.refuse_next_send:
                self.refuse_next_send = False
                raise ApiError("relay_unreachable", "bob's relay could not be reached; the "
                               "message stays queued")
            message_id = f"out-{next(self._ids)}"
            self.hub.publish({"type": "sent", "id": message_id, "to": params["to"],
                              "text": params["text"], "sent_at": 5, "stored": True})
            await self.release_send.wait()
            return {"id": message_id, "to": params["to"], "stored": True}
        if method == "search":
            return [{"id": "old-in", "conversation": "bob", "contact": "bob", "group": None,
                     "from": "bob", "direction": "in", "sent_at": 1, "snippet": "earlier",
                     "highlights": [[0, 7]]}]
        if method == "daemon.status":
            return {"connected": True}
        if method == "presence.get":
            return {"bob": {"online": True, "last_seen": None, "known": True}}
        if method == "contacts.list":
            return [{"name": "bob", "verified": False, "key_changed": True, "relay": "r"}]
        return None


class Window:
    def __init__(self, session: RemoteChatSession, view: RecordingView) -> None:
        self.session, self.view = session, view
        self.error: BaseException | None = None
        self.finished = trio.Event()

    async def run(self) -> None:
        try:
            await self.session.run()
        except Exception as exc:
            self.error = exc
        finally:
            self.finished.set()

    def count(self, text: str) -> int:
        return sum(text in line for line in self.view.lines)


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[tuple[ScriptedApi, EventHub, Path, trio.Nursery]]:
    hub = EventHub()
    api = ScriptedApi(hub)
    path = tmp_path / "daemon.sock"
    async with trio.open_nursery() as nursery:
        server_scope = trio.CancelScope()

        async def serve(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            with server_scope:
                await DaemonServer(api, hub).serve_unix(path, task_status=task_status)

        await nursery.start(serve)
        api.stop_server = server_scope.cancel
        yield api, hub, path, nursery
        nursery.cancel_scope.cancel()


async def open_window(path: Path, nursery: trio.Nursery) -> Window:
    view = RecordingView()
    window = Window(RemoteChatSession(RemoteApi(path), BOB, view, follow_every=0.1), view)
    nursery.start_soon(window.run)
    await wait_for(lambda: view.has("── now ──"))
    await wait_for(lambda: window.session.status.connection == "online")
    return window


async def test_two_windows_own_sends_once_receipts_and_read_marks(
        daemon: tuple[ScriptedApi, EventHub, Path, trio.Nursery]) -> None:
    api, hub, path, nursery = daemon
    one, two = await open_window(path, nursery), await open_window(path, nursery)
    assert one.view.has("── chat with bob ── verified ✓") and one.view.has("bob: earlier")
    assert ("read", {"contact": "bob", "ids": ["old-in"]}) in api.calls
    assert two.session.status.online is True

    # Window one sends: its `sent` event comes before the answer (held), yet
    # the line is shown once there and once in window two.
    one.session.submit("hello")
    await wait_for(lambda: two.count("me: hello") == 1)
    await trio.testing.wait_all_tasks_blocked()
    assert one.count("me: hello") == 1 and one.session.status.pending == 1
    api.release_send.set()
    await wait_for(lambda: one.session.status.pending == 0)
    assert one.count("me: hello") == 1 and two.count("me: hello") == 1

    hub.publish({"type": "message", "id": "in-1", "from": "bob", "text": "live", "sent_at": 6,
                 "received_at": 7, "group": None})
    for window in (one, two):
        await wait_for(lambda w=window: w.view.has("bob: live"))  # type: ignore[misc]
    assert api.calls.count(("read", {"contact": "bob", "ids": ["in-1"]})) == 2

    hub.publish({"type": "receipt", "from": "bob", "kind": "read", "ids": ["out-1"]})
    for window in (one, two):
        await wait_for(lambda w=window: w.view.has('✓✓ read: "hello"'))  # type: ignore[misc]

    hub.publish({"type": "typing", "from": "bob", "active": True})
    await wait_for(lambda: "bob is typing" in one.session.status_line())
    hub.publish({"type": "key_change", "contact": "bob", "fingerprint": "f", "pending": True,
                 "text": "The identity key of bob has changed!", "warning": True})
    await wait_for(lambda: one.session.status.key_changed)
    assert one.view.has("! The identity key of bob has changed!")

    # A message to carol (another conversation) never reaches these windows.
    hub.publish({"type": "message", "id": "c", "from": "carol", "text": "for receive",
                 "sent_at": 8, "received_at": 9, "group": None})
    assert hub.backlog == 1
    for window in (one, two):
        window.session.close_input()
        with trio.fail_after(5):
            await window.finished.wait()
        assert window.error is None
        assert not window.view.has("for receive")


async def test_search_asks_the_daemon_for_this_conversation(
        daemon: tuple[ScriptedApi, EventHub, Path, trio.Nursery]) -> None:
    api, _hub, path, nursery = daemon
    window = await open_window(path, nursery)
    window.session.submit("/search EARL")
    await wait_for(lambda: window.view.has("1 message(s) matching 'EARL'"))
    assert ("search", {"text": "EARL", "limit": 10, "contact": "bob"}) in api.calls
    assert window.view.lines[-1].startswith("  [") and window.view.lines[-1].endswith(
        "bob: earlier  old-in")
    window.session.close_input()
    with trio.fail_after(5):
        await window.finished.wait()


async def test_a_send_the_relay_could_not_store_is_followed_until_stored(
        daemon: tuple[ScriptedApi, EventHub, Path, trio.Nursery]) -> None:
    api, _hub, path, nursery = daemon
    window = await open_window(path, nursery)
    api.refuse_next_send = True
    api.history.append({"id": "q-1", "from": "me", "to": "bob", "direction": "out",
                        "text": "later", "sent_at": 9, "received_at": None, "state": "queued",
                        "group": None})
    window.session.submit("later")
    await wait_for(lambda: window.view.has("stays queued"))
    await wait_for(lambda: window.session.status.pending == 1)
    api.history[-1] = {**api.history[-1], "state": "sent"}
    await wait_for(lambda: window.view.has('✓ at bob\'s relay: "later"'))
    assert window.session.status.pending == 0
    window.session.close_input()
    with trio.fail_after(5):
        await window.finished.wait()


async def test_the_daemon_going_away_ends_the_chat_with_exit_code_1(
        daemon: tuple[ScriptedApi, EventHub, Path, trio.Nursery]) -> None:
    api, _hub, path, nursery = daemon
    window = await open_window(path, nursery)
    api.stop_server()
    with trio.fail_after(5):
        await window.finished.wait()
    assert isinstance(window.error, DaemonLostError) and window.error.exit_code == 1
    assert "daemon went away" in str(window.error)
