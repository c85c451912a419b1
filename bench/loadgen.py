"""The load patterns shared by the relay benchmark and its echo floor.

Both run the same two phases over the same kind of transport:

- **throughput**: N pairs, closed loop. Each pair may have ``window`` messages
  sent and not yet received by its receiver; the sender packs whatever window
  is free (up to ``batch``) into one frame. The phase ends when every pair has
  had ``messages`` payloads delivered, or at ``duration`` seconds.
- **latency**: open loop at a fixed total rate spread evenly over the pairs,
  one payload per frame, each sent at its scheduled time whatever happened
  before (no coordinated omission). Latency is receive time minus send time.

Payloads are ``payload_size`` bytes: a 32-byte header (magic, run id, pair,
sequence number, CLOCK_MONOTONIC send time in ns) then incompressible filler.
CLOCK_MONOTONIC is one clock for all processes of a Linux machine.

A transport (relay or echo) opens pairs: ``send(payloads)`` puts one frame on
the wire, and the transport calls the harness back with what arrives
(:meth:`Harness.delivered`) and with deposits refused (:meth:`Harness.failed`).
"""

from __future__ import annotations

import argparse
import os
import resource
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol

import trio

from bench.common import latency_summary, now_ns, storage_cpu_seconds, tree_cpu_seconds

HEADER = struct.Struct(">4sIIQq")  # magic, run id, pair, seq, send time (ns)
MAGIC = b"cbn1"
HEADER_SIZE = 32  # HEADER.size is 28; 4 bytes of slack keep the layout round


@dataclass
class LoadParams:
    """Sizes and durations of one load run (command-line flags of the same names)."""

    pairs: int = 50
    payload_size: int = 1024
    window: int = 64
    batch: int = 32
    messages: int = 20000        # per pair in the throughput phase (a cap)
    duration: float = 5.0        # length bound of the throughput phase, seconds
    warmup: int = 20             # per pair, before the throughput phase
    rate: float = 500.0          # messages/s in the latency phase (total)
    latency_pairs: int = 100
    latency_duration: float = 10.0
    drain_timeout: float = 10.0  # wait for stragglers after the latency phase
    phase_gap: float = 1.0       # pause between the throughput and the latency phase

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        defaults = cls()
        helps = {
            "pairs": "sender/receiver pairs in the throughput phase",
            "payload_size": "bytes per payload (a padded, sealed message)",
            "window": "messages in flight per pair (throughput phase)",
            "batch": "most payloads per frame (throughput phase)",
            "messages": "most messages per pair in the throughput phase",
            "duration": "the throughput phase ends after this many seconds or when "
                        "every pair has its messages delivered, whichever comes first",
            "warmup": "messages per pair before the throughput phase",
            "rate": "total paced rate of the latency phase (messages/s)",
            "latency_pairs": "pairs in the latency phase",
            "latency_duration": "length of the latency phase (s)",
            "drain_timeout": "wait for late messages after the latency phase (s)",
            "phase_gap": "pause letting the relay drain between the phases (s)",
        }
        for f in fields(cls):
            flag = "--" + f.name.replace("_", "-")
            default = getattr(defaults, f.name)
            parser.add_argument(flag, type=type(default), default=default,
                                help=f"{helps[f.name]} (default {default})")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> LoadParams:
        params = cls(**{f.name: getattr(args, f.name) for f in fields(cls)})
        params.check()
        return params

    def check(self) -> None:
        if self.payload_size < HEADER_SIZE or self.payload_size > 64 * 1024:
            raise ValueError(f"payload size must be {HEADER_SIZE}..65536 bytes")
        if min(self.pairs, self.window, self.batch, self.latency_pairs) < 1:
            raise ValueError("pairs, window, batch and latency pairs must be positive")
        if self.batch > 256:
            raise ValueError("a frame carries at most 256 payloads")

    def to_argv(self) -> list[str]:
        argv = []
        for key, value in asdict(self).items():
            argv += ["--" + key.replace("_", "-"), str(value)]
        return argv

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class PairSender(Protocol):
    async def send(self, payloads: list[bytes]) -> None:
        """Put one frame carrying ``payloads`` on the wire."""


class Transport(Protocol):
    """Opens the connections of one pair, calling the harness back."""

    async def open_pair(self, nursery: trio.Nursery, index: int,
                        harness: Harness) -> PairSender: ...

    def take_stats(self) -> dict[str, Any]:
        """Transport-specific counters since the last call, for the report."""
        ...


class _Pair:
    __slots__ = ("delivered", "failed", "index", "next_seq", "retry", "seen", "sender",
                 "target", "window")

    def __init__(self, index: int, sender: PairSender, window: int) -> None:
        self.index = index
        self.sender = sender
        self.window = trio.Semaphore(window)
        self.next_seq = 0
        self.target = 0
        self.delivered = 0
        self.failed = 0
        self.seen: set[int] = set()
        self.retry: list[bytes] = []


class Harness:
    """Counts what arrives, keeps the windows, and runs the two phases."""

    def __init__(self, params: LoadParams) -> None:
        self.params = params
        self.filler = os.urandom(params.payload_size - HEADER_SIZE)
        self.run_id = 0
        self.pairs: list[_Pair] = []
        self.closed_loop = True
        self.latencies: list[int] = []
        self.delivered_total = 0
        self.duplicates = 0
        self.foreign = 0
        self.failed_total = 0
        self.retried = 0
        self.errors: dict[str, int] = {}
        self.target_total = 0
        self.last_delivery_ns = 0
        self.all_delivered = trio.Event()
        self.transport: Transport | None = None

    # -------------------------------------------------------------- payloads

    def payload(self, pair: int, seq: int) -> bytes:
        head = HEADER.pack(MAGIC, self.run_id, pair, seq, now_ns())
        return head + bytes(HEADER_SIZE - HEADER.size) + self.filler

    # --------------------------------------------------------------- callbacks

    def delivered(self, payloads: list[bytes]) -> None:
        """A receiver got these payloads (called by the transport)."""
        t = now_ns()
        for data in payloads:
            try:
                magic, run_id, index, seq, sent = HEADER.unpack_from(data)
            except struct.error:
                self.foreign += 1
                continue
            if magic != MAGIC or run_id != self.run_id or index >= len(self.pairs):
                self.foreign += 1
                continue
            pair = self.pairs[index]
            if seq in pair.seen:
                self.duplicates += 1
                continue
            pair.seen.add(seq)
            pair.delivered += 1
            self.delivered_total += 1
            self.latencies.append(t - sent)
            self.last_delivery_ns = t
            if self.closed_loop:
                pair.window.release()
            if self.delivered_total + self.failed_total >= self.target_total > 0:
                self.all_delivered.set()

    def failed(self, index: int, payloads: list[bytes], code: str, transient: bool) -> None:
        """The relay refused these payloads of pair ``index`` (transport callback)."""
        payloads = [p for p in payloads if HEADER.unpack_from(p)[1] == self.run_id]
        if not payloads:
            return  # left over from an earlier phase
        self.errors[code] = self.errors.get(code, 0) + len(payloads)
        pair = self.pairs[index]
        if transient and self.closed_loop:
            pair.retry.extend(payloads)
            self.retried += len(payloads)
            return
        pair.failed += len(payloads)
        self.failed_total += len(payloads)
        if self.closed_loop:
            for _ in payloads:
                pair.window.release()
        if self.delivered_total + self.failed_total >= self.target_total > 0:
            self.all_delivered.set()

    # ----------------------------------------------------------------- setup

    async def open(self, nursery: trio.Nursery, transport: Transport, count: int,
                   concurrency: int = 20) -> float:
        """Open ``count`` pairs (``concurrency`` at a time); return the seconds taken."""
        start = time.monotonic()
        self.transport = transport
        senders: list[PairSender | None] = [None] * count
        limiter = trio.CapacityLimiter(concurrency)

        async def one(i: int) -> None:
            async with limiter:
                senders[i] = await transport.open_pair(nursery, i, self)

        # Pairs exist (with placeholder senders) before any message can arrive.
        self.pairs = [_Pair(i, _NoSender(), self.params.window) for i in range(count)]
        async with trio.open_nursery() as setup:
            for i in range(count):
                setup.start_soon(one, i)
        for pair, sender in zip(self.pairs, senders, strict=True):
            assert sender is not None
            pair.sender = sender
        return time.monotonic() - start

    def _reset(self, closed_loop: bool, per_pair: int, active: int) -> None:
        self.run_id += 1
        self.closed_loop = closed_loop
        self.latencies = []
        self.delivered_total = self.duplicates = self.foreign = 0
        self.failed_total = self.retried = 0
        self.errors = {}
        self.all_delivered = trio.Event()
        self.target_total = per_pair * active
        for pair in self.pairs:
            pair.window = trio.Semaphore(self.params.window)
            pair.next_seq = pair.delivered = pair.failed = 0
            pair.target = per_pair if pair.index < active else 0
            pair.seen = set()
            pair.retry = []
        if self.transport is not None:
            self.transport.take_stats()

    # ------------------------------------------------------------ throughput

    async def _closed_loop_sender(self, pair: _Pair, stop: trio.Event) -> None:
        batch = self.params.batch
        while not stop.is_set() and (pair.next_seq < pair.target or pair.retry):
            if pair.retry:
                payloads = pair.retry[:batch]
                del pair.retry[:batch]
                await pair.sender.send(payloads)
                continue
            await pair.window.acquire()
            n = 1
            while (n < batch and pair.next_seq + n < pair.target
                   and pair.window.value > 0):
                pair.window.acquire_nowait()
                n += 1
            seq = pair.next_seq
            pair.next_seq += n
            await pair.sender.send([self.payload(pair.index, s) for s in range(seq, seq + n)])
        # Transient refusals come back as retries after the loop ended.
        while not stop.is_set() and pair.delivered + pair.failed < pair.target:
            if pair.retry:
                payloads = pair.retry[:batch]
                del pair.retry[:batch]
                await pair.sender.send(payloads)
            else:
                await trio.sleep(0.005)

    async def throughput(self, per_pair: int, duration: float,
                         measure: Callable[[], dict[str, float]]) -> dict[str, Any]:
        self._reset(True, per_pair, len(self.pairs))
        stop = trio.Event()
        before = measure()
        start = now_ns()
        with trio.move_on_after(duration) as scope:
            async with trio.open_nursery() as nursery:
                for pair in self.pairs:
                    nursery.start_soon(self._closed_loop_sender, pair, stop)
                await self.all_delivered.wait()
                stop.set()
        stop.set()
        end = self.last_delivery_ns if self.all_delivered.is_set() else now_ns()
        after = measure()
        seconds = max(1e-9, (end - start) / 1e9)
        report = {
            "pairs": len(self.pairs),
            "messages_target": self.target_total,
            "messages_delivered": self.delivered_total,
            "ended_by": "duration" if scope.cancelled_caught else "count",
            "seconds": round(seconds, 3),
            "messages_per_s": round(self.delivered_total / seconds, 1),
            "bytes_per_s": round(self.delivered_total * self.params.payload_size / seconds),
            "latency_under_load": latency_summary(self.latencies),
            "failed": self.failed_total,
            "retried": self.retried,
            "duplicates": self.duplicates,
            "errors": dict(self.errors),
        }
        report.update(_cpu_report(before, after, seconds))
        if self.transport is not None:
            report["transport"] = self.transport.take_stats()
        return report

    # --------------------------------------------------------------- latency

    async def _paced_sender(self, pair: _Pair, t0: float, interval: float,
                            lags: list[float]) -> None:
        for seq in range(pair.target):
            when = t0 + seq * interval
            await trio.sleep_until(when)
            lags.append(trio.current_time() - when)
            pair.next_seq = seq + 1
            await pair.sender.send([self.payload(pair.index, seq)])

    async def latency(self, rate: float, active: int, duration: float, drain_timeout: float,
                      measure: Callable[[], dict[str, float]]) -> dict[str, Any]:
        active = min(active, len(self.pairs))
        interval = active / rate  # seconds between two messages of one pair
        per_pair = max(1, round(duration / interval))
        self._reset(False, per_pair, active)
        lags: list[float] = []
        before = measure()
        t0 = trio.current_time() + 0.05
        start = now_ns()
        async with trio.open_nursery() as nursery:
            for pair in self.pairs[:active]:
                # Spread the pairs' schedules evenly over one interval.
                offset = interval * pair.index / active
                nursery.start_soon(self._paced_sender, pair, t0 + offset, interval, lags)
        sent_end = now_ns()
        with trio.move_on_after(drain_timeout):
            await self.all_delivered.wait()
        after = measure()
        seconds = max(1e-9, (sent_end - start) / 1e9)
        lags.sort()
        report = {
            "pairs": active,
            "rate_target": rate,
            "rate_achieved": round(self.target_total / seconds, 1),
            "messages_sent": self.target_total,
            "messages_delivered": self.delivered_total,
            "lost_or_late": self.target_total - self.delivered_total,
            "seconds": round(seconds, 3),
            "failed": self.failed_total,
            "duplicates": self.duplicates,
            "errors": dict(self.errors),
            "send_lag_p99_ms": round(lags[int(len(lags) * 0.99) - 1] * 1e3, 3) if lags else None,
        }
        report.update(latency_summary(self.latencies))
        report.update(_cpu_report(before, after, seconds))
        if self.transport is not None:
            report["transport"] = self.transport.take_stats()
        return report

    async def run_phases(self, transport: Transport, measure: Callable[[], dict[str, float]],
                         on_phase: Callable[[str], None] = lambda name: None,
                         ) -> dict[str, Any]:
        """Open the pairs, warm up, then the throughput and latency phases;
        ``on_phase(name)`` is called as each measured phase starts (``throughput``,
        ``latency``) and ends (``throughput_end``, ``latency_end``)."""
        p = self.params
        count = max(p.pairs, p.latency_pairs)
        report: dict[str, Any] = {"params": p.as_dict()}
        async with trio.open_nursery() as nursery:
            report["setup_s"] = round(await self.open(nursery, transport, count), 3)
            # Throughput uses the first `pairs` pairs only.
            all_pairs = self.pairs
            self.pairs = all_pairs[: p.pairs]
            if p.warmup:
                await self.throughput(p.warmup, p.duration, measure)
            on_phase("throughput")
            report["throughput"] = await self.throughput(p.messages, p.duration, measure)
            on_phase("throughput_end")
            # Let what was in flight when the phase ended drain first.
            await trio.sleep(p.phase_gap)
            self.pairs = all_pairs
            on_phase("latency")
            report["latency"] = await self.latency(p.rate, p.latency_pairs,
                                                   p.latency_duration, p.drain_timeout,
                                                   measure)
            on_phase("latency_end")
            nursery.cancel_scope.cancel()
        return report


class _NoSender:
    async def send(self, payloads: list[bytes]) -> None:
        raise RuntimeError("the pair is not open yet")


def _cpu_report(before: dict[str, float], after: dict[str, float],
                seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, start in before.items():
        used = after[name] - start
        out[f"{name}_cpu_s"] = round(used, 3)
        out[f"{name}_cpu_cores"] = round(used / seconds, 3)
    return out


def cpu_meter(server_pids: list[int]) -> Callable[[], dict[str, float]]:
    """CPU seconds so far of the server processes (with their children: the
    relay's storage process, --workers), of the relay's storage processes
    alone (a part of ``server``), and of this generator."""

    def measure() -> dict[str, float]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {"server": sum(tree_cpu_seconds(pid) for pid in server_pids),
                "storage": sum(storage_cpu_seconds(pid) for pid in server_pids),
                "generator": usage.ru_utime + usage.ru_stime}

    return measure


async def guarded(fn: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``fn`` and turn trio's exception groups into their first error, so a
    worker reports one readable line."""
    try:
        return await fn()
    except BaseExceptionGroup as group:
        first: BaseException = group
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from group
