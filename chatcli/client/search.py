"""Search in the local history: an in-memory index, built from the sealed store.

Nothing of the index is written anywhere: it is made by opening the sealed
message texts of an unlocked store (:meth:`SearchIndex.refresh`) and lives
as long as the process (the daemon's life; one command in direct mode). The
reasoning and the figures are in docs/protocol.md ("Local search").

Matching: text and query are normalised (NFKC, case-folded, NFKC again),
split into words (``\\w+``); every query word must be a word of the message,
the last one only its beginning (prefix). Results are newest first.

Other features keep the index right with two calls, after their transaction
has committed: :meth:`SearchIndex.forget` (a message deleted or expired) and
:meth:`SearchIndex.update` (a message edited). New and cascade-deleted rows
are found by :meth:`SearchIndex.refresh` on its own, which every search runs.
"""

from __future__ import annotations

import bisect
import heapq
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from chatcli.client.store import Sealer, Store
from chatcli.errors import UsageError

WORD = re.compile(r"\w+")
SNIPPET = 120
"""Characters of text shown around the first match."""
MAX_QUERY = 200


def normalize(text: str) -> str:
    """NFKC case folding: ``"Straße"`` and ``"STRASSE"``, ``"ﬁx"`` and ``"fix"`` agree."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


def words(text: str) -> list[str]:
    """The normalised words of ``text``, in order."""
    return WORD.findall(normalize(text))


def _spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, normalised word) of each word of the original ``text``, so
    that a match can be shown where it is (normalising can change lengths)."""
    out = []
    for found in WORD.finditer(text):
        for word in words(found.group()):
            out.append((found.start(), found.end(), word))
    return out


@dataclass(frozen=True)
class Query:
    """Whole words that must all occur, and the last word's beginning."""

    whole: tuple[str, ...]
    prefix: str

    @classmethod
    def parse(cls, text: str) -> Query:
        if len(text) > MAX_QUERY:
            raise UsageError(f"The search text is too long (the limit is {MAX_QUERY} "
                             "characters).")
        found = words(text)
        if not found:
            raise UsageError("Give at least one word to search for.")
        return cls(whole=tuple(dict.fromkeys(found[:-1])), prefix=found[-1])

    def matches(self, word: str, last: bool) -> bool:
        return word.startswith(self.prefix) if last else word in self.whole


class Doc:
    """One indexed message. ``conversation`` is ``("c", contact id)`` or
    ``("g", group row id)``: names are looked up when results are shown, so a
    renamed contact shows its new name."""

    __slots__ = ("conversation", "outgoing", "row", "sender", "sent_at", "text", "uuid")

    def __init__(self, uuid: str, conversation: tuple[str, int], outgoing: bool,
                 sender: bytes | None, sent_at: int, row: int, text: str) -> None:
        self.uuid = uuid
        self.conversation = conversation
        self.outgoing = outgoing
        self.sender = sender
        self.sent_at = sent_at
        self.row = row
        self.text = text

    def order(self) -> tuple[int, int]:
        return (self.sent_at, self.row)


@dataclass(frozen=True)
class _Table:
    """The statements that read one history table, and its text's sealing column."""

    column: str
    fingerprint: str
    uuids: str
    rows: str


_TABLES = {
    "c": _Table("message.text", "SELECT count(*), max(id) FROM message",
                "SELECT uuid FROM message",
                "SELECT uuid, contact_id, outgoing, NULL, sent_at, id, text_sealed FROM message"),
    "g": _Table("group.message_text", "SELECT count(*), max(id) FROM group_message",
                "SELECT uuid FROM group_message",
                "SELECT uuid, group_id, outgoing, sender, sent_at, id, text_sealed "
                "FROM group_message"),
}


class SearchIndex:
    """Words -> messages, for one unlocked store; see the module docstring."""

    def __init__(self) -> None:
        self._docs: dict[str, Doc] = {}
        self._postings: dict[str, list[Doc]] = {}
        self._vocabulary: list[str] = []   # sorted, for prefix ranges
        self._seen: dict[str, tuple[int, int] | None] = {"c": None, "g": None}

    def __len__(self) -> int:
        return len(self._docs)

    # ------------------------------------------------------------ the hooks

    def add(self, doc: Doc) -> None:
        if doc.uuid in self._docs:
            self.forget(doc.uuid)
        self._docs[doc.uuid] = doc
        for token in set(words(doc.text)):
            posting = self._postings.get(token)
            if posting is None:
                self._postings[token] = [doc]
                bisect.insort(self._vocabulary, token)
            else:
                posting.append(doc)

    def forget(self, uuid: str) -> None:
        """Drop a message (deleted, or expired): call after the deletion committed."""
        doc = self._docs.pop(uuid, None)
        if doc is None:
            return
        for token in set(words(doc.text)):
            posting = self._postings[token]
            posting.remove(doc)
            if not posting:
                del self._postings[token]
                del self._vocabulary[bisect.bisect_left(self._vocabulary, token)]
        self._seen[doc.conversation[0]] = None  # the next refresh looks at every row

    def update(self, uuid: str, text: str) -> None:
        """A message's text changed (edited): call after the change committed.
        Unknown messages are left to :meth:`refresh`."""
        doc = self._docs.get(uuid)
        if doc is not None:
            self.add(Doc(doc.uuid, doc.conversation, doc.outgoing, doc.sender, doc.sent_at,
                         doc.row, text))

    # ------------------------------------------------------------ building

    def refresh(self, store: Store, sealer: Sealer) -> None:
        """Bring the index in step with the store: open and add the messages it
        does not have, drop those gone from the store (a contact or group removed).
        Costs two aggregate queries when nothing changed."""
        from chatcli.client.groups import models as gdb

        with store.read():
            db = store.db
            for kind, table in _TABLES.items():
                if kind == "g" and not gdb.has_tables(store):
                    continue
                count, top = db.execute_sql(  # type: ignore[no-untyped-call]
                    table.fingerprint).fetchone()
                if self._seen[kind] == (count, top):
                    continue
                present = {uuid for (uuid,) in db.execute_sql(  # type: ignore[no-untyped-call]
                    table.uuids)}
                for uuid in [u for u, d in self._docs.items()
                             if d.conversation[0] == kind and u not in present]:
                    self.forget(uuid)
                missing = present - self._docs.keys()
                # A few new rows are read by uuid; many (the first build) in one pass.
                batches = ([list(missing)[i:i + 500] for i in range(0, len(missing), 500)]
                           if len(missing) <= 5000 else [None])
                for batch in batches if missing else []:
                    cursor = (db.execute_sql(table.rows)  # type: ignore[no-untyped-call]
                              if batch is None else
                              db.execute_sql(  # type: ignore[no-untyped-call]
                                  table.rows + " WHERE uuid IN (" + ",".join("?" * len(batch))
                                  + ")", batch))
                    for uuid, conv, outgoing, who, sent_at, row, sealed in cursor:
                        if uuid in missing:
                            self.add(Doc(uuid, (kind, conv), bool(outgoing),
                                         bytes(who) if who is not None else None, sent_at, row,
                                         sealer.open_text(bytes(sealed), table.column, uuid)))
                self._seen[kind] = (count, top)

    # ------------------------------------------------------------ querying

    def _candidates(self, query: Query) -> set[Doc]:
        lists = [self._postings.get(word, []) for word in query.whole]
        start = bisect.bisect_left(self._vocabulary, query.prefix)
        prefixed: set[Doc] = set()
        for token in self._vocabulary[start:]:
            if not token.startswith(query.prefix):
                break
            prefixed.update(self._postings[token])
        if any(not posting for posting in lists) or not prefixed:
            return set()
        found = prefixed
        for posting in sorted(lists, key=len):
            found = found.intersection(posting)
            if not found:
                break
        return found

    def search(self, text: str, *, limit: int = 20,
               conversation: tuple[str, int] | None = None) -> list[Doc]:
        """The newest ``limit`` messages matching ``text`` (in ``conversation``
        only, if given), newest first."""
        query = Query.parse(text)
        found = self._candidates(query)
        if conversation is not None:
            found = {doc for doc in found if doc.conversation == conversation}
        return heapq.nlargest(limit, found, key=Doc.order)


def snippet(text: str, query: Query, width: int = SNIPPET) -> tuple[str, list[list[int]]]:
    """A window of ``text`` around the first matching word, and the
    ``[start, end]`` of every matching word inside that window."""
    spans = _spans(text)
    hits = [(start, end) for i, (start, end, word) in enumerate(spans)
            if word in query.whole or word.startswith(query.prefix)]
    first = hits[0][0] if hits else 0
    begin = max(0, min(first - width // 3, len(text) - width))
    end = min(len(text), begin + width)
    # Cut at spaces where there is one near, so words are not chopped.
    if begin > 0:
        space = text.find(" ", begin, first)
        begin = space + 1 if space != -1 else begin
    if end < len(text):
        space = text.rfind(" ", max(first, begin), end)
        end = space if space > first else end
    lead = "…" if begin > 0 else ""
    tail = "…" if end < len(text) else ""
    shown = text[begin:end].replace("\n", " ")
    marks = [[s - begin + len(lead), e - begin + len(lead)] for s, e in hits
             if s >= begin and e <= end]
    return lead + shown + tail, marks


def results(store: Store, index: SearchIndex, text: str, *, limit: int,
            conversation: tuple[str, int] | None, own_identity: bytes) -> list[dict[str, Any]]:
    """The search result objects of the API (see ``SearchHit`` in chatcli/api/schema.py)."""
    from chatcli.client.groups import models as gdb
    from chatcli.crypto.keys import IdentityPublicKey

    docs = index.search(text, limit=limit, conversation=conversation)
    query = Query.parse(text)
    with store.read():
        db = store.db
        contacts = dict(db.execute_sql("SELECT id, name FROM contact").fetchall())  # type: ignore[no-untyped-call]
        by_identity = {bytes(k): n for k, n in db.execute_sql(  # type: ignore[no-untyped-call]
            "SELECT identity, name FROM contact")}
        groups: dict[int, str] = {}
        peers: dict[bytes, str] = {}
        if any(d.conversation[0] == "g" for d in docs) and gdb.has_tables(store):
            groups = dict(db.execute_sql('SELECT id, name FROM "group"').fetchall())  # type: ignore[no-untyped-call]
            peers = {bytes(k): n for k, n in db.execute_sql(  # type: ignore[no-untyped-call]
                "SELECT identity, name FROM group_peer")}
    out = []
    for doc in docs:
        kind, owner = doc.conversation
        if kind == "c":
            name = contacts.get(owner, "?")
            sender = "me" if doc.outgoing else name
            group = None
        else:
            group = groups.get(owner, "?")
            name = group
            if doc.outgoing or doc.sender == own_identity:
                sender = "me"
            else:
                assert doc.sender is not None
                sender = (by_identity.get(doc.sender) or peers.get(doc.sender)
                          or IdentityPublicKey.from_bytes(doc.sender).fingerprint())
        shown, marks = snippet(doc.text, query)
        out.append({"id": doc.uuid, "conversation": name, "contact": None if group else name,
                    "group": group, "from": sender,
                    "direction": "out" if doc.outgoing else "in", "sent_at": doc.sent_at,
                    "snippet": shown, "highlights": marks})
    return out


def conversation(store: Store, *, contact: str | None, group: str | None
                 ) -> tuple[str, int] | None:
    """The index's key of the conversation named by ``contact`` or ``group``."""
    from chatcli.client.groups import models as gdb
    from chatcli.errors import UnknownContactError

    if contact is not None and group is not None:
        raise UsageError("Search one conversation: a contact or a group, not both.")
    with store.read():
        if contact is not None:
            row = store.db.execute_sql(  # type: ignore[no-untyped-call]
                "SELECT id FROM contact WHERE name = ?", (contact,)).fetchone()
            if row is None:
                raise UnknownContactError(f"No contact is called {contact!r}; see "
                                          "`chatcli contacts`.")
            return ("c", row[0])
        if group is not None:
            row = (store.db.execute_sql(  # type: ignore[no-untyped-call]
                'SELECT id FROM "group" WHERE name = ?', (group,)).fetchone()
                if gdb.has_tables(store) else None)
            if row is None:
                raise UsageError(f"No group is called {group!r}; see `chatcli group list`.")
            return ("g", row[0])
    return None
