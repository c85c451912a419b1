"""The group messages on the wire (``docs/protocol.md``, part 3, "Groups").

Pure: msgspec structs (MessagePack arrays with a string tag first, as in
``chatcli.client.messages``), the signatures of membership operations, and
their conversion into :mod:`chatcli.client.groups.membership` operations.

Layers, inside a sealed deposit whose body is a ``GroupBody`` (tag ``group``):

* :class:`Direct`: a pairwise Double Ratchet message between two members, in
  a two-way session (:mod:`chatcli.client.groups.pairwise`). Every one names
  its session by the X3DH that started it (the responder's signed prekey and
  the initiator's ephemeral key), in both directions, so two members who are
  not contacts can start a session from a member record.
  Its plaintext is a :data:`DirectContent`: :class:`Invite`, :class:`Join`,
  :class:`Ops` or :class:`SenderKey`.
* :class:`Cipher`: a sender-key message (``chatcli.crypto.sender_keys``), the
  same bytes in every member's deposit. Its plaintext is a :class:`GroupText`.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from chatcli.client.groups import membership as ms
from chatcli.client.messages import AttachmentRef, Bytes16, Bytes32, Bytes64, Millis, Uuid
from chatcli.crypto.errors import BadSignature
from chatcli.crypto.keys import IdentityKeyPair, IdentityPublicKey
from chatcli.errors import CryptoError

OP_SIGNATURE_LABEL = b"chatcli/group-op/v1"
MAX_GROUP_TEXT = 32 * 1024
MAX_DESCRIPTION = 1000
#: Group avatars travel inline in a signed operation, inside one pairwise message.
MAX_GROUP_AVATAR = 32 * 1024
Name = Annotated[str, msgspec.Meta(max_length=200)]
Seq = Annotated[int, msgspec.Meta(ge=0, lt=2**32)]


class InvalidGroupMessage(CryptoError):
    """A group operation or message is not acceptable (bad signature, wrong author)."""


class _Tagged(msgspec.Struct, array_like=True, frozen=True, tag_field="t"):
    pass


# ------------------------------------------------------------------ records and ops


class MemberRecord(msgspec.Struct, array_like=True, frozen=True):
    """How to reach a member: its address, the deposit capability it issued
    for this group, and its signed restore prekey (for X3DH by non-contacts)."""

    identity: Bytes32
    name: Name
    relay_url: Annotated[str, msgspec.Meta(max_length=500)]
    mailbox: Bytes16
    box_key: Bytes32
    cap: Bytes32
    restore_prekey: Bytes32
    restore_prekey_signature: Bytes64


class CreateOp(_Tagged, frozen=True, tag="create"):
    name: Name
    record: MemberRecord


class AddOp(_Tagged, frozen=True, tag="add"):
    seq: Seq
    record: MemberRecord


class RemoveOp(_Tagged, frozen=True, tag="remove"):
    seq: Seq
    member: Bytes32


class LeaveOp(_Tagged, frozen=True, tag="leave"):
    member: Bytes32
    since: Seq


class InvitationOp(_Tagged, frozen=True, tag="invitation"):
    """An admin invites ``member``: its own ``accept`` completes the joining."""

    seq: Seq
    member: Bytes32


class AcceptOp(_Tagged, frozen=True, tag="accept"):
    """The invited member's record for its instance ``since`` (signed by it);
    a higher ``generation`` renews the record (e.g. after a restore)."""

    since: Seq
    record: MemberRecord
    generation: Seq = 0


class PromoteOp(_Tagged, frozen=True, tag="promote"):
    seq: Seq
    member: Bytes32


class DemoteOp(_Tagged, frozen=True, tag="demote"):
    seq: Seq
    member: Bytes32


class GroupProfile(msgspec.Struct, array_like=True, frozen=True):
    """The group's name, description and avatar (an image), set by admins."""

    name: Name
    description: Annotated[str, msgspec.Meta(max_length=MAX_DESCRIPTION)] = ""
    avatar: Annotated[bytes, msgspec.Meta(max_length=MAX_GROUP_AVATAR)] | None = None


class ProfileOp(_Tagged, frozen=True, tag="profile"):
    seq: Seq
    profile: GroupProfile


class VoteOp(_Tagged, frozen=True, tag="vote"):
    """A member backs ``candidate`` as admin, at version ``base``."""

    candidate: Bytes32
    base: Seq


class RecoverOp(_Tagged, frozen=True, tag="recover"):
    """``candidate`` becomes an admin on the signed ``vote`` operations of a
    majority of the members."""

    seq: Seq
    candidate: Bytes32
    votes: Annotated[list[bytes], msgspec.Meta(max_length=2000)]


AnyOp = (CreateOp | AddOp | RemoveOp | LeaveOp | InvitationOp | AcceptOp | PromoteOp
         | DemoteOp | ProfileOp | VoteOp | RecoverOp)
ORDERED_OPS = (AddOp, RemoveOp, InvitationOp, PromoteOp, DemoteOp, ProfileOp, RecoverOp)


class SignedOp(msgspec.Struct, array_like=True, frozen=True):
    """An operation, signed by its author's identity key over
    ``"chatcli/group-op/v1" ‖ group_id ‖ author ‖ op``."""

    group_id: Bytes16
    author: Bytes32
    op: bytes
    signature: Bytes64


# ------------------------------------------------------------------ layers


class Direct(_Tagged, frozen=True, tag="direct"):
    """``identity``: the sender. ``restore_prekey`` and ``ephemeral`` name the
    session: the responder's signed prekey and the initiator's X3DH ephemeral
    key. ``refused``: in a session that is not confirmed yet, the ephemeral key
    of the recipient's session the sender could not open, which this one
    replaces."""

    identity: Bytes32
    restore_prekey: Bytes32
    ephemeral: Bytes32
    message: bytes
    refused: Bytes32 | None = None


class Cipher(_Tagged, frozen=True, tag="cipher"):
    """``group_id`` (absent from older clients) only names the group in a notice
    when the message cannot be read; it is not authenticated."""

    message: bytes
    group_id: Bytes16 | None = None


AnyLayer = Direct | Cipher


class Invite(_Tagged, frozen=True, tag="invite"):
    """Admin to a contact it invites: the operations so far (creation first)."""

    group_id: Bytes16
    ops: Annotated[list[bytes], msgspec.Meta(max_length=20_000)]


class Join(_Tagged, frozen=True, tag="join"):
    """An invited contact to the admin: its record for this group."""

    group_id: Bytes16
    record: MemberRecord


class Ops(_Tagged, frozen=True, tag="ops"):
    """Membership operations (signed by their authors) for a member."""

    group_id: Bytes16
    ops: Annotated[list[bytes], msgspec.Meta(max_length=20_000)]


class SenderKey(_Tagged, frozen=True, tag="sender_key"):
    """The sender's current sender-key distribution for the group. Secret."""

    group_id: Bytes16
    distribution: bytes


DirectContent = Invite | Join | Ops | SenderKey


class GroupText(_Tagged, frozen=True, tag="text"):
    """A group chat message; ``id`` is a UUID members de-duplicate by. A file is
    an attachment blob on the sender's relay, its key and read capability here.
    ``version`` is the membership version it was sent under (how many admin
    operations its sender had applied; absent from older clients): members show
    it if and only if its sender was a member at that version."""

    id: Uuid
    sent_at: Millis
    text: Annotated[str, msgspec.Meta(max_length=MAX_GROUP_TEXT)]
    attachment: AttachmentRef | None = None
    version: Seq | None = None


CipherContent = GroupText

_encoder = msgspec.msgpack.Encoder()
_op_decoder: msgspec.msgpack.Decoder[AnyOp] = msgspec.msgpack.Decoder(AnyOp)
_signed_decoder = msgspec.msgpack.Decoder(SignedOp)
_layer_decoder: msgspec.msgpack.Decoder[AnyLayer] = msgspec.msgpack.Decoder(AnyLayer)
_direct_decoder: msgspec.msgpack.Decoder[DirectContent] = msgspec.msgpack.Decoder(
    DirectContent
)
_cipher_decoder = msgspec.msgpack.Decoder(CipherContent)
_record_decoder = msgspec.msgpack.Decoder(MemberRecord)
_profile_decoder = msgspec.msgpack.Decoder(GroupProfile)


def encode(obj: msgspec.Struct) -> bytes:
    return _encoder.encode(obj)


def decode_layer(data: bytes) -> AnyLayer:
    return _layer_decoder.decode(data)


def decode_direct(data: bytes) -> DirectContent:
    return _direct_decoder.decode(data)


def decode_cipher(data: bytes) -> CipherContent:
    return _cipher_decoder.decode(data)


def decode_record(data: bytes) -> MemberRecord:
    return _record_decoder.decode(data)


# ------------------------------------------------------------------ signing


def _signed_bytes(group_id: bytes, author: bytes, op: bytes) -> bytes:
    return OP_SIGNATURE_LABEL + group_id + author + op


def sign_op(identity: IdentityKeyPair, group_id: bytes, op: AnyOp) -> bytes:
    """The encoded :class:`SignedOp` of ``op`` by ``identity``."""
    raw = encode(op)
    author = identity.public.raw
    return encode(SignedOp(group_id=group_id, author=author, op=raw,
                           signature=identity.sign(_signed_bytes(group_id, author, raw))))


def open_op(data: bytes, group_id: bytes, *, verify: bool = True) -> tuple[bytes, AnyOp]:
    """Decode and verify a signed operation: (author, op).

    Checks the signature and that the author may author it: a creation by the
    member it creates with, a leave by the member leaving. Whether an add or a
    removal comes from the admin is checked by :func:`to_membership_op`.
    ``verify=False`` skips the signature, for operations verified before they
    were stored (sealed) locally. Raises :class:`InvalidGroupMessage`."""
    try:
        signed = _signed_decoder.decode(data)
        op = _op_decoder.decode(signed.op)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise InvalidGroupMessage("A group membership change is malformed.") from None
    if signed.group_id != group_id:
        raise InvalidGroupMessage("A group membership change names another group.")
    if verify:
        try:
            IdentityPublicKey.from_bytes(signed.author).verify(
                _signed_bytes(signed.group_id, signed.author, signed.op), signed.signature)
        except (BadSignature, CryptoError):
            raise InvalidGroupMessage("A group membership change has a bad signature."
                                      ) from None
    if isinstance(op, CreateOp) and op.record.identity != signed.author:
        raise InvalidGroupMessage("A group was created in someone else's name.")
    if isinstance(op, LeaveOp) and op.member != signed.author:
        raise InvalidGroupMessage("A member was made to leave by someone else.")
    if isinstance(op, AcceptOp) and op.record.identity != signed.author:
        raise InvalidGroupMessage("A member joined in someone else's name.")
    return signed.author, op


def signed_group_id(data: bytes) -> bytes:
    """The group id a signed operation names (not verified)."""
    try:
        return _signed_decoder.decode(data).group_id
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise InvalidGroupMessage("A group membership change is malformed.") from None


def to_membership_op(author: bytes, op: AnyOp, creator: bytes | None, *,
                     group_id: bytes = b"", verify: bool = True) -> ms.Op:
    """The state-machine operation; ``creator`` None means ``op`` must be the creation.

    Who may author an ordered operation depends on the state at its place, so
    the state machine judges that; here only the votes inside a ``recover`` are
    opened (``group_id`` names their group). Raises :class:`InvalidGroupMessage`."""
    if isinstance(op, CreateOp):
        return ms.Create(admin=author, record=encode(op.record))
    if isinstance(op, LeaveOp):
        return ms.Leave(member=op.member, since=op.since)
    if isinstance(op, AcceptOp):
        return ms.Join(member=author, since=op.since, record=encode(op.record),
                       generation=op.generation)
    if isinstance(op, VoteOp):
        return ms.Vote(member=author, candidate=op.candidate, base=op.base)
    if creator is None:
        raise InvalidGroupMessage("A group membership change came before the group's creation.")
    if isinstance(op, AddOp):
        return ms.Add(seq=op.seq, member=op.record.identity, record=encode(op.record),
                      author=author)
    if isinstance(op, RemoveOp):
        return ms.Remove(seq=op.seq, member=op.member, author=author)
    if isinstance(op, InvitationOp):
        return ms.Invite(seq=op.seq, member=op.member, author=author)
    if isinstance(op, PromoteOp):
        return ms.Promote(seq=op.seq, member=op.member, author=author)
    if isinstance(op, DemoteOp):
        return ms.Demote(seq=op.seq, member=op.member, author=author)
    if isinstance(op, ProfileOp):
        return ms.SetProfile(seq=op.seq, profile=encode(op.profile), author=author)
    votes: set[tuple[bytes, int]] = set()
    for data in op.votes:
        voter, vote = open_op(data, group_id, verify=verify)
        if not isinstance(vote, VoteOp) or vote.candidate != op.candidate:
            raise InvalidGroupMessage("A vote in a group recovery is for someone else.")
        votes.add((voter, vote.base))
    return ms.Recover(seq=op.seq, member=op.candidate, votes=frozenset(votes), author=author)


def decode_profile(data: bytes) -> GroupProfile:
    return _profile_decoder.decode(data)


__all__ = [
    "ORDERED_OPS",
    "AcceptOp",
    "AddOp",
    "Cipher",
    "CreateOp",
    "DemoteOp",
    "Direct",
    "GroupProfile",
    "GroupText",
    "InvalidGroupMessage",
    "InvitationOp",
    "Invite",
    "Join",
    "LeaveOp",
    "MemberRecord",
    "Ops",
    "ProfileOp",
    "PromoteOp",
    "RecoverOp",
    "RemoveOp",
    "SenderKey",
    "SignedOp",
    "VoteOp",
    "decode_cipher",
    "decode_direct",
    "decode_layer",
    "decode_profile",
    "decode_record",
    "encode",
    "open_op",
    "sign_op",
    "signed_group_id",
    "to_membership_op",
]
