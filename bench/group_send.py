"""Benchmark: one message to a 100-member group, and the relay load it causes.

Starts a real relay process (``chatcli relay serve --port 0``) unless
``--relay URL`` is given, creates N identities in this process (real
``ChatClient`` objects, fast KDF), forms the group with the real protocol
(invitations, joins, membership operations, pairwise X3DH between members who
are not contacts, sender-key distributions), then has every member send its
first message and every member receive them all, then has the creator send
``--messages`` texts and times each send.

``setup`` holds wall-clock seconds of each phase, driven one member at a time
in this one process (each member connects, receives, delivers and goes
offline, in turn): ``group_formation_s`` (from ``group create`` until every
member holds every other's sender key), ``first_message_from_every_member_s``
(each member sends one text, then each receives the others'; checked by
``first_messages_received``), and the CPU seconds of this process and the
relay's (``formation_cpu_s``, ``first_messages_cpu_s``). The creator's sends:

* ``encrypt_seal_ms``: encrypt once with the sender key and seal one envelope
  per other member (``GroupService.enqueue_text``, including the local
  database transaction);
* ``deposit_ms``: the batched deposits until every member's relay stored it
  (one ``Deposit`` frame per relay per 256 items);
* ``send_ms``: both.

Relay load per message: deposits (items), ``Deposit`` frames, sealed payload
bytes and frame bytes as sent, and the relay's own counters for the same send
(``relay_metrics_per_message``, from its Prometheus endpoint; only when this
script started the relay). Finally every member receives, to check delivery.
Prints one JSON object::

    python -m bench.group_send --members 100 --messages 5
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

RELAY_ADDRESS_RE = re.compile(r"relay address:\s*(wss?://\S+)")
PASSPHRASE = "bench passphrase"  # noqa: S105 (throw-away identities)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(metrics_url: str | None) -> dict[str, float]:
    """The relay's deposit counters from its Prometheus endpoint (empty without one)."""
    if metrics_url is None:
        return {}
    with urllib.request.urlopen(metrics_url, timeout=10) as answer:  # noqa: S310 (loopback)
        text = answer.read().decode()
    wanted = {"chatcli_relay_deposits_total": "deposits",
              "chatcli_relay_deposit_bytes_total": "deposit_bytes",
              'chatcli_relay_frames_received_total{type="Deposit"}': "deposit_frames"}
    found: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name in wanted:
            found[wanted[name]] = float(value)
    return found


def _start_relay(directory: Path, metrics_port: int) -> tuple[subprocess.Popen[str], str]:
    from bench.common import LOOPBACK_LOAD_SETTINGS, _toml

    # Every member registers from this one address: lift the per-address limits.
    config = directory / "relay.toml"
    config.write_text(_toml(LOOPBACK_LOAD_SETTINGS))
    chatcli = str(Path(sys.executable).parent / "chatcli")
    proc = subprocess.Popen([chatcli, "relay", "serve", "--port", "0", "--db",
                             str(directory / "relay.db"), "--metrics-port", str(metrics_port),
                             "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        match = RELAY_ADDRESS_RE.search(line)
        if match:
            return proc, match.group(1)
    proc.kill()
    raise RuntimeError("the relay did not print its address")


def _cpu_s(pid: int | None) -> float:
    """CPU seconds used so far by this process and, when given, the relay's."""
    used = time.process_time()
    todo = [] if pid is None else [pid]
    while todo:  # the relay and its storage process (Linux: /proc)
        current = todo.pop()
        try:
            with open(f"/proc/{current}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
            with open(f"/proc/{current}/task/{current}/children") as children:
                todo.extend(int(child) for child in children.read().split())
        except OSError:
            continue
        used += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return used


async def _run(members: int, messages: int, relay_url: str, home: Path,
               metrics_url: str | None, relay_pid: int | None = None) -> dict[str, Any]:
    import trio

    from chatcli.client.groups import models as gdb
    from chatcli.client.groups.service import GroupService
    from chatcli.client.home import Home
    from chatcli.client.service import ChatClient, MessageEvent, create_account
    from chatcli.protocol import frames
    from chatcli.protocol.codec import encode

    async def drain(client: ChatClient) -> list[Any]:
        events = []
        async with client.online():
            async for event in client.events():
                events.append(event)
        return events

    started = time.perf_counter()
    clients: list[ChatClient] = []
    for i in range(members):
        client, _ = await create_account(Home(home / f"m{i:03d}"), PASSPHRASE,
                                         name=f"m{i:03d}", relay_url=relay_url)
        clients.append(client)
    admin, others = clients[0], clients[1:]
    async with admin.online():
        links = [await admin.create_invite(o.account().name) for o in others]
    for other, link in zip(others, links, strict=True):
        async with other.online():
            await other.accept_invite(link, "m000")
    await drain(admin)
    for other in others:
        await drain(other)
    contacts_s = time.perf_counter() - started

    formed = time.perf_counter()
    cpu_at_start = _cpu_s(relay_pid)
    GroupService(admin).create("bench", [o.account().name for o in others])
    async with admin.online():
        await GroupService(admin).deliver(time_limit=60)
    for _ in range(2):
        for other in others:
            await drain(other)
        await drain(admin)
    for other in others:
        await drain(other)
    size = len(GroupService(admin).members("bench"))
    group_s = time.perf_counter() - formed
    group_cpu = _cpu_s(relay_pid) - cpu_at_start

    # Every member's first message (its sender key reached the others while the
    # group formed): each sends once, then each receives everything.
    firsts = time.perf_counter()
    for client in clients:
        async with client.online():
            await GroupService(client).send_text("bench", f"first from {client.account().name}",
                                                 time_limit=60)
    first_seen = 0
    for client in clients:
        got = [e for e in await drain(client) if isinstance(e, MessageEvent) and e.group
               and e.text.startswith("first from ")]
        first_seen += len(got)
    first_s = time.perf_counter() - firsts
    first_cpu = _cpu_s(relay_pid) - cpu_at_start - group_cpu

    service = GroupService(admin)
    encrypt_ms: list[float] = []
    deposit_ms: list[float] = []
    load: list[dict[str, int]] = []
    relay_seen: list[dict[str, int]] = []
    async with admin.online():
        await service.deliver(time_limit=60)
        for n in range(messages):
            t0 = time.perf_counter()
            report = service.enqueue_text("bench", f"benchmark message {n}")
            t1 = time.perf_counter()
            with admin.store.read(), gdb.bound(admin.store):
                rows = list(gdb.GroupOutbox.select().where(
                    gdb.GroupOutbox.message_uuid == report.id).order_by(gdb.GroupOutbox.id))
            relays = {row.relay_url for row in rows}
            # The same batching as the delivery: per relay, <= 256 items and 512 KiB.
            deposit_frames = [frames.Deposit(req=1, items=items)
                              for url in relays
                              for _, items in service._batches(
                                  [r for r in rows if r.relay_url == url])]
            counters = await trio.to_thread.run_sync(scrape, metrics_url)
            await service.deliver(message_id=report.id, time_limit=60)
            t2 = time.perf_counter()
            after = await trio.to_thread.run_sync(scrape, metrics_url)
            relay_seen.append({k: int(after[k] - counters.get(k, 0)) for k in after})
            encrypt_ms.append((t1 - t0) * 1000)
            deposit_ms.append((t2 - t1) * 1000)
            load.append({
                "deposits": len(rows),
                "deposit_frames": len(deposit_frames),
                "payload_bytes": sum(len(item.payload) for f in deposit_frames
                                     for item in f.items),
                "frame_bytes": sum(len(encode(f)) for f in deposit_frames),
                "relays": len(relays),
            })

    crypto_ms = _crypto_only(members - 1)
    delivered = 0
    for other in others:
        got = [e for e in await drain(other) if isinstance(e, MessageEvent) and e.group
               and e.text.startswith("benchmark message ")]
        if len(got) == messages:
            delivered += 1
    for client in clients:
        client.close()
    return {
        "benchmark": "group_send",
        "members": size,
        "messages": messages,
        "setup": {"contacts_s": round(contacts_s, 2), "group_formation_s": round(group_s, 2),
                  "first_message_from_every_member_s": round(first_s, 2),
                  "formation_and_first_messages_s": round(group_s + first_s, 2),
                  "formation_cpu_s": round(group_cpu, 2),
                  "first_messages_cpu_s": round(first_cpu, 2)},
        "first_messages_received": first_seen,
        "first_messages_expected": size * (size - 1),
        "send_ms": {
            "median": round(statistics.median(e + d for e, d in zip(encrypt_ms, deposit_ms,
                                                                    strict=True)), 2),
            "min": round(min(e + d for e, d in zip(encrypt_ms, deposit_ms, strict=True)), 2),
        },
        "encrypt_seal_ms": {"median": round(statistics.median(encrypt_ms), 2)},
        "crypto_only_ms": crypto_ms,
        "deposit_ms": {"median": round(statistics.median(deposit_ms), 2)},
        "relay_load_per_message": load[-1] if load else {},
        "relay_metrics_per_message": relay_seen[-1] if relay_seen else {},
        "received_by_all": delivered == len(others),
        "members_who_received_all": delivered,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
    }


def _crypto_only(recipients: int, rounds: int = 20) -> dict[str, float]:
    """The cryptography of one send without the database: one sender-key
    encryption and ``recipients`` sealed envelopes (median of ``rounds``)."""
    from chatcli.client import messages as m
    from chatcli.client.groups import wire
    from chatcli.crypto.envelope import seal_envelope
    from chatcli.crypto.keys import IdentityKeyPair, MailboxKeyPair
    from chatcli.crypto.sender_keys import SenderKeyState

    sender = IdentityKeyPair.generate()
    boxes = [MailboxKeyPair.generate().box_public for _ in range(recipients)]
    state = SenderKeyState.generate()
    text = wire.encode(wire.GroupText(id="00000000-0000-4000-8000-000000000000",
                                      sent_at=0, text="benchmark message 0"))
    encrypt, seal = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        body = m.encode(m.GroupBody(v=m.BODY_VERSION, message=wire.encode(
            wire.Cipher(message=state.encrypt(text)))))
        t1 = time.perf_counter()
        for box in boxes:
            seal_envelope(box, sender.public, body)
        t2 = time.perf_counter()
        encrypt.append((t1 - t0) * 1000)
        seal.append((t2 - t1) * 1000)
    return {"encrypt_once": round(statistics.median(encrypt), 3),
            f"seal_{recipients}": round(statistics.median(seal), 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.group_send", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=100,
                        help="group size, the creator included (default 100)")
    parser.add_argument("--messages", type=int, default=5,
                        help="messages the creator sends and times (default 5)")
    parser.add_argument("--relay", help="an existing relay URL (default: start one)")
    args = parser.parse_args(argv)
    if args.members < 2 or args.messages < 1:
        parser.error("--members must be at least 2 and --messages at least 1")
    os.environ.setdefault("CHATCLI_INSECURE_FAST_KDF", "1")

    import trio

    with tempfile.TemporaryDirectory(prefix="chatcli-group-bench-") as tmp:
        directory = Path(tmp)
        proc = None
        url = args.relay
        metrics_url = None
        if url is None:
            port = _free_port()
            proc, url = _start_relay(directory, port)
            metrics_url = f"http://127.0.0.1:{port}/metrics"
        try:
            report = trio.run(_run, args.members, args.messages, url, directory, metrics_url,
                              None if proc is None or not Path("/proc/self/stat").exists()
                              else proc.pid)
        finally:
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
    print(json.dumps(report, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
