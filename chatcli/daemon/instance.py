"""One daemon per CHATCLI_HOME: an flock-ed lock file, and stale socket cleanup."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from chatcli.errors import ChatcliError, UsageError

LOCK_NAME = "daemon.lock"
SOCKET_NAME = "daemon.sock"
BEARER_FILE = "daemon.token"


class DaemonRunningError(ChatcliError):
    """Another daemon already owns this home."""


class InstanceLock:
    """Held for the daemon's whole life; the kernel releases it when the process dies.

    Because the lock dies with its holder (even on SIGKILL), a socket file
    (or WebSocket token file) found while we hold the lock is stale and is
    removed.
    """

    def __init__(self, home: Path) -> None:
        self.path = home / LOCK_NAME
        self.socket_path = home / SOCKET_NAME
        self.token_path = home / BEARER_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise DaemonRunningError(
                f"A chatcli daemon already runs for this home (pid {holder});"
                " stop it with `chatcli daemon stop`."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._fd = fd
        self.socket_path.unlink(missing_ok=True)
        self.token_path.unlink(missing_ok=True)

    def release(self) -> None:
        if self._fd is not None:
            self.socket_path.unlink(missing_ok=True)
            self.token_path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None


def daemon_pid(home: Path) -> int | None:
    """The pid of the daemon that holds ``home``'s lock, or None when none runs.

    Standard library only and no side effect: the CLI asks this on its
    start-up path."""
    try:
        fd = os.open(home / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 32).decode("ascii", "replace").strip()
            return int(text) if text.isdigit() else 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def refuse_while_running(home_root: Path, what: str) -> None:
    """A direct-only command (one that replaces keys or the account) stops here
    when a daemon owns the home."""
    pid = daemon_pid(home_root)
    if pid is not None:
        raise UsageError(f"A chatcli daemon (pid {pid}) runs for this identity; stop it "
                         f"with `chatcli daemon stop` before {what}.")

