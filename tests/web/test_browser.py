"""The page in a real browser (Debian's chromium, driven by Playwright).

Skipped only when chromium is absent outside CI; `.ci/run` installs it.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from chatcli.errors import ChatcliError
from chatcli.web import WebServer

CHROMIUM = "/usr/bin/chromium"
# What chromium needs on these machines: no sandbox as root, and none of its
# own network traffic (the machine's network is closed).
CHROMIUM_ARGS = [
    "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]


class LockedError(ChatcliError):
    code = "locked"


class ScriptedApi:
    """A locked identity with one contact, unlocked by the passphrase ``correct horse``."""

    def __init__(self) -> None:
        self.locked = True
        self.calls: list[str] = []

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        self.calls.append(method)
        if method == "unlock":
            if params.get("passphrase") != "correct horse":
                raise ChatcliError("Wrong passphrase.")
            self.locked = False
            return {"unlocked": True}
        if self.locked:
            raise LockedError("chatcli is locked: unlock it with your passphrase.")
        answers: dict[str, Any] = {
            "status": {"name": "alice"},
            "contacts.list": [{"name": "bob", "online": True, "last_seen": None,
                               "verified": False, "key_changed": False, "blocked": False}],
            "groups.list": [],
            "history": [
                {"id": "m1", "from": "bob", "to": "alice", "direction": "in",
                 "text": "<img src=x onerror=alert(1)> see https://example.org/a?b=1.",
                 "sent_at": 1_700_000_000_000, "state": "received", "group": None},
                {"id": "m2", "from": "alice", "to": "bob", "direction": "out",
                 "text": "two\nlines", "sent_at": 1_700_000_060_000, "state": "read",
                 "group": None},
            ],
        }
        return answers.get(method, {})

    async def events(self, *, wait: float | None, read_receipts: bool) -> Any:
        await trio.sleep_forever()
        yield {}  # pragma: no cover - makes this an async generator


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[WebServer, ScriptedApi, trio.lowlevel.TrioToken]]:
    """The web server on a loopback port, in its own thread with its own trio loop."""
    api = ScriptedApi()
    server = WebServer(api, upload_dir=tmp_path / "up", download_dir=tmp_path / "down")
    ready = threading.Event()
    stop: dict[str, Any] = {}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            stop["cancel"] = nursery.cancel_scope.cancel
            stop["token"] = trio.lowlevel.current_trio_token()
            ready.set()

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield server, api, stop["token"]
    finally:
        trio.from_thread.run_sync(stop["cancel"], trio_token=stop["token"])
        thread.join(10)


@pytest.mark.slow
def test_page_loads_under_its_policy_unlocks_and_renders_text(
    served: tuple[WebServer, ScriptedApi, trio.lowlevel.TrioToken], tmp_path: Path
) -> None:
    if not shutil.which(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium; .ci/run does)")
    from playwright.sync_api import sync_playwright

    server, api, token = served
    shots = Path(os.environ.get("CHATCLI_WEB_SHOTS", tmp_path))
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 700})
            page.on("console", lambda m: m.type == "error" and problems.append(m.text))
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(trio.from_thread.run_sync(server.login_url, trio_token=token))
            # The unlock form, found by its label (accessible name).
            passphrase = page.locator("#unlock-page").get_by_label("Passphrase")
            passphrase.wait_for()
            assert page.url == f"http://127.0.0.1:{server.port}/"
            page.screenshot(path=shots / "unlock.png")
            passphrase.fill("wrong")
            page.get_by_role("button", name="Unlock").click()
            page.get_by_text("Wrong passphrase.").wait_for()
            passphrase.fill("correct horse")
            passphrase.press("Enter")
            page.get_by_role("button", name="bob").click()
            page.locator(".bubble").first.wait_for()
            bubbles = page.locator(".bubble .text")
            # Markup in a message is shown as text, and a link is a plain anchor.
            assert bubbles.nth(0).inner_text().startswith("<img src=x onerror=alert(1)> see ")
            assert page.locator(".bubble img").count() == 0
            link = page.get_by_role("link", name="https://example.org/a?b=1")
            assert link.get_attribute("rel") == "noopener noreferrer"
            assert bubbles.nth(1).inner_text() == "two\nlines"
            assert page.get_by_role("textbox", name="Message").is_visible()
            page.screenshot(path=shots / "chat.png")
            page.set_viewport_size({"width": 390, "height": 760})
            page.emulate_media(color_scheme="dark")
            page.screenshot(path=shots / "chat-phone-dark.png")
        finally:
            browser.close()
    assert problems == []
    assert api.calls[:2] == ["status", "unlock"]
