"""Cross-process wake-ups and presence: the :class:`Hub` of a relay.

A relay process keeps its owners' connections and its presence watchers in
memory. When several processes share one PostgreSQL database (one relay
behind one address, see ``docs/operations.md``), each must learn at once
what the others did:

* **Deposits.** :meth:`PostgresStore.insert_messages` sends, inside the
  deposit's transaction, a ``NOTIFY chatcli_mailbox`` naming each mailbox
  and the range of new message ids; PostgreSQL delivers it to every
  listening process when (and only if) the transaction commits. The
  listener hands each mailbox to the router (``wake_from``), whose owner
  connections read the new messages from the store.
* **Presence.** Each process announces, on ``chatcli_presence``, how many
  connections each mailbox has *on it* (a state, not a delta, so a repeated
  announcement is harmless), hide/show changes, revoked capabilities and
  deleted mailboxes. Every process keeps a replica of the others' counts
  (:class:`MeshPresence`), so ``is_online`` and the pushed updates are
  right across processes. A process heartbeats every few seconds; one not
  heard for ``expiry`` seconds (SIGKILLed, cut off) is dropped and its
  mailboxes go offline. A process that starts, or whose listener
  reconnects, asks the others to announce their state again (``s``).

Why LISTEN/NOTIFY rather than another engine: PostgreSQL is already the
shared state of such a relay, so the wake-up needs no further service to run
and secure; a NOTIFY sent in the deposit's transaction is delivered exactly
when the message is visible, never before and never for a rollback; and the
volume (one small notification per mailbox per group commit) is far below
what it carries. Redis pub/sub would add a second thing that can fail, with
no transactional link to the commit.

Payloads name mailbox ids (in hex) and capability hashes, which the relay's
database holds anyway; they are never logged.

:class:`LocalHub` is the single-process version (SQLite): presence in
memory and nothing to listen to.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final, Protocol

import trio

from chatcli.protocol import frames
from chatcli.relay.presence import LocalPresence, Presence, entry_for
from chatcli.relay.store.base import PresenceRecord, Store

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "PRESENCE_CHANNEL",
    "Hub",
    "LocalHub",
    "MeshPresence",
    "PgHub",
    "WakeTarget",
    "make_hub",
]

log = logging.getLogger("chatcli.relay.notify")

PRESENCE_CHANNEL: Final = "chatcli_presence"
_NOTIFY_MAX: Final = 7800
_CAPS_PER_EVENT: Final = 100
_MAX_DELAY: Final = 5.0


class WakeTarget(Protocol):
    """Where wake-ups go (the relay's router)."""

    def wake_from(self, mailbox: bytes, first_id: int | None) -> None:
        """Messages from ``first_id`` on (None: unknown) were stored elsewhere
        for ``mailbox``: its connections read their mailbox again."""

    def mailboxes(self) -> Iterable[bytes]:
        """The mailboxes with an owner connected to this process."""

    def mailbox_deleted(self, mailbox: bytes) -> None:
        """Another process deleted ``mailbox``: close its connections here."""


class Hub(abc.ABC):
    """Wake-ups and presence across the processes of one relay."""

    presence: Presence

    @abc.abstractmethod
    async def run(self, target: WakeTarget, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled, handing other processes' deposits to ``target``."""

    @property
    def connected(self) -> bool:
        """True while wake-ups from other processes arrive."""
        return True


class LocalHub(Hub):
    """One process alone: presence in memory, nothing to listen to."""

    def __init__(self) -> None:
        self.presence = LocalPresence()

    async def run(self, target: WakeTarget, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()


def make_hub(store: Store) -> Hub:
    """The hub for a store: PostgreSQL listens, anything else is one process."""
    from chatcli.relay.store.postgres import PostgresStore

    if isinstance(store, PostgresStore):
        return PgHub(store.url, store.origin)
    return LocalHub()


# ------------------------------------------------------------------ presence


def _flag(value: str) -> bool:
    if value not in ("0", "1"):
        raise ValueError("bad flag")
    return value == "1"


def _ms(value: str) -> int | None:
    return None if value == "-" else int(value)


class MeshPresence(LocalPresence):
    """Presence over several processes: local connections and watchers as
    :class:`LocalPresence`, plus a replica of the other processes' counts fed
    by :meth:`on_event`. Every local change is announced with ``publish``."""

    def __init__(self, publish: Callable[[str], None]) -> None:
        super().__init__()
        self._publish = publish
        self._remote: dict[str, dict[bytes, int]] = {}
        self._remote_total: dict[bytes, int] = {}
        self._remote_hidden: dict[bytes, bool] = {}
        self._heard: dict[str, float] = {}

    # ------------------------------------------------------------ queries

    def is_online(self, mailbox: bytes) -> bool:
        return mailbox in self._online or self._remote_total.get(mailbox, 0) > 0

    def _hidden_now(self, mailbox: bytes) -> bool:
        if mailbox in self._hidden:
            return self._hidden[mailbox]
        return self._remote_hidden.get(mailbox, False)

    def counts(self) -> tuple[int, int]:
        online = set(self._online) | set(self._remote_total)
        return len(online), self._subscriptions

    def processes(self) -> list[str]:
        """The other processes heard from (their origins)."""
        return sorted(self._heard)

    # ------------------------------------------------------------ local changes

    def _announce(self, mailbox: bytes, count: int, hidden: bool, last_seen: int | None) -> None:
        self._publish(f"o,{mailbox.hex()},{count},{int(hidden)},"
                      f"{'-' if last_seen is None else last_seen}")

    def connected(self, mailbox: bytes, hidden: bool) -> None:
        before = self.is_online(mailbox)
        count = self._online.get(mailbox, 0) + 1
        self._online[mailbox] = count
        self._hidden[mailbox] = hidden
        self._announce(mailbox, count, hidden, None)
        if not before and not hidden:
            self._tell(mailbox, frames.PresenceEntry(mailbox=mailbox, online=True,
                                                     last_seen=None))

    def disconnected(self, mailbox: bytes, now: int) -> bool:
        count = self._online.get(mailbox, 0)
        if count <= 1:
            self._online.pop(mailbox, None)
            hidden = self._hidden.pop(mailbox, False)
            self._announce(mailbox, 0, hidden, now)
            if not hidden and not self.is_online(mailbox):
                self._tell(mailbox, frames.PresenceEntry(mailbox=mailbox, online=False,
                                                         last_seen=now))
            return True
        self._online[mailbox] = count - 1
        self._announce(mailbox, count - 1, self._hidden.get(mailbox, False), None)
        return False

    def set_hidden(self, mailbox: bytes, hidden: bool, last_seen: int | None) -> None:
        if mailbox in self._online:
            self._hidden[mailbox] = hidden
        if mailbox in self._remote_hidden:
            self._remote_hidden[mailbox] = hidden
        self._publish(f"h,{mailbox.hex()},{int(hidden)},"
                      f"{'-' if last_seen is None else last_seen}")
        self._tell(mailbox, entry_for(mailbox, valid=True, online=self.is_online(mailbox),
                                      record=PresenceRecord(hidden, last_seen)))

    def revoke(self, mailbox: bytes, cap_hashes: set[bytes]) -> None:
        super().revoke(mailbox, cap_hashes)
        caps = sorted(cap_hashes)
        for i in range(0, len(caps), _CAPS_PER_EVENT):
            part = caps[i:i + _CAPS_PER_EVENT]
            self._publish(",".join(["r", mailbox.hex(), *(c.hex() for c in part)]))

    def forget(self, mailbox: bytes) -> None:
        super().forget(mailbox)
        self._publish(f"f,{mailbox.hex()}")

    def announce_all(self) -> None:
        """Announce every local mailbox (answer to a sync request)."""
        for mailbox, count in list(self._online.items()):
            self._announce(mailbox, count, self._hidden.get(mailbox, False), None)

    # ------------------------------------------------------------ remote changes

    def _set_remote(self, origin: str, mailbox: bytes, count: int, hidden: bool,
                    last_seen: int | None) -> None:
        before = self.is_online(mailbox)
        counts = self._remote.setdefault(origin, {})
        old = counts.pop(mailbox, 0)
        if count > 0:
            counts[mailbox] = count
        total = self._remote_total.get(mailbox, 0) - old + max(count, 0)
        if total > 0:
            self._remote_total[mailbox] = total
            self._remote_hidden[mailbox] = hidden
        else:
            self._remote_total.pop(mailbox, None)
            self._remote_hidden.pop(mailbox, None)
        after = self.is_online(mailbox)
        if before != after and not hidden and not self._hidden.get(mailbox, False):
            self._tell(mailbox, frames.PresenceEntry(
                mailbox=mailbox, online=after, last_seen=None if after else last_seen))

    def on_event(self, origin: str, event: str, now: float) -> None:
        """Apply one event announced by another process."""
        self._heard[origin] = now
        fields = event.split(",")
        kind = fields[0]
        if kind == "b":
            return
        if kind == "s":
            self.announce_all()
            return
        if kind == "x":
            self.drop_origin(origin, int(now * 1000))
            return
        mailbox = bytes.fromhex(fields[1])
        if len(mailbox) != 16:
            raise ValueError("bad mailbox id")
        if kind == "o":
            self._set_remote(origin, mailbox, int(fields[2]), _flag(fields[3]), _ms(fields[4]))
        elif kind == "h":
            hidden = _flag(fields[2])
            if mailbox in self._online:
                self._hidden[mailbox] = hidden
            if mailbox in self._remote_hidden:
                self._remote_hidden[mailbox] = hidden
            self._tell(mailbox, entry_for(mailbox, valid=True, online=self.is_online(mailbox),
                                          record=PresenceRecord(hidden, _ms(fields[3]))))
        elif kind == "r":
            LocalPresence.revoke(self, mailbox, {bytes.fromhex(c) for c in fields[2:]})
        elif kind == "f":
            LocalPresence.forget(self, mailbox)
        else:
            raise ValueError("unknown presence event")

    def drop_origin(self, origin: str, last_seen: int) -> None:
        """Another process is gone: its mailboxes go offline (unless elsewhere)."""
        self._heard.pop(origin, None)
        for mailbox in list(self._remote.get(origin, {})):
            self._set_remote(origin, mailbox, 0, self._remote_hidden.get(mailbox, False),
                             last_seen)
        self._remote.pop(origin, None)

    def expire(self, now: float, expiry: float) -> list[str]:
        """Drop the processes not heard from for ``expiry`` seconds."""
        gone = [origin for origin, heard in self._heard.items() if now - heard > expiry]
        for origin in gone:
            self.drop_origin(origin, int(self._heard.get(origin, now) * 1000))
        return gone

    def reset_remote(self) -> None:
        """Forget the replica without telling anyone (it is rebuilt by a sync)."""
        self._remote.clear()
        self._remote_total.clear()
        self._remote_hidden.clear()
        self._heard.clear()


# ------------------------------------------------------------------ PostgreSQL


def pack_events(origin: str, events: list[str]) -> list[str]:
    """``origin|event;event...`` payloads under PostgreSQL's NOTIFY limit."""
    payloads: list[str] = []
    current: list[str] = []
    size = len(origin) + 1
    for event in events:
        if current and size + len(event) + 1 > _NOTIFY_MAX:
            payloads.append(origin + "|" + ";".join(current))
            current, size = [], len(origin) + 1
        current.append(event)
        size += len(event) + 1
    if current:
        payloads.append(origin + "|" + ";".join(current))
    return payloads


class ListenerLost(Exception):
    """The listening connection stopped working."""


class PgHub(Hub):
    """Wake-ups and presence through PostgreSQL LISTEN/NOTIFY (see the module
    docstring). Uses two connections besides the store's: one listening,
    read without threads (``trio.lowlevel.wait_readable`` on its socket), and
    one sending presence announcements. Both reconnect by themselves."""

    def __init__(self, url: str, origin: str, *, heartbeat: float = 2.0,
                 expiry: float = 10.0, clock: Callable[[], float] = time.time) -> None:
        from chatcli.relay.store.postgres import MAILBOX_CHANNEL

        self.url = url
        self.origin = origin
        self.heartbeat = heartbeat
        self.expiry = expiry
        self.clock = clock
        self.mailbox_channel = MAILBOX_CHANNEL
        self._send, self._recv = trio.open_memory_channel[str](math.inf)
        self.presence: MeshPresence = MeshPresence(self._publish)
        self._listening = False
        self._own_beat = clock()
        self.wakeups = 0        # remote deposit notifications handled
        self.reconnects = 0     # listener reconnections

    @property
    def connected(self) -> bool:
        return self._listening

    def _publish(self, event: str) -> None:
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            self._send.send_nowait(event)

    async def run(self, target: WakeTarget, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._sender)
                nursery.start_soon(self._heartbeats)
                await nursery.start(self._listener, target)
                task_status.started()
        finally:
            # Tell the others at once that our mailboxes are gone (bounded by
            # the connect timeout when PostgreSQL is unreachable).
            with trio.CancelScope(shield=True), contextlib.suppress(Exception):
                await trio.to_thread.run_sync(self._notify_once,
                                              pack_events(self.origin, ["x"]))

    # ------------------------------------------------------------ connections

    def _connect(self, listen: bool) -> psycopg.Connection[Any]:
        import psycopg

        conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
        try:
            if listen:
                conn.execute(f"LISTEN {self.mailbox_channel}")
                conn.execute(f"LISTEN {PRESENCE_CHANNEL}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _notify(self, conn: psycopg.Connection[Any], payloads: list[str]) -> None:
        conn.execute("SELECT pg_notify(%s, p) FROM unnest(%s::text[]) AS p",
                     (PRESENCE_CHANNEL, payloads))

    def _notify_once(self, payloads: list[str]) -> None:
        conn = self._connect(False)
        try:
            self._notify(conn, payloads)
        finally:
            conn.close()

    # ------------------------------------------------------------ sending

    async def _sender(self) -> None:
        import psycopg

        conn: psycopg.Connection[Any] | None = None
        delay = 0.1
        try:
            async for first in self._recv:
                events = [first]
                while True:
                    try:
                        events.append(self._recv.receive_nowait())
                    except trio.WouldBlock:
                        break
                payloads = pack_events(self.origin, events)
                while True:
                    try:
                        if conn is None or conn.closed:
                            conn = await trio.to_thread.run_sync(self._connect, False)
                        await trio.to_thread.run_sync(self._notify, conn, payloads)
                        delay = 0.1
                        break
                    except (psycopg.Error, OSError) as exc:
                        log.warning("presence announcement failed; retrying",
                                    extra={"fields": {"error": type(exc).__name__}})
                        if conn is not None:
                            with contextlib.suppress(Exception):
                                conn.close()
                        conn = None
                        await trio.sleep(delay)
                        delay = min(delay * 2, _MAX_DELAY)
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()

    async def _heartbeats(self) -> None:
        while True:
            self._publish("b")
            gone = self.presence.expire(self.clock(), self.expiry)
            if gone:
                log.warning("relay processes stopped heartbeating; their mailboxes are "
                            "offline now", extra={"fields": {"processes": len(gone)}})
            await trio.sleep(self.heartbeat)

    # ------------------------------------------------------------ listening

    async def _listener(self, target: WakeTarget, *,
                        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        import psycopg

        started = False
        delay = 0.1
        while True:
            conn: psycopg.Connection[Any] | None = None
            try:
                conn = await trio.to_thread.run_sync(self._connect, True)
                delay = 0.1
                self._listening = True
                self._own_beat = self.clock()
                # We may have missed events: rebuild the replica, re-read mailboxes.
                self.presence.reset_remote()
                self._publish("s")
                self.presence.announce_all()
                for mailbox in list(target.mailboxes()):
                    target.wake_from(mailbox, None)
                if not started:
                    started = True
                    task_status.started()
                await self._pump(conn, target)
            except (psycopg.Error, OSError, ListenerLost) as exc:
                log.warning("lost the PostgreSQL listener; reconnecting",
                            extra={"fields": {"error": type(exc).__name__}})
            finally:
                self._listening = False
                if conn is not None:
                    with contextlib.suppress(Exception):
                        trio.lowlevel.notify_closing(conn.fileno())
                    with contextlib.suppress(Exception):
                        conn.close()
            if not started:
                # PostgreSQL is down at start: the relay runs and keeps trying.
                started = True
                task_status.started()
            self.reconnects += 1
            await trio.sleep(delay)
            delay = min(delay * 2, _MAX_DELAY)

    async def _pump(self, conn: psycopg.Connection[Any], target: WakeTarget) -> None:
        import psycopg
        from psycopg.pq import ConnStatus

        pgconn = conn.pgconn
        fd = conn.fileno()
        while True:
            with trio.move_on_after(self.heartbeat) as scope:
                await trio.lowlevel.wait_readable(fd)
            if scope.cancelled_caught:
                if self.clock() - self._own_beat > 3 * self.heartbeat + 1:
                    raise ListenerLost("our own heartbeats stopped arriving")
                continue
            pgconn.consume_input()
            if pgconn.status != ConnStatus.OK:
                raise ListenerLost("connection closed")
            while (note := pgconn.notifies()) is not None:
                try:
                    self._on_notify(note.relname.decode(), note.extra.decode(), target)
                except (ValueError, UnicodeDecodeError, IndexError):
                    log.warning("ignored a malformed notification")
            # EOF shows up as readable with nothing to consume: check the socket.
            if pgconn.status != ConnStatus.OK:
                raise psycopg.OperationalError("connection closed")

    def _on_notify(self, channel: str, payload: str, target: WakeTarget) -> None:
        from chatcli.relay.store.postgres import decode_wakeups

        if channel == self.mailbox_channel:
            origin, ranges = decode_wakeups(payload)
            if origin == self.origin:
                return
            for mailbox, (first, _last) in ranges.items():
                self.wakeups += 1
                target.wake_from(mailbox, first)
        elif channel == PRESENCE_CHANNEL:
            origin, _, events = payload.partition("|")
            now = self.clock()
            if origin == self.origin:
                self._own_beat = now
                return
            for event in events.split(";"):
                self.presence.on_event(origin, event, now)
                if event.startswith("f,"):
                    target.mailbox_deleted(bytes.fromhex(event[2:]))
