"""Signed membership operations: who may author what, and tampering."""

from __future__ import annotations

import os

import msgspec
import pytest

from chatcli.client.groups import membership as ms
from chatcli.client.groups import wire
from chatcli.crypto.keys import IdentityKeyPair

GROUP = os.urandom(16)


def record(identity: IdentityKeyPair, name: str = "x") -> wire.MemberRecord:
    return wire.MemberRecord(identity=identity.public.raw, name=name, relay_url="ws://r/#f",
                             mailbox=bytes(16), box_key=bytes(32), cap=bytes(32),
                             restore_prekey=bytes(32), restore_prekey_signature=bytes(64))


def test_roundtrip_and_admin_rules() -> None:
    admin, bob, carol = (IdentityKeyPair.generate() for _ in range(3))
    create = wire.sign_op(admin, GROUP, wire.CreateOp(name="team", record=record(admin)))
    author, op = wire.open_op(create, GROUP)
    assert author == admin.public.raw and isinstance(op, wire.CreateOp)
    start = wire.to_membership_op(author, op, None)
    assert isinstance(start, ms.Create) and start.admin == admin.public.raw

    add = wire.sign_op(admin, GROUP, wire.AddOp(seq=1, record=record(bob)))
    author, op = wire.open_op(add, GROUP)
    assert wire.to_membership_op(author, op, admin.public.raw) == ms.Add(
        seq=1, member=bob.public.raw, record=wire.encode(record(bob)), author=author)
    # Whether its author may add is the state machine's to judge, at its place.
    by_bob = wire.sign_op(bob, GROUP, wire.AddOp(seq=2, record=record(carol)))
    author, op = wire.open_op(by_bob, GROUP)
    state = ms.Membership.replay([start, wire.to_membership_op(
        *wire.open_op(add, GROUP), admin.public.raw)])
    assert state.apply(wire.to_membership_op(author, op, admin.public.raw)).reason == (
        "its author is not an admin")
    # An accept names its author's own record; a vote in a recovery is for its candidate.
    with pytest.raises(wire.InvalidGroupMessage, match="someone else"):
        wire.open_op(wire.sign_op(bob, GROUP, wire.AcceptOp(since=1, record=record(carol))),
                     GROUP)
    vote = wire.sign_op(bob, GROUP, wire.VoteOp(candidate=carol.public.raw, base=2))
    recover = wire.RecoverOp(seq=3, candidate=bob.public.raw, votes=[vote])
    with pytest.raises(wire.InvalidGroupMessage, match="someone else"):
        wire.to_membership_op(bob.public.raw, recover, admin.public.raw, group_id=GROUP)
    fine = wire.RecoverOp(seq=3, candidate=carol.public.raw, votes=[vote])
    assert wire.to_membership_op(carol.public.raw, fine, admin.public.raw,
                                 group_id=GROUP) == ms.Recover(
        seq=3, member=carol.public.raw, votes=frozenset({(bob.public.raw, 2)}),
        author=carol.public.raw)
    # A member leaves only itself.
    with pytest.raises(wire.InvalidGroupMessage, match="someone else"):
        wire.open_op(wire.sign_op(bob, GROUP, wire.LeaveOp(member=carol.public.raw, since=2)),
                     GROUP)
    # Nobody creates a group in someone else's name.
    with pytest.raises(wire.InvalidGroupMessage, match="someone else"):
        wire.open_op(wire.sign_op(bob, GROUP, wire.CreateOp(name="t", record=record(admin))),
                     GROUP)


def test_tampering_and_other_groups_are_refused() -> None:
    admin, bob = IdentityKeyPair.generate(), IdentityKeyPair.generate()
    signed = wire.sign_op(admin, GROUP, wire.RemoveOp(seq=3, member=bob.public.raw))
    with pytest.raises(wire.InvalidGroupMessage, match="another group"):
        wire.open_op(signed, os.urandom(16))
    decoded = msgspec.msgpack.decode(signed, type=wire.SignedOp)
    altered = wire.encode(msgspec.structs.replace(
        decoded, op=wire.encode(wire.RemoveOp(seq=4, member=bob.public.raw))))
    with pytest.raises(wire.InvalidGroupMessage, match="signature"):
        wire.open_op(altered, GROUP)
    with pytest.raises(wire.InvalidGroupMessage, match="malformed"):
        wire.open_op(b"\x93\x01\x02", GROUP)
    assert wire.signed_group_id(signed) == GROUP
