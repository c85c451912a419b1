"""`chatcli agent` end to end: a one-shot send with no passphrase while an
agent holds the key, a usage error once it is stopped, and `account delete`
stopping it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from chatcli.client import agent
from tests.e2e.conftest import CHATCLI, RelayProcess, User, _env, connect
from tests.procutil import process_alive

pytestmark = pytest.mark.slow


def run_without_passphrase(user: User, *args: str) -> subprocess.CompletedProcess[str]:
    """`chatcli ARGS` with no CHATCLI_PASSPHRASE in the environment and stdin
    not a terminal."""
    env = _env({"CHATCLI_HOME": str(user.home)})
    assert "CHATCLI_PASSPHRASE" not in env
    return subprocess.run([CHATCLI, *args], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def stop_agents() -> Iterator[list[User]]:
    started: list[User] = []
    yield started
    for user in started:
        socket_path = user.home / "agent.sock"
        found = agent.status(socket_path)
        agent.stop(socket_path)
        if found is not None and process_alive(found.pid):
            os.kill(found.pid, signal.SIGKILL)


def test_one_shot_send_through_the_agent(relay: RelayProcess, users: Any,
                                         stop_agents: list[User]) -> None:
    alice, bob = users("alice", "bob")
    alice.init(relay)
    bob.init(relay)
    connect(alice, bob)
    stop_agents.append(bob)
    info = bob.json("agent", "start", "--timeout", "5m")
    assert info["running"] is True and info["timeout_s"] == 300

    sent = run_without_passphrase(bob, "send", "alice", "via the agent")
    assert sent.returncode == 0, sent.stderr
    status = run_without_passphrase(bob, "agent", "status", "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["pid"] == info["pid"]
    assert alice.texts() == ["via the agent"]

    stopped = run_without_passphrase(bob, "agent", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert not (bob.home / "agent.sock").exists()
    refused = run_without_passphrase(bob, "send", "alice", "no agent now")
    assert refused.returncode == 2
    assert refused.stderr.startswith("chatcli: error: A passphrase is needed")
    assert alice.texts() == []


def test_account_delete_stops_the_agent(relay: RelayProcess, users: Any,
                                        stop_agents: list[User]) -> None:
    (carol,) = users("carol")
    carol.init(relay)
    stop_agents.append(carol)
    pid = carol.json("agent", "start")["pid"]
    deleted = run_without_passphrase(carol, "account", "delete", "--yes")
    assert deleted.returncode == 0, deleted.stderr
    assert not carol.home.joinpath("identity.keystore").exists()
    deadline = time.monotonic() + 3
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not process_alive(pid)
    assert not (carol.home / "agent.sock").exists()
    status = run_without_passphrase(carol, "agent", "status")
    assert status.returncode == 1
