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
    Demote,
    Invite,
    Join,
    Leave,
    Membership,
    MembershipError,
    Op,
    Outcome,
    Promote,
    Recover,
    Remove,
    SetProfile,
    Vote,
    departed,
)

ADMIN = b"A" * 32
PEOPLE = [bytes([i]) * 32 for i in range(1, 7)]
CREATE = Create(admin=ADMIN, record=b"admin")


@st.composite
def histories(draw: st.DrawFn) -> list[Op]:
    """A creation, admin operations 1..n (adds, invitations with or without the
    invitee's join, and removes of a small pool, some of them invalid), and
    leaves of instances (some never existing)."""
    ops: list[Op] = [CREATE]
    n = draw(st.integers(min_value=0, max_value=14))
    instances: list[tuple[bytes, int]] = [(ADMIN, 0)]
    for seq in range(1, n + 1):
        who = draw(st.sampled_from([ADMIN, *PEOPLE]))
        kind = draw(st.sampled_from(["add", "invite", "remove"]))
        if kind == "add":
            ops.append(Add(seq=seq, member=who, record=b"r%d" % seq))
            instances.append((who, seq))
        elif kind == "invite":
            # An invitation, and (usually) the invitee's own join, unordered.
            ops.append(Invite(seq=seq, member=who, author=ADMIN))
            instances.append((who, seq))
            if draw(st.integers(0, 3)):
                ops.append(Join(member=who, since=seq, record=b"j%d" % seq))
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
    assert rejected == set(backward.rejected())


@settings(max_examples=200, deadline=None)
@given(prefix=histories(), data=st.data())
def test_gaps_are_buffered_until_filled(prefix: list[Op], data: st.DataObject) -> None:
    admin_ops = [op for op in prefix if not isinstance(op, Leave | Create | Join)]
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
    assert result.outcome is Outcome.REJECTED and "creator" in result.reason
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
        # Undecided only beyond the operations, or when the sender's join never came.
        assert verdict is not None or msg[1] > top or any(
            isinstance(op, Invite) and op.member == msg[0] for op in ops)
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


# ---------------------------------------------------------------- several admins, joins

ADMINS = [ADMIN, *PEOPLE[:3]]


@st.composite
def admin_histories(draw: st.DrawFn) -> list[Op]:
    """Ordered operations by several authors (some not admins when their
    operation takes its place), numbered as Lamport clocks do: an operation takes
    any number up to one past the highest so far, so two authors may use the same
    number (concurrent operations); plus joins, leaves and votes."""
    ops: list[Op] = [CREATE]
    top = 0
    used: set[tuple[bytes, int]] = {(ADMIN, 0)}
    instances: list[tuple[bytes, int]] = [(ADMIN, 0)]
    for _ in range(draw(st.integers(min_value=0, max_value=16))):
        author = draw(st.sampled_from(ADMINS))
        seq = draw(st.integers(min_value=max(1, top - 2), max_value=top + 1))
        if (author, seq) in used:
            continue
        used.add((author, seq))
        top = max(top, seq)
        who = draw(st.sampled_from([ADMIN, *PEOPLE]))
        kind = draw(st.sampled_from(["invite", "invite", "add", "remove", "promote",
                                     "demote", "profile", "recover"]))
        if kind == "invite":
            ops.append(Invite(seq=seq, member=who, author=author))
            instances.append((who, seq))
            if draw(st.booleans()):
                ops.append(Join(member=who, since=seq, record=b"j%d" % seq,
                                generation=draw(st.integers(0, 1))))
        elif kind == "add":
            ops.append(Add(seq=seq, member=who, record=b"a%d" % seq, author=author))
            instances.append((who, seq))
        elif kind == "remove":
            ops.append(Remove(seq=seq, member=who, author=author))
        elif kind == "promote":
            ops.append(Promote(seq=seq, member=who, author=author))
        elif kind == "demote":
            ops.append(Demote(seq=seq, member=who, author=author))
        elif kind == "profile":
            ops.append(SetProfile(seq=seq, profile=b"p%d" % seq, author=author))
        else:
            voters = draw(st.sets(st.sampled_from([ADMIN, *PEOPLE]), max_size=6))
            ops.append(Recover(seq=seq, member=who, author=author, votes=frozenset(
                (v, draw(st.integers(0, seq))) for v in voters)))
    for member, since in draw(st.lists(st.sampled_from(instances), max_size=4)):
        ops.append(Leave(member=member, since=since))
    for member, since in draw(st.lists(st.sampled_from(instances), max_size=3)):
        ops.append(Join(member=member, since=since, record=b"r%d" % since, generation=2))
    ops.extend(Vote(member=m, candidate=c, base=b) for m, c, b in draw(st.lists(
        st.tuples(st.sampled_from(PEOPLE), st.sampled_from(PEOPLE), st.integers(0, 5)),
        max_size=2)))
    return ops


def _view(state: Membership) -> tuple[object, ...]:
    return (state.members(), state.admins(), state.invitees(), state.profile(),
            state.next_seq, {m: state.record(m) for m in state.members()},
            {m: state.seniority(m) for m in state.admins()}, frozenset(state.rejected()))


@settings(max_examples=400, deadline=None)
@given(data=st.data(), ops=admin_histories())
def test_concurrent_admins_converge_in_any_delivery_order(data: st.DataObject,
                                                          ops: list[Op]) -> None:
    """Every member ends with the same members, admins, invitees, records,
    profile and rejections, whatever the order (and duplicates) it got them in."""
    expected = _view(Membership.replay(ops))
    for _replica in range(3):
        deliveries = data.draw(st.permutations(ops + data.draw(
            st.lists(st.sampled_from(ops), max_size=len(ops)))))
        replica = Membership.start(CREATE)
        for op in deliveries:
            assert replica.apply(op).outcome is not Outcome.CONFLICT
        assert _view(replica) == expected
        assert replica.waiting == 0
        newcomer = Membership.replay(data.draw(st.permutations(replica.known_ops())))
        assert _view(newcomer) == expected


def test_a_demotion_beats_the_concurrent_operations_of_the_demoted_admin() -> None:
    bob, carol, dave = PEOPLE[:3]
    base: list[Op] = [CREATE, Invite(seq=1, member=bob, author=ADMIN),
                      Join(member=bob, since=1, record=b"b"),
                      Promote(seq=2, member=bob, author=ADMIN)]
    # Both at number 3: the creator demotes bob, bob invites carol; the creator
    # is more senior, so its demotion comes first and bob's invitation is refused.
    demote = Demote(seq=3, member=bob, author=ADMIN)
    invite = Invite(seq=3, member=carol, author=bob)
    # bob, unaware, goes on at number 4: refused too (no longer an admin).
    later = Invite(seq=4, member=dave, author=bob)
    for order in ([demote, invite, later], [later, invite, demote], [invite, later, demote]):
        state = Membership.replay([*base, *order])
        assert state.admins() == {ADMIN}
        assert state.invitees() == frozenset()
        assert set(state.rejected()) == {invite, later}


def test_two_admins_acting_at_once_both_count() -> None:
    bob, carol, dave = PEOPLE[:3]
    ops: list[Op] = [CREATE, Invite(seq=1, member=bob, author=ADMIN),
                     Join(member=bob, since=1, record=b"b"),
                     Promote(seq=2, member=bob, author=ADMIN),
                     Invite(seq=3, member=carol, author=ADMIN),
                     Invite(seq=3, member=dave, author=bob),
                     Join(member=carol, since=3, record=b"c"),
                     Join(member=dave, since=3, record=b"d")]
    for order in (ops, list(reversed(ops))):
        state = Membership.replay(order)
        assert state.members() == {ADMIN, bob, carol, dave}
        assert state.next_seq == 4


def test_an_invitee_is_a_member_once_its_own_join_arrives() -> None:
    carol = PEOPLE[2]
    state = Membership.replay([CREATE, Invite(seq=1, member=carol, author=ADMIN)])
    assert state.invitees() == {carol} and carol not in state.members()
    assert state.member_at(carol, 2) is None     # its join has not arrived: wait
    state.apply(Join(member=carol, since=1, record=b"c"))
    assert carol in state.members() and state.member_at(carol, 2) is True
    assert state.record(carol) == b"c"
    # A renewed record (a restore) replaces it; an older generation does not.
    state.apply(Join(member=carol, since=1, record=b"new", generation=1))
    state.apply(Join(member=carol, since=1, record=b"old", generation=0))
    assert state.record(carol) == b"new" and state.join_generation(carol) == 1
    # A join for an instance that does not exist does nothing.
    state.apply(Join(member=PEOPLE[3], since=1, record=b"x"))
    assert PEOPLE[3] not in state.members()


def test_non_admins_cannot_change_members_and_seniority_rules() -> None:
    bob, carol, dave = PEOPLE[:3]
    state = Membership.replay([
        CREATE, Add(seq=1, member=bob, record=b"b"), Add(seq=2, member=carol, record=b"c"),
        Invite(seq=3, member=dave, author=bob),            # bob is not an admin
        Promote(seq=4, member=bob, author=ADMIN), Promote(seq=5, member=carol, author=bob),
        Demote(seq=6, member=bob, author=carol),           # junior demotes senior: no
        Remove(seq=7, member=carol, author=bob),           # senior removes junior: yes
        Demote(seq=8, member=ADMIN, author=bob),           # nobody demotes the creator
        SetProfile(seq=9, profile=b"p", author=bob)])
    assert state.admins() == {ADMIN, bob} and state.members() == {ADMIN, bob}
    assert sorted(state.rejected().values()) == [
        "its author is not an admin", "only a more senior admin can demote an admin",
        "the creator stays an admin while it is a member"]
    assert state.profile() == b"p"
    assert state.seniority(bob) == 4


def test_a_majority_of_members_can_recover_the_admin_role() -> None:
    bob, carol, dave = PEOPLE[:3]
    ops: list[Op] = [CREATE, *[Add(seq=n + 1, member=m, record=b"r")
                               for n, m in enumerate([bob, carol, dave])],
                     Leave(member=ADMIN, since=0)]
    state = Membership.replay(ops)
    assert state.admins() == frozenset()
    # Two of three is a majority; one of three is not.
    assert state.apply(Recover(seq=4, member=bob, author=bob, votes=frozenset(
        {(bob, 3)}))).outcome is Outcome.REJECTED
    assert state.apply(Recover(seq=5, member=bob, author=bob, votes=frozenset(
        {(bob, 4), (carol, 4)}))).outcome is Outcome.APPLIED
    assert state.admins() == {bob}
    # Votes cast before the admins last changed no longer count.
    assert state.apply(Recover(seq=6, member=carol, author=carol, votes=frozenset(
        {(bob, 4), (carol, 4), (dave, 4)}))).outcome is Outcome.REJECTED
