"""``chatcli chat`` through a running daemon: the same screen, the daemon's identity.

While a ``chatcli daemon`` runs for the home, a chat window holds no key and no
relay connection: :class:`RemoteChatSession` uses only the API on the daemon's
socket (:class:`chatcli.daemon.remote.RemoteApi`), and shows what it gets
with the same rendering as the direct session (:mod:`chatcli.client.chat_ui`).

* Live events: one ``subscribe`` with ``contact`` (this conversation only)
  as a *consumer* that takes the backlog: the window takes its conversation's
  events, and every other conversation's keep waiting for ``chatcli
  receive``. Several windows on one conversation all see every event.
* Sending: ``send`` in a background task per message, so typing never
  waits. The line shows ``…`` until the answer (``✓``: stored by the relay);
  ``✓✓`` from ``receipt`` events. Own messages sent elsewhere (another
  window, ``chatcli send``) arrive as ``sent`` events and are shown as own
  messages; this window's own ``sent`` events are recognised by id (one that
  arrives before its answer waits until the answer says whose it is).
  What the relay could not store yet stays in the daemon's durable outbox;
  the window follows it with ``history`` until it is stored.
* Typing, read marks (``read``: the daemon applies the account's
  read-receipt setting), presence by polling ``presence.get`` (every 15 s),
  the daemon's relay connection by polling ``daemon.status`` (every 5 s),
  key changes shown loudly as in direct mode.
* The daemon going away ends the chat with one line and exit code 1
  (:class:`DaemonLostError`): nothing is lost, its outbox is durable.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from typing import TYPE_CHECKING, Any

import trio

from chatcli.client.chat_ui import (
    FAREWELL_SECONDS,
    HISTORY_DEFAULT,
    MARK,
    MARK_DEBOUNCE,
    RANK,
    TYPING_SEND_INTERVAL,
    TYPING_SHOW_FOR,
    ChatStatus,
    ChatTarget,
    ChatView,
    PromptInput,
    _Own,
    advance_marks,
    clean,
    header_lines,
    input_loop,
    message_line,
    pending_count,
    search_params,
    show_history,
    show_incoming,
)
from chatcli.client.kinds_view import action_line
from chatcli.daemon.remote import DaemonGoneError, RemoteApi, RemoteError
from chatcli.errors import ChatcliError

if TYPE_CHECKING:
    from chatcli.daemon.sync_client import DaemonCliApi

STATUS_EVERY = 5.0
"""Seconds between two looks at the daemon's relay connection."""

PRESENCE_EVERY = 15.0
"""Seconds between two polls of the contact's presence."""

FOLLOW_EVERY = 3.0
"""Seconds between two looks at own messages still waiting in the daemon's outbox."""

FOLLOW_LIMIT = 200
"""How many of the latest messages those looks read."""

ANNOUNCE_AFTER = 2.0
"""A send answered later than this gets its own "✓ at their relay" line."""


class DaemonLostError(ChatcliError):
    """The daemon stopped (or its socket broke) in the middle of a chat."""


def lost() -> DaemonLostError:
    return DaemonLostError("The chatcli daemon went away, so the chat ended; nothing is lost "
                           "(what was not sent yet stays queued in its outbox).")


def resolve_remote_target(api: DaemonCliApi, name: str) -> ChatTarget:
    """The conversation called ``name``, asked of the daemon before the screen
    opens: an unknown name or a changed key stops here with the same line and
    exit code as in direct mode (``history`` refuses them alike)."""
    api.call("history", {"contact": name, "limit": 1})
    for contact in api.call("contacts.list", {"offline": True}):
        if contact["name"] == name:
            return ChatTarget(name=name, kind="contact", contact_id=0, mailbox=b"",
                              relay_url=str(contact["relay"]),
                              verified=bool(contact["verified"]))
    return ChatTarget(name=name, kind="group", contact_id=0, mailbox=b"", relay_url="",
                      verified=False)


def _lost_or(group: BaseExceptionGroup[BaseException]) -> BaseException:
    from chatcli.client.relay_client import unwrap

    if group.subgroup(lambda e: isinstance(e, DaemonLostError)) is not None:
        return lost()
    return unwrap(group)


class RemoteChatSession(PromptInput):
    """One chat window on the daemon (see the module docstring); driven like
    :class:`chatcli.client.chat_ui.ChatSession`."""

    def __init__(self, api: RemoteApi, target: ChatTarget, view: ChatView, *,
                 history: int = HISTORY_DEFAULT, typing_send_interval: float = TYPING_SEND_INTERVAL,
                 typing_show_for: float = TYPING_SHOW_FOR, status_every: float = STATUS_EVERY,
                 presence_every: float = PRESENCE_EVERY, follow_every: float = FOLLOW_EVERY
                 ) -> None:
        self.api = api
        self.target = target
        self.view = view
        self.history_limit = history
        self.typing_send_interval = typing_send_interval
        self.typing_show_for = typing_show_for
        self.status_every = status_every
        self.presence_every = presence_every
        self.follow_every = follow_every
        self.status = ChatStatus(target.name, target.verified)
        self._lines_send, self._lines = trio.open_memory_channel[str](math.inf)
        self._own: dict[str, _Own] = {}
        self._seen: set[str] = set()
        """Ids shown in this window (history, events, own sends)."""
        self._states: dict[str, str] = {}
        """The latest known state of own messages (receipts, answers, follow-ups);
        applied to those this window shows."""
        self._inflight: dict[int, str] = {}
        """This window's sends waiting for their answer: token -> text."""
        self._parked: dict[str, dict[str, Any]] = {}
        """``sent`` events that may be this window's own, until its answers come."""
        self._tokens = itertools.count(1)
        self._typed = trio.Event()
        self._typing_sent_at = -math.inf
        self._marks_changed = trio.Event()
        self._nursery: trio.Nursery | None = None

    # ------------------------------------------------------------ calls

    async def _call(self, method: str, params: dict[str, Any]) -> Any:
        """A method on the daemon; its error as a ChatcliError (RemoteError), the
        daemon's absence as :class:`DaemonLostError`."""
        try:
            return await self.api.call(method, params)
        except (OSError, DaemonGoneError):
            raise lost() from None

    def _spawn(self, func: Any, *args: Any) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(func, *args)

    # ------------------------------------------------------------ main

    async def run(self) -> None:
        """Subscribe, show the opening screen, then chat until the input is closed."""
        try:
            await self._run()
        except (OSError, DaemonGoneError):
            raise lost() from None
        except BaseExceptionGroup as group:
            raise _lost_or(group) from None

    async def _run(self) -> None:
        await self._show_header()
        # Subscribed before the history is read: nothing falls in between (what
        # both bring is shown once, by id).
        sub = await self.api.subscribe(contact=self.target.name, consumer=True, backlog=True)
        async with sub, trio.open_nursery() as nursery:
            self._nursery = nursery
            await self._show_history()
            nursery.start_soon(self._event_loop, sub)
            nursery.start_soon(self._typing_sender)
            nursery.start_soon(self._marks_task)
            nursery.start_soon(self._status_task)
            nursery.start_soon(self._follow_task)
            nursery.start_soon(self._ticker)
            await self._input_loop()
            await self._farewell()
            nursery.cancel_scope.cancel()

    async def _show_header(self) -> None:
        members = info = None
        if self.target.kind == "group":
            members = (await self._call("groups.members", {"group": self.target.name}))["members"]
            info = await self._call("groups.info", {"group": self.target.name})
        for line in header_lines(self.target, members, info):
            self.view.show(line)

    async def _show_history(self) -> None:
        if self.history_limit <= 0:
            return
        entries = await self._call("history", {"contact": self.target.name,
                                               "limit": self.history_limit})
        self._seen.update(entry["id"] for entry in entries)
        unread = show_history(self.view, self.target.name, entries, self._own)
        self._update_pending()
        self._mark_read(unread)

    async def _input_loop(self) -> None:
        # A daemon that went away (DaemonGoneError) ends the chat; its refusals do not.
        await input_loop(self._lines, self.view, self.target.name,
                         show_history=self._show_history, send=self._send,
                         search=self._search, recoverable=RemoteError, act=self._act)

    def _act(self, method: str, params: dict[str, Any]) -> None:
        """A reply, reaction, edit or delete typed in the chat: sent by the daemon."""
        self._spawn(self._act_remote, method, params)

    async def _act_remote(self, method: str, params: dict[str, Any]) -> None:
        try:
            result = await self._call(method, {"to": self.target.name, **params})
        except RemoteError as exc:
            self.view.show(f"! {exc}")
            return
        if method == "send":  # the daemon's "sent" event shows it
            return
        kind = {"react": "reaction", "edit": "edit", "delete": "delete"}[method]
        self.view.show(action_line({"type": kind, "from": "you", "id": result["id"],
                                    "emoji": params.get("emoji"),
                                    "text": params.get("text")}))

    async def _search(self, text: str) -> list[dict[str, Any]]:
        hits: list[dict[str, Any]] = await self._call("search", search_params(self.target, text))
        return hits

    async def _farewell(self) -> None:
        """Leaving: wait a moment for the answers still due, and say what is left."""
        if self._inflight:
            self.view.show(f"Sending {len(self._inflight)} message(s) before leaving…")
            with trio.move_on_after(FAREWELL_SECONDS):
                while self._inflight:  # noqa: ASYNC110 (the send tasks empty it)
                    await trio.sleep(0.05)
        self._apply_marks()
        left = pending_count(self._own) + len(self._inflight)
        if left:
            self.view.show(f"{left} message(s) stay queued; the chatcli daemon sends them.")

    # ------------------------------------------------------------ events

    async def _event_loop(self, sub: Any) -> None:
        try:
            async for event in sub:
                self._handle(event)
        except (OSError, DaemonGoneError):
            raise lost() from None

    def _handle(self, event: dict[str, Any]) -> None:
        """One event of this conversation (the subscription's ``contact`` filter
        left out every other)."""
        kind = event.get("type")
        name = self.target.name
        if kind == "message":
            if event["id"] not in self._seen:
                self._seen.add(event["id"])
                show_incoming(self.view, name, event)
                self.status.typing_until = 0.0
                self._mark_read([event["id"]])
        elif kind in ("reaction", "edit", "delete"):
            self.view.show(clean(action_line(event)))
        elif kind == "sent":
            self._sent_elsewhere(event)
        elif kind == "receipt":
            state = "read" if event["kind"] == "read" else "delivered"
            for message_id in event["ids"]:
                self._learn(message_id, state)
            self._marks_changed.set()
        elif kind == "typing":
            self.status.typing_until = (time.monotonic() + self.typing_show_for
                                        if event["active"] else 0.0)
        elif kind == "presence":
            self.status.online = event["online"]
            self.status.last_seen = event["last_seen"]
            self.status.presence_known = True
        elif kind in ("notice", "key_change"):
            self.view.show(f"! {clean(event['text'])}")
            if event.get("contact") == name:
                self._spawn(self._reload_trust)
        self.view.refresh()

    def _sent_elsewhere(self, event: dict[str, Any]) -> None:
        """A ``sent`` event: this window's own send (known by id, or parked until
        its answer comes), else one from another window or terminal."""
        message_id = event["id"]
        if message_id in self._own:
            if event.get("stored"):
                self._learn(message_id, "sent")
                self._marks_changed.set()
            return
        if event["text"] in self._inflight.values():
            self._parked[message_id] = event
            return
        self._show_sent(event)

    def _show_sent(self, event: dict[str, Any]) -> None:
        message_id = event["id"]
        if message_id in self._seen:
            return
        self._seen.add(message_id)
        state = "sent" if event.get("stored") else "pending"
        self._own[message_id] = _Own(event["text"], state, announce_sent=state == "pending")
        if event["text"]:
            self.view.show(message_line("me", event["text"], event["sent_at"], MARK[state]))
        if event.get("file"):
            self.view.show(f"        [file {clean(str(event['file']))}]")
        self._update_pending()
        self._marks_changed.set()

    def _release_parked(self) -> None:
        """Parked ``sent`` events no answer of this window claimed: another's."""
        for message_id, event in list(self._parked.items()):
            if event["text"] not in self._inflight.values():
                del self._parked[message_id]
                self._show_sent(event)

    def _mark_read(self, ids: list[str]) -> None:
        if ids and self.target.kind != "group":  # groups have no receipts
            self._spawn(self._read, ids)

    async def _read(self, ids: list[str]) -> None:
        with contextlib.suppress(RemoteError):
            await self._call("read", {"contact": self.target.name, "ids": ids})

    async def _reload_trust(self) -> None:
        with contextlib.suppress(RemoteError):
            for contact in await self._call("contacts.list", {"offline": True}):
                if contact["name"] == self.target.name:
                    self.status.key_changed = bool(contact["key_changed"])
                    self.status.verified = bool(contact["verified"])
                    self.view.refresh()

    # ------------------------------------------------------------ sending

    def _send(self, text: str) -> None:
        token = next(self._tokens)
        self._inflight[token] = text
        self.view.show(message_line("me", text, int(time.time() * 1000), MARK["pending"]))
        self._typing_sent_at = -math.inf
        self._update_pending()
        self._spawn(self._deliver, token, text)

    async def _deliver(self, token: int, text: str) -> None:
        started = time.monotonic()
        try:
            result = await self._call("send", {"to": self.target.name, "text": text})
        except RemoteError as exc:
            del self._inflight[token]
            if exc.kind == "relay_unreachable":
                # Queued in the daemon's outbox: it keeps trying; follow it.
                self.view.show(f"! {exc}")
                await self._adopt_queued(text)
            else:
                self.view.show(f"! not sent: {exc}")
            self._release_parked()
            self._update_pending()
            return
        del self._inflight[token]
        message_id = str(result["id"])
        waited = time.monotonic() - started > ANNOUNCE_AFTER
        self._own[message_id] = _Own(text, "pending", announce_sent=waited)
        self._seen.add(message_id)
        self._parked.pop(message_id, None)
        if result.get("stored"):
            self._learn(message_id, "sent")
        self._release_parked()
        self._apply_marks()

    async def _adopt_queued(self, text: str) -> None:
        """The id of a message the daemon kept queued: the latest own one with
        this text not shown yet (the answer was an error, without an id)."""
        with contextlib.suppress(RemoteError):
            entries = await self._call("history", {"contact": self.target.name,
                                                   "limit": FOLLOW_LIMIT})
            for entry in reversed(entries):
                if entry["direction"] == "out" and entry["text"] == text and \
                        entry["id"] not in self._own:
                    self._own[entry["id"]] = _Own(text, "pending", announce_sent=True)
                    self._seen.add(entry["id"])
                    self._parked.pop(entry["id"], None)
                    self._learn(entry["id"], "pending" if entry["state"] == "queued"
                                else entry["state"])
                    self._marks_changed.set()
                    return

    async def _typing_sender(self) -> None:
        while True:
            await self._typed.wait()
            self._typed = trio.Event()
            now = time.monotonic()
            if now - self._typing_sent_at < self.typing_send_interval:
                continue
            self._typing_sent_at = now
            with contextlib.suppress(RemoteError):
                await self._call("typing", {"to": self.target.name, "active": True})

    # ------------------------------------------------------------ marks, status

    def _learn(self, message_id: str, state: str) -> None:
        if RANK.get(state, 0) > RANK.get(self._states.get(message_id, "pending"), 0):
            self._states[message_id] = state

    def _apply_marks(self) -> None:
        advance_marks(self.view, self.target.name, self._own, self._states)
        self._update_pending()

    def _update_pending(self) -> None:
        count = pending_count(self._own) + len(self._inflight)
        if count != self.status.pending:
            self.status.pending = count
            self.view.refresh()

    async def _marks_task(self) -> None:
        while True:
            await self._marks_changed.wait()
            await trio.sleep(MARK_DEBOUNCE)
            self._marks_changed = trio.Event()
            self._apply_marks()

    async def _follow_task(self) -> None:
        """Own messages waiting in the daemon's outbox: their state from
        ``history`` until the relay stored them."""
        while True:
            await trio.sleep(self.follow_every)
            if not any(own.state == "pending" for own in self._own.values()):
                continue
            with contextlib.suppress(RemoteError):
                entries = await self._call("history", {"contact": self.target.name,
                                                       "limit": FOLLOW_LIMIT})
                for entry in entries:
                    if entry["direction"] == "out" and entry["id"] in self._own:
                        self._learn(entry["id"], "pending" if entry["state"] == "queued"
                                    else entry["state"])
                self._apply_marks()

    async def _status_task(self) -> None:
        """The daemon's relay connection, now and every ``status_every``
        seconds; the contact's presence when it comes back and every
        ``presence_every`` seconds."""
        last_presence = -math.inf
        while True:
            try:
                online = bool((await self._call("daemon.status", {})).get("connected"))
            except RemoteError:
                online = False
            was_online = self.status.connection == "online"
            self.status.connection = "online" if online else "reconnecting…"
            now = time.monotonic()
            if self.target.kind == "contact" and online and (
                    not was_online or now - last_presence >= self.presence_every):
                last_presence = now
                await self._poll_presence()
            self.view.refresh()
            await trio.sleep(self.status_every)

    async def _poll_presence(self) -> None:
        name = self.target.name
        try:
            info = (await self._call("presence.get", {"contacts": [name]})).get(name)
        except RemoteError:
            info = None
        if info is None:
            self.status.presence_known = False
        else:
            self.status.online = info["online"]
            self.status.last_seen = info["last_seen"]
            self.status.presence_known = bool(info["known"])


def run_remote_chat(api: DaemonCliApi, target: ChatTarget, *,
                    history: int = HISTORY_DEFAULT) -> None:
    """The chat with ``target`` on this terminal, through the daemon ``api`` found."""
    from chatcli.client.chat_ui import run_on_terminal

    remote = RemoteApi(api.path)
    run_on_terminal(lambda view: RemoteChatSession(remote, target, view, history=history))
