"""The interactive chat behind ``chatcli chat CONTACT``.

Two halves:

* :class:`ChatSession` is the conversation logic, written for Trio and free of
  any terminal code: it shows the history, keeps the relay connection (and
  re-opens it after a drop), prints incoming messages, delivers the outbox,
  follows receipts, typing and presence. It talks to the screen only through
  a :class:`ChatView` (``show`` a line, ``refresh`` the status line) and takes
  input through :meth:`ChatSession.submit`, :meth:`ChatSession.typed` and
  :meth:`ChatSession.close_input`. The tests drive it with a recording view.

* :func:`run_on_terminal` (:func:`run_terminal_chat` for this session) puts
  a session on a terminal with prompt_toolkit: an
  input line with history and editing, a status line just above it (contact,
  verification, presence or connection state, typing indicator, pending
  messages), and messages printed *above* both while the user types
  (``patch_stdout``). This keeps to the ordinary scrollback, so it works in
  any 80x24 terminal and in a pseudo-terminal.

While a daemon runs, :class:`chatcli.client.chat_remote.RemoteChatSession`
takes the session's place (the same terminal host, and the same rendering
functions below: ``header_lines``, ``show_history``, ``show_incoming``,
``advance_marks``, ``parse_input``, :class:`ChatStatus`).

How the two event loops meet. prompt_toolkit runs on asyncio and the client
on Trio. The terminal side stays in charge of the main thread (signals such
as SIGWINCH, raw mode, restoring the terminal on exit) by running
``asyncio.run``; Trio runs inside that same loop in **guest mode**
(:func:`trio.lowlevel.start_guest_run`, with asyncio as the host, as Trio's
documentation shows). Trio code therefore runs on the main thread, between
asyncio callbacks: it may call prompt_toolkit (``invalidate``, writing
through the ``patch_stdout`` proxy) directly, the local SQLite connection is
used by one thread only, and there is no lock to get wrong. Input goes the
other way through :meth:`trio.lowlevel.TrioToken.run_sync_soon`, the one
thread-safe entry into a Trio run. Ctrl-D and Ctrl-C end the prompt (raw mode
turns them into keys, not signals); the Trio side then finishes (one last
try at sending what is still queued) and prompt_toolkit has restored the
terminal by the time the command returns.

Why the chat reads the relay's pushes itself instead of iterating
:meth:`ChatClient.events`: ``events`` flushes the outbox after each batch of
deliveries, and the chat must also flush it whenever the user sends. Two
passes over the outbox at the same moment could deposit the same ciphertext
twice (the second copy would then fail to decrypt on the other side), so here
one task, :meth:`ChatSession._delivery_worker`, does every deposit.

Marks on the user's own messages: ``…`` pending (not yet stored by the
contact's relay), ``✓`` sent (stored by their relay), ``✓✓`` delivered (their
device has it), ``✓✓ read``: the same marks as ``chatcli messages``. A message is
printed once with ``…``; later changes are printed as short lines naming the
message (the relay's ``✓`` only when the message had to wait), and the status
line counts the pending ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import math
import time
import unicodedata
from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import trio

from chatcli.client import models as db
from chatcli.client.kinds_view import (
    CHAT_COMMANDS,
    CHAT_HELP,
    action_line,
    decorated,
    parse_command,
    quote_line,
    reactions_line,
    short_id,
)
from chatcli.client.relay_client import OwnerConnection, unwrap
from chatcli.client.service import (
    ChatClient,
    Event,
    MessageEvent,
)
from chatcli.errors import ChatcliError, RelayError
from chatcli.protocol import frames

if TYPE_CHECKING:
    from chatcli.client.service import PresenceInfo

HISTORY_DEFAULT = 20
TYPING_SEND_INTERVAL = 4.0   # at most one "typing" message per this many seconds
TYPING_SHOW_FOR = 6.0        # the contact's indicator disappears after this without news
MARK_DEBOUNCE = 0.4          # receipts arriving together give one status line
RETRY_MAX = 10.0             # the longest pause between two delivery or connection attempts
FAREWELL_SECONDS = 5.0       # how long leaving the chat may try to send what is queued

RANK = {"pending": 0, "sent": 1, "delivered": 2, "read": 3, "failed": 4}
MARK = {"pending": "…", "sent": "✓", "delivered": "✓✓", "read": "✓✓", "failed": "✗"}
#: In history lines the word tells read from delivered, as in `chatcli messages`.
HISTORY_MARK = {**MARK, "read": "✓✓ read"}

_ACTION_KIND = {"react": "reaction", "edit": "edit", "delete": "delete"}

HELP = """\
Commands:
  /help      this text
  /history   show the recent history again, with the current marks
  /search WORDS   messages of this conversation with all the words (the last may be a beginning)
  /quit      leave the chat (Ctrl-D does the same)
  //text     send a message that starts with a slash
{kinds}
Marks on your messages: … pending   ✓ at {name}'s relay   ✓✓ delivered   ✓✓ read"""


# ------------------------------------------------------------------ the target


@dataclass(frozen=True)
class ChatTarget:
    """Who the chat is with. Today a contact; a group can slot in here later
    (``kind``), resolved by :func:`resolve_target`."""

    name: str
    kind: str
    contact_id: int
    mailbox: bytes
    relay_url: str
    verified: bool


def resolve_target(client: ChatClient, name: str) -> ChatTarget:
    """The conversation partner called ``name``.

    Raises ``UsageError`` for an unknown name and ``KeyChangedError`` (exit 4)
    for a contact whose changed key was not accepted yet."""
    from chatcli.client.groups.service import is_group

    if is_group(client, name):
        return ChatTarget(name=name, kind="group", contact_id=0, mailbox=b"", relay_url="",
                          verified=False)
    contact = client.get_contact(name)
    return ChatTarget(name=contact.name, kind="contact", contact_id=contact.id,
                      mailbox=bytes(contact.mailbox), relay_url=str(contact.relay_url),
                      verified=bool(contact.verified))


# ------------------------------------------------------------------ text helpers


def clean(text: str) -> str:
    """``text`` made safe for a terminal: control characters (escape sequences
    a contact could send to repaint the screen) become visible ``?``; newlines
    and tabs stay."""
    out = []
    for ch in text:
        if ch in "\n\t":
            out.append(ch)
        elif unicodedata.category(ch) in {"Cc", "Cf"} and ch != "\u200d":
            out.append("?")
        else:
            out.append(ch)
    return "".join(out)


def clock(ms: int | None, *, now_ms: int | None = None) -> str:
    """``HH:MM`` today, ``YYYY-MM-DD HH:MM`` on other days."""
    if ms is None:
        return "--:--"
    when = datetime.datetime.fromtimestamp(ms / 1000)
    today = datetime.datetime.fromtimestamp((now_ms or int(time.time() * 1000)) / 1000)
    if when.date() == today.date():
        return when.strftime("%H:%M")
    return when.strftime("%Y-%m-%d %H:%M")


def excerpt(text: str, width: int = 32) -> str:
    flat = " ".join(clean(text).split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def message_line(who: str, text: str, sent_at: int | None, mark: str = "",
                 message_id: str | None = None) -> str:
    """``[HH:MM] who: text`` with continuation lines indented under the text;
    with ``message_id``, its short id before the name (``/reply`` takes it)."""
    tag = short_id(message_id) + " " if message_id else ""
    head = f"[{clock(sent_at)}] {tag}{who}: "
    body = clean(text).replace("\n", "\n" + " " * len(head))
    return head + body + (f"  {mark}" if mark else "")


def search_line(hit: dict[str, Any], *, conversation: bool = True) -> str:
    """One result of ``search``: ``[time] (conversation ·) who: snippet  id``."""
    where = f"{hit['conversation']} · " if conversation else ""
    return (f"[{clock(hit['sent_at'])}] {clean(where + hit['from'])}: {clean(hit['snippet'])}"
            f"  {hit['id']}")


def presence_text(online: bool | None, last_seen: int | None, known: bool) -> str:
    if not known:
        return "presence unknown"
    if online:
        return "online"
    if online is None:
        return "presence hidden"
    if last_seen:
        return f"last seen {clock(last_seen)}"
    return "offline"


# ------------------------------------------------------------------ state


class ChatView(Protocol):
    """Where the session writes: lines above the input, and a status line."""

    def show(self, line: str) -> None: ...

    def refresh(self) -> None: ...


@dataclass
class ChatStatus:
    """What the status line shows."""

    name: str
    verified: bool
    connection: str = "connecting…"
    online: bool | None = None
    last_seen: int | None = None
    presence_known: bool = False
    typing_until: float = 0.0
    pending: int = 0
    key_changed: bool = False

    def typing(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) < self.typing_until

    def text(self) -> str:
        trust = "verified" if self.verified else "unverified"
        if self.key_changed:
            trust = f"KEY CHANGED: run `chatcli verify {self.name}`"
        parts = [self.name, trust]
        if self.connection == "online":
            parts.append(presence_text(self.online, self.last_seen, self.presence_known))
        else:
            parts.append(self.connection)
        if self.typing():
            parts.append(f"{self.name} is typing…")
        if self.pending:
            parts.append(f"{self.pending} pending")
        return " " + " · ".join(parts) + " "


@dataclass
class _Own:
    """One of the user's messages shown in this chat, and its last shown state.
    ``announce_sent``: print a line when the relay stores it (it waited: typed
    while disconnected, or a delivery attempt left it queued); a message that
    goes out at once just loses its pending count."""

    text: str
    state: str
    announce_sent: bool = True


# ------------------------------------------------------------------ shared rendering
# Used by the direct session below and by the daemon's (chat_remote): both
# show the same lines for the same conversation.


def header_lines(target: ChatTarget, members: list[dict[str, Any]] | None = None,
                 info: dict[str, Any] | None = None) -> list[str]:
    """The opening lines; ``members`` (``groups.members``) and ``info``
    (``groups.info``: the group's profile) for a group."""
    name = target.name
    usage = "Type a message and press Enter; /help for commands, Ctrl-D to leave."
    if target.kind == "group":
        people = [m["name"] for m in members or [] if not m["me"]]
        title = (info or {}).get("title") or name
        # Admins chose the profile: no escape sequences reach the terminal.
        named = "" if title == name else f" “{clean(title)}”"
        lines = [f"── chat in group {name}{named} ── with {', '.join(people) or 'nobody yet'}"]
        if info and info.get("description"):
            lines.append(f"   {clean(info['description'])}")
        return [*lines, usage]
    if target.verified:
        trust = "verified ✓"
    else:
        trust = f"not verified: compare safety numbers with `chatcli verify {name}`"
    return [f"── chat with {name} ── {trust}", usage]


def show_history(view: ChatView, name: str, entries: list[dict[str, Any]],
                 own: dict[str, _Own]) -> list[str]:
    """Print ``history`` entries (own ones with their marks, remembered in
    ``own``); the ids of the incoming ones not read yet."""
    if not entries:
        view.show(f"(no messages with {name} yet)")
        return []
    unread = []
    for entry in entries:
        quote = quote_line(entry.get("reply_to"))
        if quote:
            view.show("        " + clean(quote))
        if entry["direction"] == "out":
            state = "pending" if entry["state"] == "queued" else entry["state"]
            own[entry["id"]] = _Own(entry["text"], state, announce_sent=True)
            view.show(message_line("me", decorated(entry), entry["sent_at"],
                                   HISTORY_MARK[state], entry["id"]))
        else:
            view.show(message_line(entry["from"], decorated(entry), entry["sent_at"],
                                   message_id=entry["id"]))
            if entry["state"] == "received":
                unread.append(entry["id"])
        reactions = reactions_line(entry.get("reactions"))
        if reactions:
            view.show("        " + clean(reactions))
    view.show("── now ──")
    return unread


def show_incoming(view: ChatView, name: str, event: dict[str, Any]) -> None:
    """A ``message`` event of this conversation (and its attachment's path)."""
    from chatcli.api.events import display_sender

    if event.get("key_changed"):
        view.show(f"! the next message comes from the NEW, unverified key of {name}")
    quote = quote_line(event.get("reply_to"))
    if quote:
        view.show("        " + clean(quote))
    view.show(message_line(display_sender(event), event["text"], event["sent_at"],
                           message_id=event["id"]))
    info = event.get("attachment")
    if info is not None:
        where = info.get("path") or f"not saved: {info.get('error', 'unknown error')}"
        view.show(f"        [file {clean(str(info.get('name')))}: {clean(str(where))}]")


def advance_marks(view: ChatView, name: str, own: dict[str, _Own],
                  states: dict[str, str]) -> None:
    """Move own messages forward to ``states`` (never back), printing a line for
    each change worth one (``✓`` only for a message that waited)."""
    for message_id, state in states.items():
        mine = own.get(message_id)
        if mine is None or RANK.get(state, 0) <= RANK[mine.state]:
            continue
        mine.state = state
        if state == "sent" and not mine.announce_sent:
            continue
        label = {"sent": f"at {name}'s relay", "delivered": "delivered",
                 "read": "read", "failed": "NOT delivered (refused)"}[state]
        view.show(f"   {MARK[state]} {label}: \"{excerpt(mine.text)}\"")


def pending_count(own: dict[str, _Own]) -> int:
    return sum(1 for mine in own.values() if mine.state == "pending")


def parse_input(line: str) -> tuple[str, str]:
    """What a line typed in the chat asks: ``("send", text)``, ``("quit", "")``,
    ``("help", "")``, ``("history", "")``, ``("search", words)``, ``("act", line)``
    for a message command (``/reply``, ``/react``, ...), ``("unknown", command)`` or
    ``("nothing", "")`` for a blank line."""
    text = line.rstrip("\n")
    if not text.strip():
        return "nothing", ""
    if text.startswith("/") and not text.startswith("//"):
        command = text.split()[0].lower()
        if command in {"/quit", "/exit", "/q"}:
            return "quit", ""
        if command in {"/help", "/?"}:
            return "help", ""
        if command == "/history":
            return "history", ""
        if command == "/search":
            return "search", text[len(command):].strip()
        if command in CHAT_COMMANDS:
            return "act", text
        return "unknown", command
    return "send", text[1:] if text.startswith("//") else text


async def input_loop(lines: AsyncIterable[str], view: ChatView, name: str, *,
                     show_history: Callable[[], Awaitable[None]],
                     send: Callable[[str], None],
                     search: Callable[[str], Awaitable[list[dict[str, Any]]]],
                     recoverable: type[Exception],
                     act: Callable[[str, dict[str, Any]], None]) -> None:
    """Act on each line typed until ``/quit`` (both sessions): ``/help``,
    ``/history`` and ``/search`` (an error of type ``recoverable`` is shown, not
    fatal), message commands (``act(method, params)``: an API method and its
    params without ``to``), unknown commands, and messages to send."""
    async for line in lines:
        action, text = parse_input(line)
        if action == "quit":
            return
        if action == "help":
            view.show(HELP.format(name=name, kinds=CHAT_HELP))
        elif action == "act":
            command, _, rest = text.partition(" ")
            parsed = parse_command(command.lower(), rest)
            if isinstance(parsed, str):
                view.show(parsed)
            else:
                act(*parsed)
        elif action == "history":
            try:
                await show_history()
            except recoverable as exc:
                view.show(f"! {exc}")
        elif action == "search":
            await _show_search(view, text, search, recoverable)
        elif action == "unknown":
            view.show(f"Unknown command {clean(text)}; /help lists them.")
        elif action == "send":
            send(text)


async def _show_search(view: ChatView, text: str,
                       search: Callable[[str], Awaitable[list[dict[str, Any]]]],
                       recoverable: type[Exception]) -> None:
    if not text:
        view.show("Usage: /search WORDS")
        return
    try:
        hits = await search(text)
    except recoverable as exc:
        view.show(f"! {exc}")
        return
    if not hits:
        view.show(f"No message here matches {clean(text)!r}.")
        return
    view.show(f"{len(hits)} message(s) matching {clean(text)!r}, newest first:")
    for hit in hits:
        view.show("  " + search_line(hit, conversation=False))


SEARCH_LIMIT = 10  # results shown by /search in a chat


def search_params(target: ChatTarget, text: str) -> dict[str, Any]:
    """The ``search`` parameters of ``/search`` in the chat with ``target``."""
    return {"text": text, "limit": SEARCH_LIMIT,
            ("group" if target.kind == "group" else "contact"): target.name}


def _outgoing_states(client: ChatClient, ids: list[str]) -> dict[str, str]:
    """uuid -> pending / sent / delivered / read / failed, from the local store."""
    if not ids:
        return {}
    with client.store.read():
        rows = list(db.Message.select(db.Message.uuid, db.Message.stored_at,
                                      db.Message.delivered_at, db.Message.read_at,
                                      db.Message.failed)
                    .where(db.Message.uuid.in_(ids), db.Message.outgoing == True))  # noqa: E712
    states = {}
    for row in rows:
        states[row.uuid] = ("failed" if row.failed else "read" if row.read_at else
                            "delivered" if row.delivered_at else "sent" if row.stored_at
                            else "pending")
    if len(states) < len(ids):
        from chatcli.client.groups.service import group_message_states

        states.update(group_message_states(client, [i for i in ids if i not in states]))
    return states


# ------------------------------------------------------------------ the session


class PromptInput:
    """What the terminal calls, in Trio, on either session: the lines typed,
    typing, leaving, and the status line to draw."""

    _lines_send: trio.MemorySendChannel[str]
    _typed: trio.Event
    status: ChatStatus
    view: ChatView

    def submit(self, line: str) -> None:
        """A line the user entered."""
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            self._lines_send.send_nowait(line)

    def typed(self) -> None:
        """The user is typing a message (called on every change of the input)."""
        self._typed.set()

    def close_input(self) -> None:
        """The user left (Ctrl-D, Ctrl-C): the session ends."""
        self._lines_send.close()

    def status_line(self) -> str:
        return self.status.text()

    async def _ticker(self) -> None:
        """Redraw the status line when the typing indicator runs out."""
        shown = False
        while True:
            await trio.sleep(0.5)
            now = self.status.typing()
            if shown and not now:
                self.view.refresh()
            shown = now


class ChatSession(PromptInput):
    """One interactive conversation (see the module docstring)."""

    def __init__(self, client: ChatClient, target: ChatTarget, view: ChatView, *,
                 history: int = HISTORY_DEFAULT, typing_send_interval: float = TYPING_SEND_INTERVAL,
                 typing_show_for: float = TYPING_SHOW_FOR, retry_max: float = RETRY_MAX) -> None:
        from chatcli.api.local import LocalApi

        self.client = client
        # What the chat reads and marks goes through the API (its local methods,
        # which never deliver: this session's delivery worker is the only depositor).
        self.api = LocalApi(client, resident=False)
        self.target = target
        self.view = view
        self.history_limit = history
        self.typing_send_interval = typing_send_interval
        self.typing_show_for = typing_show_for
        self.retry_max = retry_max
        self.status = ChatStatus(target.name, target.verified)
        self._lines_send, self._lines = trio.open_memory_channel[str](math.inf)
        self._own: dict[str, _Own] = {}
        self._poke = trio.Event()
        self._deliver_lock = trio.Lock()
        self._marks_changed = trio.Event()
        self._typed = trio.Event()
        self._typing_sent_at = -math.inf
        self._connected = False
        self._dropped = False

    def _local(self, method: str, params: dict[str, Any]) -> Any:
        """An API method that needs no relay; its error as a ChatcliError."""
        from chatcli.api.errors import ApiChatcliError, ApiError

        try:
            return self.api.call_local(method, params)
        except ApiError as exc:
            raise ApiChatcliError(exc) from None

    # ------------------------------------------------------------ main

    async def run(self) -> None:
        """Show the opening screen, then chat until the input is closed or /quit."""
        self._show_header()
        self._show_history()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._connection_loop)
                nursery.start_soon(self._typing_sender)
                nursery.start_soon(self._marks_task)
                nursery.start_soon(self._ticker)
                await self._input_loop()
                # Let a deposit in flight finish: cancelled after the relay stored
                # it but before its answer, it would be deposited a second time.
                with trio.move_on_after(FAREWELL_SECONDS):
                    await self._deliver_lock.acquire()
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise unwrap(group) from None
        await self._farewell()

    def _show_header(self) -> None:
        members = info = None
        if self.target.kind == "group":
            members = self._local("groups.members", {"group": self.target.name})["members"]
            info = self._local("groups.info", {"group": self.target.name})
        for line in header_lines(self.target, members, info):
            self.view.show(line)

    def _show_history(self) -> None:
        if self.history_limit <= 0:
            return
        entries = self._local("history", {"contact": self.target.name,
                                          "limit": self.history_limit})
        unread = show_history(self.view, self.target.name, entries, self._own)
        self._update_pending()
        self._mark_read(unread)

    async def _input_loop(self) -> None:
        async def history() -> None:
            self._show_history()

        async def search(text: str) -> list[dict[str, Any]]:
            hits: list[dict[str, Any]] = self._local("search",
                                                     search_params(self.target, text))
            return hits

        await input_loop(self._lines, self.view, self.target.name, show_history=history,
                         send=self._send, search=search, recoverable=ChatcliError,
                         act=self._act)

    def _act(self, method: str, params: dict[str, Any]) -> None:
        """A reply, reaction, edit or delete typed in the chat: queued, sent by
        the delivery worker like a message."""
        if method == "send":
            self._send(params["text"], reply_to=params["reply_to"])
            return
        try:
            self._local(method, {"to": self.target.name, **params, "queue": True})
        except ChatcliError as exc:
            self.view.show(f"! {exc}")
            return
        self.view.show(action_line({"type": _ACTION_KIND[method], "from": "you",
                                    "id": params["id"], "emoji": params.get("emoji"),
                                    "text": params.get("text")}))
        self._poke.set()

    def _send(self, text: str, reply_to: str | None = None) -> None:
        try:
            message_id = self._local("send", {"to": self.target.name, "text": text,
                                              "queue": True, "reply_to": reply_to})["id"]
        except ChatcliError as exc:
            self.view.show(f"! not sent: {exc}")
            return
        self._own[message_id] = _Own(text, "pending", announce_sent=not self._connected)
        self.view.show(message_line("me", text, int(time.time() * 1000), MARK["pending"],
                                    message_id))
        self._typing_sent_at = -math.inf
        self._update_pending()
        self._poke.set()

    async def _farewell(self) -> None:
        """Leaving: a last short try for messages still queued, and say what is left."""
        self._print_marks()
        waiting = [i for i, own in self._own.items() if own.state == "pending"]
        if not waiting:
            return
        if not self._connected:
            self.view.show(f"{len(waiting)} message(s) stay queued; the next chatcli command "
                           "that connects sends them.")
            return
        self.view.show(f"Sending {len(waiting)} queued message(s) before leaving…")
        with trio.move_on_after(FAREWELL_SECONDS):
            try:
                async with self.client.online():
                    await self.client.deliver_until_stored(
                        kinds={"text"}, contact_id=self.target.contact_id,
                        time_limit=FAREWELL_SECONDS - 0.5)
            except RelayError:
                pass
            except BaseExceptionGroup as group:
                inner = unwrap(group)
                if not isinstance(inner, RelayError):
                    raise inner from None
        states = _outgoing_states(self.client, waiting)
        left = sum(1 for i in waiting if states.get(i) == "pending")
        if left:
            self.view.show(f"{left} message(s) stay queued; the next chatcli command that "
                           "connects sends them.")
        else:
            self.view.show("Sent.")

    # ------------------------------------------------------------ connection

    async def _connection_loop(self) -> None:
        delay = 0.5
        while True:
            reason = "the relay could not be reached"
            try:
                async with self.client.online():
                    await self._connected_session()
            except RelayError as exc:
                reason = str(exc)
            except BaseExceptionGroup as group:
                inner = unwrap(group)
                if not isinstance(inner, RelayError):
                    raise inner from None
                reason = str(inner)
            if self._connected:
                delay = 0.5
                self.view.show(f"! connection lost ({reason.rstrip('.')}); reconnecting…")
            elif not self._dropped:
                self.view.show(f"! {reason.rstrip('.')}; retrying…")
            self._connected = False
            self._dropped = True
            self.status.connection = "reconnecting…"
            self.status.presence_known = False
            self.view.refresh()
            await trio.sleep(delay)
            delay = min(delay * 2, self.retry_max)

    async def _connected_session(self) -> None:
        conn = await self.client.own_relay()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._delivery_worker)
            nursery.start_soon(self._presence_task)
            await self._push_loop(conn)

    async def _push_loop(self, conn: OwnerConnection) -> None:
        while True:
            try:
                frame = await conn.pushes.receive()
            except trio.EndOfChannel:
                raise RelayError(f"the connection ended: {conn.close_reason}") from None
            if isinstance(frame, frames.Deliver):
                await self.client._retire_expired_invites()
                events = self.client.process_deliveries(frame.messages)
                ids = [d.id for d in frame.messages]
                await conn.request(lambda req, i=ids: frames.Ack(req=req, ids=i))  # type: ignore[misc]
                # Invites whose accepter just switched to its own capability.
                await self.client._retire_expired_invites()
                await self._handle_events(await self._as_json(events))
                self._poke.set()
            elif isinstance(frame, frames.Synced):
                if not self._connected:
                    self._connected = True
                    self.status.connection = "online"
                    if self._dropped:
                        self.view.show("reconnected.")
                    self.view.refresh()
            elif isinstance(frame, frames.Bye | frames.Error):
                raise RelayError(conn.close_reason)

    def _for_this_chat(self, event: dict[str, Any]) -> bool:
        if self.target.kind == "group":
            return bool(event["group"] == self.target.name)
        return bool(event["from"] == self.target.name and event["group"] is None)

    async def _as_json(self, events: list[Event]) -> list[dict[str, Any]]:
        """The API's event objects; attachments of this chat's messages are saved
        first (their path is shown)."""
        from chatcli.api.events import event_json

        out = []
        for event in events:
            if isinstance(event, MessageEvent) and event.attachment is not None and \
                    self._for_this_chat(event.to_json()):
                from chatcli.client.attachments import download_for_event

                event = await download_for_event(self.client, event, None)
            out.append(event_json(event))
        return out

    async def _handle_events(self, events: list[dict[str, Any]]) -> None:
        """Show the API's event objects (docs/api.md "Events") that concern this chat."""
        shown: list[str] = []
        for event in events:
            kind = event["type"]
            if kind == "message":
                if self._for_this_chat(event):
                    self._show_incoming(event)
                    shown.append(event["id"])
                    self.status.typing_until = 0.0
                else:
                    where = f"in {event['group']}" if event["group"] else f"from {event['from']}"
                    see = event["group"] or event["from"]
                    self.view.show(f"(new message {clean(where)}: "
                                   f"`chatcli messages {clean(see)}` shows it)")
            elif kind in ("reaction", "edit", "delete"):
                if self._for_this_chat(event):
                    self.view.show(clean(action_line(event)))
            elif kind == "receipt":
                if event["from"] == self.target.name:
                    self._marks_changed.set()
            elif kind == "typing":
                if event["from"] == self.target.name:
                    self.status.typing_until = (time.monotonic() + self.typing_show_for
                                                if event["active"] else 0.0)
            elif kind in ("notice", "key_change"):
                self.view.show(f"! {clean(event['text'])}")
                if event["contact"] == self.target.name:
                    self._reload_trust()
        self._mark_read(shown)
        self.view.refresh()

    def _reload_trust(self) -> None:
        """The contact's verification state, after a notice about them (a key
        change blocks sending until `chatcli verify --confirm`)."""
        try:
            contact = self.client.get_contact(self.target.name, allow_key_changed=True)
        except ChatcliError:
            return
        self.status.key_changed = bool(contact.key_changed)
        self.status.verified = bool(contact.verified) and not contact.key_changed

    def _show_incoming(self, event: dict[str, Any]) -> None:
        show_incoming(self.view, self.target.name, event)

    def _mark_read(self, ids: list[str]) -> None:
        """The messages were on screen: record it, and queue a read receipt when
        the user's setting allows (``ChatClient.mark_read`` checks it)."""
        if ids and self.target.kind != "group":  # groups have no receipts
            self._local("read", {"contact": self.target.name, "ids": ids})
            self._poke.set()

    # ------------------------------------------------------------ delivery

    async def _delivery_worker(self) -> None:
        """The one task that deposits the outbox: at once when poked, and with
        growing pauses while something is left over."""
        delay = 1.0
        pending = True
        last_error = ""
        self._poke.set()  # (re)connected: send what waited at once
        while True:
            if pending:
                with trio.move_on_after(delay):
                    await self._poke.wait()
            else:
                await self._poke.wait()
            self._poke = trio.Event()
            try:
                async with self._deliver_lock:
                    report = await self.client.deliver_outbox()
            except RelayError as exc:
                if str(exc) != last_error:
                    last_error = str(exc)
                    self.view.show(f"! sending failed, will retry: {exc}")
                pending, delay = True, min(delay * 2, self.retry_max)
                continue
            last_error = ""
            for reason in report.refused.values():
                self.view.show(f"! {reason}.")
            waiting = [i for i, own in self._own.items() if own.state == "pending"]
            for message_id, state in _outgoing_states(self.client, waiting).items():
                if state == "pending":
                    self._own[message_id].announce_sent = True
            self._marks_changed.set()
            if report.pending and (report.unreachable or not report.stored):
                pending, delay = True, min(delay * 2, self.retry_max)
            else:
                pending, delay = bool(report.pending), 1.0

    async def _typing_sender(self) -> None:
        while True:
            await self._typed.wait()
            self._typed = trio.Event()
            now = time.monotonic()
            if not self._connected or now - self._typing_sent_at < self.typing_send_interval:
                continue
            self._typing_sent_at = now
            try:
                self._local("typing", {"to": self.target.name, "active": True, "queue": True})
            except ChatcliError:
                continue
            self._poke.set()

    # ------------------------------------------------------------ marks, presence

    def _update_pending(self) -> None:
        count = pending_count(self._own)
        if count != self.status.pending:
            self.status.pending = count
            self.view.refresh()

    async def _marks_task(self) -> None:
        """Print the new state of the user's messages (coalesced over a moment,
        so a delivery and a read receipt arriving together give one line)."""
        while True:
            await self._marks_changed.wait()
            await trio.sleep(MARK_DEBOUNCE)
            self._marks_changed = trio.Event()
            self._print_marks()

    def _print_marks(self) -> None:
        open_ids = [i for i, own in self._own.items() if own.state not in {"read", "failed"}]
        advance_marks(self.view, self.target.name, self._own,
                      _outgoing_states(self.client, open_ids))
        self._update_pending()

    async def _presence_task(self) -> None:
        if self.target.kind == "group":
            return
        name = self.target.name
        while True:
            info = (await self.client.subscribe_presence([name])).get(name)
            self._set_presence(info)
            try:
                async for event in self.client.presence_updates(name):
                    self.status.online = event.online
                    self.status.last_seen = event.last_seen
                    self.status.presence_known = True
                    if not event.online:
                        self.status.typing_until = 0.0
                    self.view.refresh()
            except RelayError:
                pass
            self.status.presence_known = False
            self.view.refresh()
            await trio.sleep(self.retry_max)

    def _set_presence(self, info: PresenceInfo | None) -> None:
        if info is None:
            self.status.presence_known = False
        else:
            self.status.online = info.online
            self.status.last_seen = info.last_seen
            self.status.presence_known = info.known
        self.view.refresh()



# ------------------------------------------------------------------ the terminal


class _TerminalView:
    """Lines go through prompt_toolkit's ``patch_stdout`` proxy (printed above
    the prompt); ``refresh`` repaints the prompt and its status line."""

    def __init__(self) -> None:
        self.app: Any = None

    def show(self, line: str) -> None:
        print(line, flush=True)

    def refresh(self) -> None:
        if self.app is not None:
            self.app.invalidate()


class ChatFrontEnd(Protocol):
    """What the terminal drives: :class:`ChatSession` (direct mode) or
    :class:`chatcli.client.chat_remote.RemoteChatSession` (through the daemon)."""

    def submit(self, line: str) -> None: ...

    def typed(self) -> None: ...

    def close_input(self) -> None: ...

    def status_line(self) -> str: ...

    async def run(self) -> None: ...


def run_terminal_chat(client: ChatClient, target: ChatTarget, *,
                      history: int = HISTORY_DEFAULT) -> None:
    """Run the chat on this terminal until the user leaves (see the module docstring)."""
    run_on_terminal(lambda view: ChatSession(client, target, view, history=history))


def run_on_terminal(make: Callable[[ChatView], ChatFrontEnd]) -> None:
    """Run the session ``make(view)`` builds on this terminal until the user leaves."""
    asyncio.run(_host(make))


async def _host(make: Callable[[ChatView], ChatFrontEnd]) -> None:
    from prompt_toolkit import PromptSession
    from prompt_toolkit.formatted_text import FormattedText
    from prompt_toolkit.history import InMemoryHistory
    from prompt_toolkit.patch_stdout import patch_stdout
    from prompt_toolkit.styles import Style

    loop = asyncio.get_running_loop()
    done: asyncio.Future[Any] = loop.create_future()
    ready: asyncio.Future[trio.lowlevel.TrioToken] = loop.create_future()

    with patch_stdout(raw=True):
        view = _TerminalView()
        chat = make(view)

        def message() -> FormattedText:
            return FormattedText([("class:status", chat.status_line()), ("", "\n> ")])

        # The status line is the first line of the prompt rather than a bottom
        # toolbar: a toolbar is only drawn once the terminal answered a cursor
        # position request, and the prompt's own lines are drawn everywhere.
        prompt: PromptSession[str] = PromptSession(
            message, history=InMemoryHistory(), erase_when_done=True,
            style=Style.from_dict({"status": "reverse"}),
        )
        view.app = prompt.app

        async def trio_main() -> None:
            ready.set_result(trio.lowlevel.current_trio_token())
            await chat.run()

        def finished(result: Any) -> None:
            if not done.done():
                done.set_result(result)

        trio.lowlevel.start_guest_run(
            trio_main, run_sync_soon_threadsafe=loop.call_soon_threadsafe,
            done_callback=finished, host_uses_signal_set_wakeup_fd=True)

        await asyncio.wait({ready, done}, return_when=asyncio.FIRST_COMPLETED)
        if ready.done():
            token = ready.result()

            def to_trio(func: Any, *args: Any) -> None:
                with contextlib.suppress(trio.RunFinishedError):
                    token.run_sync_soon(func, *args)

            def changed(buffer: Any) -> None:
                text = buffer.text
                if text.strip() and not text.startswith("/"):
                    to_trio(chat.typed)

            prompt.default_buffer.on_text_changed += changed
            try:
                await _prompt_loop(prompt, chat, done, to_trio)
            finally:
                # However the prompt ended, let the Trio side finish (it sends
                # what it can and returns) before the asyncio loop closes.
                to_trio(chat.close_input)
                await done
        result = await done
    result.unwrap()


async def _prompt_loop(prompt: Any, chat: ChatFrontEnd, done: asyncio.Future[Any],
                       to_trio: Any) -> None:
    """Read lines until Ctrl-D / Ctrl-C, or until the Trio side ends (/quit, error)."""
    async def read_line() -> str | None:
        # Ctrl-C and Ctrl-D are caught in here: a KeyboardInterrupt leaving an
        # asyncio task would stop the whole event loop.
        try:
            line: str = await prompt.prompt_async()
        except (EOFError, KeyboardInterrupt):
            return None
        return line

    while not done.done():
        task = asyncio.ensure_future(read_line())
        await asyncio.wait({task, done}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return
        line = task.result()
        if line is None:
            return
        to_trio(chat.submit, line)
