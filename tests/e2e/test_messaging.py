"""Two and three users, one and two relays, offline delivery, restarts."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import CHATCLI, Pair, RelayProcess, User, _env, connect, next_message

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def friends(relay: RelayProcess, tmp_path_factory: pytest.TempPathFactory) -> tuple[User, User]:
    """Alice and Bob, connected once for the tests that do not change their state
    (each test receives everything it sends)."""
    root = tmp_path_factory.mktemp("friends")
    alice, bob = User("alice", root / "alice"), User("bob", root / "bob")
    alice.init(relay)
    bob.init(relay)
    connect(alice, bob)
    return alice, bob


def test_two_users_one_relay_both_directions(relay: RelayProcess, users: Any) -> None:
    alice, bob = users("alice", "bob")
    info = alice.init(relay)
    assert info["name"] == "alice" and info["relay"] == relay.url
    bob.init(relay)
    connect(alice, bob)
    assert [c["name"] for c in alice.json("contacts")] == ["bob"]
    assert [c["name"] for c in bob.json("contacts", "--offline")] == ["alice"]

    sent = alice.json("send", "bob", "hello bob")
    assert sent["stored"] is True
    got = bob.receive("--read-receipts")
    assert [(m["from"], m["text"], m["group"]) for m in got] == [("alice", "hello bob", None)]
    assert got[0]["id"] == sent["id"] and isinstance(got[0]["sent_at"], int)

    bob.run("send", "alice", "-", input="hi alice\n")
    assert alice.texts() == ["hi alice"]
    # Receipts: bob's receive --read-receipts showed alice's message, so alice
    # learns it was read.
    history = alice.lines("messages", "bob")
    assert [(h["direction"], h["text"]) for h in history] == [("out", "hello bob"),
                                                             ("in", "hi alice")]
    assert history[0]["state"] == "read"
    # Nothing is shown twice.
    assert bob.receive() == []
    # Safety numbers agree on both sides.
    a_num = alice.json("verify", "bob")["safety_number"]
    b_num = bob.json("verify", "alice")["safety_number"]
    assert a_num == b_num and len(a_num) == 60 and a_num.isdigit()
    assert alice.json("verify", "bob", "--confirm")["verified"] is True


def test_two_users_two_relays(tmp_path: Path, relay: RelayProcess, users: Any) -> None:
    other = RelayProcess(tmp_path / "relay2.db").start()
    try:
        alice, bob = users("alice", "bob")
        alice.init(relay)
        bob.init(other)
        connect(alice, bob)
        alice.run("send", "bob", "across relays")
        assert bob.texts() == ["across relays"]
        bob.run("send", "alice", "and back")
        assert alice.texts() == ["and back"]
    finally:
        other.stop()


def test_offline_delivery_across_relay_restart(pair: Pair) -> None:
    own, alice, bob = pair  # their relay is theirs alone
    try:
        for i in range(3):
            alice.run("send", "bob", f"while you were away {i}")
        own.restart()
        assert bob.texts() == [f"while you were away {i}" for i in range(3)]
        # The relay deleted them once acknowledged.
        own.restart()
        assert bob.receive() == []
    finally:
        own.stop()


def test_three_users_at_once(relay: RelayProcess, users: Any) -> None:
    alice, bob, carol = users("alice", "bob", "carol")
    for user in (alice, bob, carol):
        user.init(relay)
    connect(alice, bob)
    connect(alice, carol)
    connect(bob, carol)
    sends = [(alice, "bob"), (alice, "carol"), (bob, "alice"), (bob, "carol"),
             (carol, "alice"), (carol, "bob")]
    procs = []
    for sender, to in sends:
        env = _env({"CHATCLI_HOME": str(sender.home), "CHATCLI_PASSPHRASE": sender.passphrase})
        procs.append(subprocess.Popen([CHATCLI, "send", to, f"{sender.name} to {to}"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    for user in (alice, bob, carol):
        got = sorted((m["from"], m["text"]) for m in user.receive())
        others = sorted(u.name for u in (alice, bob, carol) if u is not user)
        assert got == [(o, f"{o} to {user.name}") for o in others]


def test_two_receivers_of_one_identity(friends: tuple[User, User]) -> None:
    alice, bob = friends
    env = _env({"CHATCLI_HOME": str(bob.home), "CHATCLI_PASSPHRASE": bob.passphrase})
    receivers = [subprocess.Popen([CHATCLI, "receive", "--json", "--wait", "4"], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
    for i in range(5):
        alice.run("send", "bob", f"m{i}")
    shown = []
    for proc in receivers:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        shown += [line for line in out.splitlines() if line.strip()]
    import json

    texts = [event["text"] for event in map(json.loads, shown) if event["type"] == "message"]
    texts += bob.texts()  # whatever arrived after both stopped waiting (slow machines)
    assert sorted(texts) == [f"m{i}" for i in range(5)]
    history = [h["text"] for h in bob.lines("messages", "alice", "--limit", "1000")]
    assert sorted(t for t in history if t in {f"m{i}" for i in range(5)}) == sorted(
        f"m{i}" for i in range(5))


def test_receive_wait_prints_as_messages_arrive(friends: tuple[User, User]) -> None:
    alice, bob = friends
    env = _env({"CHATCLI_HOME": str(bob.home), "CHATCLI_PASSPHRASE": bob.passphrase})
    proc = subprocess.Popen([CHATCLI, "receive", "--json", "--wait", "20"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        alice.run("send", "bob", "live")

        # arrives long before --wait ends
        assert next_message(proc.stdout)["text"] == "live"
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_attachment_and_profile(friends: tuple[User, User], tmp_path: Path) -> None:
    alice, bob = friends
    payload = bytes(range(256)) * 1000  # 256 kB: several blob chunks
    source = tmp_path / "data.bin"
    source.write_bytes(payload)
    alice.run("send", "bob", "--file", str(source), "the data")
    save = tmp_path / "saved"
    got = bob.receive("--save-dir", str(save))
    assert got[0]["text"] == "the data"
    saved = Path(got[0]["attachment"]["path"])
    assert saved.parent == save and saved.read_bytes() == payload
    # The history names the file on both sides, and where bob saved it.
    mine = alice.lines("messages", "bob")[-1]
    assert mine["attachment"] == {"name": "data.bin", "size": len(payload)}
    theirs = bob.lines("messages", "alice")[-1]
    assert theirs["attachment"] == {"name": "data.bin", "size": len(payload),
                                    "path": str(saved.resolve())}
    saved.unlink()  # gone from the disk: no path any more
    assert bob.lines("messages", "alice")[-1]["attachment"] == {"name": "data.bin",
                                                              "size": len(payload)}

    # Only an image is a profile picture (by its first bytes).
    not_image = tmp_path / "me.png"
    not_image.write_bytes(b"GIF88a is no image format")
    refused = alice.run("profile", "set", "--display-name", "Alice A.", "--avatar",
                        str(not_image), check=False)
    assert refused.returncode == 2 and "PNG, JPEG, GIF or WebP" in refused.stderr
    avatar = tmp_path / "me.png"
    avatar.write_bytes(b"\x89PNG\r\n\x1a\n fake image")
    alice.run("profile", "set", "--display-name", "Alice A.", "--status", "hi",
              "--avatar", str(avatar))
    # bob's client says a new profile came (a page shows the new picture at once).
    assert {"type": "profile", "contact": "alice"} in bob.events()
    shown = bob.json("profile", "show", "alice")
    assert shown == {"contact": "alice", "display_name": "Alice A.", "status": "hi",
                     "avatar_bytes": avatar.stat().st_size}
    assert alice.json("profile", "show")["display_name"] == "Alice A."


def test_init_without_fingerprint_pins_the_relay(relay: RelayProcess, users: Any) -> None:
    (carol,) = users("carol")
    bare = relay.url.split("#")[0]
    result = carol.run("init", "--name", "carol", "--relay", bare, "--json")
    assert "trusted on first use" in result.stderr
    import json

    assert json.loads(result.stdout)["relay"] == relay.url


def test_presence_and_contacts(pair: Pair) -> None:
    _relay, alice, bob = pair
    bob.run("receive")
    listed = alice.json("contacts")[0]
    assert listed["online"] is False and isinstance(listed["last_seen"], int)
    bob.run("presence", "--hide")
    assert bob.json("presence") == {"hidden": True}
    hidden = alice.json("contacts")[0]
    assert hidden["online"] is None and hidden["last_seen"] is None


def test_shell_completion_of_contact_names(friends: tuple[User, User]) -> None:
    alice, _bob = friends
    result = alice.run("send", "b", env={"_CHATCLI_COMPLETE": "bash_complete",
                                         "COMP_WORDS": "chatcli send b", "COMP_CWORD": "2",
                                         "CHATCLI_PASSPHRASE": ""})
    assert "plain,bob" in result.stdout.split()  # click's bash format: type,value


def test_receive_wait_reconnects_after_relay_restart(pair: Pair) -> None:
    own, alice, bob = pair  # their relay is theirs alone
    proc = None
    try:
        env = _env({"CHATCLI_HOME": str(bob.home), "CHATCLI_PASSPHRASE": bob.passphrase})
        proc = subprocess.Popen([CHATCLI, "receive", "--json", "--wait", "40"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        alice.run("send", "bob", "before the restart")
        assert next_message(proc.stdout)["text"] == "before the restart"
        own.restart()
        alice.run("send", "bob", "after the restart")
        assert next_message(proc.stdout)["text"] == "after the restart"
    finally:
        if proc is not None:
            proc.terminate()
            proc.communicate(timeout=10)
        own.stop()
