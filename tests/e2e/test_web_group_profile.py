"""The group's profile in the web page: an admin sets the name, description
and picture in the settings dialog; the header shows them, and a member's
`chatcli group info` gets them (real relay, daemon and browser)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import RelayProcess, connect
from tests.e2e.test_web_browsers import PICTURE_WIDTH, Person, browser, png  # noqa: F401

pytestmark = pytest.mark.slow


def test_an_admin_sets_the_group_profile_in_the_page(relay: RelayProcess, users: Any,
                                                     browser: Any, tmp_path: Path) -> None:  # noqa: F811
    alice_user, bob = users("alice", "bob")
    alice_user.init(relay)
    bob.init(relay)
    connect(alice_user, bob)
    bob.receive()
    alice_user.run("group", "create", "team", "--member", "bob")
    bob.receive()
    shots = Path(os.environ.get("CHATCLI_WEB_SHOTS", tmp_path))
    problems: list[str] = []
    alice = Person(alice_user, browser, problems)
    try:
        alice.open("team", group=True)
        alice.page.get_by_role("button", name="Group settings").click()
        dialog = alice.page.get_by_role("dialog", name="Group settings")
        dialog.get_by_label("Name").fill("Climbers")
        dialog.get_by_label("Description").fill("Saturdays at ten")
        picture = tmp_path / "logo.png"
        picture.write_bytes(png(300, 200, (40, 120, 200)))
        dialog.get_by_label("Picture (an image; it is resized to 128 pixels)").set_input_files(
            picture)
        alice.page.screenshot(path=shots / "group-settings.png")
        dialog.get_by_role("button", name="Save").click()
        alice.page.locator("#chat-name", has_text="Climbers").wait_for()
        alice.page.locator("#chat-presence", has_text="Saturdays at ten").wait_for()
        alice.page.wait_for_function(
            f"async () => (await ({PICTURE_WIDTH})('#chat-avatar')) === 128")
        alice.page.screenshot(path=shots / "group-header.png")
    finally:
        alice.close()
    assert problems == []
    bob.receive()
    info = bob.json("group", "info", "team")
    assert (info["title"], info["description"]) == ("Climbers", "Saturdays at ten")
    assert 0 < info["avatar_bytes"] <= 32 * 1024
