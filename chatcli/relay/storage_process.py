"""The storage process: the relay's database work in a child process.

peewee and the database drivers are synchronous, so the relay runs every
database call away from its event loop. In a worker thread
(:class:`~chatcli.relay.storage.StorageWorker`) that call still needs
Python's global interpreter lock for everything but SQLite's own C code, and
the event loop and the storage thread took turns holding it: under load the
relay process never used more than one core. Here the calls run in a child
process with an interpreter of its own, so the event loop and the database
each get a core.

The contract is the thread worker's: ``await worker.run(fn, *args)`` runs
``fn(*args)`` and returns its result, one call at a time, in order; a
cancelled caller still waits for the call to finish. ``fn`` must be a method
of one of the storage objects named at construction (the store, the mailbox
rules, the blob rules): the child holds its own copies of them, built from
the same :class:`~chatcli.relay.config.RelayConfig`, and the call travels as
(object name, method name, arguments), pickled over a private socket pair.
Pickle is safe here: both ends are this program, and the socket is never
reachable by anyone else.

The child ignores SIGINT and SIGTERM (a terminal's Ctrl-C and systemd's stop
signal reach the whole process group): it finishes the call it is running
and exits when the relay closes the socket, so a graceful shutdown commits
everything first. If the relay dies, even by SIGKILL, the socket closes too
and the child exits after its current transaction.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import logging
import pickle
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Callable
from typing import Any, Final, Generic, TypeVar

import trio

from chatcli.errors import StorageError
from chatcli.relay.config import RelayConfig
from chatcli.relay.errors import Refused
from chatcli.relay.storage import log_database_error

__all__ = ["PendingCall", "StorageProcess", "child_main"]

T = TypeVar("T")
log = logging.getLogger("chatcli.relay.storage")

_HEADER: Final = struct.Struct("!I")
_MAX_MESSAGE: Final = 1 << 31          # a header beyond this is a broken stream
_START_TIMEOUT: Final = 60.0
_STOP_TIMEOUT: Final = 30.0
_BUFFER: Final = 4 * 1024 * 1024       # socket buffers: one group commit in few syscalls
_INIT: Final = "__init__"

# Reply kinds.
_OK: Final = 0
_REFUSED: Final = 1        # (code, message): a Refused
_STORAGE: Final = 2        # (message,): a StorageError raised by the store itself
_DATABASE: Final = 3       # (type name, detail): a driver error, as in StorageWorker
_FAILED: Final = 4         # (type name, message): anything else, a bug


class StorageProcess:
    """Runs storage calls in a child process (see the module docstring).

    ``targets`` names the parent's storage objects (whose methods callers
    pass to :meth:`run`); the child builds its own from ``config``.
    ``origin`` is the PostgreSQL store's wake-up origin, which must be the
    parent's so that its hub recognises its own notifications.
    """

    def __init__(self, config: RelayConfig, targets: dict[str, object],
                 origin: str | None = None) -> None:
        self.config = config
        self._names = {id(obj): name for name, obj in targets.items()}
        self._origin = origin
        self._send_lock = trio.Lock()
        self._waiting: collections.deque[PendingCall[Any]] = collections.deque()
        self._drained: trio.Event | None = None
        self._stream: trio.SocketStream | None = None
        self._process: trio.Process | None = None
        self._buffer = bytearray()
        self._broken: str | None = None
        self.failures = 0

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def start(self) -> None:
        """Start the child and wait until it has built its storage objects."""
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        for sock in (parent_sock, child_sock):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _BUFFER)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _BUFFER)
        try:
            self._process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "chatcli.relay.storage_process", str(child_sock.fileno())],
                pass_fds=(child_sock.fileno(),), stdin=subprocess.DEVNULL)
        except OSError as exc:
            parent_sock.close()
            raise StorageError(f"Cannot start the relay's storage process: {exc}.") from None
        finally:
            child_sock.close()
        self._stream = trio.SocketStream(trio.socket.from_stdlib_socket(parent_sock))
        settings = json.dumps(dataclasses.asdict(self.config))
        with trio.move_on_after(_START_TIMEOUT) as scope:
            await (await self._send(_INIT, "", (settings, self._origin))).result()
        if scope.cancelled_caught:
            await self.aclose()
            raise StorageError("The relay's storage process did not start in time.")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in the child; see the module docstring."""
        with trio.CancelScope(shield=True):
            pending: PendingCall[T] = await self.send(fn, *args)
            result = await pending.result()
        return result

    async def send(self, fn: Callable[..., T], *args: Any) -> PendingCall[T]:
        """Send the call ``fn(*args)`` now, behind the calls sent before it;
        its result is read with ``await pending.result()``, which must be
        awaited. The group committer sends its next commit while the child
        still works on the previous one, so the child never waits for the
        event loop between commits."""
        owner = getattr(fn, "__self__", None)
        name = self._names.get(id(owner))
        if name is None:
            raise TypeError(f"{fn!r} is not a method of a storage object")
        return await self._send(name, fn.__name__, args)

    async def _send(self, target: str, method: str, args: tuple[Any, ...]) -> PendingCall[Any]:
        if self._broken is not None or self._stream is None:
            raise StorageError(self._broken or "The relay's storage is not started.")
        data = pickle.dumps((target, method, args), protocol=pickle.HIGHEST_PROTOCOL)
        pending: PendingCall[Any] = PendingCall(self, f"{target}.{method}")
        # Shielded: a call sent in part would corrupt the stream.
        with trio.CancelScope(shield=True):
            async with self._send_lock:
                try:
                    await self._stream.send_all(_HEADER.pack(len(data)) + data)
                except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    raise self._lost(exc) from None
                self._waiting.append(pending)
                if len(self._waiting) == 1:
                    pending.turn.set()
        return pending

    def _lost(self, exc: BaseException) -> StorageError:
        if self._broken is None:
            self._broken = "The relay's storage process stopped; try again later."
            log.error("storage process lost", extra={"fields": {"error": type(exc).__name__}})
        return StorageError(self._broken)

    async def _answer(self, pending: PendingCall[Any]) -> Any:
        """Read ``pending``'s answer, in its turn (answers come in call order)."""
        with trio.CancelScope(shield=True):
            await pending.turn.wait()
            try:
                raw = await self._receive()
            except (OSError, EOFError, trio.BrokenResourceError,
                    trio.ClosedResourceError) as exc:
                raise self._lost(exc) from None
            finally:
                self._waiting.popleft()
                if self._waiting:
                    self._waiting[0].turn.set()
                elif self._drained is not None:
                    self._drained.set()
        reply = pickle.loads(raw)  # noqa: S301 - from our own child
        kind = reply[0]
        if kind == _OK:
            return reply[1]
        if kind == _REFUSED:
            raise Refused(reply[1], reply[2])
        if kind == _STORAGE:
            raise StorageError(reply[1])
        self.failures += 1
        if kind == _DATABASE:
            log_database_error(reply[1], reply[2])
            raise StorageError("The relay's storage is unavailable; try again later.")
        raise RuntimeError(f"storage call {pending.name} failed: {reply[1]}: {reply[2]}")

    async def _receive(self) -> bytes:
        assert self._stream is not None
        buffer = self._buffer
        while True:
            if len(buffer) >= _HEADER.size:
                (length,) = _HEADER.unpack_from(buffer)
                end = _HEADER.size + length
                if len(buffer) >= end:
                    message = bytes(buffer[_HEADER.size:end])
                    del buffer[:end]
                    return message
            chunk = await self._stream.receive_some(_BUFFER)
            if not chunk:
                raise EOFError("storage process closed the socket")
            buffer += chunk

    async def aclose(self) -> None:
        """Close the socket (the child finishes its call and exits) and wait for it."""
        if self._stream is not None:
            if self._waiting:   # answers still to be read: let them be
                self._drained = trio.Event()
                with trio.CancelScope(shield=True), trio.move_on_after(_STOP_TIMEOUT):
                    await self._drained.wait()
            await self._stream.aclose()
        self._broken = self._broken or "The relay's storage is closed."
        process = self._process
        if process is None:
            return
        with trio.CancelScope(shield=True):
            with trio.move_on_after(_STOP_TIMEOUT):
                await process.wait()
            if process.returncode is None:   # pragma: no cover - a wedged database call
                log.error("storage process did not stop; killing it")
                process.kill()
                await process.wait()

    async def wait_exit(self) -> int:
        """Wait until the child exits; its exit status."""
        assert self._process is not None
        return await self._process.wait()


class PendingCall(Generic[T]):
    """A call sent to the storage process; :meth:`result` reads its answer."""

    __slots__ = ("_process", "name", "turn")

    def __init__(self, process: StorageProcess, name: str) -> None:
        self._process = process
        self.name = name
        self.turn = trio.Event()   # set when this call's answer is next on the socket

    async def result(self) -> T:
        value: T = await self._process._answer(self)
        return value


# ------------------------------------------------------------------ child


def _build_targets(config: RelayConfig, origin: str | None) -> dict[str, object]:
    from chatcli.relay.blobs import Blobs
    from chatcli.relay.budget import StorageBudget
    from chatcli.relay.mailbox import Mailboxes, Quota
    from chatcli.relay.store import make_store

    store = make_store(config.db)
    if origin is not None and hasattr(store, "origin"):
        store.origin = origin
    budget = StorageBudget(store, config.storage_budget)
    return {
        "store": store,
        "mailboxes": Mailboxes(store, quota=Quota(config.mailbox_max_messages,
                                                  config.mailbox_max_bytes),
                               retention_ms=int(config.retention * 1000),
                               invite_only=config.invite_only, budget=budget,
                               capability_rate=config.capability_rate,
                               capability_burst=config.capability_burst),
        "blobs": Blobs(store, max_blob_size=config.max_blob_size,
                       owner_quota=config.blob_quota,
                       max_ttl_ms=int(config.max_blob_ttl * 1000), budget=budget),
    }


def _read_exact(sock: socket.socket, count: int) -> bytes | None:
    parts = []
    while count:
        chunk = sock.recv(min(count, _BUFFER))
        if not chunk:
            return None
        parts.append(chunk)
        count -= len(chunk)
    return b"".join(parts)


def _answer(targets: dict[str, object], target: str, method: str,
            args: tuple[Any, ...]) -> tuple[Any, ...]:
    import sqlite3

    import peewee

    try:
        return (_OK, getattr(targets[target], method)(*args))
    except Refused as exc:
        return (_REFUSED, exc.code, str(exc))
    except StorageError as exc:
        return (_STORAGE, str(exc))
    except (peewee.PeeweeException, sqlite3.Error) as exc:
        return (_DATABASE, type(exc).__name__, str(exc)[:200])
    except Exception as exc:
        return (_FAILED, type(exc).__name__, str(exc)[:200])


def child_main(fd: int) -> int:
    """The child: answer calls until the relay closes the socket."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sock = socket.socket(fileno=fd)
    targets: dict[str, object] = {}
    while True:
        header = _read_exact(sock, _HEADER.size)
        if header is None:
            break
        (length,) = _HEADER.unpack(header)
        if length >= _MAX_MESSAGE:
            return 2
        data = _read_exact(sock, length)
        if data is None:
            break
        target, method, args = pickle.loads(data)  # noqa: S301 - from our own parent
        if target == _INIT:
            settings, origin = args
            try:
                config = RelayConfig(**json.loads(settings))
                # Anything the store logs goes to the relay's stderr, as the
                # relay's own lines (text or JSON).
                from chatcli.relay.logging import setup_logging

                setup_logging(json_lines=config.log_json, level=config.log_level)
                targets = _build_targets(config, origin)
                reply: tuple[Any, ...] = (_OK, None)
            except StorageError as exc:
                reply = (_STORAGE, str(exc))
            except Exception as exc:
                reply = (_FAILED, type(exc).__name__, str(exc)[:200])
        else:
            reply = _answer(targets, target, method, args)
        try:
            out = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:   # pragma: no cover - an unpicklable result is a bug
            out = pickle.dumps((_FAILED, type(exc).__name__, str(exc)[:200]))
        try:
            sock.sendall(_HEADER.pack(len(out)) + out)
        except OSError:
            break
    store = targets.get("store")
    close = getattr(store, "close", None)
    if close is not None:
        # Exiting anyway; a failed close leaves the database consistent.
        with contextlib.suppress(Exception):
            close()
    return 0


if __name__ == "__main__":
    sys.exit(child_main(int(sys.argv[1])))
