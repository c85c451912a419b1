"""Mailbox logic: registration, capabilities, deposits with quotas, delivery
cursors, acknowledgements and retention. Synchronous, with explicit time
(``now`` in milliseconds): the server calls it in its storage worker (the
storage process, or a thread), and tests call it directly.

The decisions are pure functions (:func:`plan_deposits`); :class:`Mailboxes`
applies them to a :class:`~chatcli.relay.store.base.Store` in transactions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import secrets
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import NamedTuple

from chatcli.crypto.errors import BadSignature, InvalidKey
from chatcli.crypto.keys import SigningPublicKey
from chatcli.protocol import codes
from chatcli.relay.budget import StorageBudget
from chatcli.relay.errors import Refused
from chatcli.relay.limits import KeyedBuckets
from chatcli.relay.store.base import NewMessage, PresenceRecord, Store, StoredMessage, Usage

__all__ = [
    "TOKEN_PREFIX",
    "AckBatch",
    "CommitIds",
    "CommitResult",
    "DepositBatch",
    "DepositItem",
    "Mailboxes",
    "Quota",
    "answered_ids",
    "cap_hash",
    "commit_result",
    "new_token",
    "payload_hash",
    "plan_deposits",
    "token_hash",
]

TOKEN_PREFIX = "chatcli-rt-"  # noqa: S105 - a prefix, not a secret


def cap_hash(capability: bytes) -> bytes:
    """What the relay stores of a capability: its SHA-256."""
    return hashlib.sha256(capability).digest()


def token_hash(token: str) -> bytes:
    """What the relay stores of a registration token: its SHA-256."""
    return hashlib.sha256(token.strip().encode("utf-8")).digest()


def new_token() -> str:
    """A fresh registration token (160 random bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(20)


@dataclasses.dataclass(frozen=True, slots=True)
class Quota:
    max_messages: int
    max_bytes: int


class DepositItem(NamedTuple):
    """One deposit as the relay handles it: the capability already hashed.
    (A named tuple: one is made per deposit, and tuples are the cheapest to
    make and to hand to the storage process.)"""

    mailbox: bytes
    cap_hash: bytes
    payload: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """The outcome of :func:`plan_deposits`: an error code (or None) per item,
    the messages to store with the index of the item each comes from, and
    the items answered as stored with nothing stored (``repeated``: a retry
    of the deposit that used a one-shot capability)."""

    errors: list[str | None]
    accepted: list[int]
    repeated: list[int] = dataclasses.field(default_factory=list)


def payload_hash(payload: bytes) -> bytes:
    """What the relay keeps of the deposit that used a one-shot capability:
    the SHA-256 of its payload, to recognise a retry of it."""
    return hashlib.sha256(payload).digest()


def plan_deposits(items: Sequence[DepositItem], valid_caps: Collection[tuple[bytes, bytes]],
                  usage: dict[bytes, Usage], quota: Quota,
                  refused: Sequence[str | None] | None = None,
                  room: int | None = None,
                  allow: Callable[[bytes], bool] | None = None,
                  one_shot: Collection[tuple[bytes, bytes]] = (),
                  used: Mapping[tuple[bytes, bytes], bytes | None] | None = None) -> Plan:
    """Decide each deposit, in order: unknown mailbox, bad capability (or
    ``capability_used`` for the pairs in ``used``), rate limit
    (``allow(cap_hash)``, asked only for valid capabilities), quota, the
    relay's storage budget (``room``: bytes left, None for no budget).

    A valid pair in ``one_shot`` lets its first deposit through and refuses
    the later ones with ``capability_used``; ``used`` maps the one-shot pairs
    used already to the :func:`payload_hash` of the deposit that used each
    (None: not known). A deposit on a used pair with that very payload (a
    client's retry after the answer was lost) is answered as stored, and
    nothing is stored again: it goes to ``Plan.repeated``, with no rate,
    quota or budget charged.

    ``refused`` may carry codes decided earlier per item. A full mailbox
    refuses the items that do not fit and keeps everything stored; so does a
    full relay (``relay_full``).
    """
    errors: list[str | None] = []
    accepted: list[int] = []
    repeated: list[int] = []
    counts = {mb: [u.messages, u.bytes] for mb, u in usage.items()}
    # Locals: this runs once per deposit inside the group commit, in the
    # storage thread, where every microsecond holding the GIL counts twice.
    max_messages, max_bytes = quota.max_messages, quota.max_bytes
    add_error, accept = errors.append, accepted.append
    earlier_codes = refused if refused is not None else [None] * len(items)
    spent: dict[tuple[bytes, bytes], bytes | None] = dict(used) if used else {}
    for index, (item, earlier) in enumerate(zip(items, earlier_codes, strict=True)):
        if earlier is not None:
            add_error(earlier)
            continue
        count = counts.get(item.mailbox)
        size = len(item.payload)
        if count is None:
            add_error(codes.UNKNOWN_MAILBOX)
        elif spent and (item.mailbox, item.cap_hash) in spent:
            by = spent[(item.mailbox, item.cap_hash)]
            if by is not None and hmac.compare_digest(by, payload_hash(item.payload)):
                add_error(None)
                repeated.append(index)
            else:
                add_error(codes.CAPABILITY_USED)
        elif (item.mailbox, item.cap_hash) not in valid_caps:
            add_error(codes.BAD_CAPABILITY)
        elif allow is not None and not allow(item.cap_hash):
            add_error(codes.RATE_LIMITED)
        elif count[0] + 1 > max_messages or count[1] + size > max_bytes:
            add_error(codes.QUOTA_EXCEEDED)
        elif room is not None and size > room:
            add_error(codes.RELAY_FULL)
        else:
            if room is not None:
                room -= size
            count[0] += 1
            count[1] += size
            add_error(None)
            accept(index)
            if one_shot and (item.mailbox, item.cap_hash) in one_shot:
                spent[(item.mailbox, item.cap_hash)] = payload_hash(item.payload)
    return Plan(errors, accepted, repeated)


@dataclasses.dataclass(frozen=True, slots=True)
class DepositBatch:
    """Deposits of one request, with codes decided before storage (or None)."""

    items: list[DepositItem]
    refused: list[str | None]


@dataclasses.dataclass(frozen=True, slots=True)
class AckBatch:
    mailbox: bytes
    ids: list[int]


@dataclasses.dataclass(frozen=True, slots=True)
class CommitResult:
    """Per deposit batch, the error code per item; and the stored messages as
    (mailbox, message) in id order, for pushing to online owners."""

    errors: list[list[str | None]]
    stored: list[tuple[bytes, StoredMessage]]
    acked: int


class CommitIds(NamedTuple):
    """What a commit decided, without the payloads (which the caller has):
    the error code of every item of every batch in order, the ids of the
    items whose code is None in order (0 for one answered as stored with
    nothing stored again, :attr:`Plan.repeated`), and how many acknowledged
    messages were deleted."""

    errors: list[str | None]
    ids: list[int]
    acked: int


def commit_result(deposits: Sequence[DepositBatch], decided: CommitIds, now: int
                  ) -> CommitResult:
    """The :class:`CommitResult` of a commit, from its input and its :class:`CommitIds`."""
    errors: list[list[str | None]] = []
    stored: list[tuple[bytes, StoredMessage]] = []
    ids = iter(decided.ids)
    start = 0
    for batch in deposits:
        codes_ = decided.errors[start:start + len(batch.items)]
        start += len(batch.items)
        errors.append(codes_)
        for item, code in zip(batch.items, codes_, strict=True):
            if code is None and (message_id := next(ids)):
                stored.append((item.mailbox, StoredMessage(message_id, item.payload, now)))
    return CommitResult(errors, stored, decided.acked)


class Mailboxes:
    """The mailbox rules over a store. Not thread-safe: call from the storage worker."""

    def __init__(self, store: Store, *, quota: Quota, retention_ms: int,
                 invite_only: bool = False, budget: StorageBudget | None = None,
                 capability_rate: float | None = None,
                 capability_burst: float = 1.0) -> None:
        self.store = store
        # Deposits per capability: a token bucket per valid capability only,
        # taken after the capability is checked (so invalid ones own none).
        self.cap_limits = (KeyedBuckets(capability_rate, capability_burst)
                           if capability_rate is not None else None)
        self.quota = quota
        self.budget = budget if budget is not None else StorageBudget(store, 0)
        self.retention_ms = retention_ms
        self.invite_only = invite_only

    # ------------------------------------------------------------ registration

    def register(self, auth_key: bytes, signature: bytes, transcript: bytes,
                 token: str | None, now: int) -> bytes:
        """Create a mailbox for ``auth_key`` after checking its signature over
        ``transcript`` and, on an invite-only relay, the token. Returns the new
        mailbox id; raises :class:`Refused`."""
        verify_signature(auth_key, transcript, signature)
        with self.store.transaction():
            if self.invite_only:
                if not token:
                    raise Refused(codes.REGISTRATION_CLOSED,
                                  "This relay is invite-only: registering needs a token.")
                if not self.store.consume_token(token_hash(token), now):
                    raise Refused(codes.BAD_TOKEN,
                                  "The registration token is unknown, used up or expired.")
            mailbox = os.urandom(16)
            self.store.create_mailbox(mailbox, auth_key, now)
        return mailbox

    def authenticate(self, mailbox: bytes, signature: bytes, transcript: bytes,
                     installation: bytes | None = None, supersede: bool = False) -> None:
        """Check that ``signature`` over ``transcript`` is by the mailbox's auth
        key; raise :class:`Refused` (``auth_failed``, also for unknown mailboxes).

        Then the installation: the mailbox's first one to name itself, or one
        that supersedes (restored from a backup), becomes its current
        installation; any other (or one that names none once there is one) is
        refused with ``installation_replaced``. Both installations hold the
        mailbox key, so this is what tells the old one it was replaced."""
        auth_key = self.store.mailbox_auth_key(mailbox)
        if auth_key is None:
            raise Refused(codes.AUTH_FAILED, "Authentication failed.")
        verify_signature(auth_key, transcript, signature)
        current = self.store.mailbox_installation(mailbox)
        if installation is not None and (supersede or current is None):
            if current != installation:
                self.store.set_mailbox_installation(mailbox, installation)
        elif current is not None and current != installation:
            raise Refused(codes.INSTALLATION_REPLACED,
                          "This installation was replaced by another one (a backup restored "
                          "elsewhere).")

    def create_token(self, uses: int, expires_at: int | None, now: int) -> str:
        if uses < 1:
            raise ValueError("a token needs at least one use")
        token = new_token()
        self.store.add_token(token_hash(token), uses, expires_at, now)
        return token

    # ------------------------------------------------------------ capabilities

    def add_caps(self, mailbox: bytes, cap_hashes: Collection[bytes], now: int,
                 one_shot: bool = False) -> None:
        with self.store.transaction():
            require_mailbox(self.store, mailbox)
            self.store.add_caps(mailbox, cap_hashes, now, one_shot)

    def revoke_caps(self, mailbox: bytes, cap_hashes: Collection[bytes], now: int) -> None:
        with self.store.transaction():
            require_mailbox(self.store, mailbox)
            self.store.revoke_caps(mailbox, cap_hashes, now)

    def set_hidden(self, mailbox: bytes, hidden: bool) -> PresenceRecord:
        """Hide or show the mailbox's presence; its presence record after."""
        with self.store.transaction():
            require_mailbox(self.store, mailbox)
            self.store.set_presence_hidden(mailbox, hidden)
        return self.store.presence_records([mailbox]).get(mailbox, PresenceRecord(hidden, None))

    # ------------------------------------------------------------ deposits

    def commit(self, deposits: Sequence[DepositBatch], acks: Sequence[AckBatch],
               last_seen: dict[bytes, int], now: int) -> CommitResult:
        """One group commit: every deposit batch, acknowledgement and last-seen
        update in one transaction. Returns after it is durable."""
        return commit_result(deposits, self.commit_ids(deposits, acks, last_seen, now), now)

    def commit_ids(self, deposits: Sequence[DepositBatch], acks: Sequence[AckBatch],
                   last_seen: dict[bytes, int], now: int) -> CommitIds:
        """:meth:`commit`, answering only what the caller does not know
        already (see :class:`CommitIds`): the group committer's call, so that
        payloads do not travel back from the storage process."""
        all_items = [item for batch in deposits for item in batch.items]
        all_refused = [code for batch in deposits for code in batch.refused]
        with self.store.transaction():
            mailboxes = {item.mailbox for item in all_items}
            usage = self.store.mailbox_usage(mailboxes) if mailboxes else {}
            pairs = {(item.mailbox, item.cap_hash) for item, code in zip(
                all_items, all_refused, strict=True) if code is None and item.mailbox in usage}
            uses = self.store.cap_uses(pairs) if pairs else {}
            valid = {pair for pair, left in uses.items() if left != 0}
            used_up = [pair for pair, left in uses.items() if left == 0]
            used = self.store.cap_used_by(used_up) if used_up else {}
            one_shot = {pair for pair, left in uses.items() if left}
            room = self.budget.room(now) if plan_needs_room(all_refused) else None
            limits = self.cap_limits
            allow = None if limits is None else (
                lambda hashed: limits.take(hashed, now / 1000))
            plan = plan_deposits(all_items, valid, usage, self.quota, all_refused, room, allow,
                                 one_shot, used)
            if one_shot:
                plan = self._consume_one_shot(plan, all_items, valid, usage, all_refused, room,
                                              one_shot, used)
            new = [NewMessage(all_items[i].mailbox, all_items[i].payload, now)
                   for i in plan.accepted]
            ids = self.store.insert_messages(new) if new else []
            if plan.repeated:
                ids = answered_ids(plan, ids)
            self.budget.charge(sum(len(m.payload) for m in new))
            acked = (self.store.delete_messages_many([(a.mailbox, a.ids) for a in acks])
                     if acks else 0)
            for mailbox, when in last_seen.items():
                self.store.set_last_seen(mailbox, when)
        return CommitIds(plan.errors, ids, acked)

    def _consume_one_shot(self, plan: Plan, items: Sequence[DepositItem],
                          valid: set[tuple[bytes, bytes]], usage: dict[bytes, Usage],
                          refused: Sequence[str | None], room: int | None,
                          one_shot: set[tuple[bytes, bytes]],
                          used: dict[tuple[bytes, bytes], bytes | None]) -> Plan:
        """Take the use of every one-shot capability the plan accepts a deposit
        with, in the commit's transaction, recording the deposit's payload
        hash; a use another relay process took first turns its deposit into
        ``capability_used``, or into a repeat if that process stored the same
        payload (and the plan is made again, so quota and budget stay exact)."""
        taken: set[tuple[bytes, bytes]] = set()
        while True:
            wanted = {(items[i].mailbox, items[i].cap_hash): payload_hash(items[i].payload)
                      for i in plan.accepted
                      if (items[i].mailbox, items[i].cap_hash) in one_shot}
            for pair in taken:
                wanted.pop(pair, None)
            if not wanted:
                return plan
            got = self.store.consume_caps(wanted)
            taken |= got
            lost = wanted.keys() - got
            if not lost:
                return plan
            valid = valid - lost
            used = {**used, **dict.fromkeys(lost), **self.store.cap_used_by(lost)}
            one_shot = one_shot - lost
            plan = plan_deposits(items, valid, usage, self.quota, refused, room, None,
                                 one_shot, used)

    def deposit(self, items: Sequence[DepositItem], now: int) -> list[str | None]:
        """Deposits of one request on their own (a commit of one batch)."""
        batch = DepositBatch(list(items), [None] * len(items))
        return self.commit([batch], [], {}, now).errors[0]

    # ------------------------------------------------------------ delivery

    def pending(self, mailbox: bytes, after_id: int, limit: int) -> list[StoredMessage]:
        """Messages waiting in ``mailbox`` after ``after_id``, oldest first."""
        return self.store.fetch_messages(mailbox, after_id, limit)

    def ack(self, mailbox: bytes, ids: Collection[int]) -> int:
        with self.store.transaction():
            return self.store.delete_messages(mailbox, ids)

    def expire(self, now: int) -> int:
        """Delete messages older than the retention time; return how many."""
        return self.store.expire_messages(now - self.retention_ms)

    # ------------------------------------------------------------ presence

    def presence_lookup(self, targets: Collection[tuple[bytes, bytes]]
                        ) -> tuple[set[tuple[bytes, bytes]], dict[bytes, PresenceRecord]]:
        """For (mailbox, cap_hash) targets: the valid pairs and the presence
        records of their mailboxes."""
        valid = self.store.valid_caps(targets)
        records = self.store.presence_records({mb for mb, _ in valid})
        return valid, records

    # ------------------------------------------------------------ accounts

    def delete_account(self, mailbox: bytes) -> bool:
        return self.store.delete_mailbox(mailbox)


def answered_ids(plan: Plan, ids: Sequence[int]) -> list[int]:
    """The :class:`CommitIds` ids of a plan with repeats: the stored items'
    ``ids`` (in ``plan.accepted`` order) merged with a 0 for each repeated
    item, in item order."""
    repeated = set(plan.repeated)
    stored = iter(ids)
    return [0 if index in repeated else next(stored)
            for index, code in enumerate(plan.errors) if code is None]


def plan_needs_room(refused: Sequence[str | None]) -> bool:
    """Whether any deposit is still undecided (the budget is read only then)."""
    return any(code is None for code in refused)


def require_mailbox(store: Store, mailbox: bytes) -> None:
    """Inside a transaction: refuse writes for a mailbox that no longer exists
    (deleted through another connection or relay process), so that nothing is
    left behind tied to no mailbox. Takes the writers' lock first, so that a
    deletion cannot slip in before the write commits."""
    store.lock_writes()
    if store.mailbox_auth_key(mailbox) is None:
        raise Refused(codes.UNKNOWN_MAILBOX, "The mailbox was deleted.")


def verify_signature(auth_key: bytes, transcript: bytes, signature: bytes) -> None:
    """Check an Ed25519 signature by a mailbox auth key; raise ``auth_failed``."""
    try:
        SigningPublicKey(auth_key).verify(transcript, signature)
    except (BadSignature, InvalidKey):
        raise Refused(codes.AUTH_FAILED, "Authentication failed.") from None


def same_hash(a: bytes, b: bytes) -> bool:
    """Constant-time comparison of two hashes."""
    return hmac.compare_digest(a, b)
