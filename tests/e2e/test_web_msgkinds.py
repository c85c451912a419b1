"""Replies, reactions, edits and deletes in two real browsers, each on its own
daemon (real relay, real `chatcli daemon --web`). `CHATCLI_WEB_SHOTS=docs/web-shots`
keeps the screenshot docs/web.md shows (msgkinds.png)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import RelayProcess, connect
from tests.e2e.test_web_browsers import Person, browser  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow


def test_reply_react_edit_delete_in_the_page(relay: RelayProcess, users: Any,
                                             browser: Any, tmp_path: Path  # noqa: F811
                                             ) -> None:
    shots = Path(os.environ.get("CHATCLI_WEB_SHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    alice_user, bob_user = users("alice", "bob")
    alice_user.init(relay)
    bob_user.init(relay)
    connect(alice_user, bob_user)
    problems: list[str] = []
    alice = Person(alice_user, browser, problems)
    bob = Person(bob_user, browser, problems)
    try:
        alice.open("bob")
        bob.open("alice")
        alice.say("Lunch at noon?")
        alice.say("Or at one, at the usual place")
        theirs = bob.page.locator(".bubble.in", has_text="Lunch at noon?")
        theirs.wait_for()

        # bob replies to the first one: the quoted line shows in his composer, then in both pages.
        theirs.get_by_role("button", name="Reply").click()
        bob.page.get_by_role("status").filter(
            has_text="Replying to alice: Lunch at noon?").wait_for()
        bob.say("Yes! See you there.")
        reply = alice.page.locator(".bubble.in", has_text="See you there.")
        reply.locator(".quote", has_text="me: Lunch at noon?").wait_for()
        bob.page.locator(".bubble.out .quote", has_text="alice: Lunch at noon?").wait_for()

        # bob reacts 👍, then alice 🎉 to the same message: counts and names.
        theirs.get_by_role("button", name="React").click()
        bob.page.get_by_role("menuitem", name="React 👍").click()
        mine = alice.page.locator(".bubble.out", has_text="Lunch at noon?")
        mine.locator(".reaction", has_text="👍 1").wait_for()
        mine.get_by_role("button", name="React").click()
        alice.page.get_by_role("menuitem", name="React 🎉").click()
        theirs.locator(".reaction", has_text="🎉 1").wait_for()
        assert theirs.locator(".reaction", has_text="👍 1").get_attribute("title") == "me"

        # alice edits her second message; bob sees it edited.
        second = alice.page.locator(".bubble.out", has_text="Or at one")
        second.get_by_role("button", name="Edit").click()
        alice.page.get_by_role("status").filter(has_text="Editing your message").wait_for()
        alice.say("Or at one, at the new place")
        edited = bob.page.locator(".bubble.in", has_text="at the new place")
        edited.locator(".edited").wait_for()
        # Only own messages have Edit and Delete.
        assert theirs.get_by_role("button", name="Edit").count() == 0
        bob.page.screenshot(path=shots / "msgkinds.png")

        # alice deletes it for everyone: a tombstone in both pages.
        alice.page.once("dialog", lambda dialog: dialog.accept())
        alice.page.locator(".bubble.out", has_text="at the new place").get_by_role(
            "button", name="Delete for everyone").click()
        bob.page.locator(".bubble.in.tombstone", has_text="message deleted").wait_for()
        alice.page.locator(".bubble.out.tombstone", has_text="message deleted").wait_for()
        assert bob.page.locator(".bubble", has_text="at the new place").count() == 0
        history = {h["id"]: h for h in bob_user.lines("messages", "alice")}
        assert [h["text"] for h in history.values() if h["deleted"]] == ["message deleted"]
        assert problems == []
    finally:
        alice.close()
        bob.close()
