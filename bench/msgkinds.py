"""What message kinds cost in the client's local store, without a relay.

On a fresh local database with one contact and ``--messages`` messages, times
(wall clock, per message) reading a history page of plain messages, and of
messages that each are a reply with ``--edits`` edits and ``--reactions``
reactions; and applying an incoming reaction, edit and delete (each in its
own write transaction, as the inbox does), and an edit that arrives before
its message (kept, then applied). Prints JSON.

Usage::

    python -m bench.msgkinds [--messages 200] [--edits 2] [--reactions 3]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec

from chatcli.client import actions
from chatcli.client import messages as m
from chatcli.client import models as db
from chatcli.client.store import Sealer, Store


def _contact(store: Store) -> db.Contact:
    return db.Contact.create(name="bob", identity=os.urandom(32), relay_url="ws://x/#y",
                             mailbox=os.urandom(16), box_key=os.urandom(32),
                             deposit_cap_sealed=b"", created_at=0)


def _message(store: Store, contact: db.Contact, text: str, quote: m.Quote | None) -> db.Message:
    uid = str(uuid.uuid4())
    return db.Message.create(
        uuid=uid, contact=contact, outgoing=False, sent_at=int(time.time() * 1000),
        text_sealed=store.sealer.seal_text(text, "message.text", uid),
        reply_sealed=(store.sealer.seal(msgspec.msgpack.encode(quote), "message.reply", uid)
                      if quote else None))


def _read_page(store: Store, contact: db.Contact, rows: list[db.Message]) -> float:
    names = {bytes(contact.identity): "bob"}
    start = time.perf_counter()
    with store.read():
        for row in db.Message.select().where(db.Message.uuid.in_([r.uuid for r in rows])):
            store.sealer.open_text(bytes(row.text_sealed), "message.text", row.uuid)
            actions.history_fields(store.sealer, row, names)
    return (time.perf_counter() - start) / len(rows)


def measure(root: Path, messages: int, edits: int, reactions: int) -> dict[str, Any]:
    store = Store.open(root / "chatcli.db", Sealer(os.urandom(32)), create=True)
    try:
        with store.write():
            contact = _contact(store)
            plain = [_message(store, contact, f"plain {i}", None) for i in range(messages)]
            rich = []
            for i in range(messages):
                quote = m.Quote(id=plain[i].uuid, author=bytes(contact.identity),
                                excerpt=f"plain {i}")
                row = _message(store, contact, f"rich {i}", quote)
                for e in range(edits):
                    actions.add_edit(store.sealer, row, m.Edit(
                        target=row.uuid, sent_at=e + 1, text=f"rich {i} v{e}",
                        id=str(uuid.uuid4())))
                for r in range(reactions):
                    actions.set_reaction(store.sealer, row, os.urandom(32), "👍", r + 1)
                rich.append(row)
        figures: dict[str, Any] = {
            "messages": messages, "edits": edits, "reactions": reactions,
            "history_plain_us": round(_read_page(store, contact, plain) * 1e6, 1),
            "history_rich_us": round(_read_page(store, contact, rich) * 1e6, 1),
        }
        targets = plain[:min(50, messages)]
        kinds: dict[str, list[m.MessageAction]] = {
            "reaction": [m.Reaction(target=t.uuid, emoji="🎉", sent_at=10**12) for t in targets],
            "edit": [m.Edit(target=t.uuid, sent_at=10**12, text="edited",
                            id=str(uuid.uuid4())) for t in targets],
            "delete": [m.Delete(target=t.uuid, sent_at=10**12 + 1) for t in targets],
        }
        for kind, items in kinds.items():
            start = time.perf_counter()
            for action in items:
                with store.write():
                    actions.apply_incoming(store.sealer, contact, action, 0)
            figures[f"apply_{kind}_ms"] = round((time.perf_counter() - start) / len(items) * 1e3,
                                                3)
        start = time.perf_counter()
        for _ in range(len(targets)):
            early = str(uuid.uuid4())
            with store.write():
                actions.apply_incoming(store.sealer, contact, m.Edit(
                    target=early, sent_at=1, text="early", id=str(uuid.uuid4())), 0)
            with store.write():
                row = db.Message.create(
                    uuid=early, contact=contact, outgoing=False, sent_at=0,
                    text_sealed=store.sealer.seal_text("late", "message.text", early))
                actions.apply_pending(store.sealer, contact, early)
        figures["edit_before_message_ms"] = round(
            (time.perf_counter() - start) / len(targets) * 1e3, 3)
        return figures
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--edits", type=int, default=2)
    parser.add_argument("--reactions", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(measure(Path(tmp), args.messages, args.edits, args.reactions)))


if __name__ == "__main__":
    main()
