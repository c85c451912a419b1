"""Several relay processes on one PostgreSQL database are one relay.

Real processes (``chatcli relay serve``), a real database of the test's own,
real websockets. Covered: two processes delivering in real time both ways
with presence across them; ``--workers 2`` on one port with a worker
SIGKILLed in the middle of a load (clients reconnect, every acknowledged
message reaches the application exactly once); the database connections cut
(a PostgreSQL restart as the relay sees it) answered with ``try_again``, and
recovery without a restart.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from chatcli.protocol import codes, frames
from tests.relay import pgutil
from tests.relay.mpclient import CHATCLI, Conn, Owner, RelayProcess, Sender, request

pytestmark = pytest.mark.slow


@pytest.fixture
def relays(tmp_path: Path) -> Iterator[list[RelayProcess]]:
    """Relay processes a test started; stopped (SIGTERM) at the end."""
    started: list[RelayProcess] = []
    yield started
    for relay in started:
        relay.stop()


def running(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "zombie" not in status


def start(relays: list[RelayProcess], url: str, tmp_path: Path, **kwargs: object
          ) -> RelayProcess:
    relay = RelayProcess(url, log_path=tmp_path / f"relay{len(relays)}.log",
                         **kwargs)  # type: ignore[arg-type]
    relays.append(relay)
    return relay.start()


async def test_two_processes_deliver_both_ways_in_real_time(
        pg_database: tuple[str, str], relays: list[RelayProcess], tmp_path: Path) -> None:
    _name, url = pg_database
    one = start(relays, url, tmp_path)
    two = start(relays, url, tmp_path)
    assert one.fingerprint == two.fingerprint      # one relay: the same key
    assert one.port != two.port
    alice = Owner(one.host, one.port, one.fingerprint)   # on process 1
    bob = Owner(two.host, two.port, two.fingerprint)     # on process 2
    bob_scope = trio.CancelScope()

    async def run_bob(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                      ) -> None:
        with bob_scope:
            await bob.run(task_status=task_status)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(alice.run)
            await nursery.start(run_bob)
            await alice.ready.wait()
            await bob.ready.wait()
            assert alice.mailbox is not None and bob.mailbox is not None

            # Presence across processes: alice (process 1) watches bob (process 2),
            # on a connection of her own that never logs in (sealed sender).
            watcher = await Conn.open(nursery, one.host, one.port, one.fingerprint)
            await watcher.send(frames.PresenceSubscribe(
                req=watcher.proto.next_request_id(),
                targets=[frames.PresenceTarget(mailbox=bob.mailbox, cap=bob.cap)]))
            nursery.start_soon(alice._receive, watcher)  # records presence entries
            await alice.wait_until(lambda: any(e.online for e in alice.presence))

            # A deposit through process 1 reaches bob on process 2 at once, and back.
            for payload, sender_relay, owner in (
                    (b"to bob via 1", one, bob), (b"to alice via 2", two, alice)):
                sender = Sender(sender_relay.host, sender_relay.port, sender_relay.fingerprint)
                target = owner.mailbox
                assert target is not None
                began = time.monotonic()
                await sender.send_all(target, owner.cap, [payload])
                await owner.wait_until(lambda p=payload, o=owner: p in o.payloads(),  # type: ignore[misc]
                                       seconds=5)
                assert time.monotonic() - began < 2.0

            # Bob leaves process 2: alice, on process 1, is told.
            bob_scope.cancel()
            await alice.wait_until(lambda: alice.presence[-1].online is False)
            assert alice.presence[-1].mailbox == bob.mailbox
            assert alice.presence[-1].last_seen is not None
            nursery.cancel_scope.cancel()
            with trio.CancelScope(shield=True):
                await watcher.close()


async def test_sigkill_one_worker_under_load(
        pg_database: tuple[str, str], relays: list[RelayProcess], tmp_path: Path) -> None:
    """``--workers 2`` on one port. Owners and senders spread over both
    workers; one worker is SIGKILLed while messages flow. Clients reconnect to
    whichever process the kernel picks; every message the relay acknowledged
    is delivered, and after de-duplication by id each reaches the application
    exactly once; the parent restarts the dead worker."""
    _name, url = pg_database
    relay = start(relays, url, tmp_path, workers=2)
    workers_before = relay.children()
    assert len(workers_before) == 2
    pairs, per_sender = 8, 150
    owners = [Owner(relay.host, relay.port, relay.fingerprint) for _ in range(pairs)]
    senders = [Sender(relay.host, relay.port, relay.fingerprint) for _ in range(pairs)]
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for owner in owners:
                await nursery.start(owner.run)
            for owner in owners:
                await owner.ready.wait()

            async def load(i: int) -> None:
                mailbox = owners[i].mailbox
                assert mailbox is not None
                payloads = [f"{i}:{n}".encode() for n in range(per_sender)]
                await senders[i].send_all(mailbox, owners[i].cap, payloads, batch=5,
                                          pause=0.005)

            async with trio.open_nursery() as load_nursery:
                for i in range(pairs):
                    load_nursery.start_soon(load, i)
                await trio.sleep(0.4)
                os.kill(workers_before[0], signal.SIGKILL)
            for owner, sender in zip(owners, senders, strict=True):
                want = set(sender.acked)
                await owner.wait_until(lambda o=owner, w=want: w <= o.payloads(),  # type: ignore[misc]
                                       seconds=20)
            nursery.cancel_scope.cancel()

    total_acked = sum(len(s.acked) for s in senders)
    assert total_acked == pairs * per_sender
    for owner, sender in zip(owners, senders, strict=True):
        # Exactly once to the application: one id per delivered message, and
        # a payload appears under two ids only if its first deposit was never
        # acknowledged (the connection died first) and the sender re-sent it.
        assert set(sender.acked) <= owner.payloads()
        assert owner.payloads() <= set(sender.acked)
    assert sum(s.reconnects for s in senders) + sum(o.connections - 1 for o in owners) > 0
    # The parent replaced the killed worker.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now = relay.children()
        if len(now) == 2 and workers_before[0] not in now:
            break
        await trio.sleep(0.1)
    workers_after = relay.children()
    assert len(workers_after) == 2 and workers_before[0] not in workers_after
    # SIGTERM to the parent: every worker shuts down gracefully, then the parent.
    assert relay.stop() == 0
    assert not any(running(pid) for pid in workers_after)


async def test_database_connections_cut_try_again_then_recovers(
        pg_database: tuple[str, str], relays: list[RelayProcess], tmp_path: Path) -> None:
    """What a brief PostgreSQL restart looks like to the relay: every one of
    its database connections is terminated at once and new ones are refused
    for a moment. (Restarting the shared server itself would disturb other
    people's test runs; the relay cannot tell the difference.) Requests are
    answered ``try_again`` rather than crashing, and the relay recovers by
    itself: deposits and real-time pushes work again without restarting it."""
    name, url = pg_database
    relay = start(relays, url, tmp_path)
    owner = Owner(relay.host, relay.port, relay.fingerprint)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(owner.run)
            await owner.ready.wait()
            assert owner.mailbox is not None
            conn = await Conn.open(nursery, relay.host, relay.port, relay.fingerprint)
            item = frames.DepositItem(mailbox=owner.mailbox, cap=owner.cap, payload=b"first")
            answer = await request(conn, frames.Deposit(req=conn.proto.next_request_id(),
                                                        items=[item]))
            assert isinstance(answer, frames.DepositResult) and answer.errors == [None]
            await owner.wait_until(lambda: b"first" in owner.payloads())

            # PostgreSQL "restarts": connections are cut and refused for a moment.
            pgutil.allow_connections(name, False)
            try:
                assert pgutil.terminate_backends(name) >= 1
                item = frames.DepositItem(mailbox=owner.mailbox, cap=owner.cap,
                                          payload=b"second")
                for _ in range(2):
                    answer = await request(conn, frames.Deposit(
                        req=conn.proto.next_request_id(), items=[item]))
                    assert isinstance(answer, frames.Error), answer
                    assert answer.code == codes.TRY_AGAIN
                answer = await request(conn, frames.Ping(req=conn.proto.next_request_id()))
                assert isinstance(answer, frames.Pong)      # still serving
                assert relay.proc is not None and relay.proc.poll() is None
            finally:
                pgutil.allow_connections(name, True)

            # Recovers by itself: the same request later is stored and pushed.
            deadline = trio.current_time() + 10
            while True:
                answer = await request(conn, frames.Deposit(
                    req=conn.proto.next_request_id(), items=[item]))
                if isinstance(answer, frames.DepositResult):
                    break
                assert isinstance(answer, frames.Error) and answer.code == codes.TRY_AGAIN
                assert trio.current_time() < deadline
                await trio.sleep(0.1)
            assert answer.errors == [None]
            await owner.wait_until(lambda: b"second" in owner.payloads())
            await conn.close()
            nursery.cancel_scope.cancel()


def test_workers_refused_on_sqlite(tmp_path: Path) -> None:
    import subprocess

    result = subprocess.run(
        [*CHATCLI, "relay", "serve", "--port", "0",
         "--db", str(tmp_path / "relay.db"), "--workers", "2"],
        capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "PostgreSQL" in result.stderr
    assert not (tmp_path / "relay.db").exists()
