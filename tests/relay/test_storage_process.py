"""The storage process: calls, answers and errors crossing to the child, and
what the relay does when the child dies or is signalled."""

from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path

import peewee
import pytest
import trio

from chatcli.errors import StorageError
from chatcli.protocol import codes, frames
from chatcli.relay.errors import Refused
from chatcli.relay.mailbox import AckBatch, CommitIds, DepositBatch, DepositItem, commit_result
from chatcli.relay.server import Relay
from chatcli.relay.storage_process import StorageProcess, _answer
from tests.relay.helpers import make_config, running_relay


class _Target:
    def ok(self, value: int) -> int:
        return value + 1

    def refused(self) -> None:
        raise Refused(codes.QUOTA_EXCEEDED, "The mailbox is full.")

    def storage(self) -> None:
        raise StorageError("The relay database is not open.")

    def database(self) -> None:
        raise peewee.OperationalError("disk I/O error")

    def driver(self) -> None:
        raise sqlite3.OperationalError("database is locked")

    def bug(self) -> None:
        raise KeyError("oops")


def test_the_child_answers_each_outcome_as_a_typed_reply() -> None:
    targets: dict[str, object] = {"t": _Target()}
    assert _answer(targets, "t", "ok", (1,)) == (0, 2)
    assert _answer(targets, "t", "refused", ()) == (1, codes.QUOTA_EXCEEDED,
                                                    "The mailbox is full.")
    assert _answer(targets, "t", "storage", ()) == (2, "The relay database is not open.")
    assert _answer(targets, "t", "database", ())[:2] == (3, "OperationalError")
    assert _answer(targets, "t", "driver", ())[:2] == (3, "OperationalError")
    assert _answer(targets, "t", "bug", ())[:2] == (4, "KeyError")


def test_commit_result_rebuilds_the_stored_messages_from_the_ids() -> None:
    a, b = os.urandom(16), os.urandom(16)
    batches = [DepositBatch([DepositItem(a, b"c" * 32, b"1"), DepositItem(b, b"c" * 32, b"2")],
                            [None, None]),
               DepositBatch([DepositItem(a, b"c" * 32, b"3")], [None])]
    result = commit_result(batches, CommitIds([None, codes.QUOTA_EXCEEDED, None], [7, 8], 2), 5)
    assert result.errors == [[None, codes.QUOTA_EXCEEDED], [None]]
    assert [(mb, m.id, m.payload, m.received_at) for mb, m in result.stored] == [
        (a, 7, b"1", 5), (a, 8, b"3", 5)]
    assert result.acked == 2
    assert AckBatch(a, [7]).ids == [7]


async def test_the_relay_runs_its_storage_in_a_child_process(tmp_path: Path) -> None:
    async with running_relay(make_config(tmp_path)) as h:
        process = h.relay.storage_process
        assert process is not None and process.pid is not None and process.pid != os.getpid()
        owner, mailbox, cap = await h.owner()
        sender = await h.connect()
        assert await sender.deposit(mailbox, cap, b"through the child") == [None]
        assert [m.payload for m in await owner.delivered(1)] == [b"through the child"]
        # Refusals decided in the child arrive as their typed errors.
        bad = await sender.deposit(mailbox, os.urandom(32), b"no capability")
        assert bad == [codes.BAD_CAPABILITY]
        stranger = await h.connect()  # a depositing connection may not log in
        error = await stranger.request(frames.Auth(req=stranger.req(), mailbox=mailbox,
                                                   signature=bytes(64)))
        assert isinstance(error, frames.Error) and error.code == codes.AUTH_FAILED
        pid = process.pid
    # The relay closed the socket: the child finished and exited.
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_the_child_ignores_sigint_and_sigterm(tmp_path: Path) -> None:
    """Ctrl-C and systemd's SIGTERM reach the whole process group: the child
    must outlive them until the relay has committed everything."""
    async with running_relay(make_config(tmp_path)) as h:
        process = h.relay.storage_process
        assert process is not None and process.pid is not None
        os.kill(process.pid, signal.SIGINT)
        os.kill(process.pid, signal.SIGTERM)
        await trio.sleep(0.2)
        owner, mailbox, cap = await h.owner()
        sender = await h.connect()
        assert await sender.deposit(mailbox, cap, b"still here") == [None]
        assert [m.payload for m in await owner.delivered(1)] == [b"still here"]


async def test_a_dead_storage_process_fails_requests_and_stops_the_relay(
        tmp_path: Path) -> None:
    relay = Relay(make_config(tmp_path))
    outcome: list[BaseException] = []

    async def serve(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await relay.serve(task_status=task_status)
        except StorageError as exc:
            outcome.append(exc)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(serve)
            process = relay.storage_process
            assert process is not None and process.pid is not None
            os.kill(process.pid, signal.SIGKILL)
            await relay.wait_stopped()
    assert len(outcome) == 1
    assert "storage process stopped unexpectedly" in str(outcome[0])


async def test_calls_after_the_child_died_are_storage_errors(tmp_path: Path) -> None:
    relay = Relay(make_config(tmp_path))
    process = relay.storage_process
    assert isinstance(process, StorageProcess)
    await process.start()
    try:
        await process.run(relay.store.open, 0)
        assert process.pid is not None
        os.kill(process.pid, signal.SIGKILL)
        await process.wait_exit()
        with pytest.raises(StorageError, match="storage process stopped"):
            await process.run(relay.store.stats)
        with pytest.raises(StorageError):   # and stays failed
            await process.run(relay.store.stats)
    finally:
        await process.aclose()


async def test_only_methods_of_the_storage_objects_can_be_called(tmp_path: Path) -> None:
    relay = Relay(make_config(tmp_path))
    process = relay.storage_process
    assert process is not None
    await process.start()
    try:
        with pytest.raises(TypeError):
            await process.run(print, "not a storage method")
    finally:
        await process.aclose()


async def test_a_store_handed_in_runs_in_a_thread(tmp_path: Path) -> None:
    from chatcli.relay.store.sqlite import SqliteStore

    async with running_relay(make_config(tmp_path), store=SqliteStore(tmp_path / "r.db")) as h:
        assert h.relay.storage_process is None
        owner, mailbox, cap = await h.owner()
        sender = await h.connect()
        assert await sender.deposit(mailbox, cap, b"in a thread") == [None]
        assert [m.payload for m in await owner.delivered(1)] == [b"in a thread"]
