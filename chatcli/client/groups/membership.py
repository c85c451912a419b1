"""The group membership state machine: pure, deterministic, order-independent.

No I/O, no clock, no crypto: operations reach this module already decoded
and with their signatures checked (``chatcli.client.groups.wire``). The same
set of operations, delivered in any order and any number of times, gives
every member the same member list.

Operations (``docs/protocol.md``, part 3, "Groups"):

* :class:`Create` (sequence number 0): the creator is the group's *admin*
  and its first member.
* :class:`Add` and :class:`Remove`, authored by the admin, carry the sequence
  numbers 1, 2, 3 ... The admin orders them; members apply them strictly in
  that order and buffer an operation that arrives before its predecessors.
  Their validity depends only on the admin's operations before them, so it is
  the same on every member: adding a current member renews its record (a new
  *instance* of its membership), removing someone who is not a member or the
  admin itself is rejected.
* :class:`Leave`, authored by the leaving member itself, names the instance
  it ends (the sequence number of the ``Add``, 0 for the admin). Leaves form
  a grow-only set (OR-set semantics): a leave only ever ends the instance it
  names, so a member who left and was added again later is a member again,
  whatever the order in which the leave and the new add arrive.

The member list is therefore a function of two things that every member
eventually holds identically: the prefix of admin operations without gaps,
and the set of leaves.

Group messages name the *version* they were sent under: how many admin
operations their sender had applied (:attr:`Membership.next_seq`).
:meth:`Membership.member_at` answers whether the sender was a member at that
version, from the admin operations alone, so every member decides the same
way whatever the order in which messages and operations arrive; a member
whose prefix is shorter than the version waits (``None``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

#: The most admin operations buffered ahead of a gap; beyond it the farthest is refused.
MAX_BUFFERED = 10_000


@dataclass(frozen=True)
class Create:
    """Sequence 0: ``admin`` creates the group; ``record`` is its member record."""

    admin: bytes
    record: bytes

    @property
    def seq(self) -> int:
        return 0


@dataclass(frozen=True)
class Add:
    """The admin adds ``member`` (or renews its record) as operation ``seq``."""

    seq: int
    member: bytes
    record: bytes


@dataclass(frozen=True)
class Remove:
    """The admin removes ``member`` as operation ``seq``."""

    seq: int
    member: bytes


@dataclass(frozen=True)
class Leave:
    """``member`` leaves; ``since`` is the sequence number of the instance it ends."""

    member: bytes
    since: int


AdminOp = Create | Add | Remove
Op = Create | Add | Remove | Leave


class Outcome(Enum):
    APPLIED = "applied"        # applied now (possibly with buffered successors)
    BUFFERED = "buffered"      # waits for an earlier admin operation
    DUPLICATE = "duplicate"    # already known; nothing changes
    REJECTED = "rejected"      # invalid; rejected the same way on every member
    CONFLICT = "conflict"      # a different operation already holds this sequence number


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    reason: str = ""


class MembershipError(ValueError):
    """The operations cannot start a group (the first one must be a Create)."""


@dataclass
class Membership:
    """One member's view of a group's membership."""

    admin: bytes
    _applied: list[AdminOp] = field(default_factory=list)
    _buffered: dict[int, AdminOp] = field(default_factory=dict)
    _rejected: dict[int, AdminOp] = field(default_factory=dict)
    _by_seq: dict[int, AdminOp] = field(default_factory=dict)
    _leaves: set[Leave] = field(default_factory=set)
    # member -> (sequence number of its current instance, record); admin view, no leaves
    _instances: dict[bytes, tuple[int, bytes]] = field(default_factory=dict)
    _ever: set[bytes] = field(default_factory=set)

    @classmethod
    def start(cls, create: Create) -> Membership:
        state = cls(admin=create.admin)
        state._applied.append(create)
        state._by_seq[0] = create
        state._instances[create.admin] = (0, create.record)
        state._ever.add(create.admin)
        return state

    @classmethod
    def replay(cls, ops: Iterable[Op]) -> Membership:
        """The state after ``ops`` (any order; exactly one distinct Create)."""
        ops = list(ops)
        creates = {op for op in ops if isinstance(op, Create)}
        if len(creates) != 1:
            raise MembershipError("A group needs exactly one creation operation.")
        state = cls.start(creates.pop())
        for op in ops:
            state.apply(op)
        return state

    def copy(self) -> Membership:
        """An independent copy (the operations themselves are immutable)."""
        return Membership(admin=self.admin, _applied=list(self._applied),
                          _buffered=dict(self._buffered), _rejected=dict(self._rejected),
                          _by_seq=dict(self._by_seq), _leaves=set(self._leaves),
                          _instances=dict(self._instances), _ever=set(self._ever))

    # ------------------------------------------------------------------ queries

    @property
    def next_seq(self) -> int:
        """The sequence number the admin's next operation takes."""
        return len(self._applied) + len(self._rejected)

    def members(self) -> frozenset[bytes]:
        """The current members (identity keys)."""
        return frozenset(m for m, (since, _) in self._instances.items()
                         if Leave(m, since) not in self._leaves)

    def is_member(self, member: bytes) -> bool:
        instance = self._instances.get(member)
        return instance is not None and Leave(member, instance[0]) not in self._leaves

    def was_member(self, member: bytes) -> bool:
        """Whether ``member`` was added at some point (it may have gone since)."""
        return member in self._ever

    def record(self, member: bytes) -> bytes | None:
        """The latest record the admin published for ``member`` (even if it left)."""
        instance = self._instances.get(member)
        return instance[1] if instance else None

    def since(self, member: bytes) -> int | None:
        """The sequence number of ``member``'s current instance (for its Leave)."""
        instance = self._instances.get(member)
        return instance[0] if instance else None

    def member_at(self, member: bytes, version: int) -> bool | None:
        """Whether ``member`` was a member once admin operations ``0 .. version-1``
        were applied; None while this member has not applied them all yet.

        Leaves do not count here: they are not ordered with the admin's operations,
        and a member's own client stops sending when it leaves, so what it sent
        before leaving counts, like what a member sent before its removal."""
        if version < 1 or version > self.next_seq:
            return None if version > self.next_seq else False
        present = False
        for op in self._applied:
            if op.seq >= version:
                break
            if isinstance(op, Create):
                present = op.admin == member
            elif op.member == member:
                present = isinstance(op, Add)
        return present

    @property
    def waiting(self) -> int:
        """How many admin operations wait for an earlier one."""
        return len(self._buffered)

    def known_ops(self) -> list[Op]:
        """Every operation this member holds: to bring a new member up to date."""
        admin = sorted([*self._applied, *self._rejected.values(), *self._buffered.values()],
                       key=lambda op: op.seq)
        leaves = sorted(self._leaves, key=lambda op: (op.member, op.since))
        return [*admin, *leaves]

    # ------------------------------------------------------------------ updates

    def apply(self, op: Op) -> Result:
        """Apply (or buffer) one operation whose author was already verified."""
        if isinstance(op, Leave):
            if op in self._leaves:
                return Result(Outcome.DUPLICATE)
            self._leaves.add(op)
            return Result(Outcome.APPLIED)
        seq = op.seq
        known = self._known(seq)
        if known is not None:
            if known == op:
                return Result(Outcome.DUPLICATE)
            return Result(Outcome.CONFLICT, f"operation {seq} differs from the one applied")
        if isinstance(op, Create):
            return Result(Outcome.CONFLICT, "the group was already created")
        if seq > self.next_seq:
            if seq in self._buffered:
                if self._buffered[seq] == op:
                    return Result(Outcome.DUPLICATE)
                return Result(Outcome.CONFLICT, f"operation {seq} differs from the one buffered")
            if len(self._buffered) >= MAX_BUFFERED:
                return Result(Outcome.REJECTED, "too many operations wait for a missing one")
            self._buffered[seq] = op
            return Result(Outcome.BUFFERED)
        result = self._apply_next(op)
        while self.next_seq in self._buffered:
            self._apply_next(self._buffered.pop(self.next_seq))
        return result

    def _known(self, seq: int) -> AdminOp | None:
        return self._rejected.get(seq) or self._by_seq.get(seq)

    def _apply_next(self, op: AdminOp) -> Result:
        reason = self._invalid(op)
        if reason:
            self._rejected[op.seq] = op
            return Result(Outcome.REJECTED, reason)
        self._applied.append(op)
        self._by_seq[op.seq] = op
        if isinstance(op, Add):
            self._instances[op.member] = (op.seq, op.record)
            self._ever.add(op.member)
        elif isinstance(op, Remove):
            del self._instances[op.member]
        return Result(Outcome.APPLIED)

    def _invalid(self, op: AdminOp) -> str:
        if isinstance(op, Remove):
            if op.member == self.admin:
                return "the admin cannot be removed (it can leave)"
            if op.member not in self._instances:
                return "not a member"
        return ""


def departed(before: frozenset[bytes], after: frozenset[bytes]) -> frozenset[bytes]:
    """Members in ``before`` who are gone in ``after``: a sender key must roll."""
    return before - after


__all__ = [
    "MAX_BUFFERED",
    "Add",
    "AdminOp",
    "Create",
    "Leave",
    "Membership",
    "MembershipError",
    "Op",
    "Outcome",
    "Remove",
    "Result",
    "departed",
]
