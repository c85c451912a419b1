"""Sent-message sync between devices (issue 13: "reaches the other devices ≤ 1 s").

Starts a relay process, makes alice (two devices: the first and a laptop,
the laptop made with ``chatcli.client.device_setup.add_device``) and bob
(three devices), keeps alice's laptop and bob's devices listening, and times,
for each message alice's first device sends to bob: from the start of the
send to the laptop's ``sent`` event (the sync) and to each of bob's devices'
message. (One Deposit frame per relay for such a send is asserted in
tests/e2e/test_devices.py, where no receipt travels meanwhile.) Prints one JSON report on stdout.

    python -m bench.devices [--messages 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.group_send import _free_port, _start_relay

PASSPHRASE = "bench passphrase"  # noqa: S105 (throwaway homes)
TARGET_MS = 1000.0


async def _run(messages: int, relay_url: str, home: Path) -> dict[str, Any]:
    import trio

    from chatcli.client.device_setup import add_device
    from chatcli.client.events import MessageEvent, SentElsewhereEvent
    from chatcli.client.home import Home
    from chatcli.client.service import ChatClient, create_account

    async def drain(client: ChatClient) -> None:
        async with client.online():
            async for _event in client.events():
                pass

    alice, _ = await create_account(Home(home / "alice"), PASSPHRASE, name="alice",
                                    relay_url=relay_url)
    bob, _ = await create_account(Home(home / "bob"), PASSPHRASE, name="bob",
                                  relay_url=relay_url)
    async with alice.online():
        link = await alice.create_invite("bob")
    async with bob.online():
        await bob.accept_invite(link, "alice")
    await drain(alice)
    await drain(bob)
    laptop = await add_device(alice, Home(home / "alice-laptop"), PASSPHRASE,
                              device_name="laptop")
    bob_devices = [bob]
    for name in ("laptop", "phone"):
        bob_devices.append(await add_device(bob, Home(home / f"bob-{name}"), PASSPHRASE,
                                            device_name=name))
    for _ in range(2):
        for client in (alice, laptop, *bob_devices):
            await drain(client)
    # Warm-up: the first message to each device starts its session.
    async with alice.online():
        await alice.send_text("bob", "warm-up")
    for client in (laptop, *bob_devices):
        await drain(client)

    arrived: dict[str, dict[str, float]] = {}
    complete: dict[str, trio.Event] = {}
    watchers_count = 1 + len(bob_devices)

    async def watch(client: ChatClient, label: str, ready: trio.Event) -> None:
        async with client.online():
            async for event in client.listen(wait=3600):
                if isinstance(event, MessageEvent | SentElsewhereEvent):
                    arrived.setdefault(event.text, {})[label] = time.perf_counter()
                    if len(arrived[event.text]) == watchers_count:
                        complete.setdefault(event.text, trio.Event()).set()
                elif not ready.is_set():
                    ready.set()

    sync_ms: list[float] = []
    bob_ms: list[float] = []
    async with trio.open_nursery() as nursery:
        watchers = [("laptop", laptop)] + [(f"bob{i}", c) for i, c in enumerate(bob_devices)]
        for label, client in watchers:
            ready = trio.Event()
            nursery.start_soon(watch, client, label, ready)
            await ready.wait()
        async with alice.online():
            for i in range(messages):
                text = f"message {i}"
                started = time.perf_counter()
                await alice.send_text("bob", text)
                with trio.fail_after(30):
                    await complete.setdefault(text, trio.Event()).wait()
                times = arrived[text]
                sync_ms.append((times["laptop"] - started) * 1000)
                bob_ms.extend((times[f"bob{j}"] - started) * 1000
                              for j in range(len(bob_devices)))
        nursery.cancel_scope.cancel()
    for client in (alice, laptop, *bob_devices):
        client.close()

    def summary(values: list[float]) -> dict[str, float]:
        ordered = sorted(values)
        return {"p50": round(statistics.median(ordered), 1),
                "p95": round(ordered[max(0, int(len(ordered) * 0.95) - 1)], 1),
                "max": round(ordered[-1], 1)}

    sync = summary(sync_ms)
    return {
        "messages": messages,
        "devices": {"alice": 2, "bob": len(bob_devices)},
        "sync_to_other_device_ms": sync,
        "to_contact_devices_ms": summary(bob_ms),
        "targets": {"sync_le_1s": sync["max"] <= TARGET_MS},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.devices", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20,
                        help="messages timed (default 20)")
    args = parser.parse_args(argv)
    if args.messages < 1:
        parser.error("--messages must be at least 1")
    os.environ.setdefault("CHATCLI_INSECURE_FAST_KDF", "1")

    import trio

    with tempfile.TemporaryDirectory(prefix="chatcli-devices-bench-") as tmp:
        directory = Path(tmp)
        port = _free_port()
        proc, url = _start_relay(directory, port)
        try:
            report = trio.run(_run, args.messages, url, directory)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except Exception:
                proc.kill()
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
