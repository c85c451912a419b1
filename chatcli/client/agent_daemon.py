"""The ``chatcli agent`` process: holds one 32-byte key and hands it to
processes of the same uid on a Unix socket.

Started by :func:`chatcli.client.agent.start` as
``python -m chatcli.client.agent_daemon --socket PATH --keystore PATH
--timeout S --max-lifetime S`` with the key on stdin (never in argv or the
environment). It prints ``ready PID`` (or ``busy`` / ``error: ...``) on
stdout once, then talks only on its socket.

What it does to keep the key to itself:

- the socket is created under a umask of 0o177 and chmod-ed to 0600; each
  peer's uid is read with SO_PEERCRED and any other uid gets nothing;
- ``prctl(PR_SET_DUMPABLE, 0)`` (as ssh-agent does): other processes of the
  same uid cannot ptrace it or read its memory through /proc, and it leaves
  no core dump;
- the key lives in one bytearray, overwritten before the process exits.

It exits, removing its socket, after ``--timeout`` seconds without a key
request, after ``--max-lifetime`` seconds in any case, on a stop request, on
SIGTERM, when the keystore file disappears or is replaced (a new passphrase,
a new identity), or when its socket is removed. SIGINT and SIGHUP are
ignored: it runs detached in its own session.

Imports only the standard library (no trio, peewee, nacl), so that it starts
in a few tens of milliseconds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import stat
import sys
import time
from pathlib import Path
from types import FrameType

from chatcli.client.agent import (
    KEY_SIZE,
    REPLY_HEADER,
    REQ_KEY,
    REQ_STATUS,
    REQ_STOP,
    STATUS_OK,
    STATUS_REFUSED,
    peer_uid,
    socket_address,
)

#: Seconds between checks of the timers, the keystore and the socket.
POLL_S = 0.25
#: Seconds a connected client has to send its request and take the reply.
CONNECTION_TIMEOUT_S = 1.0
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4


class Terminated(BaseException):
    """SIGTERM arrived."""


class Busy(Exception):
    """Another agent answers on the socket."""


def _prctl(option: int, arg: int = 0) -> int:
    """prctl(2) through ctypes; -1 where it is not available."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(option, arg, 0, 0, 0))
    except (OSError, AttributeError):
        return -1


def _read_key() -> bytearray:
    """Exactly KEY_SIZE bytes from stdin, then stdin is closed."""
    key = bytearray(KEY_SIZE)
    view = memoryview(key)
    got = 0
    while got < KEY_SIZE:
        n = os.readv(0, [view[got:]])
        if n == 0:
            break
        got += n
    view.release()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    if got != KEY_SIZE:
        raise ValueError("no key on stdin")
    return key


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _listen(path: Path) -> socket.socket:
    """Bind ``path`` (mode 0600); a stale socket is removed only when nobody
    answers on it. Raises :class:`Busy` if another agent does."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(mode):
            raise OSError(f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(CONNECTION_TIMEOUT_S)
        try:
            with socket_address(path) as address:
                probe.connect(address)
        except ConnectionRefusedError:
            path.unlink(missing_ok=True)
        except OSError:
            raise Busy() from None  # it exists and may be alive: leave it alone
        else:
            raise Busy()
        finally:
            probe.close()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old = os.umask(0o177)
        try:
            with socket_address(path) as address:
                server.bind(address)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        server.listen(16)
    except BaseException:
        server.close()
        raise
    return server


class Agent:
    def __init__(self, key: bytearray, socket_path: Path, keystore: Path, timeout_s: int,
                 max_lifetime_s: int) -> None:
        self.key = key
        self.socket_path = socket_path
        self.keystore = keystore
        self.timeout_s = timeout_s
        self.max_lifetime_s = max_lifetime_s
        self.started = time.monotonic()
        self.last_used = self.started
        self.keystore_id = _file_id(keystore)
        self.socket_id: tuple[int, int] | None = None

    def deadline(self) -> float:
        return min(self.last_used + self.timeout_s, self.started + self.max_lifetime_s)

    def info(self) -> dict[str, object]:
        now = time.monotonic()
        return {"pid": os.getpid(), "timeout_s": self.timeout_s,
                "max_lifetime_s": self.max_lifetime_s,
                "forgets_in_s": round(max(0.0, self.deadline() - now), 3),
                "lifetime_left_s": round(max(0.0, self.started + self.max_lifetime_s - now), 3),
                "dumpable": _prctl(PR_GET_DUMPABLE) != 0}

    def should_exit(self) -> bool:
        if time.monotonic() >= self.deadline():
            return True
        if self.keystore_id is None or _file_id(self.keystore) != self.keystore_id:
            return True  # the keystore is gone, or was replaced by another file
        return _file_id(self.socket_path) != self.socket_id  # our socket was removed

    def serve(self, server: socket.socket) -> None:
        self.socket_id = _file_id(self.socket_path)
        while not self.should_exit():
            server.settimeout(max(0.01, min(POLL_S, self.deadline() - time.monotonic())))
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                if self.handle(conn):
                    return

    def handle(self, conn: socket.socket) -> bool:
        """Answer one connection; True when asked to stop."""
        try:
            conn.settimeout(CONNECTION_TIMEOUT_S)
            if peer_uid(conn) != os.getuid():
                return False  # another user: close without a word
            request = conn.recv(1)
            if request == REQ_KEY:
                reply = bytearray(REPLY_HEADER.size + KEY_SIZE)
                REPLY_HEADER.pack_into(reply, 0, STATUS_OK, KEY_SIZE)
                reply[REPLY_HEADER.size:] = self.key
                try:
                    conn.sendall(reply)
                finally:
                    reply[:] = bytes(len(reply))
                self.last_used = time.monotonic()
            elif request == REQ_STATUS:
                self._send(conn, STATUS_OK, json.dumps(self.info()).encode())
            elif request == REQ_STOP:
                self._send(conn, STATUS_OK, json.dumps({"pid": os.getpid()}).encode())
                return True
            elif request:
                self._send(conn, STATUS_REFUSED, b"")
        except OSError:
            pass
        return False

    @staticmethod
    def _send(conn: socket.socket, status: int, body: bytes) -> None:
        conn.sendall(REPLY_HEADER.pack(status, len(body)) + body)

    def wipe(self) -> None:
        self.key[:] = bytes(len(self.key))

    def remove_socket(self) -> None:
        if self.socket_id is not None and _file_id(self.socket_path) == self.socket_id:
            with contextlib.suppress(OSError):
                self.socket_path.unlink()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chatcli.client.agent_daemon")
    parser.add_argument("--socket", type=Path, required=True)
    parser.add_argument("--keystore", type=Path, required=True)
    parser.add_argument("--timeout", type=int, required=True)
    parser.add_argument("--max-lifetime", type=int, required=True)
    args = parser.parse_args(argv)
    _prctl(PR_SET_DUMPABLE, 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    out = sys.stdout
    try:
        key = _read_key()
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=out, flush=True)
        return 2
    agent = Agent(key, args.socket, args.keystore, max(1, args.timeout),
                  max(1, args.max_lifetime))
    try:
        try:
            server = _listen(args.socket)
        except Busy:
            print("busy", file=out, flush=True)
            return 1
        except OSError as exc:
            print(f"error: {exc.strerror or exc}", file=out, flush=True)
            return 1
        try:
            agent.socket_id = _file_id(args.socket)
            print(f"ready {os.getpid()}", file=out, flush=True)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.close(devnull)
            agent.serve(server)
        except Terminated:
            pass
        finally:
            server.close()
            agent.remove_socket()
    finally:
        agent.wipe()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
