"""Group commit: one writer task turns the deposits and acknowledgements of
all connections into few transactions.

Connections submit jobs to a bounded channel (a full channel slows the
senders down). The writer takes every job waiting, up to a batch limit,
commits them in one transaction in the storage worker, and only then answers
each deposit (DepositResult) and hands the stored messages to the router for
pushing. While one commit runs the next batch accumulates, so durability
(``synchronous=FULL``: one fsync per commit) does not cap throughput.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable
from typing import Protocol

import trio

from chatcli.errors import StorageError
from chatcli.protocol import codes
from chatcli.relay.delivery import Router
from chatcli.relay.errors import Refused
from chatcli.relay.mailbox import AckBatch, DepositBatch, Mailboxes, commit_result
from chatcli.relay.metrics import RelayMetrics
from chatcli.relay.storage import Worker

__all__ = ["AckJob", "CommitSink", "DepositJob", "GroupCommitter"]

log = logging.getLogger("chatcli.relay.commit")


class CommitSink(Protocol):
    """Where a job's answer goes (a connection); must not block."""

    def deposit_done(self, req: int, errors: list[str | None]) -> None: ...

    def ack_done(self, req: int) -> None: ...

    def request_failed(self, req: int, code: str, message: str) -> None: ...


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


Job = DepositJob | AckJob | None   # None: flush last-seen times


class GroupCommitter:
    def __init__(self, worker: Worker, mailboxes: Mailboxes, router: Router,
                 metrics: RelayMetrics, *, max_items: int, now_ms: Callable[[], int],
                 queue: int = 1024) -> None:
        self._worker = worker
        self._mailboxes = mailboxes
        self._router = router
        self._metrics = metrics
        self._max_items = max_items
        self._now_ms = now_ms
        self._send, self._recv = trio.open_memory_channel[Job](queue)
        self._last_seen: dict[bytes, int] = {}
        self._done = trio.Event()
        self.commits = 0

    async def submit(self, job: DepositJob | AckJob) -> None:
        """Queue a job; waits while the queue is full. Refused when shutting down."""
        try:
            await self._send.send(job)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise Refused(codes.SHUTTING_DOWN, "The relay is shutting down.") from None

    def note_last_seen(self, mailbox: bytes, when: int) -> None:
        """Persist a mailbox's last-seen time with the next commit."""
        self._last_seen[mailbox] = when
        # If the queue is full a commit is coming anyway; if closed, the final flush runs.
        with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError,
                                 trio.BrokenResourceError):
            self._send.send_nowait(None)

    async def run(self) -> None:
        """The writer loop; returns after :meth:`close` once everything is committed."""
        try:
            async with self._recv:
                async for first in self._recv:
                    jobs = [first]
                    items = _size(first)
                    while items < self._max_items:
                        try:
                            job = self._recv.receive_nowait()
                        except trio.WouldBlock:
                            break
                        jobs.append(job)
                        items += _size(job)
                    await self._commit(jobs)
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
        await self._send.aclose()
        await self._done.wait()

    async def _commit(self, jobs: list[Job]) -> None:
        deposits = [j for j in jobs if isinstance(j, DepositJob)]
        acks = [j for j in jobs if isinstance(j, AckJob)]
        last_seen, self._last_seen = self._last_seen, {}
        if not deposits and not acks and not last_seen:
            return
        start = trio.current_time()
        answered: list[DepositJob | AckJob] = [*deposits, *acks]
        try:
            now = self._now_ms()
            batches = [d.batch for d in deposits]
            decided = await self._worker.run(self._mailboxes.commit_ids, batches,
                                             [a.ack for a in acks], last_seen, now)
            result = commit_result(batches, decided, now)
        except StorageError as exc:
            for job in answered:
                job.sink.request_failed(job.req, codes.TRY_AGAIN, str(exc))
            for mailbox, when in last_seen.items():
                self._last_seen.setdefault(mailbox, when)
            return
        except Exception:
            log.exception("group commit failed")
            for job in answered:
                job.sink.request_failed(job.req, codes.INTERNAL_ERROR,
                                        "The relay failed to store this request.")
            return
        self.commits += 1
        m = self._metrics
        m.commit_seconds.observe(trio.current_time() - start)
        m.commit_items.observe(sum(len(d.batch.items) for d in deposits) + len(acks))
        for job, errors in zip(deposits, result.errors, strict=True):
            for code in errors:
                if code is not None:
                    m.deposits_refused.labels(code).inc()
            job.sink.deposit_done(job.req, errors)
        for ack in acks:
            ack.sink.ack_done(ack.req)
        if result.stored:
            m.deposits.inc(len(result.stored))
            m.deposit_bytes.inc(sum(len(msg.payload) for _, msg in result.stored))
        m.acked.inc(result.acked)
        self._router.dispatch(result.stored)


def _size(job: Job) -> int:
    if isinstance(job, DepositJob):
        return len(job.batch.items)
    if isinstance(job, AckJob):
        return len(job.ack.ids)
    return 1
