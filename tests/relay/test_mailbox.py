"""Mailbox logic with explicit time, on every store backend."""

from __future__ import annotations

import os

import pytest

from chatcli.crypto.keys import MailboxKeyPair
from chatcli.protocol import codes, transcripts
from chatcli.relay.errors import Refused
from chatcli.relay.mailbox import (
    AckBatch,
    CommitIds,
    DepositBatch,
    DepositItem,
    Mailboxes,
    Quota,
    answered_ids,
    cap_hash,
    commit_result,
    payload_hash,
    plan_deposits,
    token_hash,
)
from chatcli.relay.store.base import Store, Usage
from tests.relay.conftest import StoreFactory

T0 = 1_800_000_000_000
RELAY_KEY = os.urandom(32)
CHALLENGE = os.urandom(32)
DAY = 86_400_000


def service(store: Store, **kwargs: object) -> Mailboxes:
    settings: dict[str, object] = {"quota": Quota(5, 1000), "retention_ms": 21 * DAY}
    settings.update(kwargs)
    return Mailboxes(store, **settings)  # type: ignore[arg-type]


def register(mb: Mailboxes, key: MailboxKeyPair | None = None, token: str | None = None,
             now: int = T0) -> tuple[bytes, MailboxKeyPair]:
    key = key or MailboxKeyPair.generate()
    transcript = transcripts.register(RELAY_KEY, CHALLENGE, key.auth_public)
    return mb.register(key.auth_public, key.sign(transcript), transcript, token, now), key


def with_cap(mb: Mailboxes, mailbox: bytes) -> bytes:
    cap = os.urandom(32)
    mb.add_caps(mailbox, [cap_hash(cap)], T0)
    return cap_hash(cap)


# ------------------------------------------------------------ pure planning


def test_plan_deposits_decides_each_item_in_order() -> None:
    a, b = os.urandom(16), os.urandom(16)
    good, bad = os.urandom(32), os.urandom(32)
    items = [DepositItem(a, good, b"x" * 10), DepositItem(a, bad, b"x"),
             DepositItem(os.urandom(16), good, b"x"), DepositItem(a, good, b"x" * 10),
             DepositItem(b, good, b"y")]
    plan = plan_deposits(items, {(a, good), (b, good)},
                         {a: Usage(3, 0), b: Usage(0, 0)}, Quota(4, 1000),
                         [None, None, None, None, codes.RATE_LIMITED])
    assert plan.errors == [None, codes.BAD_CAPABILITY, codes.UNKNOWN_MAILBOX,
                           codes.QUOTA_EXCEEDED, codes.RATE_LIMITED]
    assert plan.accepted == [0]


def test_plan_one_shot_first_deposit_then_its_repeats() -> None:
    a, invite = os.urandom(16), os.urandom(32)
    hs, other = DepositItem(a, invite, b"handshake"), DepositItem(a, invite, b"another")
    plan = plan_deposits([hs, hs, other, hs], {(a, invite)}, {a: Usage(0, 0)},
                         Quota(10, 1000), one_shot={(a, invite)})
    assert plan.errors == [None, None, codes.CAPABILITY_USED, None]
    assert plan.accepted == [0] and plan.repeated == [1, 3]


def test_plan_used_one_shot_answers_its_own_deposit_as_stored() -> None:
    """``used`` names the payload that used the capability: that payload is a
    repeat (no quota, rate or budget asked), any other is refused, and an
    unknown one (used before the relay kept it) refuses everything."""
    a, invite, old = os.urandom(16), os.urandom(32), os.urandom(32)
    asked: list[bytes] = []

    def allow(hashed: bytes) -> bool:
        asked.append(hashed)
        return False

    items = [DepositItem(a, invite, b"handshake"), DepositItem(a, invite, b"another"),
             DepositItem(a, old, b"handshake"), DepositItem(a, invite, b"handshake")]
    plan = plan_deposits(items, set(), {a: Usage(5, 1000)}, Quota(5, 1000), room=0,
                         allow=allow,
                         used={(a, invite): payload_hash(b"handshake"), (a, old): None})
    assert plan.errors == [None, codes.CAPABILITY_USED, codes.CAPABILITY_USED, None]
    assert plan.accepted == [] and plan.repeated == [0, 3]
    assert asked == []
    # Earlier refusals and unknown mailboxes come first, as for every item.
    plan = plan_deposits(items[:1] * 2, set(), {}, Quota(5, 1000), [codes.RATE_LIMITED, None],
                         used={(a, invite): payload_hash(b"handshake")})
    assert plan.errors == [codes.RATE_LIMITED, codes.UNKNOWN_MAILBOX]


def test_commit_result_stores_nothing_for_a_repeat() -> None:
    a, invite = os.urandom(16), os.urandom(32)
    items = [DepositItem(a, invite, b"hs"), DepositItem(a, os.urandom(32), b"x"),
             DepositItem(a, invite, b"hs")]
    plan = plan_deposits(items, {(a, invite)}, {a: Usage(0, 0)}, Quota(10, 1000),
                         one_shot={(a, invite)})
    assert plan.repeated == [2]
    ids = answered_ids(plan, [41])
    assert ids == [41, 0]
    result = commit_result([DepositBatch(items, [None] * 3)], CommitIds(plan.errors, ids, 0),
                           T0)
    assert result.errors == [[None, codes.BAD_CAPABILITY, None]]
    assert [(m, msg.id, msg.payload) for m, msg in result.stored] == [(a, 41, b"hs")]


def test_plan_counts_bytes_across_the_batch() -> None:
    a, cap = os.urandom(16), os.urandom(32)
    items = [DepositItem(a, cap, b"x" * 40) for _ in range(3)]
    plan = plan_deposits(items, {(a, cap)}, {a: Usage(0, 20)}, Quota(100, 100))
    assert plan.errors == [None, None, codes.QUOTA_EXCEEDED]


# ------------------------------------------------------------ registration


def test_register_and_authenticate(store: Store) -> None:
    mb = service(store)
    mailbox, key = register(mb)
    assert len(mailbox) == 16
    transcript = transcripts.auth(RELAY_KEY, CHALLENGE, mailbox)
    mb.authenticate(mailbox, key.sign(transcript), transcript)
    with pytest.raises(Refused) as info:
        mb.authenticate(mailbox, MailboxKeyPair.generate().sign(transcript), transcript)
    assert info.value.code == codes.AUTH_FAILED
    with pytest.raises(Refused) as info:
        mb.authenticate(os.urandom(16), key.sign(transcript), transcript)
    assert info.value.code == codes.AUTH_FAILED


def test_register_needs_a_valid_signature(store: Store) -> None:
    mb = service(store)
    key = MailboxKeyPair.generate()
    transcript = transcripts.register(RELAY_KEY, CHALLENGE, key.auth_public)
    with pytest.raises(Refused) as info:
        mb.register(key.auth_public, bytes(64), transcript, None, T0)
    assert info.value.code == codes.AUTH_FAILED
    assert store.stats().mailboxes == 0


def test_invite_only_tokens_uses_and_expiry(store: Store) -> None:
    mb = service(store, invite_only=True)
    with pytest.raises(Refused) as info:
        register(mb)
    assert info.value.code == codes.REGISTRATION_CLOSED
    with pytest.raises(Refused) as info:
        register(mb, token="chatcli-rt-nope")
    assert info.value.code == codes.BAD_TOKEN
    token = mb.create_token(2, T0 + DAY, T0)
    register(mb, token=token)
    register(mb, token=f"  {token}\n", now=T0 + 1)
    with pytest.raises(Refused) as info:
        register(mb, token=token, now=T0 + 2)
    assert info.value.code == codes.BAD_TOKEN
    late = mb.create_token(5, T0 + DAY, T0)
    with pytest.raises(Refused):
        register(mb, token=late, now=T0 + DAY)
    assert store.stats().mailboxes == 2


def test_tokens_are_stored_hashed(store: Store) -> None:
    mb = service(store)
    token = mb.create_token(1, None, T0)
    assert store.consume_token(token_hash(token), T0)


# ------------------------------------------------------------ deposits


def test_deposit_capability_rules(store: Store) -> None:
    mb = service(store)
    mailbox, _ = register(mb)
    cap = with_cap(mb, mailbox)
    assert mb.deposit([DepositItem(mailbox, cap, b"hi")], T0) == [None]
    assert mb.deposit([DepositItem(mailbox, os.urandom(32), b"hi")], T0) == [
        codes.BAD_CAPABILITY]
    assert mb.deposit([DepositItem(os.urandom(16), cap, b"hi")], T0) == [codes.UNKNOWN_MAILBOX]
    mb.revoke_caps(mailbox, [cap], T0)
    assert mb.deposit([DepositItem(mailbox, cap, b"hi")], T0) == [codes.BAD_CAPABILITY]
    mb.add_caps(mailbox, [cap], T0)   # unblocking allows it again
    assert mb.deposit([DepositItem(mailbox, cap, b"hi")], T0) == [None]
    assert [m.payload for m in mb.pending(mailbox, 0, 10)] == [b"hi", b"hi"]


def test_quota_refuses_and_keeps_what_is_stored(store: Store) -> None:
    mb = service(store, quota=Quota(3, 1000))
    mailbox, _ = register(mb)
    cap = with_cap(mb, mailbox)
    errors = mb.deposit([DepositItem(mailbox, cap, bytes([i])) for i in range(5)], T0)
    assert errors == [None, None, None, codes.QUOTA_EXCEEDED, codes.QUOTA_EXCEEDED]
    assert [m.payload for m in mb.pending(mailbox, 0, 10)] == [b"\x00", b"\x01", b"\x02"]
    ids = [m.id for m in mb.pending(mailbox, 0, 10)]
    assert mb.ack(mailbox, ids[:2]) == 2
    assert mb.deposit([DepositItem(mailbox, cap, b"later")], T0) == [None]
    assert store.mailbox_usage([mailbox])[mailbox] == Usage(2, 1 + len(b"later"))


def test_byte_quota(store: Store) -> None:
    mb = service(store, quota=Quota(100, 10))
    mailbox, _ = register(mb)
    cap = with_cap(mb, mailbox)
    assert mb.deposit([DepositItem(mailbox, cap, b"x" * 6)], T0) == [None]
    assert mb.deposit([DepositItem(mailbox, cap, b"x" * 5)], T0) == [codes.QUOTA_EXCEEDED]
    assert mb.deposit([DepositItem(mailbox, cap, b"x" * 4)], T0) == [None]


def test_group_commit_answers_each_batch_and_applies_acks(store: Store) -> None:
    mb = service(store)
    a, _ = register(mb)
    b, _ = register(mb)
    cap_a, cap_b = with_cap(mb, a), with_cap(mb, b)
    first = mb.deposit([DepositItem(a, cap_a, b"old")], T0)
    assert first == [None]
    old_id = mb.pending(a, 0, 1)[0].id
    result = mb.commit(
        [DepositBatch([DepositItem(a, cap_a, b"1"), DepositItem(b, cap_a, b"2")], [None, None]),
         DepositBatch([DepositItem(b, cap_b, b"3")], [None])],
        [AckBatch(a, [old_id]), AckBatch(b, [old_id])],   # b cannot ack a's message
        {a: T0 + 5}, T0 + 10)
    assert result.errors == [[None, codes.BAD_CAPABILITY], [None]]
    assert result.acked == 1
    assert [(mbx, m.payload, m.received_at) for mbx, m in result.stored] == [
        (a, b"1", T0 + 10), (b, b"3", T0 + 10)]
    ids = [m.id for _, m in result.stored]
    assert ids == sorted(ids) and ids[0] > old_id
    assert store.presence_records([a])[a].last_seen == T0 + 5


def test_pending_is_ordered_and_paged(store: Store) -> None:
    mb = service(store, quota=Quota(1000, 10**6))
    mailbox, _ = register(mb)
    cap = with_cap(mb, mailbox)
    for i in range(10):
        mb.deposit([DepositItem(mailbox, cap, str(i).encode())], T0 + i)
    first = mb.pending(mailbox, 0, 4)
    rest = mb.pending(mailbox, first[-1].id, 100)
    assert [m.payload for m in first + rest] == [str(i).encode() for i in range(10)]
    assert [m.received_at for m in first][:2] == [T0, T0 + 1]


def test_ids_are_never_reused_after_ack(store: Store) -> None:
    mb = service(store)
    mailbox, _ = register(mb)
    cap = with_cap(mb, mailbox)
    mb.deposit([DepositItem(mailbox, cap, b"a")], T0)
    (first,) = mb.pending(mailbox, 0, 10)
    mb.ack(mailbox, [first.id])
    mb.deposit([DepositItem(mailbox, cap, b"b")], T0)
    (second,) = mb.pending(mailbox, 0, 10)
    assert second.id > first.id


def test_retention_expires_only_old_messages(store: Store) -> None:
    mb = service(store, retention_ms=21 * DAY)
    mailbox, _ = register(mb)
    cap = with_cap(mb, mailbox)
    mb.deposit([DepositItem(mailbox, cap, b"old")], T0)
    mb.deposit([DepositItem(mailbox, cap, b"new")], T0 + 20 * DAY)
    assert mb.expire(T0 + 21 * DAY - 1) == 0
    assert mb.expire(T0 + 21 * DAY + 1) == 1
    assert [m.payload for m in mb.pending(mailbox, 0, 10)] == [b"new"]
    assert store.mailbox_usage([mailbox])[mailbox] == Usage(1, 3)


def test_delete_account_removes_everything(store: Store) -> None:
    mb = service(store)
    mailbox, _ = register(mb)
    cap = with_cap(mb, mailbox)
    mb.deposit([DepositItem(mailbox, cap, b"x")], T0)
    assert mb.delete_account(mailbox)
    assert store.mailbox_auth_key(mailbox) is None
    assert mb.pending(mailbox, 0, 10) == []
    assert mb.deposit([DepositItem(mailbox, cap, b"x")], T0) == [codes.UNKNOWN_MAILBOX]
    assert not mb.delete_account(mailbox)


def test_presence_lookup_needs_a_valid_capability(store: Store) -> None:
    mb = service(store)
    mailbox, _ = register(mb)
    cap = with_cap(mb, mailbox)
    wrong = os.urandom(32)
    valid, records = mb.presence_lookup([(mailbox, cap), (mailbox, wrong)])
    assert valid == {(mailbox, cap)}
    assert records[mailbox].hidden is False
    mb.revoke_caps(mailbox, [cap], T0)
    valid, records = mb.presence_lookup([(mailbox, cap)])
    assert valid == set() and records == {}


def test_writes_for_a_deleted_mailbox_are_refused_and_leave_nothing(store: Store) -> None:
    """A connection that was authenticated before its mailbox was deleted
    (through another connection or relay process) cannot tie new rows to it."""
    from chatcli.relay.blobs import Blobs

    mb = service(store)
    mailbox, _ = register(mb)
    with_cap(mb, mailbox)
    blobs = Blobs(store, max_blob_size=1000, owner_quota=1000, max_ttl_ms=DAY)
    assert mb.delete_account(mailbox)
    calls = [lambda: mb.add_caps(mailbox, [os.urandom(32)], T0),
             lambda: mb.revoke_caps(mailbox, [os.urandom(32)], T0),
             lambda: mb.set_hidden(mailbox, True),
             lambda: blobs.put(mailbox, os.urandom(16), 0, b"data", True, os.urandom(32),
                               60, T0)]
    for call in calls:
        with pytest.raises(Refused) as info:
            call()
        assert info.value.code == codes.UNKNOWN_MAILBOX
    stats = store.stats()
    assert (stats.mailboxes, stats.blobs, stats.blob_bytes) == (0, 0, 0)
    assert store.valid_caps([(mailbox, os.urandom(32))]) == set()
    assert store.owner_blob_bytes(mailbox) == 0


# ------------------------------------------------------------ one-shot capabilities


def test_one_shot_capability_takes_one_deposit(store: Store) -> None:
    mb = service(store)
    mailbox, _ = register(mb)
    invite = os.urandom(32)
    mb.add_caps(mailbox, [cap_hash(invite)], T0, one_shot=True)
    # Two in one request, then one more: only the first gets through.
    item = DepositItem(mailbox, cap_hash(invite), b"hello")
    other = DepositItem(mailbox, cap_hash(invite), b"someone else")
    assert mb.deposit([item, other], T0) == [None, codes.CAPABILITY_USED]
    assert mb.deposit([other], T0 + 1) == [codes.CAPABILITY_USED]
    assert [m.payload for m in mb.pending(mailbox, 0, 10)] == [b"hello"]
    # Used up: no presence either; re-adding it does not revive it.
    assert store.valid_caps([(mailbox, cap_hash(invite))]) == set()
    mb.add_caps(mailbox, [cap_hash(invite)], T0 + 2, one_shot=True)
    assert mb.deposit([other], T0 + 3) == [codes.CAPABILITY_USED]
    # Revoked after use: an ordinary bad capability, for its own deposit too.
    mb.revoke_caps(mailbox, [cap_hash(invite)], T0 + 4)
    assert mb.deposit([other, item], T0 + 5) == [codes.BAD_CAPABILITY] * 2


def test_one_shot_retry_of_its_deposit_answered_as_stored(store: Store) -> None:
    """The deposit that used a one-shot capability, sent again (its answer
    was lost): answered as stored, and stored once, before and after the
    owner fetched it; any other payload is still refused."""
    mb = service(store)
    mailbox, _ = register(mb)
    invite = cap_hash(os.urandom(32))
    mb.add_caps(mailbox, [invite], T0, one_shot=True)
    item = DepositItem(mailbox, invite, b"handshake")
    # Twice in the first request: one copy.
    result = mb.commit([DepositBatch([item, item], [None, None])], [], {}, T0)
    assert result.errors == [[None, None]]
    assert [(m, msg.payload) for m, msg in result.stored] == [(mailbox, b"handshake")]
    # The retry: stored already, nothing stored (nor pushed) again.
    again = mb.commit([DepositBatch([item], [None])], [], {}, T0 + 1)
    assert again.errors == [[None]] and again.stored == []
    other = DepositItem(mailbox, invite, b"handshake!")
    assert mb.deposit([other, item], T0 + 2) == [codes.CAPABILITY_USED, None]
    pending = mb.pending(mailbox, 0, 10)
    assert [m.payload for m in pending] == [b"handshake"]
    assert store.mailbox_usage([mailbox])[mailbox] == Usage(1, len(b"handshake"))
    # Fetched and acknowledged: a late retry is still answered as stored.
    mb.ack(mailbox, [m.id for m in pending])
    assert mb.deposit([item], T0 + 3) == [None]
    assert mb.pending(mailbox, 0, 10) == []
    assert mb.deposit([other], T0 + 4) == [codes.CAPABILITY_USED]


def test_one_shot_retry_needs_no_room(store: Store) -> None:
    """A retry stores nothing: a full mailbox or a spent rate does not refuse it."""
    mb = service(store, quota=Quota(1, 1000), capability_rate=0.001, capability_burst=1.0)
    mailbox, _ = register(mb)
    invite = cap_hash(os.urandom(32))
    mb.add_caps(mailbox, [invite], T0, one_shot=True)
    item = DepositItem(mailbox, invite, b"handshake")
    assert mb.deposit([item], T0) == [None]           # fills the mailbox, takes the token
    assert mb.deposit([item, item], T0 + 1) == [None, None]
    assert len(mb.pending(mailbox, 0, 10)) == 1


def test_one_shot_use_not_taken_by_a_refused_deposit(store: Store) -> None:
    mb = service(store, quota=Quota(1, 1000))
    mailbox, _ = register(mb)
    ordinary = with_cap(mb, mailbox)
    invite = os.urandom(32)
    mb.add_caps(mailbox, [cap_hash(invite)], T0, one_shot=True)
    assert mb.deposit([DepositItem(mailbox, ordinary, b"fills it")], T0) == [None]
    full = mb.deposit([DepositItem(mailbox, cap_hash(invite), b"hello")], T0)
    assert full == [codes.QUOTA_EXCEEDED]
    mb.ack(mailbox, [m.id for m in mb.pending(mailbox, 0, 10)])
    assert mb.deposit([DepositItem(mailbox, cap_hash(invite), b"hello")], T0) == [None]


def test_one_shot_capability_across_relay_processes(store_factory: StoreFactory) -> None:
    """Two relay processes on one database, each with its own connection:
    the use is kept in the database, so the second process refuses too."""
    first, second = store_factory(), store_factory()
    first.open(T0)
    second.open(T0)
    mb_first, mb_second = service(first), service(second)
    mailbox, _ = register(mb_first)
    invite = cap_hash(os.urandom(32))
    mb_first.add_caps(mailbox, [invite], T0, one_shot=True)
    assert mb_first.deposit([DepositItem(mailbox, invite, b"first")], T0) == [None]
    assert mb_second.deposit([DepositItem(mailbox, invite, b"second")], T0) == [
        codes.CAPABILITY_USED]
    # The retry of the first through the other process: answered as stored.
    assert mb_second.deposit([DepositItem(mailbox, invite, b"first")], T0) == [None]
    assert [m.payload for m in mb_second.pending(mailbox, 0, 10)] == [b"first"]


def test_one_shot_use_lost_to_another_process_with_the_same_deposit(
        store_factory: StoreFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process that read the capability as unused loses its use to another
    process (which stored the same deposit: a client retrying on another
    connection): its copy is answered as stored, not stored twice; with
    another payload, refused."""
    first, second = store_factory(), store_factory()
    first.open(T0)
    second.open(T0)
    mb_first, mb_second = service(first), service(second)
    mailbox, _ = register(mb_first)
    invite = cap_hash(os.urandom(32))
    mb_first.add_caps(mailbox, [invite], T0, one_shot=True)
    # What the second process read before the first one's commit.
    monkeypatch.setattr(second, "cap_uses", lambda pairs: {(mailbox, invite): 1})
    assert mb_first.deposit([DepositItem(mailbox, invite, b"first")], T0) == [None]
    result = mb_second.commit([DepositBatch(
        [DepositItem(mailbox, invite, b"first"), DepositItem(mailbox, invite, b"other")],
        [None, None])], [], {}, T0)
    assert result.errors == [[None, codes.CAPABILITY_USED]] and result.stored == []
    assert [m.payload for m in mb_first.pending(mailbox, 0, 10)] == [b"first"]

