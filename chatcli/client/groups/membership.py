"""The group membership state machine: pure, deterministic, order-independent.

No I/O, no clock, no crypto: operations reach this module already decoded
and with their signatures checked (``chatcli.client.groups.wire``). The same
set of operations, delivered in any order and any number of times, gives
every member the same member list, admins and group profile.

Operations (``docs/protocol.md``, part 3, "Groups"):

* *Ordered* operations carry a sequence number ``seq``: :class:`Create` (0),
  then :class:`Add`, :class:`Invite`, :class:`Remove`, :class:`Promote`,
  :class:`Demote`, :class:`SetProfile` and :class:`Recover`. An author gives
  its operation the number after the highest it has applied (a Lamport
  clock), so an operation always comes after everything its author knew.
  Two admins acting at once may use the same number: every member orders
  them the same way, by the authors' seniority (the creator first, then
  admins in the order they were made admins), then by content. Members
  apply them in that total order, each judged against the state the
  operations before it made (whoever's authority it needs, whoever it names),
  and buffer an operation whose number comes after a gap. An operation that
  is not allowed at its place is *rejected* (kept, no effect) the same way on
  every member.
* *Unordered* operations form grow-only sets: :class:`Join` (an invited
  member's own record for the invitation it accepts; a higher ``generation``
  renews the record, e.g. after a restore from a backup), :class:`Leave`
  (ends the instance it names, OR-set semantics) and :class:`Vote` (a member
  backs another as admin, for :class:`Recover`).

A member is in the list when it has an *instance* (from its Create, Add or
Invite, not removed since), a record for it (the Add's, or a Join for an
Invite) and no Leave of that instance. Authority (who is an admin) follows
the ordered operations alone, never the unordered sets, so a leave arriving
late never invalidates what its author did before leaving; the creator is
an admin for as long as it has an instance.

Group messages name the *version* they were sent under
(:attr:`Membership.next_seq` of their sender); :meth:`Membership.member_at`
answers from the ordered operations with smaller numbers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

#: The most ordered operations buffered ahead of a gap; beyond it the farthest is refused.
MAX_BUFFERED = 10_000
_UNRANKED = 1 << 62


@dataclass(frozen=True)
class Create:
    """Sequence 0: ``admin`` (the creator) creates the group with its ``record``."""

    admin: bytes
    record: bytes

    @property
    def seq(self) -> int:
        return 0

    @property
    def author(self) -> bytes:
        return self.admin


@dataclass(frozen=True)
class Add:
    """An admin adds ``member`` with a ``record`` it vouches for (older clients)."""

    seq: int
    member: bytes
    record: bytes
    author: bytes = b""  # b"": the creator (operations of older clients)


@dataclass(frozen=True)
class Invite:
    """An admin invites ``member``; the member's own :class:`Join` completes it."""

    seq: int
    member: bytes
    author: bytes


@dataclass(frozen=True)
class Remove:
    """An admin removes ``member``."""

    seq: int
    member: bytes
    author: bytes = b""


@dataclass(frozen=True)
class Promote:
    """An admin makes ``member`` an admin."""

    seq: int
    member: bytes
    author: bytes


@dataclass(frozen=True)
class Demote:
    """An admin takes the role from a junior admin (or gives up its own)."""

    seq: int
    member: bytes
    author: bytes


@dataclass(frozen=True)
class SetProfile:
    """An admin sets the group profile (``profile``: its encoded form)."""

    seq: int
    profile: bytes
    author: bytes


@dataclass(frozen=True)
class Recover:
    """``member`` becomes an admin on the votes of a majority of the members:
    ``votes`` holds (voter, base) pairs, base being the version it voted at."""

    seq: int
    member: bytes
    votes: frozenset[tuple[bytes, int]]
    author: bytes


@dataclass(frozen=True)
class Join:
    """``member`` accepts its instance ``since`` with its ``record``."""

    member: bytes
    since: int
    record: bytes
    generation: int = 0


@dataclass(frozen=True)
class Leave:
    """``member`` leaves; ``since`` is the sequence number of the instance it ends."""

    member: bytes
    since: int


@dataclass(frozen=True)
class Vote:
    """``member`` backs ``candidate`` as admin, at version ``base``."""

    member: bytes
    candidate: bytes
    base: int


AdminOp = Create | Add | Invite | Remove | Promote | Demote | SetProfile | Recover
Op = AdminOp | Join | Leave | Vote
_ORDERED = (Create, Add, Invite, Remove, Promote, Demote, SetProfile, Recover)


class Outcome(Enum):
    APPLIED = "applied"        # applied now (possibly with buffered successors)
    BUFFERED = "buffered"      # waits for an earlier ordered operation
    DUPLICATE = "duplicate"    # already known; nothing changes
    REJECTED = "rejected"      # not allowed at its place, the same on every member
    CONFLICT = "conflict"      # its author already used this sequence number differently


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    reason: str = ""


class MembershipError(ValueError):
    """The operations cannot start a group (the first one must be a Create)."""


def _key(op: AdminOp) -> tuple[str, str]:
    """A total order on operations of one author and number (content)."""
    return type(op).__name__, repr(op)


@dataclass
class _Derived:
    """What the ordered operations made, from the first to the frontier."""

    applied: list[AdminOp] = field(default_factory=list)
    rejected: dict[AdminOp, str] = field(default_factory=dict)
    # member -> (sequence number of its instance, the record an admin vouched for)
    instances: dict[bytes, tuple[int, bytes | None]] = field(default_factory=dict)
    admins: dict[bytes, int] = field(default_factory=dict)   # admin -> seniority
    profile: bytes | None = None
    admin_change: int = 0    # the last number that changed the admins
    frontier: int = 0        # the first number with no operation


@dataclass
class Membership:
    """One member's view of a group's membership."""

    admin: bytes     # the creator
    _create: Create
    _ordered: dict[int, set[AdminOp]] = field(default_factory=dict)
    _by_author: dict[tuple[bytes, int], AdminOp] = field(default_factory=dict)
    _joins: set[Join] = field(default_factory=set)
    _leaves: set[Leave] = field(default_factory=set)
    _votes: set[Vote] = field(default_factory=set)
    # (member, since) -> the Join whose record counts (highest generation)
    _best_join: dict[tuple[bytes, int], Join] = field(default_factory=dict)
    _ever: set[bytes] = field(default_factory=set)
    _state: _Derived = field(default_factory=_Derived)

    @classmethod
    def start(cls, create: Create) -> Membership:
        state = cls(admin=create.admin, _create=create)
        state._ordered[0] = {create}
        state._by_author[(create.admin, 0)] = create
        state._evaluate()
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
            state.apply(op, evaluate=False)
        state._evaluate()
        return state

    def copy(self) -> Membership:
        """An independent copy (the operations themselves are immutable)."""
        derived = self._state
        return Membership(
            admin=self.admin, _create=self._create,
            _ordered={k: set(v) for k, v in self._ordered.items()},
            _by_author=dict(self._by_author), _joins=set(self._joins),
            _leaves=set(self._leaves), _votes=set(self._votes),
            _best_join=dict(self._best_join), _ever=set(self._ever),
            _state=_Derived(applied=list(derived.applied), rejected=dict(derived.rejected),
                            instances=dict(derived.instances), admins=dict(derived.admins),
                            profile=derived.profile, admin_change=derived.admin_change,
                            frontier=derived.frontier))

    # ------------------------------------------------------------------ queries

    @property
    def next_seq(self) -> int:
        """The number the next ordered operation takes (the version of messages)."""
        return self._state.frontier

    def _record_of(self, member: bytes, since: int, vouched: bytes | None) -> bytes | None:
        join = self._best_join.get((member, since))
        return join.record if join is not None else vouched

    def members(self) -> frozenset[bytes]:
        """The current members (identity keys)."""
        return frozenset(m for m in self._state.instances if self.is_member(m))

    def is_member(self, member: bytes) -> bool:
        instance = self._state.instances.get(member)
        if instance is None or Leave(member, instance[0]) in self._leaves:
            return False
        return self._record_of(member, *instance) is not None

    def invitees(self) -> frozenset[bytes]:
        """Invited, not joined yet (and not gone)."""
        return frozenset(m for m, (since, vouched) in self._state.instances.items()
                         if self._record_of(m, since, vouched) is None
                         and Leave(m, since) not in self._leaves)

    def is_invited(self, member: bytes) -> bool:
        return member in self.invitees()

    def admins(self) -> frozenset[bytes]:
        """The current admins (members only)."""
        return frozenset(a for a in self._state.admins if self.is_member(a))

    def is_admin(self, member: bytes) -> bool:
        return member in self._state.admins and self.is_member(member)

    def seniority(self, member: bytes) -> int | None:
        """When ``member`` became an admin (0: the creator), or None."""
        return self._state.admins.get(member)

    def profile(self) -> bytes | None:
        """The encoded group profile last set, or None."""
        return self._state.profile

    def was_member(self, member: bytes) -> bool:
        """Whether ``member`` was invited or added at some point (it may have gone)."""
        return member in self._ever

    def record(self, member: bytes) -> bytes | None:
        """The member's record for its latest instance (even if it left)."""
        instance = self._state.instances.get(member)
        return self._record_of(member, *instance) if instance else None

    def since(self, member: bytes) -> int | None:
        """The sequence number of ``member``'s current instance (for its Leave)."""
        instance = self._state.instances.get(member)
        return instance[0] if instance else None

    def join_generation(self, member: bytes) -> int | None:
        """The generation of ``member``'s counting Join for its instance, or None."""
        since = self.since(member)
        join = self._best_join.get((member, since)) if since is not None else None
        return join.generation if join is not None else None

    def votes_for(self, candidate: bytes) -> frozenset[bytes]:
        """Current members whose vote for ``candidate`` still counts."""
        change = self._state.admin_change
        return frozenset(v.member for v in self._votes
                         if v.candidate == candidate and v.base > change
                         and self.is_member(v.member))

    def member_at(self, member: bytes, version: int) -> bool | None:
        """Whether ``member`` was a member once the ordered operations numbered
        ``0 .. version-1`` were applied; None while this member has not applied
        them all yet, or has not received the member's own Join.

        Leaves do not count here: they are not ordered with the operations, and
        a member's own client stops sending when it leaves, so what it sent
        before leaving counts, like what a member sent before its removal."""
        if version < 1 or version > self.next_seq:
            return None if version > self.next_seq else False
        present: tuple[int, bytes | None] | None = None
        for op in self._state.applied:
            if op.seq >= version:
                break
            if isinstance(op, Create):
                if op.admin == member:
                    present = (0, op.record)
            elif isinstance(op, Add | Invite) and op.member == member:
                present = (op.seq, op.record if isinstance(op, Add) else None)
            elif isinstance(op, Remove) and op.member == member:
                present = None
        if present is None:
            return False
        return True if self._record_of(member, *present) is not None else None

    @property
    def waiting(self) -> int:
        """How many ordered operations wait for an earlier one."""
        return sum(len(ops) for seq, ops in self._ordered.items()
                   if seq >= self._state.frontier)

    def rejected(self) -> dict[AdminOp, str]:
        """Ordered operations not allowed at their place, with the reason."""
        return dict(self._state.rejected)

    def is_applied(self, op: AdminOp) -> bool:
        return op in self._state.applied

    def known_ops(self) -> list[Op]:
        """Every operation this member holds: to bring a new member up to date."""
        ordered = sorted((op for ops in self._ordered.values() for op in ops),
                         key=lambda op: (op.seq, _key(op)))
        unordered: list[Op] = [
            *sorted(self._joins, key=lambda j: (j.member, j.since, j.generation, j.record)),
            *sorted(self._leaves, key=lambda op: (op.member, op.since)),
            *sorted(self._votes, key=lambda v: (v.member, v.candidate, v.base))]
        return [*ordered, *unordered]

    # ------------------------------------------------------------------ updates

    def apply(self, op: Op, *, evaluate: bool = True) -> Result:
        """Apply (or buffer) one operation whose signature was already verified."""
        if isinstance(op, Leave | Join | Vote):
            return self._apply_unordered(op, evaluate)
        known = self._by_author.get((op.author or self.admin, op.seq))
        if known is not None:
            if self._same(known, op):
                return Result(Outcome.DUPLICATE)
            return Result(Outcome.CONFLICT, f"operation {op.seq} differs from the one known")
        if isinstance(op, Create):
            return Result(Outcome.CONFLICT, "the group was already created")
        frontier = self._state.frontier
        if evaluate and op.seq > frontier and sum(len(v) for s, v in self._ordered.items()
                                                  if s > frontier) >= MAX_BUFFERED:
            return Result(Outcome.REJECTED, "too many operations wait for a missing one")
        self._ordered.setdefault(op.seq, set()).add(op)
        self._by_author[(op.author or self.admin, op.seq)] = op
        if isinstance(op, Add | Invite):
            self._ever.add(op.member)
        if not evaluate:
            return Result(Outcome.APPLIED)
        if op.seq > frontier:
            return Result(Outcome.BUFFERED)
        if op.seq == frontier and len(self._ordered[op.seq]) == 1:
            self._extend()
        else:
            self._evaluate()  # a concurrent operation lands before the frontier
        reason = self._state.rejected.get(op)
        return Result(Outcome.REJECTED, reason) if reason else Result(Outcome.APPLIED)

    def _same(self, known: AdminOp, op: AdminOp) -> bool:
        if known == op:
            return True
        # An older client's operation (author b"") is the creator's.
        return bool(isinstance(op, Add | Remove) and isinstance(known, Add | Remove)
                    and type(op) is type(known) and op.seq == known.seq
                    and op.member == known.member
                    and (op.author or self.admin) == (known.author or self.admin)
                    and getattr(op, "record", None) == getattr(known, "record", None))

    def _apply_unordered(self, op: Join | Leave | Vote, evaluate: bool) -> Result:
        if isinstance(op, Leave):
            if op in self._leaves:
                return Result(Outcome.DUPLICATE)
            self._leaves.add(op)
        elif isinstance(op, Vote):
            if op in self._votes:
                return Result(Outcome.DUPLICATE)
            self._votes.add(op)
        else:
            if op in self._joins:
                return Result(Outcome.DUPLICATE)
            self._joins.add(op)
            best = self._best_join.get((op.member, op.since))
            if best is None or (op.generation, op.record) > (best.generation, best.record):
                self._best_join[(op.member, op.since)] = op
        if evaluate and any(isinstance(o, Recover) for ops in self._ordered.values()
                            for o in ops):
            # A recovery counts the members, whom joins and leaves change.
            self._evaluate()
        return Result(Outcome.APPLIED)

    # ------------------------------------------------------------------ evaluation

    def _evaluate(self) -> None:
        """Apply the ordered operations from the start, in their total order."""
        self._state = _Derived()
        self._extend()

    def _extend(self) -> None:
        derived = self._state
        while derived.frontier in self._ordered:
            seq = derived.frontier
            ranks = dict(derived.admins)
            for op in sorted(self._ordered[seq], key=lambda o: (
                    ranks.get(o.author or self.admin, _UNRANKED), _key(o))):
                self._apply_one(op)
            derived.frontier = seq + 1

    def _apply_one(self, op: AdminOp) -> None:
        derived = self._state
        if isinstance(op, Create):
            derived.applied.append(op)
            derived.instances[op.admin] = (0, op.record)
            derived.admins[op.admin] = 0
            self._ever.add(op.admin)
            return
        reason = self._invalid(op)
        if reason:
            derived.rejected[op] = reason
            return
        derived.applied.append(op)
        if isinstance(op, Add | Invite):
            derived.instances[op.member] = (op.seq, op.record if isinstance(op, Add) else None)
            if op.member != self.admin and op.member in derived.admins:
                # A new instance starts as a plain member.
                del derived.admins[op.member]
                derived.admin_change = op.seq
        elif isinstance(op, Remove):
            del derived.instances[op.member]
            if derived.admins.pop(op.member, None) is not None:
                derived.admin_change = op.seq
        elif isinstance(op, Promote | Recover):
            derived.admins[op.member] = op.seq
            derived.admin_change = op.seq
        elif isinstance(op, Demote):
            del derived.admins[op.member]
            derived.admin_change = op.seq
        elif isinstance(op, SetProfile):
            derived.profile = op.profile

    def _invalid(self, op: AdminOp) -> str:
        derived = self._state
        author = op.author or self.admin
        rank = derived.admins.get(author)
        if isinstance(op, Recover):
            return self._invalid_recovery(op)
        if rank is None:
            return "its author is not an admin"
        if isinstance(op, Add | Invite):
            if op.member == author:
                return "an admin cannot invite itself"
        elif isinstance(op, Remove):
            if op.member == self.admin:
                return "the creator cannot be removed (it can leave)"
            if op.member not in derived.instances:
                return "not a member"
            target = derived.admins.get(op.member)
            if target is not None and target <= rank and op.member != author:
                return "only a more senior admin can remove an admin"
        elif isinstance(op, Promote):
            if op.member not in derived.instances:
                return "not a member"
            if op.member in derived.admins:
                return "already an admin"
        elif isinstance(op, Demote):
            target = derived.admins.get(op.member)
            if target is None:
                return "not an admin"
            if op.member == self.admin:
                return "the creator stays an admin while it is a member"
            if op.member != author and target <= rank:
                return "only a more senior admin can demote an admin"
        return ""

    def _invalid_recovery(self, op: Recover) -> str:
        derived = self._state
        if op.member not in derived.instances:
            return "not a member"
        if op.member in derived.admins:
            return "already an admin"
        members = {m for m, (since, vouched) in derived.instances.items()
                   if Leave(m, since) not in self._leaves
                   and self._record_of(m, since, vouched) is not None}
        voters = {voter for voter, base in op.votes
                  if voter in members and derived.admin_change < base <= op.seq}
        if 2 * len(voters) <= len(members):
            return "fewer than a majority of the members voted for it"
        return ""


def departed(before: frozenset[bytes], after: frozenset[bytes]) -> frozenset[bytes]:
    """Members in ``before`` who are gone in ``after``: a sender key must roll."""
    return before - after


__all__ = [
    "MAX_BUFFERED",
    "Add",
    "AdminOp",
    "Create",
    "Demote",
    "Invite",
    "Join",
    "Leave",
    "Membership",
    "MembershipError",
    "Op",
    "Outcome",
    "Promote",
    "Recover",
    "Remove",
    "Result",
    "SetProfile",
    "Vote",
    "departed",
]
