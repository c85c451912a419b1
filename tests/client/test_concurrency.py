"""Two clients of one identity (two processes: a `chat` and a `receive`) share
the database: every message is stored and shown once."""

from __future__ import annotations

from pathlib import Path

import trio

from chatcli.client import models as db
from chatcli.client.home import Home
from chatcli.client.service import ChatClient, MessageEvent
from tests.client.conftest import PASS, drain, make_client, pair
from tests.client.fakerelay import FakeRelay


async def test_two_receivers_same_identity(tmp_path: Path, relay: FakeRelay) -> None:
    alice = await make_client(tmp_path, "alice", relay)
    bob = await make_client(tmp_path, "bob", relay)
    await pair(alice, bob)
    bob_again = ChatClient.unlock(Home(bob.home.root), PASS)
    seen: list[str] = []

    all_seen = trio.Event()

    async def listen(client: ChatClient) -> None:
        async with client.online():
            async for event in client.events(wait=30.0):
                if isinstance(event, MessageEvent):
                    seen.append(event.text)
                    if len(seen) >= 10:
                        all_seen.set()

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(listen, bob)
            nursery.start_soon(listen, bob_again)
            await trio.sleep(0.2)
            async with alice.online():
                for i in range(10):
                    await alice.send_text("bob", f"m{i}")
            await all_seen.wait()
            # Give a duplicate, if there were one, the time to show up too.
            await trio.sleep(0.5)
            nursery.cancel_scope.cancel()
    assert sorted(seen) == sorted(f"m{i}" for i in range(10))
    with bob.store.read():
        assert db.Message.select().count() == 10
    assert [e for e in await drain(bob) if isinstance(e, MessageEvent)] == []


WRITER = """
import sys
from pathlib import Path
from chatcli.client import models as db
from chatcli.client.store import Sealer, Store
store = Store.open(Path(sys.argv[1]), Sealer(bytes(32)))
offset = int(sys.argv[2])
for i in range(100):
    with store.write():
        db.Processed.create(relay_id=offset + i, processed_at=i)
store.close()
"""


def test_parallel_writer_processes(tmp_path: Path) -> None:
    """SQLite in WAL mode with a busy timeout and BEGIN IMMEDIATE serialises the
    writers of several processes: none fails, nothing is lost."""
    import subprocess
    import sys

    from chatcli.client.store import Sealer, Store

    path = tmp_path / "chatcli.db"
    Store.open(path, Sealer(bytes(32)), create=True).close()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(n * 1000)])
             for n in range(3)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    store = Store.open(path, Sealer(bytes(32)))
    with store.read():
        assert db.Processed.select().count() == 300
    store.close()
