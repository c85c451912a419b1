"""The end-to-end client messages (``docs/protocol.md``, part 3).

Two layers, both MessagePack arrays via msgspec with a string tag first:

* the **body** of a sealed deposit (``seal_envelope(box key, sender, body)``):
  :class:`PrekeyBody` (an X3DH header plus the first ratchet message) or
  :class:`RatchetBody` (a ratchet message);
* the **content**, the plaintext of a ratchet message: :class:`ContactInfo`,
  :class:`Text`, :class:`Receipt`, :class:`Typing`, :class:`ProfileKeyUpdate`,
  :class:`CapabilityUpdate`, :class:`CapabilitySwitched`.

Versioning: a tag never changes meaning; new fields are only appended with a
default, so older clients decode newer messages (trailing fields they do not
know are ignored, missing ones take their default); content with a tag this
client does not know (from a newer client) decodes to :class:`Unsupported`,
which is stored and shown as "unsupported message, update chatcli".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import msgspec

Bytes16 = Annotated[bytes, msgspec.Meta(min_length=16, max_length=16)]
Bytes32 = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
Bytes64 = Annotated[bytes, msgspec.Meta(min_length=64, max_length=64)]
Uuid = Annotated[str, msgspec.Meta(min_length=36, max_length=36)]
Millis = Annotated[int, msgspec.Meta(ge=0, lt=2**53)]
MAX_TEXT = 32 * 1024
MAX_EXCERPT = 200
MAX_EMOJI = 32
BODY_VERSION = 1


class Body(msgspec.Struct, array_like=True, frozen=True, tag_field="t"):
    """Base of the deposit bodies."""


class PrekeyBody(Body, frozen=True, tag="prekey"):
    """Starts a session. ``invite_id`` names the invite whose one-time prekey
    was used; when it is None, ``restore_prekey`` names (by its public key) the
    recipient's signed restore prekey instead (session re-establishment after a
    restore). ``message`` is the first ratchet message; its plaintext is a
    :class:`ContactInfo`."""

    v: int
    invite_id: Bytes16 | None
    restore_prekey: Bytes32 | None
    identity: Bytes32
    ephemeral: Bytes32
    message: bytes


class RatchetBody(Body, frozen=True, tag="ratchet"):
    """A message in an established session."""

    v: int
    message: bytes


class GroupBody(Body, frozen=True, tag="group"):
    """A group message: a pairwise group session message or a sender-key
    message, decoded by ``chatcli.client.groups.wire`` (protocol.md, "Groups")."""

    v: int
    message: bytes


AnyBody = PrekeyBody | RatchetBody | GroupBody


class Content(msgspec.Struct, array_like=True, frozen=True, tag_field="t"):
    """Base of the ratchet plaintexts."""


class KeyChangeRecord(msgspec.Struct, array_like=True, frozen=True):
    """Proof that the sender's identity key replaces ``old_identity``: the old
    key's signature over the new key and ``issued_at`` (seconds), made by
    ``chatcli.crypto.keychange.sign_key_change``."""

    old_identity: Bytes32
    issued_at: Annotated[int, msgspec.Meta(ge=0, lt=2**53)]
    signature: Bytes64


class ContactInfo(Content, frozen=True, tag="contact_info"):
    """The sender's address and restore prekey: where and how to reach it.
    ``capability`` is the deposit capability it issued for the recipient.
    ``key_change``, when present, proves that the sender's key replaces an
    older identity key the recipient may know."""

    relay_url: Annotated[str, msgspec.Meta(max_length=500)]
    mailbox: Bytes16
    capability: Bytes32
    box_key: Bytes32
    name: Annotated[str, msgspec.Meta(max_length=200)]
    restore_prekey: Bytes32
    restore_prekey_signature: Bytes64
    key_change: KeyChangeRecord | None = None


class AttachmentRef(msgspec.Struct, array_like=True, frozen=True):
    """A file encrypted with its own key and stored as a blob on ``relay_url``."""

    relay_url: str
    blob: Bytes16
    read_cap: Bytes32
    key: Bytes32
    digest: Bytes32
    size: int
    name: Annotated[str, msgspec.Meta(max_length=255)]


class Quote(msgspec.Struct, array_like=True, frozen=True):
    """The message a reply answers: its id, its author's identity key, and the
    start of its text (so the quote shows even where the target is missing)."""

    id: Uuid
    author: Bytes32
    excerpt: Annotated[str, msgspec.Meta(max_length=MAX_EXCERPT)]


class Text(Content, frozen=True, tag="text"):
    """A chat message. ``id`` is a UUID the recipient de-duplicates by;
    ``reply_to`` quotes the message it answers."""

    id: Uuid
    sent_at: Millis
    text: Annotated[str, msgspec.Meta(max_length=MAX_TEXT)]
    attachment: AttachmentRef | None = None
    reply_to: Quote | None = None


class Reaction(Content, frozen=True, tag="reaction"):
    """The sender's reaction to message ``target``; ``emoji`` "" removes it.
    One per person and message: a later one replaces an earlier one."""

    target: Uuid
    emoji: Annotated[str, msgspec.Meta(max_length=MAX_EMOJI)]
    sent_at: Millis


class Edit(Content, frozen=True, tag="edit"):
    """A new text for the sender's own message ``target``; ``id`` names the edit."""

    target: Uuid
    sent_at: Millis
    text: Annotated[str, msgspec.Meta(max_length=MAX_TEXT)]
    id: Uuid


class Delete(Content, frozen=True, tag="delete"):
    """Delete the sender's own message ``target`` for everyone."""

    target: Uuid
    sent_at: Millis


MessageAction = Reaction | Edit | Delete


class Receipt(Content, frozen=True, tag="receipt"):
    kind: Literal["delivered", "read"]
    ids: Annotated[list[Uuid], msgspec.Meta(min_length=1, max_length=1000)]


class Typing(Content, frozen=True, tag="typing"):
    active: bool


class ProfileKeyUpdate(Content, frozen=True, tag="profile_key"):
    """The sender's profile key and where its sealed profile blob lives."""

    key: Bytes32
    relay_url: str
    blob: Bytes16 | None
    read_cap: Bytes32 | None


class CapabilityUpdate(Content, frozen=True, tag="capability"):
    """A new deposit capability for the recipient (after an unblock)."""

    capability: Bytes32


class CapabilitySwitched(Content, frozen=True, tag="capability_switched"):
    """The sender now deposits with the capability the recipient's latest
    :class:`ContactInfo` carried, and no longer with the one whose SHA-256 is
    ``replaced`` (an invite's): the recipient may revoke that one."""

    replaced: Bytes32


AnyContent = (ContactInfo | Text | Receipt | Typing | ProfileKeyUpdate | CapabilityUpdate
              | CapabilitySwitched | Reaction | Edit | Delete)


@dataclass(frozen=True)
class Unsupported:
    """Content whose tag this client does not know (a newer client sent it).
    Not a wire type: what :func:`decode_content` answers for it."""

    tag: str

    @property
    def text(self) -> str:
        return UNSUPPORTED_TEXT


UNSUPPORTED_TEXT = "unsupported message, update chatcli"

_body_decoder: msgspec.msgpack.Decoder[AnyBody] = msgspec.msgpack.Decoder(AnyBody)
_content_decoder: msgspec.msgpack.Decoder[AnyContent] = msgspec.msgpack.Decoder(
    AnyContent
)
_encoder = msgspec.msgpack.Encoder()


def encode(obj: Body | Content) -> bytes:
    return _encoder.encode(obj)


def decode_body(data: bytes) -> AnyBody:
    """Decode a deposit body; raise ``msgspec.ValidationError``/``DecodeError``."""
    return _body_decoder.decode(data)


def unknown_tag(data: bytes, known: frozenset[str]) -> str | None:
    """The tag of an array whose first element is a string not in ``known``."""
    try:
        raw = msgspec.msgpack.decode(data)
    except msgspec.DecodeError:
        return None
    if isinstance(raw, list) and raw and isinstance(raw[0], str) and raw[0] not in known:
        return raw[0][:64]
    return None


CONTENT_TAGS = frozenset(str(cls.__struct_config__.tag) for cls in (
    ContactInfo, Text, Receipt, Typing, ProfileKeyUpdate, CapabilityUpdate,
    CapabilitySwitched, Reaction, Edit, Delete))


def decode_content(data: bytes) -> AnyContent | Unsupported:
    """Decode ratchet content; an unknown tag gives :class:`Unsupported`, any
    other malformation raises ``msgspec.ValidationError``/``DecodeError``."""
    try:
        return _content_decoder.decode(data)
    except msgspec.ValidationError:
        tag = unknown_tag(data, CONTENT_TAGS)
        if tag is None:
            raise
        return Unsupported(tag)
