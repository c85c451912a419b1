"""Shared helpers of the benchmarks: processes, /proc readings, statistics.

The orchestrating side of every benchmark is plain synchronous Python that
starts processes (a relay, an echo server, load generators) and reads their
one-line JSON reports; the load itself runs in trio inside those processes.
Nothing here talks to anything but 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
RELAY_ADDRESS_RE = re.compile(r"relay address:\s*(wss?://\S+)")
METRICS_RE = re.compile(r"metrics:\s*(http://\S+/metrics)")
_CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """A benchmark could not run (a process failed to start, a report is missing)."""


# ------------------------------------------------------------ limits, clocks


def raise_nofile_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to the hard limit; return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def now_ns() -> int:
    """CLOCK_MONOTONIC in ns: one clock for every process of this machine."""
    return time.monotonic_ns()


# -------------------------------------------------------------- statistics


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """The p-th percentile (0..100) of already sorted values, nearest-rank."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * p // 100))  # ceil(n * p / 100)
    return float(sorted_values[min(len(sorted_values), int(rank)) - 1])


def latency_summary(latencies_ns: list[int]) -> dict[str, Any]:
    """p50/p90/p99/max in milliseconds of a list of latencies in ns."""
    values = sorted(latencies_ns)

    def ms(p: float) -> float | None:
        v = percentile(values, p)
        return None if v is None else round(v / 1e6, 3)

    return {
        "samples": len(values),
        "p50_ms": ms(50),
        "p90_ms": ms(90),
        "p99_ms": ms(99),
        "max_ms": None if not values else round(values[-1] / 1e6, 3),
    }


def median(values: Sequence[float]) -> float | None:
    if not values:
        return None
    s = sorted(values)
    mid = len(s) // 2
    return float(s[mid]) if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


# ------------------------------------------------------------------ /proc


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its living descendants (for relays with --workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def rss_kib(pid: int) -> int:
    """VmRSS of one process in KiB (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_kib(pid: int) -> int:
    return sum(rss_kib(p) for p in process_tree(pid))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process, in seconds (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the comm field: state is fields[0]; utime, stime are stat fields 14, 15.
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def tree_cpu_seconds(pid: int) -> float:
    return sum(cpu_seconds(p) for p in process_tree(pid))


STORAGE_PROCESS = "chatcli.relay.storage_process"


def storage_cpu_seconds(pid: int) -> float:
    """CPU seconds of the relay storage processes under ``pid`` (see
    chatcli/relay/storage_process.py): part of :func:`tree_cpu_seconds`."""
    total = 0.0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if STORAGE_PROCESS.encode() in cmdline:
            total += cpu_seconds(p)
    return total


def machine_info() -> dict[str, Any]:
    model = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "nofile_limit": resource.getrlimit(resource.RLIMIT_NOFILE),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


# --------------------------------------------------------------- processes


def chatcli_command() -> list[str]:
    """How to run the ``chatcli`` program of this interpreter's environment."""
    beside = Path(sys.executable).with_name("chatcli")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("chatcli")
    if found:
        return [found]
    return [sys.executable, "-c", "from chatcli.cli.main import cli; cli()"]


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("PYTHONUNBUFFERED", "1")
    if extra:
        env.update(extra)
    return env


def _raise_limit_in_child() -> None:
    raise_nofile_limit()


def _drain(stream: IO[str]) -> None:
    with contextlib.suppress(OSError, ValueError):
        for _ in stream:
            pass


def read_line(stream: IO[str], timeout: float) -> str | None:
    """One line from a pipe within ``timeout`` seconds; None at EOF or timeout."""
    sel = selectors.DefaultSelector()
    try:
        sel.register(stream, selectors.EVENT_READ)
        if not sel.select(timeout):
            return None
    finally:
        sel.close()
    line = stream.readline()
    return line or None


class Worker:
    """A Python process running ``python -m MODULE ARGS``, speaking JSON lines
    on stdout (reports) and plain lines on stdin (commands)."""

    def __init__(self, module: str, args: Sequence[str], *, log_dir: Path,
                 name: str | None = None) -> None:
        self.name = name or module.rsplit(".", 1)[-1]
        self.log_path = log_dir / f"{self.name}-{os.getpid()}-{id(self)}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=REPO_ROOT, env=child_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._log, text=True, bufsize=1, preexec_fn=_raise_limit_in_child)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def read_json(self, timeout: float) -> dict[str, Any]:
        """The next JSON object the worker prints (other lines are skipped)."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            line = read_line(self.proc.stdout, max(0.0, left)) if left > 0 else None
            if line is None:
                raise BenchError(f"{self.name}: no report within {timeout:.0f} s "
                                 f"(exit code {self.proc.poll()}); log: "
                                 f"{self.log_tail()}")
            line = line.strip()
            if line.startswith("{"):
                value = json.loads(line)
                if not isinstance(value, dict):
                    raise BenchError(f"{self.name}: report is not an object")
                if "error" in value:
                    raise BenchError(f"{self.name}: {value['error']}")
                return value

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def log_tail(self, chars: int = 1500) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def close(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            try:
                if self.proc.stdin is not None:
                    self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for stream in (self.proc.stdout, self.proc.stdin):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        self._log.close()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def emit(report: dict[str, Any]) -> None:
    """Print one JSON report line on stdout (the worker side of :class:`Worker`)."""
    sys.stdout.write(json.dumps(report, separators=(",", ":")) + "\n")
    sys.stdout.flush()


# ------------------------------------------------------------------ relays


LOOPBACK_LOAD_SETTINGS: dict[str, float | int | str | bool] = {
    "registration_rate": 1_000_000.0, "registration_burst": 1_000_000.0,
    "max_connections_per_address": 1_000_000}


@dataclass(frozen=True)
class RelayConfig:
    """Which relay to start: a database (a SQLite path, a PostgreSQL URL, or
    None for a fresh SQLite file in a temporary directory), a process count,
    and any extra ``chatcli relay serve`` arguments.

    Parsed from ``DB[;workers=N][;arg=--flag=value][;set=NAME=VALUE][;keep]``
    where DB is ``sqlite`` (a fresh file), ``sqlite:PATH`` or a
    ``postgresql://`` URL; ``set`` writes NAME = VALUE into a ``--config``
    file for the relay (``settings``). With a PostgreSQL URL, each run gets a
    fresh database created beside the URL's (and dropped afterwards) unless
    ``keep`` is given, in which case the URL's database itself is used.
    """

    db: str | None = None
    workers: int = 1
    extra_args: tuple[str, ...] = ()
    settings: tuple[tuple[str, float | int | str | bool], ...] = ()
    fresh_database: bool = True

    def with_settings(self, **settings: float | int | str | bool) -> RelayConfig:
        """The same relay with more ``--config`` file settings (later ones win)."""
        merged = dict(self.settings)
        merged.update(settings)
        return RelayConfig(db=self.db, workers=self.workers, extra_args=self.extra_args,
                           settings=tuple(sorted(merged.items())),
                           fresh_database=self.fresh_database)

    @classmethod
    def parse(cls, spec: str) -> RelayConfig:
        head, *opts = spec.split(";")
        db: str | None
        if head in ("", "sqlite"):
            db = None
        elif head.startswith("sqlite:"):
            db = head[len("sqlite:"):]
        else:
            db = head
        workers, extra, fresh = 1, [], True
        settings: dict[str, float | int | str | bool] = {}
        for opt in opts:
            key, _, value = opt.partition("=")
            if key == "keep":
                fresh = False
            elif key == "workers":
                workers = int(value)
            elif key == "arg":
                extra.append(value)
            elif key == "set":
                name, _, text = value.partition("=")
                settings[name] = _setting_value(text)
            else:
                raise ValueError(f"unknown relay option {key!r} in {spec!r}")
        return cls(db=db, workers=workers, extra_args=tuple(extra),
                   settings=tuple(sorted(settings.items())), fresh_database=fresh)

    @property
    def backend(self) -> str:
        if self.db and self.db.startswith(("postgres://", "postgresql://")):
            return "postgresql"
        return "sqlite"

    @property
    def label(self) -> str:
        return f"{self.backend}x{self.workers}"

    def describe(self) -> dict[str, Any]:
        # A PostgreSQL URL may carry a password: report host and database only.
        return {"backend": self.backend, "workers": self.workers,
                "extra_args": list(self.extra_args), "config_file": dict(self.settings),
                "fresh_database": self.backend == "postgresql" and self.fresh_database}


@contextlib.contextmanager
def fresh_postgres_database(url: str) -> Iterator[str]:
    """A new, empty database on the server of ``url`` (its database is only
    used to connect); yields its URL and drops it afterwards. Needs psycopg."""
    import psycopg  # the relay's PostgreSQL backend needs it anyway

    parts = urllib.parse.urlsplit(url)
    name = f"chatcli_bench_{os.getpid()}_{int(time.time() * 1000) % 10**9}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urllib.parse.urlunsplit(parts._replace(path="/" + name))
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _setting_value(text: str) -> float | int | str | bool:
    if text in ("true", "false"):
        return text == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _toml(settings: dict[str, float | int | str | bool]) -> str:
    """A flat TOML document of simple values."""
    lines = []
    for key, value in settings.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int | float):
            text = repr(value)
        else:
            text = json.dumps(value)  # a TOML basic string for plain text
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"


@dataclass
class RelayProcess:
    """A real ``chatcli relay serve`` process on 127.0.0.1 and port 0.

    Use as a context manager; ``url`` is the address line's URL (with the
    fingerprint) and ``ws_url`` the URL to connect to.
    """

    config: RelayConfig = field(default_factory=RelayConfig)
    start_timeout: float = 60.0
    metrics: bool = False  # serve Prometheus /metrics (on a free port) for scrape()
    url: str = ""
    metrics_url: str | None = None
    proc: subprocess.Popen[str] | None = None
    _tmp: tempfile.TemporaryDirectory[str] | None = None
    _drain: threading.Thread | None = None
    _stack: contextlib.ExitStack | None = None
    log_path: Path | None = None

    def __enter__(self) -> RelayProcess:
        self._tmp = tempfile.TemporaryDirectory(prefix="chatcli-bench-relay-")
        self._stack = contextlib.ExitStack()
        tmp = Path(self._tmp.name)
        db = self.config.db or str(tmp / "relay.db")
        if self.config.backend == "postgresql" and self.config.fresh_database:
            db = self._stack.enter_context(fresh_postgres_database(db))
        cmd = [*chatcli_command(), "relay", "serve", "--host", LOOPBACK, "--port", "0",
               "--db", db]
        if self.config.workers != 1:
            cmd += ["--workers", str(self.config.workers)]
        # Every load comes from loopback: lift the per-address limits (the
        # relay's defaults are for many clients on many addresses).
        settings = {**LOOPBACK_LOAD_SETTINGS, **dict(self.config.settings)}
        config_path = tmp / "relay.toml"
        config_path.write_text(_toml(settings))
        cmd += ["--config", str(config_path)]
        cmd += list(self.config.extra_args)
        if self.metrics:
            cmd += ["--metrics-port", "0"]
        self.log_path = tmp / "relay.log"
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True,
                bufsize=1, env=child_env(), cwd=tmp, preexec_fn=_raise_limit_in_child)
        try:
            self.url = self._wait_for_address()
            if self.metrics:
                self.metrics_url = self._wait_for_metrics()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _wait_for_address(self) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + self.start_timeout
        seen: list[str] = []
        while time.monotonic() < deadline:
            line = read_line(self.proc.stdout, max(0.0, deadline - time.monotonic()))
            if line is None:
                break
            seen.append(line)
            match = RELAY_ADDRESS_RE.search(line)
            if match:
                # Keep reading stdout so that the relay never blocks on a full pipe.
                self._drain = threading.Thread(target=_drain, args=(self.proc.stdout,),
                                               daemon=True)
                self._drain.start()
                return match.group(1)
        raise BenchError(
            f"the relay printed no address line (exit code {self.proc.poll()}); "
            f"stdout: {''.join(seen)[-500:]!r}; log: {self.log_tail()!r}")

    def _wait_for_metrics(self, timeout: float = 10.0) -> str | None:
        """The /metrics URL the relay logs on stderr (None if it never does)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = METRICS_RE.search(self.log_tail(100_000))
            if match:
                return match.group(1)
            time.sleep(0.05)
        return None

    def scrape(self) -> dict[str, float]:
        """The relay's Prometheus samples, ``name{labels}`` -> value (empty
        without metrics). Only 127.0.0.1 is ever asked."""
        if not self.metrics_url or not self.metrics_url.startswith(f"http://{LOOPBACK}:"):
            return {}
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=5) as resp:  # noqa: S310
                text = resp.read().decode("utf-8", "replace")
        except OSError:
            return {}
        samples: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                try:
                    samples[name] = float(value)
                except ValueError:
                    continue
        return samples

    @property
    def ws_url(self) -> str:
        """The URL without its ``#fingerprint`` fragment."""
        return self.url.split("#", 1)[0]

    @property
    def fingerprint(self) -> str | None:
        return self.url.split("#", 1)[1] if "#" in self.url else None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss_kib(self) -> int:
        return tree_rss_kib(self.pid)

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.pid)

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:] if self.log_path else ""
        except OSError:
            return ""

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                for pid in reversed(process_tree(self.proc.pid)):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                self.proc.wait(5)
        if self._drain is not None:
            self._drain.join(5)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        if self._stack is not None:
            self._stack.close()
            self._stack = None


def sample_cpu(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of named process trees."""
    return {name: tree_cpu_seconds(pid) for name, pid in pids.items()}


def cpu_delta(before: dict[str, float], after: dict[str, float],
              seconds: float) -> dict[str, Any]:
    """CPU seconds used by each named process tree, and as a share of one core."""
    out: dict[str, Any] = {}
    for name, start in before.items():
        used = after.get(name, start) - start
        out[f"{name}_cpu_s"] = round(used, 3)
        out[f"{name}_cpu_cores"] = round(used / seconds, 3) if seconds > 0 else None
    return out
