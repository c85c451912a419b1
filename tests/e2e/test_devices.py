"""Linked devices end to end (issue 13): real relay processes, the real
`chatcli`. The second and third devices are made with the core's
`add_device` (the end of linking) from the first device's home."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.e2e.conftest import CHATCLI, PASSPHRASE, RelayProcess, User, connect


def add_device(first: User, home: Path, name: str) -> User:
    """Make ``home`` a new device of ``first``'s identity (in this process)."""
    from chatcli.client.device_setup import add_device as core_add_device
    from chatcli.client.home import Home
    from chatcli.client.service import ChatClient

    async def run() -> None:
        existing = ChatClient.unlock(Home(first.home), PASSPHRASE)
        try:
            new = await core_add_device(existing, Home(home), PASSPHRASE, device_name=name)
            new.close()
        finally:
            existing.close()

    trio.run(run)
    return User(first.name, home)


def deposit_frames(metrics_port: int) -> float:
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith('chatcli_relay_frames_received_total{type="Deposit"}'):
                return float(line.rpartition(" ")[2])
    return 0.0


def events(user: User) -> list[dict[str, Any]]:
    return user.events()


def texts(found: list[dict[str, Any]]) -> list[str]:
    return [e["text"] for e in found if e["type"] == "message"]


def sent(found: list[dict[str, Any]]) -> list[str]:
    return [e["text"] for e in found if e["type"] == "sent"]


def notices(found: list[dict[str, Any]]) -> list[str]:
    return [e["text"] for e in found if e["type"] == "notice"]


@pytest.fixture
def metrics_relay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    if not Path(CHATCLI).exists():
        pytest.skip("the chatcli script is not installed")
    monkeypatch.setenv("CHATCLI_INSECURE_FAST_KDF", "1")
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    relay = RelayProcess(tmp_path / "relay.db", "--metrics-port", str(port)).start()
    yield relay, port
    relay.stop()


def test_two_and_three_devices_chat_sync_remove_and_refuse(tmp_path: Path,
                                                           metrics_relay: Any) -> None:
    relay, metrics_port = metrics_relay
    alice, bob = User("alice", tmp_path / "alice"), User("bob", tmp_path / "bob")
    alice.init(relay)
    bob.init(relay)
    connect(alice, bob)
    safety = bob.json("verify", "alice")["safety_number"]

    laptop = add_device(alice, tmp_path / "alice-laptop", "laptop")
    bob_laptop = add_device(bob, tmp_path / "bob-laptop", "laptop")
    bob_phone = add_device(bob, tmp_path / "bob-phone", "phone")
    assert [d["name"] for d in bob.json("device", "list")] == ["first device", "laptop", "phone"]
    seen = events(bob)
    assert "alice's devices changed: added laptop. The safety number is unchanged." in \
        notices(seen)
    assert bob.json("verify", "alice")["safety_number"] == safety
    told = " ".join(notices(events(alice)))
    assert "bob's devices changed: added laptop" in told and "added phone" in told
    assert "bob's devices changed: added laptop, phone" in " ".join(notices(events(laptop)))
    for device in (bob_laptop, bob_phone):
        events(device)

    # A message to a contact with 3 devices (and a copy for the own laptop):
    # one Deposit frame on their common relay.
    before = deposit_frames(metrics_port)
    alice.run("send", "bob", "to all of bob")
    assert deposit_frames(metrics_port) - before == 1
    for device in (bob, bob_laptop, bob_phone):
        got = events(device)
        assert texts(got) == ["to all of bob"], got
    assert sent(events(laptop)) == ["to all of bob"]

    bob_phone.run("send", "alice", "from bob's phone")
    for device in (alice, laptop):
        assert texts(events(device)) == ["from bob's phone"]
    for device in (bob, bob_laptop):
        assert sent(events(device)) == ["from bob's phone"]
    laptop.run("send", "bob", "from alice's laptop")
    for device in (bob, bob_laptop, bob_phone):
        assert texts(events(device)) == ["from alice's laptop"]
    assert sent(events(alice)) == ["from alice's laptop"]
    assert [(h["direction"], h["text"]) for h in bob_laptop.lines("messages", "alice")] == [
        ("in", "to all of bob"), ("out", "from bob's phone"), ("in", "from alice's laptop")]

    # The laptop is removed while offline. Before it hears of it, it sends:
    # bob refuses the message (its device is no longer on alice's list).
    alice.run("device", "remove", "laptop")
    assert [d["name"] for d in alice.json("device", "list")] == ["first device"]
    assert any("alice's devices changed: removed laptop" in n for n in notices(events(bob)))
    laptop.run("send", "bob", "sent by a removed device")
    refused = events(bob)
    assert texts(refused) == []
    assert any("not on alice's device list" in n for n in notices(refused))
    for device in (bob_laptop, bob_phone):
        assert texts(events(device)) == []
    bob.run("send", "alice", "after the removal")
    assert texts(events(alice)) == ["after the removal"]
    told = events(laptop)
    assert texts(told) == []
    assert any("This device was removed from alice's account" in n for n in notices(told))
    again = laptop.run("receive", check=False)
    assert again.returncode == 6 and "removed from alice's account" in again.stderr


def test_devices_benchmark_runs() -> None:
    """`python -m bench.devices` with two messages, so that it cannot rot."""
    import json
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-m", "bench.devices", "--messages", "2"],
                          cwd=repo, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["devices"] == {"alice": 2, "bob": 3}
    assert report["sync_to_other_device_ms"]["max"] > 0
