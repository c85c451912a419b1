"""`chatcli chat` through a running daemon (issue 11), in pseudo-terminals.

Two chat windows of alice on bob, with alice's daemon running and no
passphrase anywhere: both see bob's messages, each other's lines and a
`chatcli send` from a third terminal as alice's own; bob gets what she types;
a `receive --json` run meanwhile gets none of the conversation the windows
took, but carol's message waits for it; when the daemon stops, each window
ends with one line and exit code 1."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import CHATCLI, Pair, RelayProcess, User, _env, connect
from tests.e2e.test_chat_pty import expect, leave
from tests.e2e.test_daemon import DaemonProcess, events_of, no_passphrase

pexpect = pytest.importorskip("pexpect")

pytestmark = pytest.mark.slow

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")


def spawn_window(user: User, contact: str, log: Path) -> Any:
    """`chatcli chat CONTACT` with no passphrase: only the daemon can serve it."""
    env = _env({"CHATCLI_HOME": str(user.home), "TERM": "xterm",
                "PROMPT_TOOLKIT_NO_CPR": "1"})
    child = pexpect.spawn(CHATCLI, ["chat", contact], env=env, dimensions=(24, 80),
                          encoding="utf-8", timeout=15)
    child.logfile_read = log.open("w", encoding="utf-8", buffering=1)
    return child


def screen(child: Any) -> str:
    """Everything the window printed so far, without escape sequences."""
    child.logfile_read.flush()
    return ANSI.sub("", Path(child.logfile_read.name).read_text(encoding="utf-8"))


def test_two_chat_windows_a_send_and_a_receive_through_the_daemon(
        tmp_path: Path, relay: RelayProcess, users: Any) -> None:
    alice, bob, carol = users("alice", "bob", "carol")
    for user in (alice, bob, carol):
        user.init(relay)
    connect(alice, bob)
    connect(alice, carol)
    alice.run("send", "bob", "before the daemon")
    daemon = DaemonProcess(alice)
    windows: list[Any] = []
    logs = []
    try:
        for n in (1, 2):
            window = spawn_window(alice, "bob", tmp_path / f"window{n}.log")
            windows.append(window)
            logs.append(window.logfile_read)
            expect(window, "chat with bob")
            expect(window, "me: before the daemon")
            expect(window, "── now ──")  # subscribed before the history was read
        one, two = windows

        bob.run("send", "alice", "hello both windows")
        for window in windows:
            expect(window, "bob: hello both windows")

        one.send("typed in window one\r")
        expect(two, "me: typed in window one")
        assert "typed in window one" in bob.texts()
        for window in windows:  # bob's delivery receipt reaches both
            expect(window, r"✓✓ (delivered|read): \"typed in window one\"")

        sent = no_passphrase(alice, "send", "bob", "from a third terminal")
        assert sent.returncode == 0, sent.stderr
        for window in windows:
            expect(window, "me: from a third terminal")
        # The window that sent it showed it once, the other once too.
        for window in windows:
            assert screen(window).count("me: typed in window one") == 1

        carol.run("send", "alice", "for the receive")
        bob.run("send", "alice", "second from bob")
        for window in windows:
            expect(window, "bob: second from bob")
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + 15
        while not any(e.get("text") == "for the receive" for e in got):
            assert time.monotonic() < deadline, got
            got += events_of(no_passphrase(alice, "receive", "--json"))
        # bob's conversation went to the windows: none of it waits for receive.
        assert [e for e in got if "bob" in (e.get("from"), e.get("to"), e.get("contact"))] == []
        assert [e["text"] for e in got if e["type"] == "message"] == ["for the receive"]
        for window in windows:
            assert "for the receive" not in screen(window)

        # Leaving one window leaves the other chatting.
        assert leave(two) == 0
        windows.remove(two)
        bob.run("send", "alice", "after window two left")
        expect(one, "bob: after window two left")

        daemon.stop()
        expect(one, "The chatcli daemon went away, so the chat ended")
        one.expect(pexpect.EOF, timeout=15)
        one.close()
        windows.remove(one)
        assert one.exitstatus == 1
    finally:
        for window in windows:
            window.close(force=True)
        daemon.stop()
        for log in logs:
            log.close()


def test_chat_through_the_daemon_refuses_like_direct_mode(pair: Pair, tmp_path: Path) -> None:
    """An unknown contact (exit 2) and a changed key (exit 4): the same screen
    and exit code through the daemon as directly."""
    import sqlite3

    _relay, alice, _bob = pair
    with sqlite3.connect(alice.home / "chatcli.db") as db:
        db.execute("UPDATE contact SET key_changed = 1 WHERE name = 'bob'")

    def run_chat(contact: str, passphrase: bool) -> tuple[int, str]:
        env = {"CHATCLI_HOME": str(alice.home), "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"}
        if passphrase:
            env["CHATCLI_PASSPHRASE"] = alice.passphrase
        log = (tmp_path / f"{contact}-{passphrase}.log").open("w", encoding="utf-8")
        child = pexpect.spawn(CHATCLI, ["chat", contact], env=_env(env), dimensions=(24, 80),
                              encoding="utf-8", timeout=20, logfile=None)
        child.logfile_read = log
        child.expect(pexpect.EOF)
        child.close()
        text = screen(child).strip()
        log.close()
        return int(child.exitstatus), text

    direct = [run_chat(name, True) for name in ("nobody", "bob")]
    assert [code for code, _ in direct] == [2, 4]
    assert "identity key of bob has changed" in direct[1][1]
    daemon = DaemonProcess(alice)
    try:
        assert [run_chat(name, False) for name in ("nobody", "bob")] == direct
    finally:
        daemon.stop()


def test_a_group_chat_window_through_the_daemon(tmp_path: Path, relay: RelayProcess,
                                                users: Any) -> None:
    """A window on group team takes team's messages, a window on bob does not
    (bob's message in the group belongs to the group); what alice types in the
    group window reaches both members."""
    from tests.e2e.test_groups import group_texts, make_group

    alice, bob, carol = users("alice", "bob", "carol")
    for user in (alice, bob, carol):
        user.init(relay)
    connect(alice, bob)
    connect(alice, carol)
    bob.receive()
    carol.receive()
    make_group(alice, bob, carol)
    daemon = DaemonProcess(alice)
    windows: list[Any] = []
    logs = []
    try:
        for name in ("team", "bob"):
            window = spawn_window(alice, name, tmp_path / f"{name}.log")
            windows.append(window)
            logs.append(window.logfile_read)
            expect(window, "chat in group team ── with bob, carol" if name == "team"
                   else "chat with bob")
            expect(window, "(no messages with|── now ──)")
        team, with_bob = windows

        bob.run("send", "team", "to the whole team")
        expect(team, "bob: to the whole team")
        team.send("alice to the team\r")
        expect(team, "me: alice to the team")
        assert ("team", "alice", "alice to the team") in group_texts(carol)
        assert ("team", "alice", "alice to the team") in group_texts(bob)
        bob.run("send", "alice", "only to alice")
        expect(with_bob, "bob: only to alice")
        assert "to the whole team" not in screen(with_bob)
        assert "only to alice" not in screen(team)
        got = events_of(no_passphrase(alice, "receive", "--json"))
        assert [e for e in got if e["type"] in ("message", "sent")] == []
        for window in windows:
            assert leave(window) == 0
        windows.clear()
    finally:
        for window in windows:
            window.close(force=True)
        daemon.stop()
        for log in logs:
            log.close()


def test_a_daemon_that_holds_the_home_but_does_not_answer_refuses_the_chat(
        tmp_path: Path) -> None:
    """No socket answers, but the daemon lock is held (a daemon starting or
    stuck): a direct chat would deliver from the same outbox, so it is refused."""
    import fcntl
    import os

    home = tmp_path / "alice"
    home.mkdir()
    fd = os.open(home / "daemon.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b"4242\n")
        child = pexpect.spawn(CHATCLI, ["chat", "bob"], encoding="utf-8", timeout=20,
                              env=_env({"CHATCLI_HOME": str(home), "TERM": "xterm"}))
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 2
        assert "daemon (pid 4242) runs for this identity" in (child.before or "")
    finally:
        os.close(fd)
