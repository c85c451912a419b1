"""Two relay processes on one PostgreSQL database stay one relay when things
go wrong: wake-ups lost while the listener was down, an account deleted
through the other process. Each relay runs in this test (its database work in
its own storage process), on the test's own database."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import trio
from trio_websocket import ConnectionClosed

from chatcli.protocol import frames
from chatcli.relay.notify import PgHub
from tests.relay import pgutil
from tests.relay.helpers import TIMEOUT, make_config, running_relay


def terminate_listeners(name: str) -> int:
    """Kill the relays' LISTEN connections only (as a PostgreSQL hiccup does)."""
    with psycopg.connect(pgutil.ADMIN_URL, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
            "AND query ILIKE 'LISTEN%%' AND pid <> pg_backend_pid()", (name,)).fetchall()
    return sum(1 for (ok,) in rows if ok)


def drop_mailbox_wakeups(hub: PgHub) -> Callable[[], None]:
    """Make ``hub`` miss deposit wake-ups (as while its listener is cut off)
    until the returned function is called."""
    original = hub._on_notify
    dropping = [True]

    def on_notify(channel: str, payload: str, target: Any) -> None:
        if dropping[0] and channel == hub.mailbox_channel:
            return
        original(channel, payload, target)

    hub._on_notify = on_notify  # type: ignore[method-assign]

    def stop() -> None:
        dropping[0] = False
    return stop


async def test_listener_reconnect_delivers_wakeups_lost_below_the_cursor(
        pg_database: tuple[str, str], tmp_path: Path) -> None:
    name, url = pg_database
    config = make_config(tmp_path, db=url)
    async with running_relay(config) as one, running_relay(config) as two:
        owner, mailbox, cap = await one.owner()
        sender_one, sender_two = await one.connect(), await two.connect()
        assert isinstance(one.relay.hub, PgHub)
        resume = drop_mailbox_wakeups(one.relay.hub)
        # Stored through process two while process one hears nothing of it...
        assert await sender_two.deposit(mailbox, cap, b"lost wake-up") == [None]
        # ...then a later one through process one, pushed at once (cursor past the first).
        assert await sender_one.deposit(mailbox, cap, b"local") == [None]
        (local,) = await owner.delivered(1)
        assert local.payload == b"local"
        resume()
        assert terminate_listeners(name) >= 2
        with trio.fail_after(TIMEOUT):
            (late,) = await owner.delivered(1)
        assert late.payload == b"lost wake-up" and late.id < local.id


async def test_account_delete_closes_the_owners_connections_on_every_process(
        pg_database: tuple[str, str], tmp_path: Path) -> None:
    _name, url = pg_database
    config = make_config(tmp_path, db=url)
    async with running_relay(config) as one, running_relay(config) as two:
        owner, mailbox, _cap = await one.owner()
        assert owner.key is not None
        other = await two.connect()
        assert isinstance(await other.auth(mailbox, owner.key), frames.Ok)
        answer = await owner.request(frames.AccountDelete(req=owner.req()))
        assert isinstance(answer, frames.Ok)
        # The connection on the other process is told and closed...
        with trio.fail_after(TIMEOUT):
            notice = await other.next_push(frames.Error)
        assert isinstance(notice, frames.Error) and notice.code == "unknown_mailbox"
        with trio.fail_after(TIMEOUT):
            while True:
                try:
                    await other.ws.get_message()
                except ConnectionClosed:
                    break
        # ...and the database holds nothing of the mailbox.
        stats = await one.relay.worker.run(one.relay.store.stats)
        assert stats.mailboxes == 0 and stats.blobs == 0
        caps = await one.relay.worker.run(one.relay.store.valid_caps, [(mailbox, _cap)])
        assert caps == set()
