"""The relay over loopback WebSockets (port 0): the whole request surface."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import pytest
import trio
from trio_websocket import ConnectionClosed

from chatcli.crypto.keys import MailboxKeyPair
from chatcli.protocol import State, codes, frames
from chatcli.relay.mailbox import cap_hash
from chatcli.relay.server import Relay, serve_relay
from tests.relay.helpers import Client, capability, make_config, running_relay

# Every test here runs on SQLite and on PostgreSQL (conftest.relay_backend).
pytestmark = pytest.mark.usefixtures("relay_backend")


async def test_serve_relay_starts_on_an_ephemeral_port(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_relay, make_config(tmp_path))
        assert isinstance(port, int) and port > 0
        with trio.fail_after(5):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_address_and_key_persist_across_restarts(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with running_relay(config) as h:
        first = h.relay.fingerprint
        assert h.relay.address == f"ws://127.0.0.1:{h.relay.port}/#{first}"
    async with running_relay(config) as h:
        assert h.relay.fingerprint == first


async def test_register_deposit_push_ack_and_redelivery(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with running_relay(config) as h:
        owner, mailbox, cap = await h.owner()
        sender = await h.connect()
        assert await sender.deposit(mailbox, cap, b"one", b"two") == [None, None]
        got = await owner.delivered(2)
        assert [m.payload for m in got] == [b"one", b"two"]
        assert got[0].id < got[1].id
        ok = await owner.request(frames.Ack(req=owner.req(), ids=[got[0].id]))
        assert isinstance(ok, frames.Ok)
        # The unacknowledged one comes again on the next connection, same id.
        key = owner.key
        assert key is not None
        again = await h.connect()
        assert isinstance(await again.auth(mailbox, key), frames.Ok)
        redelivered = await again.delivered(1)
        assert [(m.id, m.payload) for m in redelivered] == [(got[1].id, b"two")]
        assert isinstance(await again.next_push(frames.Synced), frames.Synced)


async def test_backlog_in_order_then_synced_then_live(tmp_path: Path) -> None:
    config = make_config(tmp_path, deliver_batch=7)
    async with running_relay(config) as h:
        owner, mailbox, cap = await h.owner()
        key = owner.key
        assert key is not None
        await owner.close()
        sender = await h.connect()
        payloads = [f"m{i}".encode() for i in range(40)]
        for i in range(0, 40, 10):
            assert await sender.deposit(mailbox, cap, *payloads[i:i + 10]) == [None] * 10
        back = await h.connect()
        assert isinstance(await back.auth(mailbox, key), frames.Ok)
        frames_seen: list[frames.Frame] = []
        got: list[frames.Delivered] = []
        while True:
            frame = await back.recv()
            frames_seen.append(frame)
            if isinstance(frame, frames.Synced):
                break
            assert isinstance(frame, frames.Deliver)
            got.extend(frame.messages)
        assert [m.payload for m in got] == payloads
        assert await sender.deposit(mailbox, cap, b"live") == [None]
        (live,) = await back.delivered(1)
        assert live.payload == b"live" and live.id > got[-1].id


async def test_many_senders_interleaved_keep_order(tmp_path: Path) -> None:
    async with running_relay(make_config(tmp_path)) as h:
        owner, mailbox, cap = await h.owner()
        senders = [await h.connect() for _ in range(5)]

        async def send_all(client: Client, tag: int) -> None:
            for i in range(20):
                assert await client.deposit(mailbox, cap, f"{tag}:{i}".encode()) == [None]

        async with trio.open_nursery() as nursery:
            for tag, client in enumerate(senders):
                nursery.start_soon(send_all, client, tag)
        got = await owner.delivered(100)
        ids = [m.id for m in got]
        assert ids == sorted(ids) and len(set(ids)) == 100
        for tag in range(5):
            mine = [m.payload for m in got if m.payload.startswith(f"{tag}:".encode())]
            assert mine == [f"{tag}:{i}".encode() for i in range(20)]


async def test_capabilities_revoke_and_unknown(tmp_path: Path) -> None:
    async with running_relay(make_config(tmp_path)) as h:
        owner, mailbox, cap = await h.owner()
        sender = await h.connect()
        other = capability()
        assert await sender.deposit(mailbox, other, b"x") == [codes.BAD_CAPABILITY]
        assert await sender.deposit(os.urandom(16), cap, b"x") == [codes.UNKNOWN_MAILBOX]
        ok = await owner.request(frames.CapRevoke(req=owner.req(), cap_hashes=[cap_hash(cap)]))
        assert isinstance(ok, frames.Ok)
        assert await sender.deposit(mailbox, cap, b"x") == [codes.BAD_CAPABILITY]


async def test_one_shot_deposit_retried_after_its_answer_was_lost(tmp_path: Path) -> None:
    """An invite's handshake is stored but its answer never reaches the
    accepter (the connection drops): the same deposit sent again on a new
    connection is answered as stored and not delivered twice; another
    payload on the used invite is refused, and does not shadow the retry."""
    async with running_relay(make_config(tmp_path)) as h:
        owner, mailbox, cap = await h.owner()
        invite = capability()
        added = await owner.request(frames.CapAdd(req=owner.req(),
                                                  cap_hashes=[cap_hash(invite)], one_shot=True))
        assert isinstance(added, frames.Ok)
        first = await h.connect()
        await first.send(frames.Deposit(req=first.req(), items=[
            frames.DepositItem(mailbox=mailbox, cap=invite, payload=b"handshake")]))
        (stored,) = await owner.delivered(1)
        assert stored.payload == b"handshake"
        await first.close()   # the answer is never read
        retry = await h.connect()
        assert await retry.deposit(mailbox, invite, b"handshake") == [None]
        assert await retry.deposit(mailbox, invite, b"forged") == [codes.CAPABILITY_USED]
        assert await retry.deposit(mailbox, invite, b"handshake", b"handshake") == [None, None]
        ok = await owner.request(frames.Ack(req=owner.req(), ids=[stored.id]))
        assert isinstance(ok, frames.Ok)
        assert await retry.deposit(mailbox, invite, b"handshake") == [None]
        # Nothing else was delivered: the next push is a later deposit.
        assert await retry.deposit(mailbox, cap, b"marker") == [None]
        assert [m.payload for m in await owner.delivered(1)] == [b"marker"]


async def test_quota_exceeded_per_item_nothing_lost(tmp_path: Path) -> None:
    async with running_relay(make_config(tmp_path, mailbox_max_messages=3)) as h:
        owner, mailbox, cap = await h.owner()
        sender = await h.connect()
        errors = await sender.deposit(mailbox, cap, b"1", b"2", b"3", b"4")
        assert errors == [None, None, None, codes.QUOTA_EXCEEDED]
        got = await owner.delivered(3)
        assert [m.payload for m in got] == [b"1", b"2", b"3"]


async def test_auth_failures(tmp_path: Path) -> None:
    async with running_relay(make_config(tmp_path)) as h:
        _, mailbox, _ = await h.owner()
        intruder = await h.connect()
        answer = await intruder.auth(mailbox, MailboxKeyPair.generate())
        assert isinstance(answer, frames.Error) and answer.code == codes.AUTH_FAILED
        assert intruder.proto.state is State.READY
        answer = await intruder.auth(os.urandom(16), MailboxKeyPair.generate())
        assert isinstance(answer, frames.Error) and answer.code == codes.AUTH_FAILED
        # Owner-only requests stay refused; the connection still works.
        await intruder.send_raw(msgspec.msgpack.encode(["ack", 77, [1]]))
        error = await intruder.recv_unchecked()
        assert isinstance(error, frames.Error) and error.code == codes.NOT_AUTHENTICATED
        assert error.req == 77
        pong = await intruder.request(frames.Ping(req=intruder.req()))
        assert isinstance(pong, frames.Pong)


async def test_replayed_auth_from_another_connection_fails(tmp_path: Path) -> None:
    async with running_relay(make_config(tmp_path)) as h:
        owner, mailbox, _ = await h.owner()
        key = owner.key
        assert key is not None
        first = await h.connect()
        stolen = first.proto.auth(mailbox, key.sign)      # made for `first`'s challenge
        second = await h.connect()
        await second.send_raw(stolen)
        error = await second.recv_unchecked()
        assert isinstance(error, frames.Error) and error.code == codes.AUTH_FAILED


async def test_invite_only_registration(tmp_path: Path) -> None:
    config = make_config(tmp_path, invite_only=True)
    async with running_relay(config) as h:
        client = await h.connect()
        key = MailboxKeyPair.generate()
        await client.ws.send_message(client.proto.register(key.auth_public, key.sign, None))
        error = await client.recv()
        assert isinstance(error, frames.Error) and error.code == codes.REGISTRATION_CLOSED
        await client.ws.send_message(client.proto.register(key.auth_public, key.sign, "nope"))
        error = await client.recv()
        assert isinstance(error, frames.Error) and error.code == codes.BAD_TOKEN
        token = await h.relay.worker.run(h.relay.mailboxes.create_token, 1, None,
                                         h.relay.now_ms())
        mailbox = await client.register(key, token=token)
        assert len(mailbox) == 16
        late = await h.connect()
        await late.ws.send_message(late.proto.register(key.auth_public, key.sign, token))
        error = await late.recv()
        assert isinstance(error, frames.Error) and error.code == codes.BAD_TOKEN


async def test_presence_query_subscribe_hide_and_revoke(tmp_path: Path) -> None:
    times = iter(range(1_800_000_000, 1_900_000_000))
    config = make_config(tmp_path)
    async with running_relay(config, wall_clock=lambda: float(next(times))) as h:
        owner, mailbox, cap = await h.owner()
        key = owner.key
        assert key is not None
        watcher = await h.connect()
        target = frames.PresenceTarget(mailbox=mailbox, cap=cap)
        bad = frames.PresenceTarget(mailbox=mailbox, cap=capability())
        result = await watcher.request(frames.PresenceSubscribe(req=watcher.req(),
                                                                targets=[target, bad]))
        assert isinstance(result, frames.PresenceResult)
        assert result.entries == [frames.PresenceEntry(mailbox, True, None),
                                  frames.PresenceEntry(mailbox, None, None)]
        await owner.close()
        update = await watcher.next_push(frames.PresenceUpdate)
        assert isinstance(update, frames.PresenceUpdate)
        (entry,) = update.entries
        assert entry.online is False and entry.last_seen is not None
        back = await h.connect()
        await back.auth(mailbox, key)
        update = await watcher.next_push(frames.PresenceUpdate)
        assert update.entries == [frames.PresenceEntry(mailbox, True, None)]  # type: ignore
        ok = await back.request(frames.PresenceSettings(req=back.req(), hidden=True))
        assert isinstance(ok, frames.Ok)
        update = await watcher.next_push(frames.PresenceUpdate)
        assert update.entries == [frames.PresenceEntry(mailbox, None, None)]  # type: ignore
        query = await watcher.request(frames.PresenceQuery(req=watcher.req(), targets=[target]))
        assert query.entries == [frames.PresenceEntry(mailbox, None, None)]  # type: ignore
        await back.request(frames.PresenceSettings(req=back.req(), hidden=False))
        await watcher.next_push(frames.PresenceUpdate)
        await back.request(frames.CapRevoke(req=back.req(), cap_hashes=[cap_hash(cap)]))
        update = await watcher.next_push(frames.PresenceUpdate)
        assert update.entries == [frames.PresenceEntry(mailbox, None, None)]  # type: ignore
        query = await watcher.request(frames.PresenceQuery(req=watcher.req(), targets=[target]))
        assert query.entries == [frames.PresenceEntry(mailbox, None, None)]  # type: ignore


async def test_last_seen_persists(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with running_relay(config, wall_clock=lambda: 1_800_000_000.5) as h:
        owner, mailbox, cap = await h.owner()
        await owner.close()
        with trio.fail_after(5):
            while True:
                records = await h.relay.worker.run(h.relay.store.presence_records, [mailbox])
                if records[mailbox].last_seen is not None:
                    break
                await trio.sleep(0.01)
        assert records[mailbox].last_seen == 1_800_000_000_500
    async with running_relay(config) as h:
        watcher = await h.connect()
        result = await watcher.request(frames.PresenceQuery(
            req=watcher.req(), targets=[frames.PresenceTarget(mailbox=mailbox, cap=cap)]))
        assert result.entries == [frames.PresenceEntry(  # type: ignore[attr-defined]
            mailbox, False, 1_800_000_000_500)]


async def test_blobs_over_the_wire(tmp_path: Path) -> None:
    async with running_relay(make_config(tmp_path, max_blob_size=300_000)) as h:
        owner, _, _ = await h.owner()
        blob, read_cap = os.urandom(16), capability()
        data = os.urandom(frames.MAX_BLOB_CHUNK + 1000)
        first = frames.BlobPut(req=owner.req(), blob=blob, offset=0,
                               data=data[:frames.MAX_BLOB_CHUNK], final=False,
                               read_cap_hash=cap_hash(read_cap), ttl=3600)
        assert isinstance(await owner.request(first), frames.Ok)
        last = frames.BlobPut(req=owner.req(), blob=blob, offset=frames.MAX_BLOB_CHUNK,
                              data=data[frames.MAX_BLOB_CHUNK:], final=True,
                              read_cap_hash=cap_hash(read_cap), ttl=3600)
        assert isinstance(await owner.request(last), frames.Ok)
        reader = await h.connect()
        out = b""
        while len(out) < len(data):
            chunk = await reader.request(frames.BlobGet(
                req=reader.req(), blob=blob, read_cap=read_cap, offset=len(out),
                length=frames.MAX_BLOB_CHUNK))
            assert isinstance(chunk, frames.BlobData) and chunk.size == len(data)
            out += chunk.data
        assert out == data
        wrong = await reader.request(frames.BlobGet(req=reader.req(), blob=blob,
                                                    read_cap=capability(), offset=0, length=1))
        assert isinstance(wrong, frames.Error) and wrong.code == codes.BLOB_NOT_FOUND
        too_big = frames.BlobPut(req=owner.req(), blob=os.urandom(16), offset=0,
                                 data=os.urandom(frames.MAX_BLOB_CHUNK), final=False,
                                 read_cap_hash=cap_hash(read_cap), ttl=3600)
        assert isinstance(await owner.request(too_big), frames.Ok)
        bigger = frames.BlobPut(req=owner.req(), blob=too_big.blob,
                                offset=frames.MAX_BLOB_CHUNK, data=os.urandom(60_000),
                                final=True, read_cap_hash=cap_hash(read_cap), ttl=3600)
        error = await owner.request(bigger)
        assert isinstance(error, frames.Error) and error.code == codes.BLOB_TOO_LARGE
        deleted = await owner.request(frames.BlobDelete(req=owner.req(), blob=blob))
        assert isinstance(deleted, frames.Ok)
        gone = await reader.request(frames.BlobGet(req=reader.req(), blob=blob,
                                                   read_cap=read_cap, offset=0, length=1))
        assert isinstance(gone, frames.Error) and gone.code == codes.BLOB_NOT_FOUND


async def test_account_delete(tmp_path: Path) -> None:
    async with running_relay(make_config(tmp_path)) as h:
        owner, mailbox, cap = await h.owner()
        key = owner.key
        assert key is not None
        second = await h.connect()
        await second.auth(mailbox, key)
        blob = os.urandom(16)
        await owner.request(frames.BlobPut(req=owner.req(), blob=blob, offset=0, data=b"x",
                                           final=True, read_cap_hash=bytes(32), ttl=60))
        sender = await h.connect()
        assert await sender.deposit(mailbox, cap, b"x") == [None]
        ok = await owner.request(frames.AccountDelete(req=owner.req()))
        assert isinstance(ok, frames.Ok)
        assert owner.proto.state is State.CLOSED
        error = await second.next_push(frames.Error)
        assert isinstance(error, frames.Error) and error.code == codes.UNKNOWN_MAILBOX
        assert await sender.deposit(mailbox, cap, b"x") == [codes.UNKNOWN_MAILBOX]
        stats = await h.relay.worker.run(h.relay.store.stats)
        assert (stats.mailboxes, stats.messages, stats.blobs) == (0, 0, 0)
        again = await h.connect()
        answer = await again.auth(mailbox, key)
        assert isinstance(answer, frames.Error) and answer.code == codes.AUTH_FAILED


async def test_bad_frames_get_typed_errors_and_others_are_unaffected(tmp_path: Path) -> None:
    async with running_relay(make_config(tmp_path)) as h:
        owner, mailbox, cap = await h.owner()
        bad = await h.connect()
        await bad.send_raw(msgspec.msgpack.encode(["deposit", 5, [[b"short", cap, b"x"]]]))
        error = await bad.recv_unchecked()
        assert isinstance(error, frames.Error) and (error.req, error.code) == (5, codes.BAD_FRAME)
        await bad.send_raw(b"\xc1garbage")
        error = await bad.recv_unchecked()
        assert isinstance(error, frames.Error) and error.req is None
        assert error.code == codes.BAD_FRAME
        with trio.fail_after(5):   # then the relay closes the connection
            with pytest.raises(ConnectionClosed):
                await bad.ws.get_message()
        text = await h.connect()
        await text.ws.send_message("not binary")
        error = await text.recv_unchecked()
        assert isinstance(error, frames.Error) and error.code == codes.BAD_FRAME
        # The relay still serves everyone else.
        sender = await h.connect()
        assert await sender.deposit(mailbox, cap, b"fine") == [None]
        assert [m.payload for m in await owner.delivered(1)] == [b"fine"]


async def test_frames_before_hello_and_wrong_version(tmp_path: Path) -> None:
    async with running_relay(make_config(tmp_path)) as h:
        early = await h.connect(handshake=False)
        await early.send_raw(msgspec.msgpack.encode(["ping", 1]))
        error = frames.Error(req=None, code=codes.UNEXPECTED_FRAME, message="")
        got = msgspec.msgpack.decode(await early.raw_recv())
        assert got[0] == "error" and got[2] == error.code
        old = await h.connect(handshake=False)
        await old.send_raw(msgspec.msgpack.encode(["hello", [99], os.urandom(32)]))
        got = msgspec.msgpack.decode(await old.raw_recv())
        assert got[0] == "error" and got[2] == codes.UNSUPPORTED_VERSION


async def test_graceful_shutdown_sends_bye_and_going_away(tmp_path: Path) -> None:
    relay = Relay(make_config(tmp_path))
    async with trio.open_nursery() as nursery:
        await nursery.start(relay.serve)
        client = await Client.connect(nursery, relay)
        relay.shutdown()
        bye = await client.recv()
        assert bye == frames.Bye(code=codes.SHUTTING_DOWN)
        with trio.fail_after(5):
            await relay.wait_stopped()
        assert client.ws.closed is not None and client.ws.closed.code == 1001
        await client.close()


async def test_ping(tmp_path: Path) -> None:
    async with running_relay(make_config(tmp_path)) as h:
        client = await h.connect()
        assert isinstance(await client.request(frames.Ping(req=client.req())), frames.Pong)


async def test_shutdown_persists_last_seen_of_connected_owners(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    relay = Relay(config, wall_clock=lambda: 1_800_000_000.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(relay.serve)
        owner = await Client.connect(nursery, relay)
        mailbox = await owner.register()
        relay.shutdown()
        with trio.fail_after(10):
            await relay.wait_stopped()
        await owner.close()
    async with running_relay(config) as h:
        records = await h.relay.worker.run(h.relay.store.presence_records, [mailbox])
        assert records[mailbox].last_seen == 1_800_000_000_000
