"""A real `chatcli relay serve` process: durability across SIGKILL, graceful
SIGTERM, and nothing readable in its database files or logs."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio
from trio_websocket import connect_websocket

from chatcli.crypto.envelope import open_envelope, seal_envelope
from chatcli.crypto.keys import IdentityKeyPair, MailboxKeyPair
from chatcli.crypto.profile import Profile, ProfileKey, seal_profile
from chatcli.protocol import frames
from chatcli.protocol.address import parse_relay_url
from chatcli.protocol.connection import ClientProtocol
from chatcli.relay.mailbox import cap_hash
from tests.relay.helpers import Client

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-c", "from chatcli.cli.main import cli; cli()"]


class RelayProcess:
    def __init__(self, proc: subprocess.Popen[str], address: str) -> None:
        self.proc = proc
        self.address = parse_relay_url(address)


@contextmanager
def relay_process(db: Path, *extra: str, stderr_path: Path | None = None
                  ) -> Iterator[RelayProcess]:
    err = open(stderr_path, "a") if stderr_path else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen([*CLI, "relay", "serve", "--port", "0", "--db", str(db), *extra],
                            stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("relay address: ws://127.0.0.1:"), line
        yield RelayProcess(proc, line.split(": ", 1)[1].strip())
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()
        if stderr_path:
            err.close()  # type: ignore[union-attr]


async def connect(nursery: trio.Nursery, relay: RelayProcess) -> Client:
    address = relay.address
    ws = await connect_websocket(nursery, address.host, address.port, "/", use_ssl=False)
    client = Client(ws, ClientProtocol(fingerprint=address.fingerprint))
    await ws.send_message(client.proto.start())
    client.proto.receive_data(await client.raw_recv())
    return client


def test_acknowledged_deposit_survives_sigkill(tmp_path: Path) -> None:
    db = tmp_path / "relay.db"
    key = MailboxKeyPair.generate()
    cap = os.urandom(32)
    state: dict[str, bytes] = {}

    async def first_life(relay: RelayProcess) -> None:
        async with trio.open_nursery() as nursery:
            owner = await connect(nursery, relay)
            state["mailbox"] = await owner.register(key)
            await owner.add_cap(cap)
            await owner.close()
            sender = await connect(nursery, relay)
            assert await sender.deposit(state["mailbox"], cap, b"durable") == [None]
            relay.proc.send_signal(signal.SIGKILL)    # right after the acknowledgement
            await sender.close()
            nursery.cancel_scope.cancel()

    async def second_life(relay: RelayProcess) -> None:
        async with trio.open_nursery() as nursery:
            owner = await connect(nursery, relay)
            assert isinstance(await owner.auth(state["mailbox"], key), frames.Ok)
            (message,) = await owner.delivered(1)
            assert message.payload == b"durable"
            await owner.close()
            nursery.cancel_scope.cancel()

    with relay_process(db) as relay:
        fingerprint = relay.address.fingerprint
        trio.run(first_life, relay)
        assert relay.proc.wait(timeout=10) == -signal.SIGKILL
    with relay_process(db) as relay:
        assert relay.address.fingerprint == fingerprint
        trio.run(second_life, relay)


def test_sigterm_is_graceful(tmp_path: Path) -> None:
    async def session(relay: RelayProcess) -> None:
        async with trio.open_nursery() as nursery:
            client = await connect(nursery, relay)
            relay.proc.send_signal(signal.SIGTERM)
            assert await client.recv() == frames.Bye(code="shutting_down")
            await client.close()
            nursery.cancel_scope.cancel()

    with relay_process(tmp_path / "relay.db") as relay:
        trio.run(session, relay)
        assert relay.proc.wait(timeout=15) == 0


def test_database_and_logs_hold_nothing_readable(tmp_path: Path) -> None:
    db = tmp_path / "relay.db"
    log_path = tmp_path / "relay.log"
    marker = b"PLAINTEXT-MARKER-" + os.urandom(8).hex().encode()
    display_name = "Zebulon Quixote-" + os.urandom(4).hex()
    alice = IdentityKeyPair.generate()
    mailbox_key = MailboxKeyPair.generate()
    cap = os.urandom(32)
    read_cap = os.urandom(32)
    sealed = seal_envelope(mailbox_key.box_public, alice.public, b"hello " + marker)
    profile = seal_profile(ProfileKey.generate(), Profile(display_name=display_name,
                                                          status=marker.decode()))

    async def session(relay: RelayProcess) -> None:
        async with trio.open_nursery() as nursery:
            owner = await connect(nursery, relay)
            mailbox = await owner.register(mailbox_key)
            await owner.add_cap(cap)
            put = frames.BlobPut(req=owner.req(), blob=os.urandom(16), offset=0, data=profile,
                                 final=True, read_cap_hash=cap_hash(read_cap), ttl=3600)
            assert isinstance(await owner.request(put), frames.Ok)
            sender = await connect(nursery, relay)
            assert await sender.deposit(mailbox, cap, sealed, sealed) == [None, None]
            (first, _) = await owner.delivered(2)
            assert marker in open_envelope(mailbox_key, first.payload).body
            await owner.request(frames.Ack(req=owner.req(), ids=[first.id]))
            assert (tmp_path / "relay.db-wal").exists()
            check_files()        # while running: the WAL holds the fresh pages
            await owner.close()
            await sender.close()
            nursery.cancel_scope.cancel()

    secrets_ = [marker, display_name.encode(), cap, cap.hex().encode(),
                base64.b64encode(cap), read_cap, read_cap.hex().encode(),
                mailbox_key.private_bytes(), b"hello "]

    def check_files() -> None:
        files = [p for p in tmp_path.iterdir() if p.name.startswith("relay.db")]
        assert files
        for path in files:
            data = path.read_bytes()
            for secret in secrets_:
                assert secret not in data, f"{secret!r} found in {path.name}"

    with relay_process(db, "--log-json", stderr_path=log_path) as relay:
        trio.run(session, relay)
        relay.proc.send_signal(signal.SIGTERM)
        assert relay.proc.wait(timeout=15) == 0
    check_files()
    assert b"relay listening" in log_path.read_bytes()
