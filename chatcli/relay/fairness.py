"""Fair shares of the storage worker: start-time fair queuing of jobs by
connection, weighted so that each source address gets one share however many
connections it opens.

Every queued job gets a virtual start tag, ``max(now, flow's last finish)``,
and finishes ``cost * flows_of_its_source`` later; jobs are taken in tag
order. A flow that has queued much work has tags far ahead, so a job of an
idle or light flow (tag "now") goes before the backlog: a flooder delays
others by about one job of its own, not by its queue. Pure, no clock.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["FairQueue"]

T = TypeVar("T")


class _Flow:
    __slots__ = ("finish", "pending", "source")

    def __init__(self, source: Hashable) -> None:
        self.source = source
        self.finish = 0.0
        self.pending = 0


class FairQueue(Generic[T]):
    """Jobs of many flows (connections) from many sources (addresses)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, object, T, int]] = []
        self._flows: dict[object, _Flow] = {}
        self._per_source: Counter[Hashable] = Counter()
        self._vtime = 0.0
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def depth(self, flow: object) -> int:
        """Jobs of ``flow`` waiting."""
        state = self._flows.get(flow)
        return 0 if state is None else state.pending

    def put(self, flow: object, source: Hashable, job: T, cost: int) -> None:
        state = self._flows.get(flow)
        if state is None:
            state = self._flows[flow] = _Flow(source)
            self._per_source[source] += 1
        start = max(self._vtime, state.finish)
        state.finish = start + max(cost, 1) * self._per_source[state.source]
        state.pending += 1
        heapq.heappush(self._heap, (start, next(self._seq), flow, job, cost))

    def pop(self) -> tuple[T, int]:
        """The next job and its cost; IndexError when empty."""
        start, _, flow, job, cost = heapq.heappop(self._heap)
        self._vtime = start
        state = self._flows[flow]
        state.pending -= 1
        if not state.pending:
            del self._flows[flow]
            self._per_source[state.source] -= 1
            if not self._per_source[state.source]:
                del self._per_source[state.source]
        return job, cost
