"""``chatcli agent``, client side: find the agent of a CHATCLI_HOME, ask it for
the keystore key, its status, or to stop; and start it.

The agent (:mod:`chatcli.client.agent_daemon`) is a small detached process
that holds the keystore's key-encryption key (the 32-byte Argon2id output,
not the passphrase) for a while, so that one-shot commands skip the
Argon2id unlock. It answers on the Unix socket ``$CHATCLI_HOME/agent.sock``
(mode 0600) and only to processes of the same uid.

Protocol: the client sends one request byte; the agent answers with a
3-byte header (status byte, big-endian u16 length) and that many bytes:

- ``K``: the 32-byte key (this resets the agent's idle timer);
- ``S``: a JSON object (pid, timeouts, seconds left);
- ``Q``: a JSON object with the pid, then the agent exits.

Status 0 is success, 1 a refused request. The agent serves one connection at
a time with a short timeout on each, so a stuck peer cannot wedge it.

This module imports only the standard library (``subprocess`` only when an
agent is started): it runs on the start-up path of every command.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatcli.errors import ChatcliError

ENV_AGENT = "CHATCLI_AGENT"
KEY_SIZE = 32
REQ_KEY = b"K"
REQ_STATUS = b"S"
REQ_STOP = b"Q"
STATUS_OK = 0
STATUS_REFUSED = 1
REPLY_HEADER = struct.Struct(">BH")
MAX_REPLY = 4096
#: Seconds a client waits for the agent (connect, and each read).
CLIENT_TIMEOUT = 2.0
#: Seconds ``start`` waits for the new agent's "ready" line.
START_TIMEOUT = 10.0
UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
DEFAULT_TIMEOUT_S = 10 * 60
DEFAULT_MAX_LIFETIME_S = 8 * 3600
# sockaddr_un.sun_path holds 108 bytes with its terminating NUL.
_SUN_PATH_MAX = 107


def enabled() -> bool:
    """False when ``CHATCLI_AGENT=0`` asks commands not to use an agent."""
    return os.environ.get(ENV_AGENT, "1") != "0"


@contextlib.contextmanager
def socket_address(path: Path) -> Iterator[str]:
    """A name for ``path`` that fits in ``sockaddr_un``: the path itself, or
    (for a long CHATCLI_HOME) ``/proc/self/fd/N/agent.sock`` through an open
    descriptor of its directory (Linux)."""
    if len(os.fsencode(path)) <= _SUN_PATH_MAX:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a Unix socket (SO_PEERCRED)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, UCRED.size)
    _pid, uid, _gid = UCRED.unpack(raw)
    return int(uid)


def _recv_exact(sock: socket.socket, size: int) -> bytearray | None:
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:], size - got)
        if n == 0:
            return None
        got += n
    return buf


def _connect(path: Path, timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        with socket_address(path) as address:
            sock.connect(address)
        if peer_uid(sock) != os.getuid():
            raise PermissionError("the agent socket belongs to another user")
    except BaseException:
        sock.close()
        raise
    return sock


def _request(path: Path, request: bytes, timeout: float = CLIENT_TIMEOUT
             ) -> tuple[int, bytearray] | None:
    """One request; the reply's status and body, or None if nobody answered
    (no socket, a dead agent, another uid, a timeout, a malformed reply)."""
    try:
        sock = _connect(path, timeout)
    except OSError:
        return None
    try:
        sock.sendall(request)
        header = _recv_exact(sock, REPLY_HEADER.size)
        if header is None:
            return None
        status, length = REPLY_HEADER.unpack(header)
        if length > MAX_REPLY:
            return None
        body = _recv_exact(sock, length) if length else bytearray()
        if body is None:
            return None
        return status, body
    except OSError:
        return None
    finally:
        sock.close()


def request_key(path: Path) -> bytes | None:
    """The key the agent at ``path`` holds, or None (no agent, or it refused)."""
    reply = _request(path, REQ_KEY)
    if reply is None or reply[0] != STATUS_OK or len(reply[1]) != KEY_SIZE:
        return None
    return bytes(reply[1])


@dataclass(frozen=True)
class AgentStatus:
    """What a running agent says about itself."""

    pid: int
    socket: str
    timeout_s: int
    max_lifetime_s: int
    #: Seconds until it forgets the key: the idle timeout or the lifetime,
    #: whichever comes first.
    forgets_in_s: float
    lifetime_left_s: float
    dumpable: bool

    def to_json(self) -> dict[str, Any]:
        return {"running": True, "pid": self.pid, "socket": self.socket,
                "timeout_s": self.timeout_s, "max_lifetime_s": self.max_lifetime_s,
                "forgets_in_s": round(self.forgets_in_s, 1),
                "lifetime_left_s": round(self.lifetime_left_s, 1),
                "dumpable": self.dumpable}


def _parse_json(body: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def status(path: Path) -> AgentStatus | None:
    """The status of the agent at ``path``, or None if none answers."""
    reply = _request(path, REQ_STATUS)
    if reply is None or reply[0] != STATUS_OK:
        return None
    data = _parse_json(bytes(reply[1]))
    if data is None:
        return None
    try:
        return AgentStatus(pid=int(data["pid"]), socket=str(path),
                           timeout_s=int(data["timeout_s"]),
                           max_lifetime_s=int(data["max_lifetime_s"]),
                           forgets_in_s=float(data["forgets_in_s"]),
                           lifetime_left_s=float(data["lifetime_left_s"]),
                           dumpable=bool(data["dumpable"]))
    except (KeyError, TypeError, ValueError):
        return None


def _remove_stale(path: Path) -> None:
    """Remove a socket file nobody listens on (a crashed agent's)."""
    try:
        sock = _connect(path, CLIENT_TIMEOUT)
    except ConnectionRefusedError:
        with contextlib.suppress(OSError):
            path.unlink()
    except OSError:
        return
    else:
        sock.close()


def stop(path: Path, *, wait: float = 3.0) -> int | None:
    """Ask the agent at ``path`` to forget its key and exit; its pid, or None
    if none was running. Waits (at most ``wait`` seconds) until its socket is
    gone. A stale socket file is removed."""
    if not os.path.lexists(path):
        return None
    reply = _request(path, REQ_STOP)
    if reply is None or reply[0] != STATUS_OK:
        _remove_stale(path)
        return None
    data = _parse_json(bytes(reply[1])) or {}
    deadline = time.monotonic() + wait
    while os.path.lexists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    pid = data.get("pid")
    return pid if isinstance(pid, int) else 0


def _daemon_env() -> dict[str, str]:
    """The agent's environment: ours without the passphrase, and with this
    chatcli's directory first on PYTHONPATH so that the agent runs the same
    code (it starts in ``/``, where a relative PYTHONPATH would not hold)."""
    import chatcli

    env = {k: v for k, v in os.environ.items() if k != "CHATCLI_PASSPHRASE"}
    env.pop("PYTHONINSPECT", None)
    source = str(Path(chatcli.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([source, *filter(None, [env.get("PYTHONPATH")])])
    return env


def _read_line(stream: Any, deadline: float) -> bytes:
    """One line from a pipe, waiting at most until ``deadline``."""
    fd = stream.fileno()
    data = b""
    while b"\n" not in data and len(data) < 512:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        chunk = os.read(fd, 512)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0]


def spawn_detached(cmd: list[str], key: bytes, *, stderr: int | None = None,
                   timeout: float = START_TIMEOUT) -> bytes:
    """Start ``cmd`` as a detached process (its own session, in ``/``), give it
    ``key`` on stdin (never argv or the environment) and return the first line
    it prints: ``ready ...`` once it serves, else why it did not start (the
    process is then killed and reaped). Used for the agent and the daemon."""
    import subprocess
    import warnings

    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL if stderr is None else stderr,
                            start_new_session=True, close_fds=True, cwd="/",
                            env=_daemon_env())
    assert proc.stdin is not None and proc.stdout is not None
    try:
        try:
            proc.stdin.write(key)
            proc.stdin.close()
        except BrokenPipeError:
            pass
        line = _read_line(proc.stdout, time.monotonic() + timeout)
    finally:
        proc.stdout.close()
    if line.startswith(b"ready"):
        # Detached on purpose: nobody waits for it here.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            del proc
        return line
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    return line


def start(socket_path: Path, keystore: Path, key: bytes, *, timeout_s: int,
          max_lifetime_s: int) -> AgentStatus:
    """Start a detached agent holding ``key`` and wait until it answers.

    The key goes over the agent's stdin, never through argv or the
    environment. Raises :class:`ChatcliError` if it does not start (or
    another agent took the socket first)."""
    if len(key) != KEY_SIZE:
        raise ValueError("the agent holds a 32-byte key")
    line = spawn_detached([sys.executable, "-m", "chatcli.client.agent_daemon",
                           "--socket", str(socket_path), "--keystore", str(keystore),
                           "--timeout", str(timeout_s), "--max-lifetime", str(max_lifetime_s)],
                          key)
    if line.startswith(b"ready"):
        found = status(socket_path)
        if found is None:
            raise ChatcliError("The agent started but does not answer on its socket.")
        return found
    reason = line.decode("utf-8", "replace").strip()
    if reason == "busy":
        raise ChatcliError("Another agent started for this identity at the same time.")
    raise ChatcliError(f"The agent did not start ({reason or 'no answer'}).")
