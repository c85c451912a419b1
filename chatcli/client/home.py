"""Where an identity lives on disk: ``CHATCLI_HOME`` and the files inside it.

``CHATCLI_HOME`` (default: the platform's user data directory for "chatcli")
holds the keystore, the local database ``chatcli.db``, ``downloads/`` and,
while ``chatcli agent`` runs, its socket ``agent.sock``.
Several identities live on one machine by pointing ``CHATCLI_HOME`` at
different directories. This module imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from chatcli.errors import ChatcliError, UsageError

KEYSTORE_NAME = "identity.keystore"
DATABASE_NAME = "chatcli.db"
DOWNLOADS_NAME = "downloads"
LOCK_NAME = ".lock"
AGENT_SOCKET_NAME = "agent.sock"


def default_home() -> Path:
    """The directory of the identity: ``$CHATCLI_HOME`` or the platform default."""
    env = os.environ.get("CHATCLI_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("chatcli", appauthor=False))


@dataclass(frozen=True)
class Home:
    """The files of one identity."""

    root: Path

    @classmethod
    def from_env(cls) -> Home:
        return cls(default_home())

    @property
    def keystore(self) -> Path:
        return self.root / KEYSTORE_NAME

    @property
    def database(self) -> Path:
        return self.root / DATABASE_NAME

    @property
    def downloads(self) -> Path:
        return self.root / DOWNLOADS_NAME

    @property
    def lock_file(self) -> Path:
        return self.root / LOCK_NAME

    @property
    def agent_socket(self) -> Path:
        """The Unix socket of ``chatcli agent`` for this identity."""
        return self.root / AGENT_SOCKET_NAME

    @property
    def daemon_socket(self) -> Path:
        """The JSON-RPC socket of ``chatcli daemon`` for this identity."""
        return self.root / "daemon.sock"

    @property
    def daemon_token(self) -> Path:
        """The bearer token of the daemon's WebSocket API (while it serves one)."""
        return self.root / "daemon.token"

    def exists(self) -> bool:
        """True when an identity was created here."""
        return self.keystore.exists()

    def require(self) -> None:
        """Raise a user error when no identity exists here yet."""
        if not self.exists():
            raise UsageError(
                f"No identity in {self.root}; run `chatcli init` first "
                "(or set CHATCLI_HOME)."
            )

    def require_empty(self) -> None:
        """Raise a user error when an identity already lives here."""
        if self.exists() or self.database.exists():
            raise UsageError(
                f"An identity already exists in {self.root}; choose another CHATCLI_HOME."
            )

    def create(self) -> None:
        """Create the directory (mode 0700) and its downloads folder."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(OSError):
            os.chmod(self.root, 0o700)
        self.downloads.mkdir(exist_ok=True, mode=0o700)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the home's lock file for operations that create or delete the
        identity (init, keys import, account delete), so two never interleave."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ChatcliError(
                    f"Another chatcli command is creating or deleting the identity in "
                    f"{self.root}; try again when it has finished."
                ) from None
            yield
        finally:
            os.close(fd)
