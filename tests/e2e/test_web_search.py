"""Message search in the web page: a real relay, two daemons, a real browser.

Bob sends alice more than a page of messages; in alice's page the search box
finds the matching ones (newest first, the words marked), and a click opens
the conversation at an old message, loading earlier pages until it is there.
`CHATCLI_WEB_SHOTS=docs/web-shots` keeps the screenshots docs/web.md shows."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from chatcli.daemon.sync_client import DaemonCliApi
from tests.e2e.conftest import Snapshot
from tests.e2e.test_daemon import DaemonProcess
from tests.e2e.test_web_browsers import Person, browser

pytestmark = pytest.mark.slow
__all__ = ["browser"]


def test_search_box_finds_and_jumps(saved_pair: Snapshot, tmp_path: Path, browser: Any
                                    ) -> None:
    shots = Path(os.environ.get("CHATCLI_WEB_SHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    alice_user, bob_user = saved_pair.restore(tmp_path)
    problems: list[str] = []
    bob = DaemonProcess(bob_user)
    alice = Person(alice_user, browser, problems)
    try:
        api = DaemonCliApi(bob_user.home / "daemon.sock")
        old = api.call("send", {"to": "alice", "text": "Our anniversary dinner is on "
                                "Friday at Chez Marcel, 8 pm"})["id"]
        for n in range(55):
            api.call("send", {"to": "alice", "text": f"filler message {n}", "queue": True})
        api.call("send", {"to": "alice", "text": "Is FRIDAY still fine for the meeting?"})
        # Open the chat only once everything arrived: then its first page (the
        # 50 newest) does not hold the old message, whatever the machine's load.
        mine = DaemonCliApi(alice_user.home / "daemon.sock")
        deadline = time.monotonic() + 30
        while [m["text"] for m in mine.call("history", {"contact": "bob", "limit": 1})] != [
                "Is FRIDAY still fine for the meeting?"]:
            assert time.monotonic() < deadline, "alice's daemon did not receive everything"
            time.sleep(0.1)
        page = alice.page
        alice.open("bob")
        page.locator(".bubble", has_text="still fine for the meeting").wait_for()

        box = page.get_by_role("searchbox", name="Search messages")
        box.fill("fri")
        results = page.locator(".search-hit")
        results.nth(1).wait_for()
        assert page.locator("#search-status").inner_text() == "2 messages"
        assert results.nth(0).locator(".search-snippet").inner_text() == (
            "Is FRIDAY still fine for the meeting?")
        assert results.nth(1).locator("mark").all_inner_texts() == ["Friday"]
        assert results.nth(0).locator(".name").inner_text() == "bob"
        page.screenshot(path=shots / "search.png")

        # The old message is not on the first page: the page loads earlier ones.
        assert page.locator(f'#message-list li[data-id="{old}"]').count() == 0
        results.nth(1).click()
        found = page.locator(f'#message-list li[data-id="{old}"].search-found')
        found.wait_for()
        assert found.is_visible()
        assert page.evaluate("""(id) => {
          const node = document.querySelector(`#message-list li[data-id="${id}"]`);
          const box = document.getElementById('messages').getBoundingClientRect();
          const r = node.getBoundingClientRect();
          return r.top >= box.top && r.bottom <= box.bottom; }""", old)
        page.screenshot(path=shots / "search-jump.png")

        box.fill("?!")
        page.locator("#search-status", has_text="Type a word to search for.").wait_for()
        box.fill("nothing matches this")
        page.locator("#search-status", has_text="No message matches.").wait_for()
        assert results.count() == 0
        box.press("Escape")
        page.locator("#search-panel").wait_for(state="hidden")
        assert problems == []
    finally:
        alice.close()
        bob.stop()
