"""Group commit: one writer task turns the deposits and acknowledgements of
all connections into few transactions.

Connections submit jobs to a fair queue (fairness.py): each connection may
have a few jobs waiting (more slows that connection down, not the others),
and jobs are taken in fair-share order by connection and source address, so
one flooding connection or address delays others by about one of its jobs,
not by its backlog. The writer takes jobs waiting, up to a batch limit in
items and in bytes (so that one commit, which everyone waits for, stays
short), commits them in one transaction in the storage worker, and only then
answers each deposit (DepositResult) and hands the stored messages to the
router for pushing. While one commit runs the next batch accumulates, so
durability (``synchronous=FULL``: one fsync per commit) does not cap
throughput.

Two commits are in flight at once (:data:`PIPELINE`): the next is sent to the
storage worker while it still runs the previous one, so the storage process
goes from one commit to the next without waiting for the event loop to read
an answer, answer the connections and prepare the next batch. Answers come
back in the order commits were sent, and each is handled to the end before
the next is read, so messages are pushed in id order as before.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Protocol

import trio

from chatcli.errors import StorageError
from chatcli.protocol import codes
from chatcli.relay.badcaps import BadCapabilities
from chatcli.relay.delivery import Router
from chatcli.relay.errors import Refused
from chatcli.relay.fairness import FairQueue
from chatcli.relay.mailbox import AckBatch, CommitIds, DepositBatch, Mailboxes, commit_result
from chatcli.relay.metrics import RelayMetrics
from chatcli.relay.storage import Pending, Worker

__all__ = ["AckJob", "CommitSink", "DepositJob", "GroupCommitter"]

log = logging.getLogger("chatcli.relay.commit")

PIPELINE = 2   # commits in flight at once
PER_FLOW = 4   # jobs one connection may have waiting before its submit waits
ITEM_COST = 512   # the cost of one item besides its payload bytes (fair shares)


class CommitSink(Protocol):
    """Where a job's answer goes (a connection); must not block."""

    def deposit_done(self, req: int, errors: list[str | None]) -> None: ...

    def ack_done(self, req: int) -> None: ...

    def request_failed(self, req: int, code: str, message: str) -> None: ...

    @property
    def source(self) -> bytes:
        """Where the jobs come from (an IPv4 address or IPv6 /64, as the
        per-address limits count): one fair share each."""
        ...


@dataclasses.dataclass(slots=True, eq=False)
class DepositJob:
    sink: CommitSink
    req: int
    batch: DepositBatch


@dataclasses.dataclass(slots=True, eq=False)
class AckJob:
    sink: CommitSink
    req: int
    ack: AckBatch


Job = DepositJob | AckJob


class GroupCommitter:
    def __init__(self, worker: Worker, mailboxes: Mailboxes, router: Router,
                 metrics: RelayMetrics, *, max_items: int, now_ms: Callable[[], int],
                 max_bytes: int = 1024 * 1024, queue: int = 1024,
                 bad_caps: BadCapabilities | None = None) -> None:
        self._worker = worker
        self._mailboxes = mailboxes
        self._router = router
        self._metrics = metrics
        self._max_items = max_items
        self._max_cost = max_bytes
        self._now_ms = now_ms
        self._capacity = queue
        self._queue: FairQueue[Job] = FairQueue()
        self._space = trio.lowlevel.ParkingLot()   # submitters waiting for room
        self._ready = trio.Event()                 # set when there is work or on close
        self._closed = False
        self._last_seen: dict[bytes, int] = {}
        self._done = trio.Event()
        self.bad_caps = bad_caps
        # Commits in flight: one running in the storage worker, the next
        # already sent behind it (see Worker.send).
        self._slots = trio.Semaphore(PIPELINE)
        self.commits = 0

    async def submit(self, job: DepositJob | AckJob) -> None:
        """Queue a job; waits while this connection has PER_FLOW jobs waiting
        or the queue is full. Refused when shutting down."""
        flow = job.sink
        while not self._closed and (self._queue.depth(flow) >= PER_FLOW
                                    or len(self._queue) >= self._capacity):
            await self._space.park()
        if self._closed:
            raise Refused(codes.SHUTTING_DOWN, "The relay is shutting down.")
        self._queue.put(flow, job.sink.source, job, _cost(job))
        self._ready.set()

    def note_last_seen(self, mailbox: bytes, when: int) -> None:
        """Persist a mailbox's last-seen time with the next commit."""
        self._last_seen[mailbox] = when
        self._ready.set()

    async def run(self) -> None:
        """The writer loop; returns after :meth:`close` once everything is committed."""
        try:
            async with trio.open_nursery() as nursery:
                while True:
                    # A free slot first, then whatever jobs wait: the batch
                    # grows while the commits ahead of it run.
                    await self._slots.acquire()
                    while not self._queue and not self._last_seen and not self._closed:
                        await self._ready.wait()
                        self._ready = trio.Event()
                    if not self._queue and not self._last_seen:
                        self._slots.release()
                        break
                    jobs: list[Job] = []
                    items = cost = 0
                    while self._queue and items < self._max_items and cost < self._max_cost:
                        job, job_cost = self._queue.pop()
                        jobs.append(job)
                        items += _size(job)
                        cost += job_cost
                    self._space.unpark_all()
                    commit = await self._start(jobs)
                    if commit is None:
                        self._slots.release()
                    else:
                        nursery.start_soon(self._finish_and_release, commit)
            if self._last_seen:
                await self._commit([])
        finally:
            self._done.set()

    async def flush(self) -> None:
        """Commit last-seen times noted after :meth:`close` (connections closing
        at shutdown)."""
        if self._last_seen:
            await self._commit([])

    async def close(self) -> None:
        """Stop taking jobs, and wait until the queued ones are committed and answered."""
        self._closed = True
        self._ready.set()
        self._space.unpark_all()
        await self._done.wait()

    async def _commit(self, jobs: list[Job]) -> None:
        commit = await self._start(jobs)
        if commit is not None:
            await self._finish(commit)

    async def _start(self, jobs: list[Job]) -> _Commit | None:
        """Send one commit to the storage worker; None if there was nothing to
        commit or it could not be sent (its jobs are answered then)."""
        deposits = [j for j in jobs if isinstance(j, DepositJob)]
        acks = [j for j in jobs if isinstance(j, AckJob)]
        last_seen, self._last_seen = self._last_seen, {}
        if not deposits and not acks and not last_seen:
            return None
        commit = _Commit(deposits, acks, last_seen, [d.batch for d in deposits],
                         self._now_ms(), trio.current_time())
        try:
            commit.pending = await self._worker.send(
                self._mailboxes.commit_ids, commit.batches, [a.ack for a in acks],
                last_seen, commit.now)
        except StorageError as exc:
            self._failed(commit, codes.TRY_AGAIN, str(exc))
            return None
        return commit

    async def _finish_and_release(self, commit: _Commit) -> None:
        try:
            await self._finish(commit)
        finally:
            self._slots.release()

    async def _finish(self, commit: _Commit) -> None:
        """Wait for a commit's result, then answer its jobs and push its messages.

        Results come in the order the commits were sent, and everything after
        the wait runs without a checkpoint: deliveries keep commit (id) order."""
        assert commit.pending is not None
        try:
            decided = await commit.pending.result()
        except StorageError as exc:
            self._failed(commit, codes.TRY_AGAIN, str(exc))
            return
        except Exception:
            log.exception("group commit failed")
            self._failed(commit, codes.INTERNAL_ERROR, "The relay failed to store this request.",
                         keep_last_seen=False)
            return
        result = commit_result(commit.batches, decided, commit.now)
        self.commits += 1
        m = self._metrics
        m.commit_seconds.observe(trio.current_time() - commit.started)
        m.commit_items.observe(sum(len(b.items) for b in commit.batches) + len(commit.acks))
        now = trio.current_time()
        for job, errors in zip(commit.deposits, result.errors, strict=True):
            for code in errors:
                if code is not None:
                    m.deposits_refused.labels(code).inc()
            if self.bad_caps is not None:
                self.bad_caps.learn(job.batch.items, errors, job.batch.refused, now,
                                    job.sink.source)
            job.sink.deposit_done(job.req, errors)
        for ack in commit.acks:
            ack.sink.ack_done(ack.req)
        if result.stored:
            m.deposits.inc(len(result.stored))
            m.deposit_bytes.inc(sum(len(msg.payload) for _, msg in result.stored))
        m.acked.inc(result.acked)
        self._router.dispatch(result.stored)

    def _failed(self, commit: _Commit, code: str, message: str, *,
                keep_last_seen: bool = True) -> None:
        jobs: list[DepositJob | AckJob] = [*commit.deposits, *commit.acks]
        for job in jobs:
            job.sink.request_failed(job.req, code, message)
        if keep_last_seen:   # retried with the next commit
            for mailbox, when in commit.last_seen.items():
                self._last_seen.setdefault(mailbox, when)


@dataclasses.dataclass(slots=True, eq=False)
class _Commit:
    """One group commit between :meth:`GroupCommitter._start` and ``_finish``."""

    deposits: list[DepositJob]
    acks: list[AckJob]
    last_seen: dict[bytes, int]
    batches: list[DepositBatch]
    now: int
    started: float
    pending: Pending[CommitIds] | None = None


def _size(job: Job) -> int:
    if isinstance(job, DepositJob):
        return len(job.batch.items)
    return len(job.ack.ids)


def _cost(job: Job) -> int:
    """A job's share of a commit: its payload bytes and a cost per item."""
    if isinstance(job, DepositJob):
        return sum(len(item.payload) for item in job.batch.items) + ITEM_COST * len(
            job.batch.items)
    return ITEM_COST + 8 * len(job.ack.ids)
