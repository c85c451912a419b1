"""Two people, each with a daemon serving the web page, each in a real browser.

Real processes: a relay, two `chatcli daemon --web 0`; each browser logs in
through the link `chatcli web --no-browser` prints. In the pages: an invite
made by alice is accepted by bob, messages go both ways in real time with
delivered/read marks and a typing indicator, an image shows a preview on the
other side, and bob's profile picture shows in alice's page.
`CHATCLI_WEB_SHOTS=docs/web-shots` keeps the screenshots docs/web.md shows.
"""

from __future__ import annotations

import os
import shutil
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import RelayProcess, User, connect
from tests.e2e.test_daemon import DaemonProcess, no_passphrase
from tests.e2e.test_web_daemon import status, web_json
from tests.web.test_browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.slow
TIMEOUT_MS = 20_000


def png(width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    """A small PNG: a diagonal gradient from ``colour`` (no imaging library needed)."""
    rows = b"".join(
        b"\x00" + b"".join(bytes(min(255, c + x + y // 2) for c in colour) for x in range(width))
        for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


# The width of the picture shown as an element's background (a blob: URL), or 0.
PICTURE_WIDTH = """async (selector) => {
  const node = document.querySelector(selector);
  const found = node && node.style.backgroundImage.match(/url\\("(blob:[^"]+)"\\)/);
  if (!found) return 0;
  const image = new Image();
  image.src = found[1];
  try { await image.decode(); } catch { return 0; }
  return image.naturalWidth;
}"""


@pytest.fixture
def browser() -> Iterator[Any]:
    if not shutil.which(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium; .ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


class Person:
    """One user: a daemon serving the page, and a browser tab logged in to it."""

    def __init__(self, user: User, browser: Any, problems: list[str]) -> None:
        self.user = user
        self.daemon = DaemonProcess(user, "--web", "0")
        self.context = browser.new_context(viewport={"width": 960, "height": 600})
        self.context.set_default_timeout(TIMEOUT_MS)
        self.page = self.context.new_page()
        self.page.on("console", lambda m: m.type == "error" and problems.append(
            f"{user.name}: {m.text}"))
        self.page.on("pageerror", lambda e: problems.append(f"{user.name}: {e}"))
        login = web_json(user)
        self.page.goto(login["url"])
        assert self.page.url == login["page"]
        self.page.get_by_role("button", name="Invite", exact=True).wait_for()

    def conversation(self, name: str) -> Any:
        return self.page.locator(".conversation", has_text=name)

    def open(self, name: str, *, group: bool = False) -> None:
        self.conversation(f"{name} (group)" if group else name).click()
        self.page.locator("#chat-name", has_text=name).wait_for()

    def say(self, text: str) -> None:
        box = self.page.get_by_role("textbox", name="Message")
        box.fill(text)
        box.press("Enter")

    def close(self) -> None:
        self.context.close()
        self.daemon.stop()


def test_two_people_chat_in_two_browsers(relay: RelayProcess, users: Any, browser: Any,
                                         tmp_path: Path) -> None:
    shots = Path(os.environ.get("CHATCLI_WEB_SHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    alice_user, bob_user = users("alice", "bob")
    alice_user.init(relay)
    bob_user.init(relay)
    problems: list[str] = []
    alice = Person(alice_user, browser, problems)
    bob = Person(bob_user, browser, problems)
    try:
        # alice invites; the dialog shows the link and its QR code.
        alice.page.get_by_role("button", name="Invite", exact=True).click()
        invite = alice.page.get_by_role("dialog", name="Invite someone")
        link_box = invite.get_by_label("Invite link")
        link_box.wait_for()
        link = link_box.input_value()
        assert link.startswith("chatcli:")
        qr = invite.get_by_role("img", name="QR code of the invite link")
        qr.wait_for()
        alice.page.wait_for_function(
            "() => { const i = document.getElementById('invite-qr');"
            " return i.complete && i.naturalWidth > 0; }")
        alice.page.screenshot(path=shots / "invite.png")
        invite.get_by_role("button", name="Done").click()

        # bob pastes it.
        bob.page.get_by_role("button", name="Accept invite").click()
        accept = bob.page.get_by_role("dialog", name="Accept an invite")
        accept.get_by_label("Invite link").fill(link)
        accept.get_by_label("Name for this contact").fill("alice")
        accept.get_by_role("button", name="Accept", exact=True).click()
        bob.page.locator("#chat-name", has_text="alice").wait_for()
        # alice's page learns of bob from the handshake, without a reload.
        alice.conversation("bob").wait_for()
        alice.open("bob")

        # Real time, both ways, with marks.
        alice.say("Hello bob, this is the web page.")
        bob.page.locator(".bubble.in .text", has_text="Hello bob, this is the web page.").wait_for()
        # bob's page shows it, so bob's daemon sends a read receipt.
        alice.page.locator('.bubble.out .state[aria-label="read"]').wait_for()
        bob.page.get_by_role("textbox", name="Message").press_sequentially("Hi al")
        alice.page.get_by_text("bob is typing…").wait_for()
        bob.say("Hi alice! Both ways, in real time.")
        alice.page.locator(".bubble.in .text", has_text="Both ways, in real time.").wait_for()
        bob.page.locator('.bubble.out .state[aria-label="read"]').wait_for()

        # Both compare the safety number; alice marks bob verified.
        numbers = []
        for person in (alice, bob):
            person.page.get_by_role("button", name="Safety number").click()
            dialog = person.page.get_by_role("dialog", name="Safety number")
            digits = dialog.locator("#verify-number")
            person.page.wait_for_function(
                "() => document.getElementById('verify-number').textContent.length >= 60")
            numbers.append(digits.inner_text().split())
            assert dialog.get_by_role("img", name="QR code of the safety number").is_visible()
            if person is alice:
                dialog.get_by_role("button", name="Mark verified").click()
                dialog.get_by_text("✓ Verified").wait_for()
            dialog.get_by_role("button", name="Close").click()
        assert numbers[0] == numbers[1] and len(numbers[0]) == 12
        assert [c["verified"] for c in alice_user.json("contacts")] == [True]

        # An image: a preview on both sides.
        picture = tmp_path / "sunset.png"
        picture.write_bytes(png(96, 64, (200, 90, 40)))
        alice.page.locator("#attach").set_input_files(picture)
        preview = bob.page.locator(".bubble.in img.preview")
        preview.wait_for()
        bob.page.wait_for_function(
            "() => { const i = document.querySelector('.bubble.in img.preview');"
            " return i && i.complete && i.naturalWidth === 96; }")
        assert bob.page.get_by_role("link", name="sunset.png").get_attribute(
            "href").startswith("/files?path=")
        alice.page.locator(".bubble.out img.preview").wait_for()
        alice.say("A sunset, for you: https://example.org/sunset")
        bob.page.locator(".bubble.in .text", has_text="A sunset").wait_for()
        bob.page.screenshot(path=shots / "chat-view.png")

        # bob's profile picture, set in his page, shows in alice's.
        bob.page.get_by_role("button", name="Profile").click()
        bob.page.get_by_label("Display name").fill("Bob B.")
        bob.page.get_by_label("Status").fill("Out sailing")
        face = tmp_path / "bob.png"
        face.write_bytes(png(128, 128, (30, 110, 160)))
        bob.page.locator("#profile-avatar-file").set_input_files(face)
        bob.page.wait_for_function(
            "() => document.getElementById('profile-avatar').style.backgroundImage !== ''")
        bob.page.screenshot(path=shots / "profile.png")
        bob.page.get_by_role("button", name="Save").click()
        bob.page.get_by_role("dialog").wait_for(state="hidden")
        # alice's page shows it without a reload (a `profile` event), in the
        # chat header and the list.
        alice.page.wait_for_function(
            "() => document.getElementById('chat-avatar').style.backgroundImage"
            ".startsWith('url(\"blob:')")
        alice.conversation("bob").locator(".avatar[style*='blob:']").wait_for()
        assert alice.page.wait_for_function(PICTURE_WIDTH, arg="#chat-avatar").json_value() == 128
        # A second new picture (64 pixels wide) replaces the first, still without a reload.
        other = tmp_path / "bob-2.png"
        other.write_bytes(png(64, 64, (160, 40, 90)))
        bob.page.get_by_role("button", name="Profile").click()
        bob.page.get_by_role("dialog", name="Your profile").wait_for()
        bob.page.wait_for_function(PICTURE_WIDTH, arg="#profile-avatar")
        bob.page.locator("#profile-avatar-file").set_input_files(other)
        bob.page.wait_for_function(f"async (s) => await ({PICTURE_WIDTH})(s) === 64",
                                   arg="#profile-avatar")
        # The dialog lists bob's devices: this one alone, which cannot remove itself.
        devices = bob.page.locator("#device-list li")
        devices.first.wait_for()
        assert devices.all_inner_texts() == ["first device (this device)"]
        assert bob.page.locator("#device-list button").count() == 0
        # The same dialog turns read receipts off and hides bob's presence.
        receipts = bob.page.get_by_label("Send read receipts")
        presence = bob.page.get_by_label("Show contacts when I am online")
        assert receipts.is_checked() and presence.is_checked()
        receipts.uncheck()
        presence.uncheck()
        bob.page.get_by_role("button", name="Save").click()
        bob.page.get_by_role("dialog").wait_for(state="hidden")
        settings = bob_user.json("account", "settings")  # through bob's daemon
        assert (settings["read_receipts"], settings["presence_hidden"]) == (False, True)
        alice.page.wait_for_function(f"async (s) => await ({PICTURE_WIDTH})(s) === 64",
                                     arg="#chat-avatar")
        alice.page.wait_for_function(f"async (s) => await ({PICTURE_WIDTH})(s) === 64",
                                     arg=".conversation .avatar")
        alice.page.locator(".bubble", has_text="A sunset").wait_for()
        alice.page.screenshot(path=shots / "conversations.png")

        # After a reload the history still shows the picture alice sent: its
        # preview and download link on bob's side, its name on alice's.
        for person in (alice, bob):
            person.page.reload()
            person.open("bob" if person is alice else "alice")
        bob.page.wait_for_function(
            "() => { const i = document.querySelector('.bubble.in img.preview');"
            " return i && i.complete && i.naturalWidth === 96; }")
        assert bob.page.get_by_role("link", name="sunset.png").get_attribute(
            "href").startswith("/files?path=")
        alice.page.locator(".bubble.out .file", has_text="sunset.png").wait_for()
        assert bob.page.locator(".bubble .file", has_text="a file").count() == 0
        bob.page.set_viewport_size({"width": 390, "height": 700})
        bob.page.emulate_media(color_scheme="dark")
        bob.page.screenshot(path=shots / "phone-dark.png")
    finally:
        alice.close()
        bob.close()
    assert problems == []


def test_a_group_of_three_in_three_browsers(relay: RelayProcess, users: Any, browser: Any,
                                            tmp_path: Path) -> None:
    shots = Path(os.environ.get("CHATCLI_WEB_SHOTS", tmp_path))
    alice_user, bob_user, carol_user = users("alice", "bob", "carol")
    for user in (alice_user, bob_user, carol_user):
        user.init(relay)
    # alice knows bob and carol; bob and carol do not know each other.
    connect(alice_user, bob_user)
    connect(alice_user, carol_user)
    problems: list[str] = []
    people = [Person(u, browser, problems) for u in (alice_user, bob_user, carol_user)]
    alice, bob, carol = people
    try:
        alice.page.get_by_role("button", name="New group").click()
        dialog = alice.page.get_by_role("dialog", name="New group")
        dialog.get_by_label("Group name").fill("sailing")
        dialog.get_by_label("bob").check()
        dialog.get_by_label("carol").check()
        dialog.get_by_role("button", name="Create").click()
        alice.page.locator("#chat-name", has_text="sailing").wait_for()
        # bob's and carol's daemons join on their own; their pages list the group.
        for person in (bob, carol):
            person.conversation("sailing (group)").wait_for()
            person.open("sailing", group=True)
        # Once everyone holds everyone's group key, messages go round.
        members = alice.page.get_by_role("dialog", name="Members")
        joined = members.locator("#members-list li")
        for _ in range(100):
            alice.page.get_by_role("button", name="Members").click()
            joined.first.wait_for()
            count = joined.count()
            members.get_by_role("button", name="Close").click()
            if count == 3:
                break
            alice.page.wait_for_timeout(200)
        assert count == 3
        alice.say("Who is coming on Saturday?")
        for person in (bob, carol):
            person.page.locator(".bubble.in", has_text="Who is coming on Saturday?").wait_for()
        carol.say("Me, with a cake.")
        for person in (alice, bob):
            bubble = person.page.locator(".bubble.in", has_text="Me, with a cake.")
            bubble.wait_for()
            assert bubble.locator(".from").inner_text() == "carol"
        bob.page.screenshot(path=shots / "group.png")
        # A picture in the group from carol, whom bob only knows as a member
        # (her file is fetched from her relay, named in the group's member
        # records): a preview for everyone, and after a reload too (the
        # group's history).
        cake = tmp_path / "cake.png"
        cake.write_bytes(png(80, 60, (220, 160, 60)))
        carol.page.locator("#attach").set_input_files(cake)
        shown = ("() => { const i = document.querySelector('.bubble.in img.preview');"
                 " return i && i.complete && i.naturalWidth === 80; }")
        for person in (alice, bob):
            person.page.wait_for_function(shown)
        bob.page.reload()
        bob.open("sailing", group=True)
        bob.page.wait_for_function(shown)
        assert bob.page.get_by_role("link", name="cake.png").is_visible()
    finally:
        for person in people:
            person.close()
    assert problems == []


def test_a_locked_daemon_is_unlocked_and_locked_in_the_page(
    relay: RelayProcess, users: Any, browser: Any, tmp_path: Path
) -> None:
    shots = Path(os.environ.get("CHATCLI_WEB_SHOTS", tmp_path))
    (alice,) = users("alice")
    alice.init(relay)
    # No terminal, no passphrase anywhere: the daemon starts locked.
    login = web_json(alice)
    problems: list[str] = []
    context = browser.new_context(viewport={"width": 960, "height": 600})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.on("console", lambda m: m.type == "error" and problems.append(m.text))
    page.on("pageerror", lambda e: problems.append(str(e)))
    try:
        assert status(alice)["locked"] is True
        refused = no_passphrase(alice, "contacts")
        assert refused.returncode == 1 and "locked" in refused.stderr
        page.goto(login["url"])
        passphrase = page.get_by_label("Passphrase", exact=True)
        passphrase.wait_for()
        page.screenshot(path=shots / "unlock.png")
        passphrase.fill("not the passphrase")
        page.get_by_role("button", name="Unlock").click()
        page.get_by_text("The passphrase is wrong").wait_for()
        assert status(alice)["locked"] is True
        passphrase.fill(alice.passphrase)
        passphrase.press("Enter")
        page.get_by_role("button", name="Invite", exact=True).wait_for()
        unlocked = status(alice)
        assert unlocked["locked"] is False and unlocked["name"] == "alice"
        assert no_passphrase(alice, "contacts").returncode == 0

        page.get_by_role("button", name="Lock").click()
        passphrase.wait_for()
        assert status(alice)["locked"] is True
        assert no_passphrase(alice, "contacts").returncode == 1
        passphrase.fill(alice.passphrase)
        passphrase.press("Enter")
        page.get_by_role("button", name="Invite", exact=True).click()
        assert page.get_by_role("dialog", name="Invite someone").get_by_label(
            "Invite link").input_value().startswith("chatcli:")
    finally:
        context.close()
        no_passphrase(alice, "daemon", "stop")
    assert problems == []


def test_a_new_user_creates_an_identity_in_the_page(
    relay: RelayProcess, users: Any, browser: Any, tmp_path: Path
) -> None:
    shots = Path(os.environ.get("CHATCLI_WEB_SHOTS", tmp_path))
    (dana,) = users("dana")
    assert not (dana.home / "keystore").exists()
    # Nothing in CHATCLI_HOME yet: `chatcli web` starts a daemon on the empty home.
    login = web_json(dana)
    running = status(dana)
    assert running["identity"] is False and running["locked"] is True
    problems: list[str] = []
    context = browser.new_context(viewport={"width": 960, "height": 760})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.on("console", lambda m: m.type == "error" and problems.append(m.text))
    page.on("pageerror", lambda e: problems.append(str(e)))
    try:
        page.goto(login["url"])
        page.get_by_label("Your name").fill("dana")
        # A relay address whose fingerprint is not the relay's key.
        base, fingerprint = relay.url.split("#")
        wrong = fingerprint[:-1] + ("a" if fingerprint[-1] != "a" else "b")
        page.get_by_label("Relay address").fill(f"{base}#{wrong}")
        passphrase = page.get_by_label("New passphrase", exact=True)
        passphrase.fill("short")
        page.get_by_text("Too short").wait_for()
        passphrase.fill(dana.passphrase)
        page.get_by_label("New passphrase again").fill(dana.passphrase)
        hint = page.locator("#register-strength").inner_text()
        assert hint.split(":")[0] in ("Weak", "Fair", "Strong")
        page.screenshot(path=shots / "register.png")
        page.get_by_role("button", name="Create my identity").click()
        error = page.locator("#register-error")
        error.filter(has_text="fingerprint").wait_for()
        assert status(dana)["identity"] is False
        page.get_by_label("Relay address").fill(relay.url)
        page.get_by_role("button", name="Create my identity").click()
        page.get_by_role("button", name="Invite", exact=True).wait_for()
        created = status(dana)
        assert created["identity"] is True and created["locked"] is False
        assert created["name"] == "dana"
        assert no_passphrase(dana, "contacts").returncode == 0
    finally:
        context.close()
        no_passphrase(dana, "daemon", "stop")
    assert problems == []
    # The identity is a normal one: the passphrase opens it without a daemon.
    assert dana.json("account", "settings")["name"] == "dana"


def test_a_changed_key_blocks_sending_until_the_user_decides(
    relay: RelayProcess, users: Any, browser: Any, tmp_path: Path
) -> None:
    shots = Path(os.environ.get("CHATCLI_WEB_SHOTS", tmp_path))
    alice_user, bob_user = users("alice", "bob")
    alice_user.init(relay)
    bob_user.init(relay)
    connect(alice_user, bob_user)
    problems: list[str] = []
    alice = Person(alice_user, browser, problems)
    try:
        alice.open("bob")
        alice.say("Before the change")
        alice.page.locator('.bubble.out .state[aria-label="sent"]').wait_for()
        banner = alice.page.get_by_role("alert").filter(has_text="This contact's key changed")
        assert not banner.is_visible()
        # Someone with a new key accepts an invite alice labelled "bob"
        # (tests/e2e/test_trust.py): a real key change, while the page is open.
        impostor = User("bob", bob_user.home.parent / "bob-impostor")
        impostor.init(relay)
        link = alice_user.run("invite", "--name", "bob").stdout.strip()
        impostor.run("accept", link, "--name", "alice")
        banner.wait_for()
        box = alice.page.get_by_role("textbox", name="Message")
        assert box.is_disabled()
        assert alice.page.get_by_role("button", name="Send").is_disabled()
        assert alice.page.locator("#attach").is_disabled()
        alice.conversation("bob").get_by_text("key changed").wait_for()
        alice.page.screenshot(path=shots / "key-changed.png")
        # The daemon refuses too (a terminal or another page): nothing is sent.
        refused = no_passphrase(alice_user, "send", "bob", "sneaking past the page")
        assert refused.returncode == 4

        # alice reviews the new safety number and refuses the key.
        banner.get_by_role("button", name="Review the safety number").click()
        dialog = alice.page.get_by_role("dialog", name="Safety number")
        dialog.get_by_text("The key changed").wait_for()
        dialog.get_by_role("button", name="Refuse the new key").click()
        dialog.get_by_role("button", name="Refuse the new key").wait_for(state="hidden")
        dialog.get_by_role("button", name="Close").click()
        banner.wait_for(state="hidden")
        assert box.is_enabled()
        alice.say("That was not you")
        alice.page.locator(".bubble.out", has_text="That was not you").locator(
            '.state[aria-label="sent"]').wait_for()
        assert bob_user.texts()[-1] == "That was not you"

        # A second impostor; this time alice decides in a terminal, and the
        # open page takes the banner down by itself (a `contact` event).
        second = User("bob", bob_user.home.parent / "bob-impostor-2")
        second.init(relay)
        second.run("accept", alice_user.run("invite", "--name", "bob").stdout.strip(),
                   "--name", "alice")
        banner.wait_for()
        assert box.is_disabled()
        decided = alice_user.run("verify", "bob", "--reject")  # through the daemon
        assert decided.returncode == 0
        banner.wait_for(state="hidden")
        assert box.is_enabled()
    finally:
        alice.close()
    assert problems == []


# Every control of the page must have a name a screen reader can say: its
# <label>, aria-label / aria-labelledby, its text, an image's alt, or a title.
UNNAMED_CONTROLS = """() => {
  const named = (node) => {
    if (node.getAttribute('aria-label')) return true;
    const by = node.getAttribute('aria-labelledby');
    if (by && by.split(/\\s+/).some((id) => {
      const target = document.getElementById(id);
      return target && target.textContent.trim();
    })) return true;
    if (node.labels && [...node.labels].some((l) => l.textContent.trim()
        || l.querySelector('img[alt]:not([alt=""])'))) return true;
    if (node.tagName === 'BUTTON' && (node.textContent.trim()
        || node.querySelector('img[alt]:not([alt=""])'))) return true;
    return Boolean(node.getAttribute('title'));
  };
  return [...document.querySelectorAll('input, button, select, textarea, dialog')]
    .filter((node) => !named(node))
    .map((node) => node.outerHTML.slice(0, 120));
}"""


def test_keyboard_labels_phone_size_and_themes(
    relay: RelayProcess, users: Any, browser: Any, tmp_path: Path
) -> None:
    shots = Path(os.environ.get("CHATCLI_WEB_SHOTS", tmp_path))
    alice_user, bob_user = users("alice", "bob")
    alice_user.init(relay)
    bob_user.init(relay)
    connect(alice_user, bob_user)
    bob_user.run("send", "alice", "Are you there? Try the page on your phone.")
    problems: list[str] = []
    alice = Person(alice_user, browser, problems)
    try:
        page = alice.page
        page.locator(".conversation", has_text="Are you there?").wait_for()
        # Keyboard only: Tab from the search field reaches the conversation,
        # Enter opens it, Tab reaches the composer, Enter sends.
        page.get_by_role("searchbox", name="Search contacts").focus()
        for _ in range(10):
            page.keyboard.press("Tab")
            if page.evaluate("() => document.activeElement.classList.contains('conversation')"):
                break
        page.keyboard.press("Enter")
        page.locator("#chat-name", has_text="bob").wait_for()
        box = page.get_by_role("textbox", name="Message")
        page.get_by_role("button", name="Safety number").focus()
        for _ in range(10):
            page.keyboard.press("Tab")
            if page.evaluate("() => document.activeElement.id === 'message-text'"):
                break
        assert page.evaluate("() => document.activeElement.id") == "message-text"
        page.keyboard.type("Typed with the keyboard only")
        page.keyboard.press("Enter")
        page.locator(".bubble.out", has_text="Typed with the keyboard only").wait_for()
        assert box.input_value() == ""
        # Shift+Enter is a new line, not a send.
        page.keyboard.type("two")
        page.keyboard.press("Shift+Enter")
        page.keyboard.type("lines")
        assert box.input_value() == "two\nlines"
        box.fill("")
        # Escape closes a dialog and gives the focus back.
        page.get_by_role("button", name="Invite", exact=True).press("Enter")
        invite = page.get_by_role("dialog", name="Invite someone")
        invite.wait_for()
        page.keyboard.press("Escape")
        invite.wait_for(state="hidden")
        # Every input, button and dialog has an accessible name, in each view.
        assert page.evaluate(UNNAMED_CONTROLS) == []
        page.get_by_role("button", name="Profile").click()
        page.get_by_role("dialog", name="Your profile").wait_for()
        assert page.evaluate(UNNAMED_CONTROLS) == []
        # A picture must be an image the browser can decode (then it is scaled down).
        fake = tmp_path / "not-a-picture.png"
        fake.write_bytes(b"GIF88a, but no image at all")
        page.locator("#profile-avatar-file").set_input_files(fake)
        page.get_by_text("That file is not an image this browser can read.").wait_for()
        page.keyboard.press("Escape")
        page.get_by_role("dialog", name="Your profile").wait_for(state="hidden")

        # Light and dark from the system setting, at desktop size.
        background = "() => getComputedStyle(document.body).backgroundColor"
        page.emulate_media(color_scheme="light")
        light = page.evaluate(background)
        page.screenshot(path=shots / "chat-light.png")
        page.emulate_media(color_scheme="dark")
        dark = page.evaluate(background)
        page.screenshot(path=shots / "chat-dark.png")
        assert light == "rgb(244, 245, 247)" and dark == "rgb(17, 20, 24)"

        # A phone-sized window: the list and the chat take turns, nothing
        # wider than the screen.
        page.set_viewport_size({"width": 390, "height": 844})
        wider = "() => document.documentElement.scrollWidth > window.innerWidth"
        for scheme in ("light", "dark"):
            page.emulate_media(color_scheme=scheme)
            assert page.locator("#chat-pane").is_visible()
            assert not page.locator(".sidebar").is_visible()
            assert not page.evaluate(wider)
            page.screenshot(path=shots / f"phone-chat-{scheme}.png")
            page.get_by_role("button", name="Back to conversations").click()
            assert page.locator(".sidebar").is_visible()
            assert not page.locator("#chat").is_visible()
            assert not page.evaluate(wider)
            page.screenshot(path=shots / f"phone-list-{scheme}.png")
            alice.open("bob")
        assert page.evaluate(UNNAMED_CONTROLS) == []

        # A file dropped on the chat is sent (the drop zone shows while dragging).
        dropped = page.evaluate_handle(
            "() => { const data = new DataTransfer();"
            " data.items.add(new File(['dropped notes'], 'notes.txt', {type: 'text/plain'}));"
            " return data; }")
        page.dispatch_event("#chat", "dragenter", {"dataTransfer": dropped})
        assert page.get_by_text("Drop a file to send it").is_visible()
        page.dispatch_event("#chat", "drop", {"dataTransfer": dropped})
        assert page.get_by_text("Drop a file to send it").is_hidden()
        page.locator(".bubble.out", has_text="notes.txt").locator(
            '.state[aria-label="sent"]').wait_for()
        got = bob_user.receive()[-1]
        assert got["attachment"]["name"] == "notes.txt"
        assert Path(got["attachment"]["path"]).read_bytes() == b"dropped notes"

        # History scrolls back: after a reload the page shows the latest 50
        # messages; scrolling to the top loads the older ones.
        from chatcli.daemon.sync_client import DaemonCliApi

        api = DaemonCliApi(alice_user.home / "daemon.sock")
        for n in range(1, 56):
            api.call("send", {"to": "bob", "text": f"Numbered message {n}"})
        page.locator(".bubble", has_text="Numbered message 55").wait_for()
        page.reload()
        alice.open("bob")
        page.locator(".bubble", has_text="Numbered message 55").wait_for()
        assert page.locator(".message-list .bubble").count() == 50
        assert page.locator(".bubble", has_text="Are you there?").count() == 0
        page.locator("#messages").evaluate("box => { box.scrollTop = 0; }")
        page.locator(".bubble", has_text="Are you there?").wait_for()
        assert page.locator(".message-list .bubble").count() == 58
        assert page.get_by_role("button", name="Load older messages").is_hidden()
    finally:
        alice.close()
    assert problems == []
