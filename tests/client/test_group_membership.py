"""The pure group membership state machine, with hypothesis.

Property: any delivery order, with duplicates, of a set of operations gives
every member the same member list (and the list the in-order history gives).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatcli.client.groups.membership import (
    Add,
    Create,
    Leave,
    Membership,
    MembershipError,
    Op,
    Outcome,
    Remove,
    departed,
)

ADMIN = b"A" * 32
PEOPLE = [bytes([i]) * 32 for i in range(1, 7)]
CREATE = Create(admin=ADMIN, record=b"admin")


@st.composite
def histories(draw: st.DrawFn) -> list[Op]:
    """A creation, admin operations 1..n (adds and removes of a small pool, some
    of them invalid), and leaves of instances (some never existing)."""
    ops: list[Op] = [CREATE]
    n = draw(st.integers(min_value=0, max_value=14))
    instances: list[tuple[bytes, int]] = [(ADMIN, 0)]
    for seq in range(1, n + 1):
        who = draw(st.sampled_from([ADMIN, *PEOPLE]))
        if draw(st.booleans()):
            ops.append(Add(seq=seq, member=who, record=b"r%d" % seq))
            instances.append((who, seq))
        else:
            ops.append(Remove(seq=seq, member=who))
    for member, since in draw(st.lists(st.sampled_from(instances), max_size=6)):
        ops.append(Leave(member=member, since=since))
    ops.extend(Leave(member=m, since=s) for m, s in draw(
        st.lists(st.tuples(st.sampled_from(PEOPLE), st.integers(0, 20)), max_size=2)))
    return ops


@settings(max_examples=300, deadline=None)
@given(data=st.data(), ops=histories())
def test_any_order_and_duplication_converges(data: st.DataObject, ops: list[Op]) -> None:
    in_order = Membership.start(CREATE)
    for op in ops:
        in_order.apply(op)
    expected = in_order.members()
    assert in_order.waiting == 0
    for _replica in range(3):
        deliveries = data.draw(st.permutations(ops + data.draw(
            st.lists(st.sampled_from(ops), max_size=len(ops)))))
        replica = Membership.start(CREATE)
        for op in deliveries:
            result = replica.apply(op)
            assert result.outcome is not Outcome.CONFLICT
        assert replica.members() == expected
        assert replica.waiting == 0
        assert replica.next_seq == in_order.next_seq
        # A new member brought up to date with everything this one knows agrees too.
        newcomer = Membership.replay(data.draw(st.permutations(replica.known_ops())))
        assert newcomer.members() == expected


@settings(max_examples=200, deadline=None)
@given(ops=histories())
def test_rejections_are_the_same_everywhere(ops: list[Op]) -> None:
    forward = Membership.start(CREATE)
    backward = Membership.start(CREATE)
    out_fw = {op: forward.apply(op).outcome for op in ops}
    for op in reversed(ops):
        backward.apply(op)
    # Replaying the same operations once more is a no-op on both.
    for op in ops:
        assert backward.apply(op).outcome is Outcome.DUPLICATE
    rejected = {op for op, outcome in out_fw.items() if outcome is Outcome.REJECTED}
    assert {op for op in rejected} == set(backward._rejected.values())


@settings(max_examples=200, deadline=None)
@given(prefix=histories(), data=st.data())
def test_gaps_are_buffered_until_filled(prefix: list[Op], data: st.DataObject) -> None:
    admin_ops = [op for op in prefix if not isinstance(op, Leave | Create)]
    if not admin_ops:
        return
    missing = data.draw(st.sampled_from(admin_ops))
    state = Membership.start(CREATE)
    for op in prefix:
        if op != missing:
            state.apply(op)
    later = [op for op in admin_ops if op.seq > missing.seq]
    assert state.waiting == len(later)
    assert state.next_seq == missing.seq
    assert state.apply(missing).outcome in (Outcome.APPLIED, Outcome.REJECTED)
    assert state.waiting == 0


def test_leave_ends_only_the_instance_it_names() -> None:
    bob = PEOPLE[0]
    add1 = Add(seq=1, member=bob, record=b"1")
    add3 = Add(seq=3, member=bob, record=b"3")
    leave1 = Leave(member=bob, since=1)
    ops: list[Op] = [add1, Remove(seq=2, member=bob), add3, leave1]
    for order in (ops, list(reversed(ops))):
        state = Membership.start(CREATE)
        for op in order:
            state.apply(op)
        assert bob in state.members()
        assert state.since(bob) == 3 and state.record(bob) == b"3"
    state.apply(Leave(member=bob, since=3))
    assert bob not in state.members() and state.was_member(bob)


def test_admin_cannot_be_removed_and_conflicts_are_reported() -> None:
    state = Membership.start(CREATE)
    result = state.apply(Remove(seq=1, member=ADMIN))
    assert result.outcome is Outcome.REJECTED and "admin" in result.reason
    assert state.apply(Remove(seq=1, member=ADMIN)).outcome is Outcome.DUPLICATE
    assert state.apply(Add(seq=1, member=PEOPLE[0], record=b"x")).outcome is Outcome.CONFLICT
    assert state.apply(Create(admin=PEOPLE[1], record=b"")).outcome is Outcome.CONFLICT
    assert state.apply(Remove(seq=2, member=PEOPLE[3])).outcome is Outcome.REJECTED
    state.apply(Add(seq=4, member=PEOPLE[0], record=b"x"))
    assert state.apply(Add(seq=4, member=PEOPLE[1], record=b"y")).outcome is Outcome.CONFLICT
    assert state.apply(Leave(ADMIN, 0)).outcome is Outcome.APPLIED
    assert state.members() == frozenset()


def test_replay_needs_one_create_and_departed() -> None:
    with pytest.raises(MembershipError):
        Membership.replay([Add(seq=1, member=PEOPLE[0], record=b"")])
    before = frozenset(PEOPLE[:3])
    assert departed(before, frozenset(PEOPLE[1:4])) == {PEOPLE[0]}


@settings(max_examples=300, deadline=None)
@given(data=st.data(), ops=histories())
def test_a_message_is_judged_the_same_in_any_delivery_order(data: st.DataObject,
                                                           ops: list[Op]) -> None:
    """Messages (sender, version) interleaved with the operations in any order:
    each replica decides a message as soon as it can, and every replica decides
    it as the in-order history does; a decision never changes later."""
    in_order = Membership.replay(ops)
    top = in_order.next_seq
    messages = data.draw(st.lists(st.tuples(st.sampled_from([ADMIN, *PEOPLE]),
                                            st.integers(0, top + 1)), max_size=8))
    expected = {msg: in_order.member_at(*msg) for msg in messages}
    for msg, verdict in expected.items():
        assert verdict is not None or msg[1] > top
    for _replica in range(2):
        events: list[Op | tuple[bytes, int]] = data.draw(st.permutations([*ops, *messages]))
        replica = Membership.start(CREATE)
        waiting: list[tuple[bytes, int]] = []
        decided: dict[tuple[bytes, int], bool] = {}
        for event in events:
            if isinstance(event, tuple):
                waiting.append(event)
            else:
                replica.apply(event)
            for msg in list(waiting):
                verdict = replica.member_at(*msg)
                if verdict is not None:
                    waiting.remove(msg)
                    decided[msg] = verdict
            for msg, verdict in decided.items():
                assert replica.member_at(*msg) is verdict
        for msg in waiting:
            assert expected[msg] is None
        assert decided == {msg: v for msg, v in expected.items() if v is not None}


def test_messages_sent_before_a_removal_count_and_after_it_do_not() -> None:
    bob = PEOPLE[0]
    ops: list[Op] = [CREATE, Add(seq=1, member=bob, record=b"1"), Remove(seq=2, member=bob),
                     Add(seq=3, member=PEOPLE[1], record=b"3")]
    state = Membership.replay(ops)
    assert state.member_at(bob, 1) is False   # before its add
    assert state.member_at(bob, 2) is True    # sent before it learnt of its removal
    assert state.member_at(bob, 3) is False   # sent after it
    assert state.member_at(bob, 5) is None    # a version this member has not reached
    assert state.member_at(ADMIN, 1) is True and state.member_at(ADMIN, 0) is False
    # A leave does not retract what the member sent before it.
    state.apply(Leave(member=PEOPLE[1], since=3))
    assert state.member_at(PEOPLE[1], 4) is True
