"""`chatcli chat` in a pseudo-terminal (pexpect, 80x24) against a real relay
process: live messages both ways, read marks, typing and presence, a relay
restart in the middle of the chat, Ctrl-D, and the exit code for a changed key."""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path
from typing import Any, TextIO

import pytest

from tests.e2e.conftest import CHATCLI, Pair, RelayProcess, User, _env

pexpect = pytest.importorskip("pexpect")

pytestmark = pytest.mark.slow


def spawn_chat(user: User, contact: str, log: TextIO) -> Any:
    env = _env({"CHATCLI_HOME": str(user.home), "CHATCLI_PASSPHRASE": user.passphrase,
                "TERM": "xterm",
                # No terminal emulator answers cursor position requests here.
                "PROMPT_TOOLKIT_NO_CPR": "1"})
    child = pexpect.spawn(CHATCLI, ["chat", contact], env=env, dimensions=(24, 80),
                          encoding="utf-8", timeout=15)
    child.logfile_read = log
    return child


def expect(child: Any, pattern: str, timeout: float = 15) -> None:
    try:
        child.expect(pattern, timeout=timeout)
    except (pexpect.TIMEOUT, pexpect.EOF) as exc:
        tail = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", child.before or "")[-1500:]
        raise AssertionError(f"{pattern!r} did not appear; the screen ended with:\n{tail}"
                             ) from exc


def leave(child: Any) -> int:
    child.sendcontrol("d")
    child.expect(pexpect.EOF, timeout=15)
    child.close()
    return int(child.exitstatus)


def test_chat_in_a_pty(tmp_path: Path, pair: Pair) -> None:
    started = time.monotonic()
    relay, alice, bob = pair  # their relay is theirs alone
    log = (tmp_path / "screens.log").open("w", encoding="utf-8")
    children: list[Any] = []
    try:
        alice.run("send", "bob", "earlier from alice")
        bob.run("send", "alice", "earlier from bob")  # alice has not fetched it yet

        chat = spawn_chat(alice, "bob", log)
        children.append(chat)
        expect(chat, "chat with bob")
        expect(chat, r"not verified: compare safety numbers with `chatcli verify bob`")
        expect(chat, "me: earlier from alice")
        expect(chat, "bob: earlier from bob")  # waiting at the relay, pushed on connect

        # Bob sends with the one-shot command: it appears at once.
        bob.run("send", "alice", "live from bob")
        expect(chat, "bob: live from bob")

        # Alice types a line: bob's `receive --json` gets it, and alice sees the mark.
        chat.send("hello from the chat\r")
        expect(chat, "me: hello from the chat")
        got = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "hello from the chat" not in got:
            got += [m["text"] for m in bob.receive()]
        assert "hello from the chat" in got
        expect(chat, r"✓✓? (delivered|read): \"hello from the chat\"")

        # Bob opens a chat too: alice sees him online, then typing, then his line.
        bob_chat = spawn_chat(bob, "alice", log)
        children.append(bob_chat)
        expect(bob_chat, "chat with alice")
        expect(bob_chat, "alice: hello from the chat")
        expect(chat, "online")
        bob_chat.send("a reply being typed")
        expect(chat, "typing")
        bob_chat.send("\r")
        expect(chat, "bob: a reply being typed")
        assert leave(bob_chat) == 0
        children.remove(bob_chat)
        expect(chat, "last se")  # presence follows bob leaving (the rest may be redrawn)

        # The relay goes away: the chat says so, keeps what is typed meanwhile,
        # and delivers it once the relay is back (same port, same database).
        relay.stop()
        expect(chat, "reconnecting")
        chat.send("typed while the relay was down\r")
        expect(chat, "me: typed while the relay was down")
        expect(chat, "1 pending")
        relay.start()
        expect(chat, "reconnected", timeout=25)
        expect(chat, r"✓ at bob's relay: \"typed while the relay was down\"")
        assert "typed while the relay was down" in [m["text"] for m in bob.receive()]

        assert leave(chat) == 0
        children.remove(chat)

        # A contact whose key changed: the chat refuses to start, exit code 4.
        with sqlite3.connect(alice.home / "chatcli.db") as db:
            db.execute("UPDATE contact SET key_changed = 1 WHERE name = 'bob'")
        refused = spawn_chat(alice, "bob", log)
        children.append(refused)
        expect(refused, "identity key of bob has changed")
        refused.expect(pexpect.EOF)
        refused.close()
        children.remove(refused)
        assert refused.exitstatus == 4
    finally:
        for child in children:
            child.close(force=True)
        relay.stop()
        log.close()
    assert time.monotonic() - started < 60


def test_chat_needs_a_terminal(tmp_path: Path, relay: RelayProcess, users: Any) -> None:
    (alice,) = users("alice")
    alice.init(relay)
    result = alice.run("chat", "nobody", check=False)
    assert result.returncode == 2
    assert "needs a terminal" in result.stderr
