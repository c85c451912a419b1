"""`chatcli agent`: the real daemon, started by the real command, in a temporary
CHATCLI_HOME (identities made with the fast test KDF)."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chatcli.client import agent
from chatcli.client.home import Home
from chatcli.client.service import ChatClient
from chatcli.crypto import keystore
from chatcli.crypto.keys import IdentityKeyPair, MailboxKeyPair
from tests.procutil import process_alive

CHATCLI = str(Path(sys.executable).parent / "chatcli")
PASSPHRASE = "agent test passphrase"


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATCLI_")}
    env["CHATCLI_HOME"] = str(home)
    env.update(extra)
    return env


def chatcli(home: Path, *args: str, passphrase: str | None = PASSPHRASE,
            **extra: str) -> subprocess.CompletedProcess[str]:
    """Run the real command; stdin is never a terminal."""
    if passphrase is not None:
        extra["CHATCLI_PASSPHRASE"] = passphrase
    return subprocess.run([CHATCLI, *args], env=_env(home, **extra), capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=60)


def wait_gone(pid: int, path: Path, limit: float = 3.0) -> None:
    deadline = time.monotonic() + limit
    while (process_alive(pid) or path.exists()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not process_alive(pid), f"agent {pid} still running"
    assert not path.exists(), "the agent left its socket behind"


def make_identity(root: Path) -> Home:
    home = Home(root)
    os.environ["CHATCLI_INSECURE_FAST_KDF"] = "1"
    try:
        ChatClient.create(home, PASSPHRASE, name="alice",
                          relay_url="ws://127.0.0.1:1/#" + "a" * 52, mailbox=bytes(16),
                          identity=IdentityKeyPair.generate(),
                          mailbox_key=MailboxKeyPair.generate()).close()
    finally:
        del os.environ["CHATCLI_INSECURE_FAST_KDF"]
    return home


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    made = make_identity(tmp_path / "h")
    yield made
    _cleanup(made)


def _cleanup(home: Home) -> None:
    found = agent.status(home.agent_socket)
    agent.stop(home.agent_socket)
    if found is not None and process_alive(found.pid):
        os.kill(found.pid, signal.SIGKILL)


def start(home: Home, *args: str, **kwargs: Any) -> dict[str, Any]:
    result = chatcli(home.root, "agent", "start", "--json", *args, **kwargs)
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_key_served_to_same_uid(home: Home) -> None:
    info = start(home)
    assert info["running"] is True and info["already_running"] is False
    assert info["socket"] == str(home.agent_socket)
    assert info["timeout_s"] == 600 and info["max_lifetime_s"] == 8 * 3600
    key = agent.request_key(home.agent_socket)
    blob = keystore.read_keystore_blob(home.keystore)
    assert key == keystore.derive_keystore_key(blob, PASSPHRASE)
    assert keystore.open_with_key(blob, key)


def test_socket_mode_and_process_hygiene(home: Home) -> None:
    info = start(home)
    st = os.lstat(home.agent_socket)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert info["dumpable"] is False  # prctl(PR_SET_DUMPABLE, 0)
    key = agent.request_key(home.agent_socket)
    assert key is not None
    pid = info["pid"]
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    assert key not in cmdline and key.hex().encode() not in cmdline
    assert b"agent_daemon" in cmdline
    environ = Path(f"/proc/{pid}/environ").read_bytes()
    assert b"CHATCLI_PASSPHRASE" not in environ and PASSPHRASE.encode() not in environ
    assert Path(f"/proc/{pid}/cwd").resolve() == Path("/")
    assert os.getsid(pid) == pid  # its own session, detached from ours


def test_status_and_stop(home: Home) -> None:
    pid = start(home)["pid"]
    result = chatcli(home.root, "agent", "status", "--json", passphrase=None)
    assert result.returncode == 0
    status = json.loads(result.stdout)
    assert status["running"] is True and status["pid"] == pid
    assert 590 < status["forgets_in_s"] <= 600
    text = chatcli(home.root, "agent", "status", passphrase=None)
    assert text.returncode == 0 and f"pid {pid}" in text.stderr
    stopped = chatcli(home.root, "agent", "stop", "--json", passphrase=None)
    assert stopped.returncode == 0
    assert json.loads(stopped.stdout) == {"stopped": True, "pid": pid}
    wait_gone(pid, home.agent_socket)
    after = chatcli(home.root, "agent", "status", "--json", passphrase=None)
    assert after.returncode == 1
    assert json.loads(after.stdout)["running"] is False
    plain = chatcli(home.root, "agent", "status", passphrase=None)
    assert plain.returncode == 1 and "no agent" in plain.stderr
    again = chatcli(home.root, "agent", "stop", passphrase=None)
    assert again.returncode == 0 and "no agent" in again.stderr


def test_idle_timeout_forgets_the_key(home: Home) -> None:
    info = start(home, "--timeout", "1s")
    assert info["timeout_s"] == 1
    assert agent.request_key(home.agent_socket) is not None
    wait_gone(info["pid"], home.agent_socket, limit=3.0)
    assert agent.request_key(home.agent_socket) is None


def test_max_lifetime_bounds_the_idle_timeout(home: Home) -> None:
    info = start(home, "--timeout", "2h", "--max-lifetime", "5m")
    assert info["max_lifetime_s"] == 300
    assert info["forgets_in_s"] <= 300


def test_wrong_passphrase_starts_nothing(home: Home) -> None:
    result = chatcli(home.root, "agent", "start", passphrase="not the passphrase")
    assert result.returncode == 1
    assert result.stderr.startswith("chatcli: error:") and "passphrase" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not home.agent_socket.exists()
    none = chatcli(home.root, "agent", "start", passphrase=None)
    assert none.returncode == 2 and "A passphrase is needed" in none.stderr
    assert not home.agent_socket.exists()


def test_already_running_is_left_alone(home: Home) -> None:
    first = start(home)
    again = start(home, "--timeout", "1m", passphrase=None)  # no passphrase needed
    assert again["already_running"] is True and again["pid"] == first["pid"]
    assert again["timeout_s"] == 600
    text = chatcli(home.root, "agent", "start", passphrase=None)
    assert text.returncode == 0 and "already running" in text.stderr


def test_commands_use_the_agent(home: Home, tmp_path: Path) -> None:
    no_agent = chatcli(home.root, "account", "settings", "--json", passphrase=None)
    assert no_agent.returncode == 2 and "A passphrase is needed" in no_agent.stderr
    start(home)
    result = chatcli(home.root, "account", "settings", "--json", passphrase=None)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["name"] == "alice"
    # CHATCLI_AGENT=0 turns it off.
    off = chatcli(home.root, "account", "settings", passphrase=None, CHATCLI_AGENT="0")
    assert off.returncode == 2 and "A passphrase is needed" in off.stderr
    # An explicit --passphrase-file wins over the agent.
    wrong = tmp_path / "wrong"
    wrong.write_text("not the passphrase\n")
    explicit = chatcli(home.root, "account", "settings", "--passphrase-file", str(wrong),
                       passphrase=None)
    assert explicit.returncode == 1 and "passphrase is wrong" in explicit.stderr


def _limits(home: Home) -> keystore.Argon2Limits:
    """The (fast, test) Argon2id costs of the home's keystore."""
    return keystore.read_limits(keystore.read_keystore_blob(home.keystore),
                                magic=keystore.KEYSTORE_MAGIC)


def test_stale_agent_falls_back_to_the_passphrase(home: Home) -> None:
    """The keystore is re-encrypted in place (same file): the agent's key no
    longer opens it, so the command asks for the passphrase and stops that agent."""
    pid = start(home)["pid"]
    secret = keystore.read_keystore(home.keystore, PASSPHRASE)
    blob = keystore.seal_with_passphrase(secret, "a new passphrase",
                                         magic=keystore.KEYSTORE_MAGIC, limits=_limits(home))
    inode = os.stat(home.keystore).st_ino
    with open(home.keystore, "r+b") as handle:
        handle.write(blob)
        handle.truncate()
    assert os.stat(home.keystore).st_ino == inode
    assert agent.request_key(home.agent_socket) is not None  # still serving the old key
    asked = chatcli(home.root, "account", "settings", "--json", passphrase=None)
    assert asked.returncode == 2 and "A passphrase is needed" in asked.stderr
    wait_gone(pid, home.agent_socket)  # the stale agent was stopped
    ok = chatcli(home.root, "account", "settings", "--json", passphrase="a new passphrase")
    assert ok.returncode == 0, ok.stderr


def test_replaced_keystore_stops_the_agent(home: Home) -> None:
    pid = start(home)["pid"]
    keystore.change_passphrase(home.keystore, PASSPHRASE, "a new passphrase",
                               limits=_limits(home))
    wait_gone(pid, home.agent_socket, limit=2.0)
    ok = chatcli(home.root, "account", "settings", "--json", passphrase="a new passphrase")
    assert ok.returncode == 0, ok.stderr


def test_removed_keystore_stops_the_agent(home: Home) -> None:
    pid = start(home)["pid"]
    home.keystore.unlink()
    wait_gone(pid, home.agent_socket, limit=2.0)


def test_signals(home: Home) -> None:
    pid = start(home)["pid"]
    os.kill(pid, signal.SIGHUP)
    os.kill(pid, signal.SIGINT)
    time.sleep(0.1)
    assert agent.status(home.agent_socket) is not None
    os.kill(pid, signal.SIGTERM)
    wait_gone(pid, home.agent_socket)


def test_stale_socket_file_is_replaced(home: Home) -> None:
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(home.agent_socket))
    dead.close()  # a socket file nobody listens on, as a killed agent leaves
    assert home.agent_socket.exists()
    assert agent.status(home.agent_socket) is None
    start(home)
    assert agent.request_key(home.agent_socket) is not None


def test_a_long_home_path(tmp_path: Path) -> None:
    """sockaddr_un holds ~108 bytes; a longer CHATCLI_HOME still works."""
    root = tmp_path / ("x" * 120)
    made = make_identity(root)
    try:
        assert len(os.fsencode(made.agent_socket)) > 108
        start(made)
        assert agent.request_key(made.agent_socket) is not None
        ok = chatcli(made.root, "account", "settings", passphrase=None)
        assert ok.returncode == 0, ok.stderr
    finally:
        _cleanup(made)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another uid")
def test_other_uid_is_refused() -> None:
    """Even with the socket opened up to everyone, another uid gets nothing."""
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        os.chmod(tmp, 0o711)  # noqa: S103 - on purpose: let another uid reach it
        made = make_identity(Path(tmp) / "h")
        try:
            start(made)
            os.chmod(made.root, 0o711)  # noqa: S103
            os.chmod(made.agent_socket, 0o666)  # noqa: S103
            code = (
                "import os, socket, sys\n"
                "os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
                "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
                "s.settimeout(5)\n"
                "s.connect(sys.argv[1])\n"
                "data = b''\n"
                "try:\n"
                "    s.sendall(b'K')\n"
                "    while chunk := s.recv(100):\n"
                "        data += chunk\n"
                "except OSError:\n"
                "    pass  # closed on us: refused\n"
                "print(len(data))\n"
            )
            out = subprocess.run([sys.executable, "-c", code, str(made.agent_socket)],
                                 capture_output=True, text=True, timeout=30)
            assert out.returncode == 0, out.stderr
            assert out.stdout.strip() == "0"
            assert agent.request_key(made.agent_socket) is not None  # ours still works
        finally:
            _cleanup(made)


def test_agent_path_keeps_local_commands_lean(home: Home) -> None:
    """With the key from the agent, a local command still imports no network
    library."""
    start(home)
    code = (
        "import sys\n"
        "from chatcli.cli.main import cli\n"
        "cli.main(['account', 'settings', '--json'], standalone_mode=False)\n"
        "print('NET=' + ','.join(sorted({m.split('.')[0] for m in sys.modules}"
        " & {'trio', 'trio_websocket', 'psycopg'})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=_env(home.root), stdin=subprocess.DEVNULL, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "NET="
