"""Hypothesis fuzzing of the live relay's dispatch: random valid frames and
random bytes, in random orders, on several connections. The relay answers
with typed frames, keeps serving, and the data stored before is intact."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trio_websocket import ConnectionClosed, connect_websocket

from chatcli.crypto.keys import MailboxKeyPair
from chatcli.protocol import codes, frames
from chatcli.protocol.codec import RemoteProtocolError, decode_relay_frame, encode
from chatcli.protocol.connection import ClientProtocol
from chatcli.relay.mailbox import cap_hash
from chatcli.relay.store.base import NewMessage
from chatcli.relay.store.sqlite import SqliteStore
from tests.protocol.strategies import client_frames
from tests.relay.helpers import Client, make_config, running_relay

LEGIT_MAILBOX = os.urandom(16)
LEGIT_KEY = MailboxKeyPair.generate()
LEGIT_CAP = os.urandom(32)
STORED = [b"first", b"second", b"third"]

# Frames aimed at the legitimate mailbox, with its real capability or not.
targeted = st.one_of(
    st.builds(frames.Deposit, req=st.integers(0, 1000), items=st.lists(
        st.builds(frames.DepositItem, mailbox=st.just(LEGIT_MAILBOX),
                  cap=st.sampled_from([LEGIT_CAP, os.urandom(32)]),
                  payload=st.binary(min_size=1, max_size=50)), min_size=1, max_size=3)),
    st.builds(frames.Auth, req=st.integers(0, 1000), mailbox=st.just(LEGIT_MAILBOX),
              signature=st.binary(min_size=64, max_size=64)),
    st.builds(frames.PresenceSubscribe, req=st.integers(0, 1000), targets=st.lists(
        st.builds(frames.PresenceTarget, mailbox=st.just(LEGIT_MAILBOX),
                  cap=st.sampled_from([LEGIT_CAP, os.urandom(32)])), min_size=1, max_size=2)),
)
message = st.one_of(client_frames.map(encode), targeted.map(encode), st.binary(max_size=80))
session = st.tuples(st.booleans(), st.lists(message, max_size=12))


def prepare(db: Path) -> None:
    store = SqliteStore(db)
    store.open(int(time.time() * 1000))
    store.create_mailbox(LEGIT_MAILBOX, LEGIT_KEY.auth_public, 0)
    store.add_caps(LEGIT_MAILBOX, [cap_hash(LEGIT_CAP)], 0)
    now = int(time.time() * 1000)
    store.insert_messages([NewMessage(LEGIT_MAILBOX, p, now) for p in STORED])
    store.close()


async def run_sessions(db: Path, sessions: list[tuple[bool, list[bytes]]]) -> None:
    config = make_config(db.parent, db=str(db), handshake_timeout=2.0)
    async with running_relay(config) as h:
        assert h.relay.port is not None
        for hello, messages in sessions:
            async with trio.open_nursery() as nursery:
                ws = await connect_websocket(nursery, "127.0.0.1", h.relay.port, "/",
                                             use_ssl=False)
                client = Client(ws, ClientProtocol())
                try:
                    if hello:
                        await ws.send_message(client.proto.start())
                    for data in messages:
                        await ws.send_message(data)
                    # Read what comes back: every frame is a valid relay frame.
                    with trio.move_on_after(0.2):
                        while True:
                            reply = decode_relay_frame(await client.raw_recv())
                            if isinstance(reply, frames.Error):
                                assert reply.code in codes.ALL_CODES
                except ConnectionClosed:
                    pass
                except RemoteProtocolError as exc:  # pragma: no cover - a bug if reached
                    raise AssertionError(f"relay sent an invalid frame: {exc}") from exc
                finally:
                    await client.close()
                    nursery.cancel_scope.cancel()
        # Still serving, and the stored messages are intact and in order.
        owner = await h.connect()
        assert isinstance(await owner.auth(LEGIT_MAILBOX, LEGIT_KEY), frames.Ok)
        got = await owner.delivered(len(STORED))
        assert [m.payload for m in got[:len(STORED)]] == STORED


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(session, min_size=1, max_size=4))
def test_random_traffic_never_breaks_the_relay(sessions: list[tuple[bool, list[bytes]]]
                                               ) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "relay.db"
        prepare(db)
        trio.run(run_sessions, db, sessions)
