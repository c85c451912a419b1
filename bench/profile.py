"""Sampling the relay with py-spy during a benchmark phase, and a summary.

py-spy is a tool for whoever profiles, not a dependency of chatcli: install
it into your environment (``pip install py-spy``) to use ``--profile``. The
raw collapsed stacks are kept (``*.txt``, one ``frame;frame;... count`` per
line, readable by flamegraph tools); the summary lists where the samples
land: per thread, by function itself (self), and for chatcli's own functions
including what they call (inclusive).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SAMPLE_RATE = 200  # per second
_LINE_RE = re.compile(r"^(.*) (\d+)$")
_FRAME_LINE_RE = re.compile(r":\d+\)$")


def pyspy_command() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


@dataclass
class Profiler:
    """One py-spy recording of a process tree for a fixed number of seconds."""

    output: Path
    proc: subprocess.Popen[bytes] | None
    error: str | None = None

    @classmethod
    def start(cls, pid: int, seconds: float, output: Path) -> Profiler:
        exe = pyspy_command()
        out = output.with_suffix(".txt")
        if exe is None:
            return cls(out, None, "py-spy is not installed (pip install py-spy)")
        proc = subprocess.Popen(
            [exe, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
             "--rate", str(SAMPLE_RATE), "--format", "raw", "--output", str(out),
             "--nonblocking", "--threads", "--subprocesses"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return cls(out, proc)

    def wait(self, timeout: float = 60.0) -> None:
        if self.proc is None:
            return
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        if self.proc.returncode != 0:
            self.error = err.decode(errors="replace").strip()[-300:]
        self.proc = None

    def summary(self, top: int = 15) -> dict[str, Any]:
        self.wait()
        if self.error and not self.output.exists():
            return {"error": self.error}
        return summarise_collapsed(self.output, top) | {"stacks": str(self.output)}


def _function(frame: str) -> str:
    """``func (path:line)`` -> ``path:func`` (all lines of a function together)."""
    if not frame:
        return "(no Python frame: interpreter start-up, shutdown or native code)"
    name, _, where = frame.rpartition(" (")
    path = _FRAME_LINE_RE.sub("", "(" + where).strip("()")
    return f"{path}:{name}" if name else frame


def summarise_collapsed(path: Path, top: int = 15) -> dict[str, Any]:
    """Shares of samples: per thread, per function (self; also split into the
    main thread and the worker threads, where the relay's database work runs),
    and per chatcli function including its callees (inclusive). Shares are of
    all samples, so a thread's rows add up to its share."""
    threads: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    by_group: dict[str, Counter[str]] = {}
    inclusive: Counter[str] = Counter()
    total = 0
    importing = 0
    for line in path.read_text(errors="replace").splitlines():
        match = _LINE_RE.match(line)
        if not match:
            continue
        stack, count = match.group(1), int(match.group(2))
        frames = stack.split(";")
        thread = "?"
        while frames and frames[0].startswith(("thread ", "process ")):
            label = frames.pop(0)
            if label.startswith("thread "):
                thread = label.split(": ", 1)[-1] if ": " in label else label
        if not frames:
            continue
        threads[thread] += count
        total += count
        if any("_find_and_load" in f for f in frames):
            importing += count
        self_time[_function(frames[-1])] += count
        group = "main thread" if thread == "MainThread" else "worker threads"
        by_group.setdefault(group, Counter())[_function(frames[-1])] += count
        for fn in {_function(f) for f in frames}:
            if "chatcli/" in fn:
                inclusive[fn] += count

    def shares(counter: Counter[str], key: str = "function") -> list[dict[str, Any]]:
        return [{key: fn, "share": round(n / total, 3)}
                for fn, n in counter.most_common(top)] if total else []

    return {
        "samples": total,
        "importing_share": round(importing / total, 3) if total else None,
        "threads": shares(threads, "thread"),
        "self": shares(self_time),
        "self_by_thread": {group: shares(counter, "function")[: max(5, top // 2)]
                           for group, counter in sorted(by_group.items())},
        "chatcli_inclusive": shares(inclusive),
    }
