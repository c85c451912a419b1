"""`chatcli daemon` end to end: real relay, real daemon processes, real commands.

While a daemon runs, commands go through it (no passphrase needed), two
front ends see every message and own sends, a second daemon is refused, and a
SIGKILL loses neither an acknowledged message nor an outbox entry."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from tests.e2e.conftest import CHATCLI, RelayProcess, Snapshot, User, _env, connect

pytestmark = pytest.mark.slow


class DaemonProcess:
    """`chatcli daemon` in the foreground, as a systemd unit would run it."""

    def __init__(self, user: User, *args: str) -> None:
        self.user = user
        env = _env({"CHATCLI_HOME": str(user.home), "CHATCLI_PASSPHRASE": user.passphrase})
        self.proc = subprocess.Popen([CHATCLI, "daemon", *args], env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline()
        assert "serving" in line, line
        self.wait_caught_up()

    def wait_caught_up(self) -> dict[str, Any]:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            status = no_passphrase(self.user, "daemon", "status", "--json")
            if status.returncode == 0 and json.loads(status.stdout)["synced"]:
                return json.loads(status.stdout)  # type: ignore[no-any-return]
            time.sleep(0.05)
        raise AssertionError("the daemon did not catch up with its relay")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def no_passphrase(user: User, *args: str, input: str | None = None
                  ) -> subprocess.CompletedProcess[str]:
    """`chatcli ARGS` with no passphrase anywhere: only a daemon can unlock."""
    env = _env({"CHATCLI_HOME": str(user.home)})
    return subprocess.run([CHATCLI, *args], env=env, input=input,
                          stdin=None if input is not None else subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)


def events_of(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def until(stream: IO[str], kind: str) -> dict[str, Any]:
    while True:
        line = stream.readline()
        if not line:
            raise AssertionError(f"the stream ended before a {kind} event")
        event: dict[str, Any] = json.loads(line)
        if event["type"] == kind:
            return event


@pytest.fixture
def daemons() -> Iterator[list[DaemonProcess]]:
    started: list[DaemonProcess] = []
    yield started
    for d in started:
        d.stop()


@pytest.fixture
def pair(saved_pair: Snapshot, tmp_path: Path) -> tuple[User, User]:
    """alice and bob as `connect` leaves them, on their own relay
    (``saved_pair.relay``), with homes in tmp_path."""
    alice, bob = saved_pair.restore(tmp_path)
    return alice, bob


def test_commands_go_through_the_daemon(pair: tuple[User, User],
                                        daemons: list[DaemonProcess]) -> None:
    alice, bob = pair
    daemons.append(DaemonProcess(alice))
    bob.run("send", "alice", "to the daemon")

    received = events_of(no_passphrase(alice, "receive", "--json"))
    assert [e["text"] for e in received if e["type"] == "message"] == ["to the daemon"]
    # Handed out once, as in direct mode: the next receive has nothing new.
    assert [e for e in events_of(no_passphrase(alice, "receive", "--json"))
            if e["type"] == "message"] == []

    sent = no_passphrase(alice, "send", "bob", "from the daemon", "--json")
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["stored"] is True
    assert bob.texts() == ["from the daemon"]

    history = events_of(no_passphrase(alice, "messages", "bob", "--json"))
    assert [m["text"] for m in history] == ["to the daemon", "from the daemon"]

    # Errors keep their one line and exit code through the daemon.
    missing = no_passphrase(alice, "send", "nobody", "hi")
    assert missing.returncode == 2
    assert missing.stderr.startswith("chatcli: error:") and missing.stderr.count("\n") == 1

    # Without the daemon the same command needs the passphrase again.
    daemons[0].stop()
    gone = no_passphrase(alice, "send", "bob", "direct")
    assert gone.returncode != 0 and "passphrase" in gone.stderr.lower()


def test_two_front_ends_see_every_message_and_own_sends(
        pair: tuple[User, User], daemons: list[DaemonProcess]) -> None:
    alice, bob = pair
    daemons.append(DaemonProcess(alice))
    env = _env({"CHATCLI_HOME": str(alice.home)})
    watchers = [subprocess.Popen([CHATCLI, "receive", "--wait", "30", "--json"], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                for _ in range(2)]
    try:
        time.sleep(1.0)  # both subscribed
        bob.run("send", "alice", "seen twice")
        for w in watchers:
            assert w.stdout is not None
            assert until(w.stdout, "message")["text"] == "seen twice"
        assert no_passphrase(alice, "send", "bob", "own send").returncode == 0
        for w in watchers:
            assert w.stdout is not None
            event = until(w.stdout, "sent")
            assert event["to"] == "bob" and event["text"] == "own send" and event["stored"]
    finally:
        for w in watchers:
            w.kill()
            w.wait()
            if w.stdout is not None:
                w.stdout.close()


def test_a_second_daemon_is_refused_and_detach_status_stop(
        pair: tuple[User, User], daemons: list[DaemonProcess]) -> None:
    alice, _bob = pair
    started = alice.run("daemon", "--detach")
    assert "daemon started" in started.stderr
    try:
        status = json.loads(no_passphrase(alice, "daemon", "status", "--json").stdout)
        assert status["name"] == "alice" and status["pid"] > 0
        second = alice.run("daemon", check=False, timeout=20)
        assert second.returncode == 1
        assert second.stderr.strip() == (
            f"chatcli: error: A chatcli daemon already runs for {alice.home} "
            f"(pid {status['pid']}); stop it with `chatcli daemon stop`.")
        # Commands that replace keys or the account are refused while it runs.
        delete = alice.run("account", "delete", "--yes", check=False)
        assert delete.returncode == 2 and "daemon stop" in delete.stderr
    finally:
        stopped = json.loads(no_passphrase(alice, "daemon", "stop", "--json").stdout)
    assert stopped == {"stopped": True, "pid": status["pid"]}
    assert no_passphrase(alice, "daemon", "status").returncode == 1
    assert not (alice.home / "daemon.sock").exists()


def test_sigkill_loses_no_acknowledged_message_and_no_outbox_entry(
        saved_pair: Snapshot, pair: tuple[User, User], daemons: list[DaemonProcess]) -> None:
    alice, bob = pair
    relay = saved_pair.relay  # alice's and bob's
    daemon = DaemonProcess(alice)
    daemons.append(daemon)
    bob.run("send", "alice", "acknowledged before the kill")
    deadline = time.monotonic() + 20
    while json.loads(no_passphrase(alice, "daemon", "status", "--json").stdout)["backlog"] < 1:
        assert time.monotonic() < deadline, "the daemon never received the message"
        time.sleep(0.05)
    relay.stop()  # the send cannot be stored: it stays in the daemon's outbox
    try:
        queued = no_passphrase(alice, "send", "--retry-for", "0.5", "bob",
                               "queued before the kill")
        assert queued.returncode == 3, queued.stderr
        assert "stays queued" in queued.stderr
        daemon.proc.send_signal(signal.SIGKILL)
        daemon.proc.wait()
    finally:
        relay.restart()

    history = alice.lines("messages", "bob")
    assert "acknowledged before the kill" in [m["text"] for m in history]
    alice.run("receive")  # direct mode again: resumes the outbox
    assert "queued before the kill" in bob.texts()


def test_bad_requests_get_errors_and_the_daemon_keeps_serving(
        pair: tuple[User, User], daemons: list[DaemonProcess]) -> None:
    alice, _bob = pair
    daemons.append(DaemonProcess(alice))
    path = str(alice.home / "daemon.sock")

    def ask(raw: bytes) -> Any:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(path)
            # Closed on us mid-request: its answer is already waiting.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(raw)
            data = b""
            while not data.endswith(b"\n"):
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                data += chunk
            return json.loads(data) if data else None

    assert ask(b"{not json\n")["error"]["code"] == -32700
    unknown = ask(b'{"jsonrpc":"2.0","id":1,"method":"no.such","params":{}}\n')
    assert unknown["error"]["code"] == -32601 or unknown["error"]["data"]["error"] in (
        "method_not_found",)
    bad = ask(b'{"jsonrpc":"2.0","id":2,"method":"send","params":{"to":5}}\n')
    assert bad["error"]["data"]["error"] == "invalid_params"
    huge = ask(b'{"jsonrpc":"2.0","id":3,"method":"version","params":{"x":"'
               + b"a" * (2 * 1024 * 1024) + b'"}}\n')
    assert huge["error"]["data"]["error"] == "request_too_large"
    if os.getuid() == 0:  # another uid is turned away before anything is read
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.setuid(65534)
                try:
                    code = 0 if ask(b'{"jsonrpc":"2.0","id":1,"method":"version"}\n') is None \
                        else 1
                except OSError:
                    code = 0  # the socket's mode already refuses it
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    assert ask(b'{"jsonrpc":"2.0","id":4,"method":"version","params":{}}\n')["result"]["api"]


def echo_bot_source() -> str:
    """The echo bot of docs/api.md, exactly as printed there."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text(encoding="utf-8")
    section = doc[doc.index("### An echo bot"):]
    start = section.index("```python\n") + len("```python\n")
    return section[start:section.index("```", start)]


def test_the_echo_bot_of_the_api_docs_answers(pair: tuple[User, User],
                                               daemons: list[DaemonProcess]) -> None:
    alice, bob = pair
    daemons.append(DaemonProcess(alice))
    source = echo_bot_source()
    assert len(source.splitlines()) <= 32
    import sys

    bot = subprocess.Popen([sys.executable, "-c", source],
                           env=_env({"CHATCLI_HOME": str(alice.home)}),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)  # subscribed
        assert bot.poll() is None, bot.stderr.read() if bot.stderr else ""
        bob.run("send", "alice", "ping")
        deadline = time.monotonic() + 20
        texts: list[str] = []
        while "echo: ping" not in texts:
            assert time.monotonic() < deadline, texts
            texts += bob.texts()
            time.sleep(0.2)
    finally:
        bot.kill()
        bot.wait()
        if bot.stderr is not None:
            bot.stderr.close()


def test_commands_print_the_same_through_the_daemon_as_directly(
        relay: RelayProcess, users: Any, daemons: list[DaemonProcess]) -> None:
    alice, bob, carol = users("alice", "bob", "carol")
    for user in (alice, bob, carol):
        user.init(relay)
    connect(alice, bob)
    connect(alice, carol)
    bob.run("send", "alice", "one")
    alice.run("receive")
    alice.run("group", "create", "team", "--member", "bob", "--member", "carol")
    alice.run("profile", "set", "--display-name", "Alice A.", "--status", "here")
    commands = [
        ("messages", "bob", "--json"), ("messages", "bob"),
        ("contacts", "--offline", "--json"), ("contacts", "--offline"), ("contacts", "--json"),
        ("verify", "bob", "--json"), ("verify", "bob"),
        ("group", "list", "--json"), ("group", "members", "team", "--json"),
        ("profile", "show", "--json"), ("account", "settings", "--json"),
        ("send", "nobody", "x"), ("verify", "nobody"), ("group", "members", "nope"),
    ]

    def outputs() -> list[tuple[int, str, str]]:
        results = []
        for args in commands:
            done = alice.run(*args, check=False)
            results.append((done.returncode, done.stdout, done.stderr))
        return results

    direct = outputs()
    daemons.append(DaemonProcess(alice))
    through = outputs()
    for args, want, got in zip(commands, direct, through, strict=True):
        assert got == want, args
    assert [code for code, _, _ in direct][-3:] == [2, 2, 2]


def rpc(user: User, method: str, params: dict[str, Any]) -> Any:
    """One JSON-RPC call on the daemon's socket: the answer object."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(30)
        sock.connect(str(user.home / "daemon.sock"))
        sock.sendall(json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                                 "params": params}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)


def test_a_locked_daemon_serves_only_unlock_until_unlocked(pair: tuple[User, User]) -> None:
    alice, bob = pair
    started = no_passphrase(alice, "daemon", "--locked", "--detach")
    assert started.returncode == 0, started.stderr
    try:
        assert json.loads(no_passphrase(alice, "daemon", "status", "--json").stdout
                          )["state"] == "locked"
        refused = no_passphrase(alice, "send", "bob", "while locked")
        assert refused.returncode == 1
        assert "daemon is locked" in refused.stderr and "daemon unlock" in refused.stderr
        wrong = rpc(alice, "unlock", {"passphrase": "not the passphrase"})
        assert wrong["error"]["data"]["error"] == "crypto_error"
        unlocked = alice.json("daemon", "unlock")  # CHATCLI_PASSPHRASE
        assert unlocked["state"] == "unlocked" and unlocked["name"] == "alice"
        sent = no_passphrase(alice, "send", "bob", "after unlock")
        assert sent.returncode == 0, sent.stderr
        assert bob.texts() == ["after unlock"]
        locked = json.loads(no_passphrase(alice, "daemon", "lock", "--json").stdout)
        assert locked["state"] == "locked" and locked["name"] is None
        assert no_passphrase(alice, "messages", "bob").returncode == 1
    finally:
        no_passphrase(alice, "daemon", "stop")


def test_an_identity_is_created_through_a_daemon_on_an_empty_home(
        relay: RelayProcess, users: Any) -> None:
    (dora,) = users("dora")
    started = no_passphrase(dora, "daemon", "--locked", "--detach")
    assert started.returncode == 0, started.stderr
    try:
        assert rpc(dora, "daemon.status", {})["result"]["state"] == "empty"
        early = rpc(dora, "contacts.list", {"offline": True})
        assert early["error"]["data"]["error"] == "no_identity"
        wrong_relay = relay.url.split("#")[0] + "#" + "A" * 52
        bad = rpc(dora, "account.create", {"name": "dora", "relay": wrong_relay,
                                           "passphrase": "pass phrase 9"})
        assert "does not match the fingerprint" in bad["error"]["message"], bad
        assert rpc(dora, "daemon.status", {})["result"]["state"] == "empty"
        made = rpc(dora, "account.create", {"name": "dora", "relay": relay.url,
                                            "passphrase": "pass phrase 9"})
        assert made["result"]["state"] == "unlocked" and made["result"]["name"] == "dora"
        assert json.loads(no_passphrase(dora, "contacts", "--json").stdout) == []
    finally:
        no_passphrase(dora, "daemon", "stop")
    # The identity is on disk and opens with its passphrase.
    dora.passphrase = "pass phrase 9"
    assert dora.json("account", "settings")["name"] == "dora"
