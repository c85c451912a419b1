"""Local search: building the in-memory index from the sealed history, and queries.

Fills a real local database (``chatcli.client.store``, every text sealed as
``chatcli send``/``receive`` seal it) with ``--messages`` messages spread over
``--contacts`` contacts (3 to 20 words each, Zipf-distributed over a 5,000-word
vocabulary), then, in a fresh process (so that its RSS is the search's own):

- ``build_s``: the first ``SearchIndex.refresh`` after opening the store: read
  every row, open every sealed text, normalise and index it (what the first
  search after unlock pays; the daemon pays it once);
- ``query_ms``: one search as the API answers it (refresh with nothing new,
  match, rank, snippets, names), median and max of ``--runs``, per query kind;
- ``rss_mb``: the process's resident memory before and after the build;
- ``snapshot``: the alternative, a sealed on-disk snapshot of the index: the
  cost to seal and write it (paid on every change if kept in step) and to
  open and decode it at unlock.

Usage::

    python -m bench.search [--messages 100000] [--contacts 50] [--runs 20]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

QUERIES = {
    "rare_word": "zyxw0042",
    "common_word": "w0",
    "two_words_and_prefix": "w1 w2 w3",
    "prefix_only": "w12",
    "no_match": "nothingmatchesthis",
    "one_contact": "w1 w2",
}


def _vocabulary() -> list[str]:
    return [f"w{i}" for i in range(4999)] + ["zyxw0042"]


def populate(path: Path, key: bytes, messages: int, contacts: int) -> None:
    from chatcli.client import models
    from chatcli.client.store import Sealer, Store

    rng = random.Random(14)
    vocabulary = _vocabulary()
    weights = [1 / (rank + 1) for rank in range(len(vocabulary))]
    sealer = Sealer(key)
    store = Store.open(path, sealer, create=True)
    try:
        with store.write():
            ids = [models.Contact.create(
                name=f"c{i}", identity=os.urandom(32), relay_url="ws://127.0.0.1:1/#x",
                mailbox=os.urandom(16), box_key=os.urandom(32), deposit_cap_sealed=b"",
                created_at=0).id for i in range(contacts)]
        done = 0
        while done < messages:
            with store.write():
                rows = []
                for i in range(done, min(messages, done + 5000)):
                    text = " ".join(rng.choices(vocabulary, weights, k=rng.randint(3, 20)))
                    message_id = str(uuid.uuid4())
                    rows.append({"uuid": message_id, "contact": ids[i % contacts],
                                 "outgoing": i % 2 == 0, "sent_at": 1_700_000_000_000 + i,
                                 "text_sealed": sealer.seal_text(text, "message.text",
                                                                 message_id)})
                models.Message.insert_many(rows).execute()
                done += len(rows)
    finally:
        store.close()


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def measure(path: Path, key: bytes, runs: int) -> dict[str, Any]:
    import msgspec

    from chatcli.client import search
    from chatcli.client.store import Sealer, Store
    from chatcli.crypto.localseal import LocalSealer

    store = Store.open(path, Sealer(key))
    try:
        before = _rss_mb()
        index = search.SearchIndex()
        start = time.perf_counter()
        index.refresh(store, store.sealer)
        build = time.perf_counter() - start
        after = _rss_mb()
        one = search.conversation(store, contact="c1", group=None)
        queries: dict[str, Any] = {}
        for name, text in QUERIES.items():
            times = []
            found = 0
            for _ in range(runs):
                start = time.perf_counter()
                index.refresh(store, store.sealer)
                hits = search.results(store, index, text, limit=20,
                                      conversation=one if name == "one_contact" else None,
                                      own_identity=bytes(32))
                times.append((time.perf_counter() - start) * 1000)
                found = len(hits)
            queries[name] = {"median_ms": round(statistics.median(times), 2),
                             "max_ms": round(max(times), 2), "results": found}
        # The alternative: one sealed snapshot of the index (texts + postings).
        docs = list(index._docs.values())
        position = {id(doc): i for i, doc in enumerate(docs)}
        snapshot = [[(d.uuid, d.conversation[1], d.sent_at, d.text) for d in docs],
                    {token: [position[id(d)] for d in posting]
                     for token, posting in index._postings.items()}]
        sealer = LocalSealer(key)
        start = time.perf_counter()
        blob = sealer.seal(msgspec.msgpack.encode(snapshot), context=b"bench")
        with tempfile.NamedTemporaryFile(dir=path.parent) as handle:
            handle.write(blob)
            handle.flush()
            os.fsync(handle.fileno())
        write = time.perf_counter() - start
        start = time.perf_counter()
        msgspec.msgpack.decode(sealer.open(blob, context=b"bench"))
        read = time.perf_counter() - start
    finally:
        store.close()
    return {
        "messages": len(index), "build_s": round(build, 3),
        "build_us_per_message": round(build / max(1, len(index)) * 1e6, 1),
        "rss_mb": {"before_build": before, "after_build": after,
                   "index": round(after - before, 1)},
        "query_ms": queries,
        "snapshot": {"bytes": len(blob), "seal_and_write_s": round(write, 3),
                     "open_and_decode_s": round(read, 3)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.search",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--contacts", type=int, default=50)
    parser.add_argument("--runs", type=int, default=20, help="runs of each query (20)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # the child: PATH:KEYHEX
    args = parser.parse_args(argv)
    if args.measure:
        path, key = args.measure.rsplit(":", 1)
        print(json.dumps(measure(Path(path), bytes.fromhex(key), args.runs)))
        return 0
    key = os.urandom(32)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "chatcli.db"
        start = time.perf_counter()
        populate(path, key, args.messages, args.contacts)
        filled = time.perf_counter() - start
        child = subprocess.run(
            [sys.executable, "-m", "bench.search", "--runs", str(args.runs),
             "--measure", f"{path}:{key.hex()}"], capture_output=True, text=True, check=True)
    report = json.loads(child.stdout)
    report["populate_s"] = round(filled, 1)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
