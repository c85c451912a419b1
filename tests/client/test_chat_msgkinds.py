"""`chatcli chat` and message kinds: /reply, /react, /edit, /delete typed in
the chat, and what the contact's reactions, edits and deletes look like."""

from __future__ import annotations

from chatcli.client.chat_ui import parse_input
from chatcli.client.kinds_view import action_line, parse_command, reactions_line
from chatcli.client.service import ChatClient, MessageEvent
from tests.client.test_chat_session import (  # noqa: F401 (fixtures)
    Running,
    chat,
    paired,
    wait_for,
    wait_for_events,
)


def test_message_commands_are_parsed() -> None:
    assert parse_input("/reply 1a2b3c4d sure") == ("act", "/reply 1a2b3c4d sure")
    assert parse_command("/reply", "#1a2b3c4d sure, at one") == (
        "send", {"text": "sure, at one", "reply_to": "1a2b3c4d"})
    assert parse_command("/react", "1a2b 👍") == ("react", {"id": "1a2b", "emoji": "👍"})
    assert parse_command("/unreact", "1a2b") == ("react", {"id": "1a2b", "remove": True})
    assert parse_command("/edit", "1a2b new words") == ("edit", {"id": "1a2b",
                                                                 "text": "new words"})
    assert parse_command("/delete", "1a2b") == ("delete", {"id": "1a2b"})
    assert parse_command("/react", "1a2b") == "Usage: /react ID EMOJI"
    assert reactions_line([{"emoji": "👍", "from": "bob"}, {"emoji": "🎉", "from": "me"},
                           {"emoji": "👍", "from": "me"}]) == "👍 2 (bob, me)  🎉 1 (me)"
    assert action_line({"type": "delete", "from": "bob", "id": "1a2b3c4d-x"}) == (
        "bob deleted #1a2b3c4d for everyone")


async def test_commands_in_the_chat(chat: Running, paired: tuple[ChatClient, ChatClient]  # noqa: F811
                                    ) -> None:
    _, bob = paired
    async with bob.online():
        theirs = await bob.send_text("alice", "lunch?")
    await wait_for(lambda: chat.view.has(f"#{theirs[:8]} bob: lunch?"))
    chat.session.submit(f"/reply {theirs[:8]} yes, at one")
    chat.session.submit(f"/react {theirs[:8]} 👍")
    got: list[object] = []
    await wait_for_events(bob, got, lambda: any(
        isinstance(e, MessageEvent) and e.text == "yes, at one" for e in got)
        and any(getattr(e, "kind", None) == "reaction" for e in got))
    reply = next(e for e in got if isinstance(e, MessageEvent) and e.text == "yes, at one")
    assert reply.reply_to == {"id": theirs, "from": "me", "excerpt": "lunch?"}
    mine = reply.id
    chat.session.submit(f"/edit {mine[:8]} yes, at two")
    chat.session.submit(f"/delete {theirs[:8]}")
    await wait_for(lambda: chat.view.has("Only your own messages"))
    got = []
    await wait_for_events(bob, got, lambda: any(
        getattr(e, "kind", None) == "edit" for e in got))
    assert {h["id"]: h for h in bob.history("alice")}[mine]["text"] == "yes, at two"
    # Bob's own edit and delete reach the open chat.
    async with bob.online():
        await bob.send_action("alice", theirs, "edit", "lunch today?")
        await bob.send_action("alice", theirs, "delete")
    await wait_for(lambda: chat.view.has(f"bob edited #{theirs[:8]}: lunch today?"))
    await wait_for(lambda: chat.view.has(f"bob deleted #{theirs[:8]} for everyone"))
    chat.session.submit("/history")
    await wait_for(lambda: chat.view.has(f"#{theirs[:8]} bob: message deleted"))
