"""The daemon's figures (issue 11, "Numbers"), with real ``chatcli daemon`` processes.

Sections, each against a fresh relay on 127.0.0.1:

``cli``
    ``chatcli --help`` with no daemon and with the daemon of the same
    CHATCLI_HOME running (the help never asks the daemon: it must not get
    slower), and a one-shot ``chatcli send bob TEXT`` while alice's daemon
    runs, with no passphrase in the environment (so it can only go through
    the daemon). Subprocess wall time; the command exits 0 only once bob's
    relay has durably stored the message.

``rpc``
    A raw JSON-RPC client (a stdlib socket on alice's ``daemon.sock``, one
    connection kept open) calls ``send`` and waits for the answer: what it
    includes is the JSON-RPC decode, the outbox write, the ratchet encrypt
    and seal, the deposit over the daemon's open connection to bob's relay
    and the relay's durable commit and acknowledgement, and the answer.

``events``
    Bob's daemon runs too, and a raw client subscribes to its ``message``
    events. For each ``send`` above, with one CLOCK_MONOTONIC for every
    process: ``end_to_end`` is alice's client writing the request -> bob's
    subscriber reading the notification. To isolate the daemon's own part,
    bob's daemon reaches its relay through a byte forwarder (``python -m
    bench.daemon forward``; bob's account address is rewritten to the
    forwarder's port after set-up, as a port forward would be) that stamps
    each chunk the relay writes: ``relay_push`` is the request -> the push
    read off the relay's socket by the forwarder, ``daemon_part`` is that
    read -> bob's subscriber reading the event (the forwarder's copy, the
    daemon's read, decrypt, store commit, acknowledgement to the relay,
    publish, JSON-RPC line). ``forwarder_copy`` is what the forwarder itself
    adds (its read to its write). Sends are paced (``--interval``) so that
    each push is the first large chunk on the wire after its request.

``idle``, ``scale``
    CPU seconds (/proc/PID/stat utime + stime) of a daemon over ``--idle``
    seconds with nothing happening, its RSS (VmRSS) and context switches:
    alice's small daemon, then a daemon holding ``--contacts`` contacts and
    ``--groups`` groups. That identity is built by ``python -m bench.daemon
    populate``: real identities (``CHATCLI_INSECURE_FAST_KDF=1``, one
    CHATCLI_HOME each) register mailboxes on the relay, the hub creates one
    real invite per peer and each peer accepts it through the client API
    (X3DH handshake deposited at the hub's relay), the hub receives and
    answers all the handshakes, then creates the groups (members taken in
    turn from the contacts) and delivers their invitations. The peers never
    come online again (their answers wait at the relay), so the hub's groups
    list them as invited. Then the real ``chatcli daemon`` is started on the
    hub's home; a few ``send`` round trips to its contacts are timed too.

Usage (from the repository root)::

    python -m bench.daemon [--runs 30] [--rpc-sends 200] [--contacts 1000] [--groups 100]
                           [--group-size 5] [--idle 30] [--skip-scale]      # JSON on stdout
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import os
import resource
import selectors
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.cli_startup import PASSPHRASE, _Identity
from bench.common import (
    BenchError,
    RelayConfig,
    RelayProcess,
    Worker,
    chatcli_command,
    child_env,
    emit,
    latency_summary,
    machine_info,
    tree_cpu_seconds,
    tree_rss_kib,
)

TARGET_CLI_SEND_MS = 120.0
TARGET_RPC_SEND_P50_MS = 5.0
TARGET_EVENT_MS = 10.0
TARGET_IDLE_CPU_PERCENT = 1.0  # "idle CPU ~ 0"
PUSH_MIN_BYTES = 64  # a Deliver frame; pongs and Ok answers are smaller


# ------------------------------------------------------------- JSON-RPC client


class RawRpc:
    """A bare JSON-RPC 2.0 client on a daemon's Unix socket (stdlib only)."""

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.buffer = b""
        self.ids = itertools.count(1)

    def close(self) -> None:
        self.sock.close()

    def write(self, method: str, params: dict[str, Any]) -> int:
        request_id = next(self.ids)
        line = json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method,
                           "params": params}, separators=(",", ":"))
        self.sock.sendall(line.encode() + b"\n")
        return request_id

    def lines(self) -> Iterator[dict[str, Any]]:
        """Complete lines already read (after :meth:`fill`)."""
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            if line.strip():
                yield json.loads(line)

    def fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise BenchError("the daemon closed the connection")
        self.buffer += data

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        request_id = self.write(method, params or {})
        while True:
            for message in self.lines():
                if message.get("id") == request_id:
                    if "error" in message:
                        raise BenchError(f"{method}: {message['error']}")
                    return message["result"]
            self.fill()


def daemon_status(home: Path) -> dict[str, Any]:
    rpc = RawRpc(home / "daemon.sock", timeout=5)
    try:
        return rpc.call("daemon.status")  # type: ignore[no-any-return]
    finally:
        rpc.close()


def wait_synced(home: Path, timeout: float = 60.0) -> dict[str, Any]:
    """The daemon's status once it answers and has caught up with its relay."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = daemon_status(home)
        except OSError:
            time.sleep(0.05)
            continue
        if status["synced"] and status["connected"]:
            return status  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise BenchError(f"the daemon of {home} did not catch up within {timeout:g} s")


class DaemonProcess:
    """``chatcli daemon`` in the foreground for one home (what a systemd unit runs)."""

    def __init__(self, home: Path, log_dir: Path) -> None:
        self.home = home
        self.log_path = log_dir / f"daemon-{home.name}.log"
        env = child_env({"CHATCLI_HOME": str(home), "CHATCLI_PASSPHRASE": PASSPHRASE})
        started = time.monotonic()
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen([*chatcli_command(), "daemon"], env=env,
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=log)
        try:
            self.status = wait_synced(home)
        except BaseException:
            self.stop()
            raise
        self.start_s = round(time.monotonic() - started, 3)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------- measurements


def time_runs(cmd: list[str], runs: int, env: dict[str, str]) -> dict[str, Any]:
    """Wall time of ``runs`` runs of ``cmd`` (each must exit 0): p50/p90/p99/max,
    and the CPU time of the command itself (user + system, mean per run),
    which other work on the machine does not inflate as much."""
    times = []
    cpu = 0.0
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter_ns()
        proc = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=60)
        times.append(time.perf_counter_ns() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu += after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        if proc.returncode != 0:
            raise BenchError(f"{shlex.join(cmd[1:4])}... exited {proc.returncode}: "
                             f"{proc.stderr.decode(errors='replace').strip()[-300:]}")
    return latency_summary(times) | {"cpu_ms_per_run": round(cpu * 1000 / max(1, runs), 2)}


def idle_figures(pid: int, seconds: float) -> dict[str, Any]:
    """CPU seconds, context switches and RSS of a process over ``seconds`` of idling."""
    def switches() -> int:
        total = 0
        with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split()[1])
        return total

    cpu0, sw0, t0 = tree_cpu_seconds(pid), switches(), time.monotonic()
    time.sleep(seconds)
    cpu1, sw1, t1 = tree_cpu_seconds(pid), switches(), time.monotonic()
    elapsed = t1 - t0
    return {"seconds": round(elapsed, 2), "cpu_s": round(cpu1 - cpu0, 3),
            "cpu_percent": round(100 * (cpu1 - cpu0) / elapsed, 3),
            "context_switches": sw1 - sw0, "rss_kib": tree_rss_kib(pid)}


def paced_sends(sender: Path, to: str, count: int, warmup: int, interval: float, *,
                receiver: Path | None = None, forwarder: Worker | None = None,
                cpu_pids: dict[str, int] | None = None) -> dict[str, Any]:
    """``send`` round trips on a raw client of ``sender``'s daemon; with
    ``receiver``, the time until its subscriber reads each message, and with
    ``forwarder`` the split at the relay's push. ``cpu_pids`` names processes
    whose CPU time per timed send is reported (everything they did meanwhile:
    receipts, acknowledgements, retries included)."""
    cpu_pids = cpu_pids or {}
    cpu_start: dict[str, float] = {}
    rpc = RawRpc(sender / "daemon.sock")
    sub = RawRpc(receiver / "daemon.sock") if receiver is not None else None
    if sub is not None:
        sub.call("subscribe", {"types": ["message"]})
    series: dict[str, list[int]] = {"rpc_send": [], "end_to_end": [], "relay_push": [],
                                    "daemon_part": [], "forwarder_copy": []}
    not_stored = missing_push = 0
    sel = selectors.DefaultSelector()
    sel.register(rpc.sock, selectors.EVENT_READ, "rpc")
    if sub is not None:
        sel.register(sub.sock, selectors.EVENT_READ, "sub")
    try:
        for i in range(warmup + count):
            time.sleep(interval)
            if i == warmup:
                cpu_start = {name: tree_cpu_seconds(pid) for name, pid in cpu_pids.items()}
            if forwarder is not None:
                forwarder.send("stamps")
                forwarder.read_json(10)  # forget what came before this send
            text = f"bench {os.getpid()} #{i}"
            t0 = time.monotonic_ns()
            request_id = rpc.write("send", {"to": to, "text": text})
            t_answer = t_event = None
            deadline = time.monotonic() + 30
            while t_answer is None or (sub is not None and t_event is None):
                if time.monotonic() > deadline:
                    raise BenchError(f"send #{i}: no answer or event within 30 s")
                for key, _ in sel.select(1.0):
                    now = time.monotonic_ns()
                    conn = rpc if key.data == "rpc" else sub
                    assert conn is not None
                    conn.fill()
                    for message in conn.lines():
                        if key.data == "rpc" and message.get("id") == request_id:
                            if "error" in message:
                                raise BenchError(f"send #{i}: {message['error']}")
                            t_answer = now
                            not_stored += not message["result"].get("stored")
                        elif (key.data == "sub" and message.get("method") == "event"
                              and message["params"]["event"].get("text") == text):
                            t_event = now
            if i < warmup:
                continue
            assert t_answer is not None
            series["rpc_send"].append(t_answer - t0)
            if t_event is None:
                continue
            series["end_to_end"].append(t_event - t0)
            if forwarder is not None:
                forwarder.send("stamps")
                stamps = forwarder.read_json(10)["stamps"]
                push = next((s for s in stamps if s[0] >= t0 and s[1] >= PUSH_MIN_BYTES), None)
                if push is None or push[0] > t_event:
                    missing_push += 1
                    continue
                series["relay_push"].append(push[0] - t0)
                series["daemon_part"].append(t_event - push[0])
                series["forwarder_copy"].append(push[2] - push[0])
    finally:
        sel.close()
        rpc.close()
        if sub is not None:
            sub.close()
    time.sleep(interval)  # what the last send set off (its receipt) is done
    out: dict[str, Any] = {name: latency_summary(values)
                           for name, values in series.items() if values}
    out["cpu_ms_per_send"] = {
        name: round((tree_cpu_seconds(pid) - cpu_start[name]) * 1000 / max(1, count), 3)
        for name, pid in cpu_pids.items()}
    out["sends"] = count
    out["not_stored"] = not_stored
    if forwarder is not None:
        out["pushes_not_seen"] = missing_push
    return out


# ------------------------------------------------------------------ set-up


def _set_relay_url(home: Path, old_port: int, new_port: int) -> None:
    """Point an identity's own relay address at another port (the forwarder)."""
    with contextlib.closing(sqlite3.connect(home / "chatcli.db")) as con, con:
        (url,) = con.execute("SELECT relay_url FROM account").fetchone()
        new = url.replace(f":{old_port}/", f":{new_port}/", 1)
        if new == url:
            raise BenchError(f"cannot find port {old_port} in the relay address {url!r}")
        con.execute("UPDATE account SET relay_url = ?", (new,))


def _pair(root: Path, relay_url: str) -> tuple[_Identity, _Identity]:
    """alice and bob, contacts of each other (set up with the real commands)."""
    alice = _Identity(root, "alice", fast_kdf=True)
    bob = _Identity(root, "bob", fast_kdf=True)
    alice.run("init", "--name", "alice", "--relay", relay_url)
    bob.run("init", "--name", "bob", "--relay", relay_url)
    link = alice.run("invite", "--name", "bob").strip()
    bob.run("accept", link, "--name", "alice")
    alice.run("receive", "--json")  # the handshake; alice's answer goes out
    bob.run("receive", "--json")    # alice's answer: bob may now deposit too
    return alice, bob


def _port(url: str) -> int:
    return int(url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])


def measure_small(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """cli, rpc, events and idle with alice and bob (one contact each)."""
    with RelayProcess(RelayConfig()) as relay:
        alice, _bob = _pair(tmp, relay.url)
        alice_home, bob_home = tmp / "alice", tmp / "bob"
        help_cmd = [*chatcli_command(), "--help"]
        no_pass = {k: v for k, v in alice.env.items() if k != "CHATCLI_PASSPHRASE"}
        out: dict[str, Any] = {"relay": relay.config.describe()}
        time_runs(help_cmd, 1, no_pass)  # warm the page cache
        help_without = time_runs(help_cmd, args.runs, no_pass)
        with Worker("bench.daemon", ["forward", "--target", f"127.0.0.1:{_port(relay.url)}"],
                    log_dir=tmp, name="forwarder") as forwarder:
            _set_relay_url(bob_home, _port(relay.url), forwarder.read_json(10)["port"])
            with DaemonProcess(bob_home, tmp) as bob_daemon, \
                    DaemonProcess(alice_home, tmp) as alice_daemon:
                out["daemon_start_s"] = {"alice": alice_daemon.start_s, "bob": bob_daemon.start_s}
                out["help"] = {"without_daemon": help_without,
                               "with_daemon": time_runs(help_cmd, args.runs, no_pass)}
                send_cmd = [*chatcli_command(), "send", "bob", "one-shot send through the daemon"]
                before = daemon_status(bob_home)["backlog"]
                time_runs(send_cmd, 2, no_pass)  # warm-up: the daemon opens bob's relay
                out["cli_send"] = time_runs(send_cmd, args.runs, no_pass)
                time.sleep(0.5)
                after = daemon_status(bob_home)["backlog"]
                out["cli_send"]["received_by_bob"] = after - before
                out["cli_send"]["expected"] = args.runs + 2
                out["rpc_and_events"] = paced_sends(
                    alice_home, "bob", args.rpc_sends, args.warmup, args.interval,
                    receiver=bob_home, forwarder=forwarder,
                    cpu_pids={"alice_daemon": alice_daemon.pid, "bob_daemon": bob_daemon.pid,
                              "relay": relay.pid})
                time.sleep(args.settle)
                out["idle"] = idle_figures(alice_daemon.pid, args.idle)
                out["idle"]["contacts"] = 1
    return out


def measure_scale(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """The idle daemon of an identity with many contacts and groups."""
    # Set-up only: the hub makes 2 requests per invite on one connection.
    config = RelayConfig().with_settings(connection_rate=1_000_000.0,
                                         connection_burst=1_000_000.0)
    with RelayProcess(config) as relay:
        root = tmp / "scale"
        root.mkdir()
        started = time.monotonic()
        with Worker("bench.daemon", [
                "populate", "--root", str(root), "--relay", relay.url,
                "--contacts", str(args.contacts), "--groups", str(args.groups),
                "--group-size", str(args.group_size)], log_dir=tmp, name="populate") as worker:
            built = worker.read_json(args.populate_timeout)
        built["seconds"] = round(time.monotonic() - started, 1)
        hub = root / "hub"
        built["store_bytes"] = sum(p.stat().st_size for p in hub.glob("chatcli.db*"))
        with DaemonProcess(hub, tmp) as daemon:
            out: dict[str, Any] = {"built": built, "daemon_start_s": daemon.start_s,
                                   "status": {k: daemon.status[k] for k in
                                              ("outbox", "backlog", "connected", "synced")}}
            time.sleep(args.settle)
            out["idle"] = idle_figures(daemon.pid, args.idle)
            out["idle"].update(contacts=built["contacts"], groups=built["groups"])
            if args.scale_sends:
                out["rpc_send"] = paced_sends(hub, built["first_contact"], args.scale_sends,
                                              1, args.interval,
                                              cpu_pids={"hub_daemon": daemon.pid})
    return out


# ------------------------------------------------------------------ workers


def _forward_main(argv: list[str]) -> int:
    """A TCP byte forwarder that stamps what the upstream (the relay) writes."""
    parser = argparse.ArgumentParser(prog="python -m bench.daemon forward")
    parser.add_argument("--target", required=True, help="HOST:PORT")
    args = parser.parse_args(argv)
    host, port = args.target.rsplit(":", 1)
    listener = socket.create_server(("127.0.0.1", 0))
    stamps: list[tuple[int, int, int]] = []
    lock = threading.Lock()

    def pump(src: socket.socket, dst: socket.socket, record: bool) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                t_read = time.monotonic_ns()
                dst.sendall(data)
                if record:
                    with lock:
                        stamps.append((t_read, len(data), time.monotonic_ns()))
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def accept() -> None:
        while True:
            client, _ = listener.accept()
            upstream = socket.create_connection((host, int(port)))
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=pump, args=(upstream, client, True), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    emit({"port": listener.getsockname()[1]})
    for line in sys.stdin:
        if line.strip() == "stamps":
            with lock:
                taken = stamps[:]
                stamps.clear()
            emit({"stamps": taken})
    return 0


async def populate(root: Path, relay_url: str, contacts: int, groups: int, group_size: int,
                   concurrency: int) -> dict[str, Any]:
    """A hub identity with ``contacts`` real contacts and ``groups`` groups."""
    import trio

    from chatcli.client.groups.service import GroupService
    from chatcli.client.home import Home
    from chatcli.client.service import create_account

    hub, _ = await create_account(Home(root / "hub"), PASSPHRASE, name="hub",
                                  relay_url=relay_url)
    limiter = trio.CapacityLimiter(concurrency)
    timings: dict[str, float] = {}

    async def befriend(i: int) -> None:
        async with limiter:
            peer, _ = await create_account(Home(root / "peers" / f"p{i}"), PASSPHRASE,
                                           name=f"p{i}", relay_url=relay_url)
            try:
                link = await hub.create_invite(f"c{i:04d}")
                async with peer.online():
                    await peer.accept_invite(link, "hub")
            finally:
                peer.close()

    try:
        async with hub.online():
            await hub.own_relay()
            t = time.monotonic()
            async with trio.open_nursery() as nursery:
                for i in range(contacts):
                    nursery.start_soon(befriend, i)
            timings["invites_s"] = time.monotonic() - t
            t = time.monotonic()
            # The hub's connection synced before the handshakes came: read its
            # pushes (each handshake completes a contact and queues the answer)
            # until every peer is a contact.
            async with trio.open_nursery() as nursery:
                async def consume() -> None:
                    async for _event in hub.events(wait=None, stop_at_synced=False):
                        pass

                nursery.start_soon(consume)
                with trio.fail_after(600):
                    # (no event to wait for: the store is what changes)
                    while len(hub.contact_names()) < contacts:  # noqa: ASYNC110
                        await trio.sleep(0.1)
                nursery.cancel_scope.cancel()
            await hub.flush_outbox(time_limit=120)
            timings["handshakes_s"] = time.monotonic() - t
            names = sorted(c.name for c in hub.contacts())
            t = time.monotonic()
            service = GroupService(hub)
            members = itertools.cycle(names)
            for g in range(groups):
                service.create(f"g{g:03d}", [next(members) for _ in range(group_size)])
            await service.deliver(time_limit=300)
            await hub.flush_outbox(time_limit=120)
            timings["groups_s"] = time.monotonic() - t
            from chatcli.client import models as db

            with hub.store.read():
                outbox = db.Outbox.select().count()
        return {"contacts": len(names), "groups": len(service.groups()), "outbox": outbox,
                "first_contact": names[0] if names else None,
                "concurrency": concurrency,
                **{k: round(v, 1) for k, v in timings.items()}}
    finally:
        hub.close()


def _populate_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.daemon populate")
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--relay", required=True)
    parser.add_argument("--contacts", type=int, default=1000)
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--group-size", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    os.environ["CHATCLI_INSECURE_FAST_KDF"] = "1"  # many identities: set-up only
    from chatcli.cli.output import lean_imports

    lean_imports()
    import trio

    try:
        report = trio.run(populate, args.root, args.relay, args.contacts, args.groups,
                          min(args.group_size, args.contacts), args.concurrency)
    except Exception as exc:
        emit({"error": f"{type(exc).__name__}: {exc}"})
        raise
    emit(report)
    return 0


# ------------------------------------------------------------------ main


def targets(report: dict[str, Any]) -> dict[str, bool | None]:
    small = report.get("small") or {}
    checks: dict[str, bool | None] = {}
    cli = small.get("cli_send") or {}
    checks["cli: one-shot send p50 <= 120 ms through the daemon"] = (
        None if cli.get("p50_ms") is None else cli["p50_ms"] <= TARGET_CLI_SEND_MS)
    rpc = (small.get("rpc_and_events") or {})
    p50 = (rpc.get("rpc_send") or {}).get("p50_ms")
    checks["rpc: send round trip p50 <= 5 ms"] = (
        None if p50 is None else p50 <= TARGET_RPC_SEND_P50_MS)
    part = (rpc.get("daemon_part") or {}).get("p50_ms")
    checks["events: relay push -> subscriber p50 <= 10 ms"] = (
        None if part is None else part <= TARGET_EVENT_MS)
    idle = (report.get("scale") or {}).get("idle") or {}
    if idle:
        checks[f"scale: idle CPU < {TARGET_IDLE_CPU_PERCENT:g}% of a core with "
               f"{idle['contacts']} contacts, {idle['groups']} groups"] = (
            idle["cpu_percent"] < TARGET_IDLE_CPU_PERCENT)
    return checks


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.daemon",
        description="chatcli daemon: one-shot send, JSON-RPC send, event latency, idle CPU "
                    "and RSS with many contacts; JSON on stdout.")
    parser.add_argument("--runs", type=int, default=30,
                        help="runs of `chatcli --help` and of the one-shot send (default 30)")
    parser.add_argument("--rpc-sends", type=int, default=200,
                        help="timed JSON-RPC sends (default 200)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed sends first (default 5)")
    parser.add_argument("--interval", type=float, default=0.05,
                        help="seconds between two timed sends (default 0.05)")
    parser.add_argument("--contacts", type=int, default=1000)
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--group-size", type=int, default=5, help="members per group (default 5)")
    parser.add_argument("--scale-sends", type=int, default=20,
                        help="JSON-RPC sends timed on the big daemon (default 20)")
    parser.add_argument("--idle", type=float, default=30.0,
                        help="seconds of idling measured per daemon (default 30)")
    parser.add_argument("--settle", type=float, default=5.0,
                        help="seconds before each idle measurement (default 5)")
    parser.add_argument("--populate-timeout", type=float, default=1800.0)
    parser.add_argument("--skip-scale", action="store_true",
                        help="only the one-contact daemons (no 1,000-contact set-up)")
    parser.add_argument("--output", metavar="FILE", help="also write the JSON to FILE")
    return parser


def run(argv: list[str]) -> dict[str, Any]:
    """Every section the flags ask for; the report (also for bench.run_all)."""
    args = build_parser().parse_args(argv)
    os.environ.pop("CHATCLI_INSECURE_FAST_KDF", None)
    report: dict[str, Any] = {
        "benchmark": "chatcli daemon",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "-m", "bench.daemon", *argv]),
        "machine": machine_info(),
    }
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="chatcli-bench-daemon-") as tmp:
        report["small"] = measure_small(args, Path(tmp))
        if not args.skip_scale:
            report["scale"] = measure_scale(args, Path(tmp))
    report["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    report["targets"] = targets(report)
    report["total_s"] = round(time.monotonic() - started, 1)
    return report


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["forward"]:
        return _forward_main(argv[1:])
    if argv[:1] == ["populate"]:
        return _populate_main(argv[1:])
    output = build_parser().parse_args(argv).output
    text = json.dumps({"daemon": run(argv)}, indent=2)
    print(text)
    if output:
        Path(output).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
