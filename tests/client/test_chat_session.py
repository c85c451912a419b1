"""The chat's conversation logic (``ChatSession``) against the in-memory relay,
with a recording view instead of a terminal."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trio

from chatcli.client import models as db
from chatcli.client.chat_ui import (
    ChatSession,
    ChatStatus,
    clean,
    message_line,
    presence_text,
    resolve_target,
)
from chatcli.client.service import (
    ChatClient,
    MessageEvent,
    NoticeEvent,
    ReceiptEvent,
    TypingEvent,
)
from chatcli.errors import KeyChangedError, UsageError
from tests.client.conftest import drain, make_client, pair
from tests.client.fakerelay import FakeRelay


class RecordingView:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.refreshes = 0

    def show(self, line: str) -> None:
        self.lines.append(line)

    def refresh(self) -> None:
        self.refreshes += 1

    def has(self, text: str) -> bool:
        return any(text in line for line in self.lines)


async def wait_for(predicate: Callable[[], bool], seconds: float = 10) -> None:
    """Poll a plain condition on the session's state (nothing to wait on)."""
    with trio.fail_after(seconds):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.02)


@pytest.fixture
async def paired(clients: tuple[ChatClient, ChatClient]) -> tuple[ChatClient, ChatClient]:
    alice, bob = clients
    await pair(alice, bob)
    return alice, bob


class Running:
    """Alice's chat with bob, running in the test's nursery."""

    def __init__(self, session: ChatSession, view: RecordingView) -> None:
        self.session = session
        self.view = view
        self.finished = trio.Event()

    async def run(self) -> None:
        try:
            await self.session.run()
        finally:
            self.finished.set()

    async def stop(self) -> None:
        self.session.close_input()
        with trio.fail_after(10):
            await self.finished.wait()


@pytest.fixture
async def chat(paired: tuple[ChatClient, ChatClient], nursery: trio.Nursery
               ) -> AsyncIterator[Running]:
    alice, _ = paired
    view = RecordingView()
    session = ChatSession(alice, resolve_target(alice, "bob"), view, typing_show_for=0.5,
                          typing_send_interval=0.2, retry_max=0.3)
    running = Running(session, view)
    nursery.start_soon(running.run)
    await wait_for(lambda: session.status.connection == "online")
    yield running
    if not running.finished.is_set():
        await running.stop()


async def test_opening_shows_history_and_marks_it_read(
        paired: tuple[ChatClient, ChatClient], nursery: trio.Nursery) -> None:
    alice, bob = paired
    async with bob.online():
        await bob.send_text("alice", "before the chat")
    await drain(alice)  # stored in alice's history, not shown yet
    async with alice.online():
        await alice.send_text("bob", "mine, earlier")
    view = RecordingView()
    session = ChatSession(alice, resolve_target(alice, "bob"), view)
    running = Running(session, view)
    nursery.start_soon(running.run)
    await wait_for(lambda: session.status.connection == "online")
    assert view.lines[0].startswith("── chat with bob ──")
    assert "chatcli verify bob" in view.lines[0]  # unverified: the hint
    assert view.has("bob: before the chat")
    assert view.has("me: mine, earlier  ✓")
    # Showing it marked it read, and bob is told so.
    assert alice.history("bob")[0]["state"] == "read"
    events: list[object] = []
    await wait_for_events(bob, events, lambda: any(
        isinstance(e, ReceiptEvent) and e.kind == "read" for e in events))
    await running.stop()


async def wait_for_events(client: ChatClient, events: list[object],
                          done: Callable[[], bool], seconds: float = 10) -> None:
    with trio.fail_after(seconds):
        while True:
            events.extend(await drain(client))
            if done():
                return
            await trio.sleep(0.05)


async def test_live_messages_marks_and_commands(chat: Running,
                                                paired: tuple[ChatClient, ChatClient]) -> None:
    _, bob = paired
    async with bob.online():
        await bob.send_text("alice", "live from bob")
    await wait_for(lambda: chat.view.has("bob: live from bob"))

    chat.session.submit("hello bob")
    await wait_for(lambda: chat.view.has("me: hello bob  …"))
    bob.auto_read = True
    got: list[object] = []
    await wait_for_events(bob, got, lambda: any(
        getattr(e, "text", None) == "hello bob" for e in got))
    await wait_for(lambda: chat.view.has('✓✓ read: "hello bob"'))
    assert chat.session.status.pending == 0

    chat.session.submit("/help")
    await wait_for(lambda: chat.view.has("/quit"))
    chat.session.submit("/nonsense")
    await wait_for(lambda: chat.view.has("Unknown command /nonsense"))
    chat.session.submit("//slash at the start")
    got = []
    await wait_for_events(bob, got, lambda: any(
        getattr(e, "text", None) == "/slash at the start" for e in got))
    chat.session.submit("/quit")
    with trio.fail_after(5):
        await chat.finished.wait()


async def test_typing_both_ways(chat: Running, paired: tuple[ChatClient, ChatClient]) -> None:
    _, bob = paired
    async with bob.online():
        bob.queue_typing("alice", True)
        await bob.deliver_outbox()
    await wait_for(lambda: chat.session.status.typing())
    assert "bob is typing…" in chat.session.status_line()
    await wait_for(lambda: not chat.session.status.typing())  # runs out by itself

    chat.session.typed()
    got: list[object] = []
    await wait_for_events(bob, got, lambda: any(
        isinstance(e, TypingEvent) and e.active for e in got))


async def test_reconnects_after_a_drop(chat: Running,
                                       paired: tuple[ChatClient, ChatClient]) -> None:
    alice, bob = paired
    own = await alice.own_relay(authenticate=False)
    await own.ws.aclose()
    await wait_for(lambda: chat.view.has("reconnecting…"))
    await wait_for(lambda: chat.view.has("reconnected."))
    chat.session.submit("after the drop")
    got: list[object] = []
    await wait_for_events(bob, got, lambda: any(
        getattr(e, "text", None) == "after the drop" for e in got))


async def test_other_contacts_are_announced_not_shown(chat: Running) -> None:
    # A message from someone else while chatting: a pointer, not the text.
    await chat.session._handle_events([MessageEvent(
        id="x", contact="carol", text="secret for later", sent_at=0, received_at=0).to_json()])
    assert chat.view.has("new message from carol")
    assert not chat.view.has("secret for later")


async def test_key_change_and_unknown_contact_refused(
        paired: tuple[ChatClient, ChatClient]) -> None:
    alice, _ = paired
    with pytest.raises(UsageError):
        resolve_target(alice, "nobody")
    with alice.store.write():
        db.Contact.update(key_changed=True).where(db.Contact.name == "bob").execute()
    with pytest.raises(KeyChangedError) as caught:
        resolve_target(alice, "bob")
    assert caught.value.exit_code == 4


def test_text_helpers() -> None:
    assert clean("hi\x1b[2J there\x07") == "hi?[2J there?"
    assert clean("two\nlines\ttab") == "two\nlines\ttab"
    line = message_line("bob", "one\ntwo", None)
    assert line == "[--:--] bob: one\n             two"
    assert presence_text(True, None, True) == "online"
    assert presence_text(None, None, True) == "presence hidden"
    assert presence_text(None, None, False) == "presence unknown"
    assert presence_text(False, None, True) == "offline"
    status = ChatStatus("bob", verified=True, connection="reconnecting…", pending=2)
    assert status.text() == " bob · verified · reconnecting… · 2 pending "
    status.key_changed = True
    assert "KEY CHANGED: run `chatcli verify bob`" in status.text()


async def test_contact_on_another_relay(tmp_path: Path, relay: FakeRelay, relay2: FakeRelay,
                                        nursery: trio.Nursery) -> None:
    alice = await make_client(tmp_path, "alice", relay)
    bob = await make_client(tmp_path, "bob", relay2)
    try:
        await pair(alice, bob)
        view = RecordingView()
        session = ChatSession(alice, resolve_target(alice, "bob"), view, retry_max=0.3)
        running = Running(session, view)
        nursery.start_soon(running.run)
        await wait_for(lambda: session.status.connection == "online")
        # Presence comes from bob's relay (he is offline there).
        await wait_for(lambda: session.status.presence_known)
        assert session.status.online is False
        async with bob.online():
            await bob.send_text("alice", "from the other relay")
        await wait_for(lambda: view.has("bob: from the other relay"))
        session.submit("back across")
        got: list[object] = []
        await wait_for_events(bob, got, lambda: any(
            getattr(e, "text", None) == "back across" for e in got))
        await running.stop()
    finally:
        alice.close()
        bob.close()


async def test_key_change_during_the_chat(chat: Running,
                                          paired: tuple[ChatClient, ChatClient]) -> None:
    alice, _ = paired
    with alice.store.write():
        db.Contact.update(key_changed=True).where(db.Contact.name == "bob").execute()
    await chat.session._handle_events([NoticeEvent(
        "WARNING: the identity key of bob has changed.", warning=True, contact="bob").to_json()])
    assert "KEY CHANGED" in chat.session.status_line()
    chat.session.submit("blocked now")
    await wait_for(lambda: chat.view.has("! not sent: The identity key of bob has changed"))


async def test_search_in_the_chat(chat: Running, paired: tuple[ChatClient, ChatClient]
                                  ) -> None:
    _, bob = paired
    async with bob.online():
        await bob.send_text("alice", "the Release is on Friday")
    await wait_for(lambda: chat.view.has("bob: the Release is on Friday"))
    chat.session.submit("/search release fri")
    await wait_for(lambda: chat.view.has("1 message(s) matching 'release fri'"))
    assert chat.view.lines[-1].startswith("  [") and "bob: the Release is on Friday  " in (
        chat.view.lines[-1])
    chat.session.submit("/search nothing here")
    await wait_for(lambda: chat.view.has("No message here matches 'nothing here'."))
    chat.session.submit("/search")
    await wait_for(lambda: chat.view.has("Usage: /search WORDS"))
    chat.session.submit("/search ?!")
    await wait_for(lambda: chat.view.has("! Give at least one word to search for."))
