"""Issue 16 items 2-3: a flooder's frames cost little, and cannot crowd out or
out-rate-limit anyone else."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

import trio

from chatcli.protocol import codes, frames
from chatcli.relay.store.base import NewMessage
from chatcli.relay.store.sqlite import SqliteStore
from tests.relay.helpers import Client, Harness, capability, eventually, make_config, running_relay


async def deposit_many(client: Client, mailbox: bytes, caps: list[bytes]) -> list[str | None]:
    items = [frames.DepositItem(mailbox=mailbox, cap=cap, payload=b"x") for cap in caps]
    answer = await client.request(frames.Deposit(req=client.req(), items=items))
    assert isinstance(answer, frames.DepositResult), answer
    return answer.errors


async def test_invalid_capabilities_own_no_rate_limiter(tmp_path: Path) -> None:
    # In a thread (storage_process=False), so that the test reads the limiter.
    config = make_config(tmp_path, capability_rate=0.01, capability_burst=3.0,
                         storage_process=False)
    async with running_relay(config) as h:
        _, mailbox, cap = await h.owner()
        sender = await h.connect()
        for _ in range(4):
            errors = await deposit_many(sender, mailbox, [capability() for _ in range(200)])
            assert errors == [codes.BAD_CAPABILITY] * 200
        limits = h.relay.mailboxes.cap_limits
        assert limits is not None and len(limits) == 0
        errors = await deposit_many(sender, mailbox, [cap] * 5)
        assert errors == [None, None, None, codes.RATE_LIMITED, codes.RATE_LIMITED]
        assert len(limits) == 1
        # Invalid capabilities interleaved with the valid one do not refill it.
        mixed = [capability() for _ in range(100)] + [cap]
        assert (await deposit_many(sender, mailbox, mixed))[-1] == codes.RATE_LIMITED
        assert len(limits) == 1


async def stored_ids(h: Harness, mailbox: bytes) -> list[int]:
    messages = await h.relay.worker.run(h.relay.mailboxes.pending, mailbox, 0, 10_000)
    return [m.id for m in messages]


class GatedStore(SqliteStore):
    """A store whose message inserts wait for ``gate`` (storage made slow)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate = threading.Event()
        self.waiting = threading.Event()

    def insert_messages(self, messages: Sequence[NewMessage]) -> list[int]:
        self.waiting.set()
        self.gate.wait(10)
        return super().insert_messages(messages)


async def test_a_flooder_does_not_queue_ahead_of_others(tmp_path: Path) -> None:
    """Issue 16 item 2: deposits were committed in arrival order from one
    queue, so a user behind a flooder's backlog waited for all of it."""
    store = GatedStore(tmp_path / "relay.db")
    store.gate.set()
    async with running_relay(make_config(tmp_path), store=store) as h:
        owner_f, flooded, cap_f = await h.owner()
        owner_v, victim_box, cap_v = await h.owner()
        await owner_f.close()
        await owner_v.close()
        flooder = await h.connect()
        victim = await h.connect()
        big = os.urandom(60_000)
        store.gate.clear()
        store.waiting.clear()

        async def flood() -> None:
            for _ in range(40):       # 40 frames x 8 x 60 KB, sent without waiting
                items = [frames.DepositItem(mailbox=flooded, cap=cap_f, payload=big)] * 8
                await flooder.send(frames.Deposit(req=flooder.req(), items=items))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(flood)
            await eventually(store.waiting.is_set)   # the first commit is held
            await trio.sleep(0.5)     # the relay reads what it will of the flood
            victim_req = victim.req()
            await victim.send(frames.Deposit(req=victim_req, items=[frames.DepositItem(
                mailbox=victim_box, cap=cap_v, payload=b"hello")]))
            await trio.sleep(0.2)
            store.gate.set()
        answer = await victim.answer(victim_req)
        assert isinstance(answer, frames.DepositResult) and answer.errors == [None]
        await eventually(lambda: h.relay.committer.commits >= 2)
        (victim_id,) = await stored_ids(h, victim_box)
        before = sum(1 for i in await stored_ids(h, flooded) if i < victim_id)
        # Ahead of the victim: the commits already sent and about one fair
        # share; not the whole backlog read so far (one FIFO queue: all 320).
        assert before <= 6 * 8 + 8, before


async def test_repeated_bad_capabilities_cost_no_storage_work(tmp_path: Path) -> None:
    async with running_relay(make_config(tmp_path)) as h:
        owner, mailbox, cap = await h.owner()
        stranger = await h.connect()
        bad = [capability() for _ in range(256)]
        assert await deposit_many(stranger, mailbox, bad) == [codes.BAD_CAPABILITY] * 256
        commits = h.relay.committer.commits
        for _ in range(20):
            assert await deposit_many(stranger, mailbox, bad) == [codes.BAD_CAPABILITY] * 256
        assert h.relay.committer.commits == commits
        # A capability added since is accepted at once; the others still refused.
        await owner.add_cap(bad[0])
        assert await deposit_many(stranger, mailbox, bad[:2]) == [None, codes.BAD_CAPABILITY]
        assert await deposit_many(stranger, mailbox, [cap]) == [None]


async def test_a_random_capability_flood_is_refused_whole_once_its_budget_is_spent(
        tmp_path: Path) -> None:
    """Issue 16 item 2: every new random capability cost a lookup in the commit,
    so a flood of them delayed everyone's deposits (victim p99 8.7x)."""
    config = make_config(tmp_path, bad_capability_rate=1.0, bad_capability_burst=300.0)
    async with running_relay(config) as h:
        _, mailbox, cap = await h.owner()
        flooder = await h.connect()
        for _ in range(2):            # 512 refused in the commit: over the 300 budget
            errors = await deposit_many(flooder, mailbox, [capability() for _ in range(256)])
            assert errors == [codes.BAD_CAPABILITY] * 256
        commits = h.relay.committer.commits
        started = trio.current_time()
        for _ in range(2):
            errors = await deposit_many(flooder, mailbox,
                                        [capability() for _ in range(255)] + [cap])
            assert errors == [codes.RATE_LIMITED] * 256
        assert h.relay.committer.commits == commits     # no storage work at all
        # Each refused frame waited for a token of the source's budget (1/s).
        assert trio.current_time() - started >= 1.0


def test_the_bad_capability_budget_is_per_source_and_refills() -> None:
    from chatcli.relay.badcaps import BadCapabilities
    from chatcli.relay.mailbox import DepositItem

    bad = BadCapabilities(strike_rate=10.0, strike_burst=100.0)
    items = [DepositItem(b"m" * 32, os.urandom(32), b"x") for _ in range(150)]
    errors: list[str | None] = [codes.BAD_CAPABILITY] * 150
    bad.learn(items, errors, [None] * 150, now=0.0, source=b"flooder")
    assert not bad.admits(b"flooder", 0.0)
    assert bad.admits(b"someone else", 0.0)
    assert bad.delay(b"flooder", 0.0) == 0.1    # one token back after 0.1 s
    assert bad.admits(b"flooder", 0.2)
    bad.refuse_frame(b"flooder", 0.2)           # a frame refused whole costs a token
    bad.refuse_frame(b"flooder", 0.2)
    assert not bad.admits(b"flooder", 0.2)
    # Items refused before the commit (already known bad) cost nothing more.
    bad2 = BadCapabilities(strike_rate=10.0, strike_burst=100.0)
    bad2.learn(items, errors, errors, now=0.0, source=b"flooder")
    assert bad2.admits(b"flooder", 0.0)


def test_a_used_one_shot_capability_costs_a_strike_but_is_not_remembered() -> None:
    """``capability_used`` is charged to the source, but the pair is not refused
    before the commit: the retry of the deposit that used it must reach the
    commit, which answers it as stored."""
    from chatcli.relay.badcaps import BadCapabilities
    from chatcli.relay.mailbox import DepositItem

    bad = BadCapabilities(strike_rate=10.0, strike_burst=100.0)
    used = [DepositItem(b"m" * 16, os.urandom(32), b"x") for _ in range(150)]
    unknown = DepositItem(b"m" * 16, os.urandom(32), b"x")
    bad.learn([*used, unknown], [codes.CAPABILITY_USED] * 150 + [codes.BAD_CAPABILITY],
              [None] * 151, now=0.0, source=b"flooder")
    assert not bad.admits(b"flooder", 0.0)
    assert bad.check([used[0], unknown], 1.0) == [None, codes.BAD_CAPABILITY]
