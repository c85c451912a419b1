"""Every frame of the relay wire protocol, as typed msgspec structs.

One WebSocket binary message carries exactly one frame, encoded as MessagePack
arrays (``array_like``): the first element is the frame's tag, the others its
fields in the order written here. Field constraints (lengths, ranges) are part
of the types, so decoding validates them. This module is the contract between
relay and client: changes are additive and documented in ``docs/protocol.md``.

Requests from the client carry ``req``, a client-chosen integer; the relay
answers each request with exactly one frame carrying the same ``req``: its
result frame, or an :class:`Error`.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS: tuple[int, ...] = (1,)

# Size limits, in bytes. The relay may announce smaller ones in Welcome.
MAX_FRAME_SIZE = 1024 * 1024
MAX_PAYLOAD_SIZE = 64 * 1024
MAX_BATCH = 256
MAX_BLOB_CHUNK = 256 * 1024
MAX_TEXT = 500

MailboxId = Annotated[bytes, msgspec.Meta(min_length=16, max_length=16)]
BlobId = Annotated[bytes, msgspec.Meta(min_length=16, max_length=16)]
InstallationId = Annotated[bytes, msgspec.Meta(min_length=16, max_length=16)]
Key32 = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
Nonce32 = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
Signature = Annotated[bytes, msgspec.Meta(min_length=64, max_length=64)]
Capability = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
CapabilityHash = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
Payload = Annotated[bytes, msgspec.Meta(min_length=1, max_length=MAX_PAYLOAD_SIZE)]
BlobChunk = Annotated[bytes, msgspec.Meta(max_length=MAX_BLOB_CHUNK)]
RequestId = Annotated[int, msgspec.Meta(ge=0, lt=2**53)]
MessageId = Annotated[int, msgspec.Meta(ge=0, lt=2**53)]
Millis = Annotated[int, msgspec.Meta(ge=0, lt=2**53)]
Count = Annotated[int, msgspec.Meta(ge=0, lt=2**53)]
ShortText = Annotated[str, msgspec.Meta(max_length=MAX_TEXT)]


class Frame(msgspec.Struct, array_like=True, frozen=True, tag_field="t"):
    """Base of all frames."""


# ---------------------------------------------------------------- connect


class Hello(Frame, tag="hello", frozen=True):
    """Client, first frame: the versions it speaks and a fresh random nonce."""

    versions: Annotated[list[Annotated[int, msgspec.Meta(ge=1, le=255)]],
                        msgspec.Meta(min_length=1, max_length=8)]
    nonce: Nonce32


class Welcome(Frame, tag="welcome", frozen=True):
    """Relay, answer to Hello: the chosen version, the relay's Ed25519 key, its
    signature over the client's nonce (see :func:`transcripts.relay_hello`),
    a challenge for Register/Auth, and the limits in force. ``max_blob`` (the
    largest blob it stores, in bytes) was added later: relays that predate it
    send one field less, which decodes as None (not announced), and older
    clients ignore the extra field."""

    version: int
    relay_key: Key32
    signature: Signature
    challenge: Nonce32
    max_frame: Count
    max_payload: Count
    max_blob: Count | None = None


# ------------------------------------------------------------- mailboxes


class Register(Frame, tag="register", frozen=True):
    """Create a mailbox owned by ``auth_key`` (an Ed25519 key that is not the
    identity key). ``signature`` signs :func:`transcripts.register`. ``token``
    is needed when the relay is invite-only. Answered by Registered. The new
    connection is authenticated as that mailbox afterwards."""

    req: RequestId
    auth_key: Key32
    signature: Signature
    token: ShortText | None = None


class Registered(Frame, tag="registered", frozen=True):
    req: RequestId
    mailbox: MailboxId


class Auth(Frame, tag="auth", frozen=True):
    """Prove ownership of ``mailbox``: ``signature`` signs
    :func:`transcripts.auth` with the mailbox's auth key. Answered by Ok; then
    the relay pushes waiting deposits (Deliver ... Synced) and new ones.

    ``installation`` (added later; absent from older clients) names the
    client installation logging in. The relay remembers the mailbox's current
    installation: the first one to log in, or the one that sends
    ``supersede`` (a restore from a backup on another machine). Any other
    gets ``installation_replaced``."""

    req: RequestId
    mailbox: MailboxId
    signature: Signature
    installation: InstallationId | None = None
    supersede: bool = False


class CapAdd(Frame, tag="cap_add", frozen=True):
    """Owner: allow deposits with capabilities whose SHA-256 is listed.
    ``one_shot``: each allows exactly one deposit (an invite's), after which
    deposits and presence queries with it are refused (``capability_used``)."""

    req: RequestId
    cap_hashes: Annotated[list[CapabilityHash], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]
    one_shot: bool = False


class CapRevoke(Frame, tag="cap_revoke", frozen=True):
    """Owner: refuse deposits (and presence queries) with these capabilities."""

    req: RequestId
    cap_hashes: Annotated[list[CapabilityHash], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]


class DepositItem(msgspec.Struct, array_like=True, frozen=True):
    mailbox: MailboxId
    cap: Capability
    payload: Payload


class Deposit(Frame, tag="deposit", frozen=True):
    """Anyone: store sealed payloads in mailboxes, each with its capability.
    Needs no authentication. Answered by DepositResult once durably stored."""

    req: RequestId
    items: Annotated[list[DepositItem], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]


class DepositResult(Frame, tag="deposit_result", frozen=True):
    """One entry per item, in order: None when stored, else an error code
    (``bad_capability``, ``unknown_mailbox``, ``quota_exceeded``, ``rate_limited``)."""

    req: RequestId
    errors: list[str | None]


class Delivered(msgspec.Struct, array_like=True, frozen=True):
    id: MessageId
    payload: Payload
    received_at: Millis


class Deliver(Frame, tag="deliver", frozen=True):
    """Relay to an authenticated owner: stored deposits, in order."""

    messages: Annotated[list[Delivered], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]


class Synced(Frame, tag="synced", frozen=True):
    """Relay: every deposit waiting at Auth time has been sent."""


class Ack(Frame, tag="ack", frozen=True):
    """Owner: these delivered messages are safely stored; delete them."""

    req: RequestId
    ids: Annotated[list[MessageId], msgspec.Meta(min_length=1, max_length=MAX_BATCH * 4)]


class AccountDelete(Frame, tag="account_delete", frozen=True):
    """Owner: delete the mailbox and everything tied to it. Answered by Ok,
    then the relay closes the connection."""

    req: RequestId


# -------------------------------------------------------------- presence


class PresenceTarget(msgspec.Struct, array_like=True, frozen=True):
    mailbox: MailboxId
    cap: Capability


class PresenceEntry(msgspec.Struct, array_like=True, frozen=True):
    """``online`` and ``last_seen`` are None when the owner hides presence or
    the capability is not valid for that mailbox."""

    mailbox: MailboxId
    online: bool | None
    last_seen: Millis | None


class PresenceQuery(Frame, tag="presence_query", frozen=True):
    req: RequestId
    targets: Annotated[list[PresenceTarget], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]


class PresenceSubscribe(Frame, tag="presence_subscribe", frozen=True):
    """Like PresenceQuery, and later changes are pushed as PresenceUpdate."""

    req: RequestId
    targets: Annotated[list[PresenceTarget], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]


class PresenceResult(Frame, tag="presence_result", frozen=True):
    req: RequestId
    entries: list[PresenceEntry]


class PresenceUpdate(Frame, tag="presence_update", frozen=True):
    entries: list[PresenceEntry]


class PresenceSettings(Frame, tag="presence_settings", frozen=True):
    """Owner: hide (or show) presence and last-seen from everyone."""

    req: RequestId
    hidden: bool


# ----------------------------------------------------------------- blobs


class BlobPut(Frame, tag="blob_put", frozen=True):
    """Owner: write one chunk of a blob it creates. Chunks come in order
    (``offset`` is the number of bytes already written); ``final`` closes the
    blob, which becomes readable. ``read_cap_hash`` and ``ttl`` (seconds) are
    taken from the first chunk. Answered by Ok."""

    req: RequestId
    blob: BlobId
    offset: Count
    data: BlobChunk
    final: bool
    read_cap_hash: CapabilityHash
    ttl: Annotated[int, msgspec.Meta(ge=60, le=366 * 86400)]


class BlobGet(Frame, tag="blob_get", frozen=True):
    """Anyone with the read capability: read a chunk of a finished blob."""

    req: RequestId
    blob: BlobId
    read_cap: Capability
    offset: Count
    length: Annotated[int, msgspec.Meta(ge=1, le=MAX_BLOB_CHUNK)]


class BlobData(Frame, tag="blob_data", frozen=True):
    req: RequestId
    data: BlobChunk
    size: Count


class BlobDelete(Frame, tag="blob_delete", frozen=True):
    req: RequestId
    blob: BlobId


# ----------------------------------------------------------------- misc


class Ping(Frame, tag="ping", frozen=True):
    req: RequestId


class Pong(Frame, tag="pong", frozen=True):
    req: RequestId


class Ok(Frame, tag="ok", frozen=True):
    req: RequestId


class Error(Frame, tag="error", frozen=True):
    """A typed error. ``req`` is None when it answers no particular request
    (then the relay closes the connection after sending it)."""

    req: RequestId | None
    code: str
    message: ShortText


class Bye(Frame, tag="bye", frozen=True):
    """Relay: going away (shutdown); reconnect later, possibly elsewhere."""

    code: str


ClientFrame = (
    Hello | Register | Auth | CapAdd | CapRevoke | Deposit | Ack | AccountDelete
    | PresenceQuery | PresenceSubscribe | PresenceSettings
    | BlobPut | BlobGet | BlobDelete | Ping
)
RelayFrame = (
    Welcome | Registered | DepositResult | Deliver | Synced | PresenceResult
    | PresenceUpdate | BlobData | Pong | Ok | Error | Bye
)
