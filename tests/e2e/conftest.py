"""End-to-end fixtures: real relay processes and the real `chatcli` command.

Each user is a separate CHATCLI_HOME; every step runs the installed
``chatcli`` script in a subprocess and parses its ``--json`` output. Relays
are started with ``chatcli relay serve --port 0`` and their address is read
from the ``relay address:`` line; one relay serves a whole test module where
the tests do not disturb each other.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

CHATCLI = str(Path(sys.executable).parent / "chatcli")
PASSPHRASE = "e2e passphrase 1"
ADDRESS_RE = re.compile(r"relay address: (\S+)")


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATCLI_")}
    env["CHATCLI_INSECURE_FAST_KDF"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class RelayProcess:
    """A `chatcli relay serve` process on loopback."""

    def __init__(self, db: Path, *args: str) -> None:
        self.db = db
        self.args = args  # more `relay serve` options
        self.port = 0
        self.url = ""
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> RelayProcess:
        cmd = [CHATCLI, "relay", "serve", "--port", str(self.port), "--db", str(self.db),
               *self.args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, env=_env())
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            match = ADDRESS_RE.search(line)
            if match:
                self.url = match.group(1)
                self.port = int(re.search(r":(\d+)/", self.url).group(1))  # type: ignore[union-attr]
                return self
        self.stop()
        raise RuntimeError("the relay did not print its address")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start_again()

    def start_again(self) -> None:
        """Start on the port of the first start (the address users hold)."""
        for _ in range(50):
            try:
                self.start()
                return
            except RuntimeError:
                time.sleep(0.2)
        raise RuntimeError("the relay did not come back")


@dataclass
class User:
    """One identity: a CHATCLI_HOME and the commands run in it."""

    name: str
    home: Path
    passphrase: str = PASSPHRASE
    log: list[str] = field(default_factory=list)

    def run(self, *args: str, input: str | None = None, check: bool = True,
            env: dict[str, str] | None = None, timeout: float = 60
            ) -> subprocess.CompletedProcess[str]:
        full_env = _env({"CHATCLI_HOME": str(self.home), "CHATCLI_PASSPHRASE": self.passphrase,
                         **(env or {})})
        result = subprocess.run([CHATCLI, *args], input=input, capture_output=True, text=True,
                                env=full_env, timeout=timeout)
        self.log.append(f"$ chatcli {' '.join(args)} -> {result.returncode}\n{result.stderr}")
        if check and result.returncode != 0:
            raise AssertionError(f"chatcli {' '.join(args)} exited {result.returncode}: "
                                 f"{result.stderr.strip()}")
        return result

    def json(self, *args: str, **kwargs: Any) -> Any:
        return json.loads(self.run(*args, "--json", **kwargs).stdout)

    def lines(self, *args: str, **kwargs: Any) -> list[Any]:
        out = self.run(*args, "--json", **kwargs).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def init(self, relay: RelayProcess) -> dict[str, Any]:
        return self.json("init", "--name", self.name, "--relay", relay.url)  # type: ignore[no-any-return]

    def receive(self, *extra: str) -> list[dict[str, Any]]:
        """The messages a ``receive --json`` printed (its other events left out)."""
        return [e for e in self.events(*extra) if e["type"] == "message"]

    def events(self, *extra: str) -> list[dict[str, Any]]:
        """Every object a ``receive --json`` printed: messages, receipts, notices..."""
        return self.lines("receive", *extra)

    def texts(self, *extra: str) -> list[str]:
        return [m["text"] for m in self.receive(*extra)]


def next_message(stream: IO[str]) -> dict[str, Any]:
    """The next message a running ``receive --json`` prints (skipping its
    receipts, typing, presence and notices)."""
    while True:
        line = stream.readline()
        if not line:
            raise AssertionError("receive ended before a message arrived")
        event: dict[str, Any] = json.loads(line)
        if event["type"] == "message":
            return event


def connect(a: User, b: User) -> None:
    """a invites b (labelled b.name); b accepts (calling a a.name); a receives
    (and answers); b receives a's answer, which brings b's own capability (the
    invite's was used up by b's handshake), so both can send at once."""
    link = a.run("invite", "--name", b.name).stdout.strip()
    assert link.startswith("chatcli:") and "\n" not in link
    b.run("accept", link, "--name", a.name)
    a.run("receive")
    b.run("receive")


class Snapshot:
    """Users and the relay they live on, saved once and put back for each test
    that starts there.

    Building users costs seconds of ``chatcli`` runs (init, invites,
    handshakes). :meth:`restore` copies the saved homes into the test's own
    directory and the saved relay database back under the relay, and starts
    the relay again on its port: each test starts from exactly the state the
    build reached, whatever an earlier test did to the relay or the homes.
    The relay must be the users' own (its database holds nothing else) and in
    a directory of its own.
    """

    def __init__(self, relay: RelayProcess, users: list[User], dest: Path) -> None:
        self.relay = relay
        self.dest = dest
        self.users = [(user.name, user.home.name) for user in users]
        relay.stop()  # a consistent database: no connection, no commit under way
        try:
            shutil.copytree(relay.db.parent, dest / "relay")
            for user in users:
                shutil.copytree(user.home, dest / "homes" / user.home.name)
        finally:
            relay.start_again()

    def restore(self, where: Path) -> list[User]:
        """The saved users, with homes under ``where``, on the saved relay."""
        self.relay.stop()
        shutil.rmtree(self.relay.db.parent)
        shutil.copytree(self.dest / "relay", self.relay.db.parent)
        self.relay.start_again()
        restored = []
        for name, home in self.users:
            shutil.copytree(self.dest / "homes" / home, where / home)
            restored.append(User(name, where / home))
        return restored


def own_relay(root: Path) -> RelayProcess:
    """A relay with its database in a directory of its own (for a Snapshot)."""
    if not Path(CHATCLI).exists():
        pytest.skip("the chatcli script is not installed")
    (root / "relay").mkdir(parents=True)
    return RelayProcess(root / "relay" / "relay.db").start()


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    if not Path(CHATCLI).exists():
        pytest.skip("the chatcli script is not installed")
    process = RelayProcess(tmp_path_factory.mktemp("relay") / "relay.db").start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def saved_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Snapshot]:
    """alice and bob on a relay of their own, as `connect` leaves them."""
    root = tmp_path_factory.mktemp("pair")
    relay = own_relay(root)
    try:
        alice, bob = User("alice", root / "build" / "alice"), User("bob", root / "build" / "bob")
        alice.init(relay)
        bob.init(relay)
        connect(alice, bob)
        yield Snapshot(relay, [alice, bob], root / "saved")
    finally:
        relay.stop()


Pair = tuple[RelayProcess, User, User]


@pytest.fixture
def pair(saved_pair: Snapshot, tmp_path: Path) -> Pair:
    """(relay, alice, bob): two users who have just connected (`connect`) on
    their relay, with homes in the test's tmp_path (as `users` makes them)."""
    alice, bob = saved_pair.restore(tmp_path)
    return saved_pair.relay, alice, bob


@pytest.fixture
def users(tmp_path: Path) -> Any:
    def make(*names: str) -> list[User]:
        return [User(n, tmp_path / n) for n in names]

    return make
