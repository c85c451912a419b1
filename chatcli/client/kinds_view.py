"""How the terminal front ends (``messages``, ``receive``, ``chat``) show the
message kinds: short message ids, the quoted line of a reply, reactions,
"(edited)", tombstones; and the chat commands that act on a message
(``/reply``, ``/react``, ``/edit``, ``/delete``). Pure text, no I/O."""

from __future__ import annotations

from typing import Any

SHORT_ID = 8

CHAT_COMMANDS = {"/reply": "reply", "/react": "react", "/unreact": "unreact",
                 "/edit": "edit", "/delete": "delete"}
CHAT_HELP = """\
  /reply ID text    reply to message ID (the #id shown before it), quoting it
  /react ID 👍      react to message ID; /unreact ID takes your reaction back
  /edit ID text     edit one of your messages
  /delete ID        delete one of your messages for everyone"""


def short_id(message_id: str) -> str:
    """The id prefix shown to users; commands accept it (or any unique prefix)."""
    return "#" + message_id[:SHORT_ID]


def decorated(entry: dict[str, Any]) -> str:
    """A history entry's or event's text, with " (edited)" when it was edited."""
    text = str(entry.get("text", ""))
    return text + " (edited)" if entry.get("edited") else text


def quote_line(reply_to: dict[str, Any] | None) -> str | None:
    """``> bob: first line of the quoted message`` for a reply."""
    if not reply_to:
        return None
    return f"> {reply_to.get('from', '?')}: {reply_to.get('excerpt', '')}"


def reactions_line(reactions: list[dict[str, Any]] | None) -> str | None:
    """``👍 2 (bob, me)  🎉 1 (carol)``: each emoji with its count and who."""
    if not reactions:
        return None
    grouped: dict[str, list[str]] = {}
    for reaction in reactions:
        grouped.setdefault(str(reaction["emoji"]), []).append(str(reaction["from"]))
    return "  ".join(f"{emoji} {len(who)} ({', '.join(who)})" for emoji, who in grouped.items())


def action_line(event: dict[str, Any]) -> str:
    """One line for a ``reaction``, ``edit`` or ``delete`` event."""
    who = str(event["from"]) + (f" in {event['group']}" if event.get("group") else "")
    target = short_id(str(event["id"]))
    kind = event["type"]
    if kind == "reaction":
        emoji = event.get("emoji") or ""
        return (f"{who} reacted {emoji} to {target}" if emoji
                else f"{who} took back their reaction to {target}")
    if kind == "edit":
        return f"{who} edited {target}: {event.get('text', '')}"
    return f"{who} deleted {target} for everyone"


def parse_command(command: str, rest: str) -> tuple[str, dict[str, Any]] | str:
    """A message command typed in the chat as ``(API method, params without
    "to")``, or the line that explains its usage."""
    kind = CHAT_COMMANDS[command]
    parts = rest.split(None, 1)
    ref = parts[0] if parts else ""
    value = parts[1] if len(parts) > 1 else ""
    ref = ref.lstrip("#")
    usage = {"reply": "/reply ID text", "react": "/react ID EMOJI", "unreact": "/unreact ID",
             "edit": "/edit ID text", "delete": "/delete ID"}[kind]
    needs_value = kind in ("reply", "react", "edit")
    if not ref or (needs_value and not value.strip()):
        return f"Usage: {usage}"
    if kind == "reply":
        return "send", {"text": value, "reply_to": ref}
    if kind == "react":
        return "react", {"id": ref, "emoji": value.strip()}
    if kind == "unreact":
        return "react", {"id": ref, "remove": True}
    if kind == "edit":
        return "edit", {"id": ref, "text": value}
    return "delete", {"id": ref}
