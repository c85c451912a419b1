"""The in-memory search index (chatcli/client/search.py): normalisation, AND,
prefix, ordering, snippets, and keeping in step with the store and the hooks."""

from __future__ import annotations

import os
import sqlite3
import uuid
from pathlib import Path

import pytest

from chatcli.client import models
from chatcli.client.search import Doc, Query, SearchIndex, normalize, snippet, words
from chatcli.client.store import Sealer, Store
from chatcli.errors import UsageError


def doc(text: str, sent_at: int = 0, conversation: tuple[str, int] = ("c", 1)) -> Doc:
    return Doc(str(uuid.uuid4()), conversation, False, None, sent_at, sent_at, text)


def found(index: SearchIndex, text: str, **kw: object) -> list[str]:
    return [d.text for d in index.search(text, **kw)]  # type: ignore[arg-type]


def test_normalisation_case_fold_and_nfkc() -> None:
    assert normalize("STRASSE") == normalize("Straße") == "strasse"
    assert words("ﬁx the Ｗｉｆｉ, CAFÉ!") == ["fix", "the", "wifi", "café"]
    assert words("cafe\u0301") == ["café"]  # combining accent composed
    index = SearchIndex()
    index.add(doc("Meet at the Straße café"))
    assert found(index, "strasse CAFÉ") == ["Meet at the Straße café"]
    assert found(index, "cafe") == []  # accents are not folded away
    assert found(index, "ＭＥＥＴ") == ["Meet at the Straße café"]


def test_all_words_must_match_and_last_is_a_prefix() -> None:
    index = SearchIndex()
    for i, text in enumerate(["lunch tomorrow at noon", "lunch today", "dinner tomorrow",
                              "the lunchbox is here"]):
        index.add(doc(text, sent_at=i))
    assert found(index, "lunch tomorrow") == ["lunch tomorrow at noon"]
    assert found(index, "lunch") == ["the lunchbox is here", "lunch today",
                                     "lunch tomorrow at noon"]  # newest first
    assert found(index, "tom") == ["dinner tomorrow", "lunch tomorrow at noon"]
    # Only the last word is a prefix: "lun" alone is not a word of any message.
    assert found(index, "lun tomorrow") == []
    assert found(index, "breakfast") == []
    assert found(index, "lunch", limit=1) == ["the lunchbox is here"]
    assert found(index, "lunch", conversation=("c", 2)) == []


def test_bad_queries_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="at least one word"):
        Query.parse("  !! ")
    with pytest.raises(UsageError, match="too long"):
        Query.parse("x" * 201)


def test_forget_and_update_hooks() -> None:
    index = SearchIndex()
    first, second = doc("secret plan alpha", 1), doc("another plan", 2)
    index.add(first)
    index.add(second)
    index.forget(first.uuid)
    assert found(index, "plan") == ["another plan"]
    assert found(index, "alpha") == [] and "alpha" not in index._vocabulary
    index.update(second.uuid, "a changed text")
    assert found(index, "plan") == [] and found(index, "changed") == ["a changed text"]
    index.forget("no-such-id")
    index.update("no-such-id", "ignored")
    assert len(index) == 1


def test_snippet_marks_the_matches() -> None:
    text = "x " * 100 + "the Quick brown fox jumps " + "y " * 100
    shown, marks = snippet(text, Query.parse("quick fo"))
    assert shown.startswith("…") and shown.endswith("…") and len(shown) <= 125
    assert [shown[s:e] for s, e in marks] == ["Quick", "fox"]
    assert snippet("short one", Query.parse("one")) == ("short one", [[6, 9]])


def _store(path: Path) -> Store:
    store = Store.open(path, Sealer(b"k" * 32), create=True)
    with store.write():
        models.Contact.create(name="bob", identity=os.urandom(32), relay_url="ws://x/#y",
                              mailbox=os.urandom(16), box_key=os.urandom(32),
                              deposit_cap_sealed=b"", created_at=0)
    return store


def _message(store: Store, text: str, sent_at: int) -> str:
    message_id = str(uuid.uuid4())
    with store.write():
        models.Message.create(uuid=message_id, contact=1, outgoing=False, sent_at=sent_at,
                              text_sealed=store.sealer.seal_text(text, "message.text",
                                                                 message_id))
    return message_id


def test_refresh_follows_the_store(tmp_path: Path) -> None:
    store = _store(tmp_path / "chatcli.db")
    try:
        index = SearchIndex()
        _message(store, "hello world", 1)
        index.refresh(store, store.sealer)
        assert found(index, "hello") == ["hello world"]
        gone = _message(store, "hello again", 2)
        index.refresh(store, store.sealer)
        assert found(index, "hello") == ["hello again", "hello world"]
        # A row deleted without the hook (a contact removed cascades) leaves too.
        with store.write():
            models.Message.delete().where(models.Message.uuid == gone).execute()
        index.refresh(store, store.sealer)
        assert found(index, "hello") == ["hello world"]
        # A new row that takes the deleted row's id is still seen.
        _message(store, "hello third", 3)
        index.refresh(store, store.sealer)
        assert found(index, "hello") == ["hello third", "hello world"]
    finally:
        store.close()
    # Nothing of the index reached the disk: no plaintext word in the files.
    for file in tmp_path.iterdir():
        assert b"hello" not in file.read_bytes()
    with sqlite3.connect(tmp_path / "chatcli.db") as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    assert not any("search" in name for name in tables)
