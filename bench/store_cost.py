"""What the relay's SQLite store costs per message, without the relay.

Replays the group commit's storage work in one process on a fresh database:
each round is one transaction that reads the mailboxes' usage, checks
capabilities, inserts ``--batch`` 1 KiB messages spread over ``--mailboxes``
mailboxes, deletes the messages of the previous round (their acknowledgement)
and commits (WAL, ``synchronous=FULL``). Prints the wall time per message of
each step as JSON, so that the relay's own figures can be read against the
floor its database sets.

Usage::

    python -m bench.store_cost [--batch 800] [--rounds 60] [--mailboxes 50]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from chatcli.relay.store import schema
from chatcli.relay.store.base import NewMessage
from chatcli.relay.store.sqlite import SqliteStore


def measure(path: Path, batch: int, rounds: int, mailboxes: int,
            payload_size: int = 1024) -> dict[str, float]:
    store = SqliteStore(path)
    store.open(0)
    try:
        boxes = [os.urandom(16) for _ in range(mailboxes)]
        for box in boxes:
            store.create_mailbox(box, os.urandom(32), 0)
        payload = os.urandom(payload_size)
        per_box = max(1, batch // mailboxes)
        steps = dict.fromkeys(("usage", "capabilities", "insert", "delete", "commit"), 0.0)
        pending: list[tuple[bytes, list[int]]] = []
        cpu_start = time.process_time()
        with schema.database_proxy.bound(store.db):
            for _ in range(rounds):
                t0 = time.perf_counter()
                transaction = store.db.atomic()
                transaction.__enter__()
                store.mailbox_usage(boxes)
                t1 = time.perf_counter()
                store.valid_caps({(box, bytes(32)) for box in boxes})
                t2 = time.perf_counter()
                ids = store.insert_messages([NewMessage(box, payload, 1)
                                             for box in boxes for _ in range(per_box)])
                t3 = time.perf_counter()
                if pending:
                    store.delete_messages_many(pending)
                t4 = time.perf_counter()
                transaction.__exit__(None, None, None)
                t5 = time.perf_counter()
                for name, spent in zip(steps, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4),
                                       strict=True):
                    steps[name] += spent
                it = iter(ids)
                pending = [(box, [next(it) for _ in range(per_box)]) for box in boxes]
        cpu = time.process_time() - cpu_start
    finally:
        store.close()
    messages = rounds * per_box * mailboxes
    out = {f"{name}_us": round(spent / messages * 1e6, 2) for name, spent in steps.items()}
    out["total_us"] = round(sum(steps.values()) / messages * 1e6, 2)
    out["cpu_us"] = round(cpu / messages * 1e6, 2)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.store_cost", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--batch", type=int, default=800, help="messages per commit (800)")
    parser.add_argument("--rounds", type=int, default=60, help="commits (60)")
    parser.add_argument("--mailboxes", type=int, default=50, help="mailboxes (50)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="chatcli-bench-store-") as tmp:
        figures = measure(Path(tmp) / "relay.db", args.batch, args.rounds, args.mailboxes)
    print(json.dumps({"store_cost_per_message": {"batch": args.batch, "rounds": args.rounds,
                                                 "mailboxes": args.mailboxes, **figures}},
                     indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
