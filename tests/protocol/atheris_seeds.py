"""Input formats and seed corpora of the atheris fuzz targets.

The targets live in :mod:`tests.protocol.atheris_targets`, which needs atheris
and must import :mod:`chatcli` itself (under instrumentation); this module
needs neither, so that pytest can write the seed corpora without importing the
targets. Seeds are valid frames of every type and valid conversations, so the
fuzzer starts from messages the decoder accepts and mutates from there.

Conversation inputs (targets ``relay`` and ``client``) are a sequence of
records: one control byte, a 2-byte big-endian body length, then the body (a
truncated last record takes what is left).
"""

from __future__ import annotations

from chatcli.protocol import codes, frames
from chatcli.protocol.codec import encode

__all__ = [
    "CLIENT_ANSWERS",
    "CLIENT_NONCE",
    "CLIENT_REQUESTS",
    "RELAY_CHALLENGE",
    "RELAY_PUSHES",
    "RELAY_SEED",
    "TARGETS",
    "record",
    "seeds",
    "split_records",
]

TARGETS = ("decoder", "relay", "client", "mailbox")

# Fixed keys and nonces: a crash found by the fuzzer reproduces from its input alone.
RELAY_SEED = bytes(range(32))
IMPOSTOR_SEED = bytes(range(32, 64))
MAILBOX_SEED = bytes(range(64, 96))
CLIENT_NONCE = b"\x01" * 32
RELAY_CHALLENGE = b"\x02" * 32

# Relay target: control byte = (push << 2) | verdict.
#   verdict 0: refuse a login (login_failed); 1: accept it (login_succeeded);
#   2, 3: leave it pending; for a Hello, 2 and 3 leave it unanswered.
#   push > 0: afterwards the relay sends RELAY_PUSHES[push % len(RELAY_PUSHES)];
#   control 0xFF: the relay closes the connection.
RELAY_PUSHES = ("none", "pong", "ok", "error", "fatal_error", "deliver", "synced",
                "presence_update", "bye", "deposit_result")

# Client target: first byte chooses how the relay key is known (0 key, 1
# fingerprint, 2 trust on first use); then records with action = control % 4:
#   0: the body is a message from the relay;
#   1: a Welcome (body[0] % 3: 0 genuine, 1 from an impostor key, 2 bad signature);
#   2: the client sends CLIENT_REQUESTS[body[0] % len], reusing request id 1
#      when body[1] is odd;
#   3: the relay answers CLIENT_ANSWERS[body[0] % len] with request id body[1].
CLIENT_REQUESTS = ("register", "auth", "ping", "deposit", "ack", "account_delete",
                   "cap_add", "blob_get", "presence_subscribe", "presence_settings")
CLIENT_ANSWERS = ("registered", "ok", "pong", "deposit_result", "error", "blob_data",
                  "presence_result", "deliver", "synced", "presence_update", "bye",
                  "fatal_error")


def record(control: int, body: bytes = b"") -> bytes:
    """One record of a conversation input."""
    return bytes([control]) + len(body).to_bytes(2, "big") + body


def split_records(data: bytes) -> list[tuple[int, bytes]]:
    """The records of a conversation input."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        control = data[pos]
        length = int.from_bytes(data[pos + 1:pos + 3], "big")
        body = data[pos + 3:pos + 3 + length]
        out.append((control, body))
        pos += 3 + length
    return out


B16 = bytes(range(16))
B32 = bytes(range(32))
B64 = bytes(range(64))


def client_frames() -> list[frames.Frame]:
    """One valid frame of every client type (two for optional fields)."""
    return [
        frames.Hello(versions=[1], nonce=CLIENT_NONCE),
        frames.Register(req=1, auth_key=B32, signature=B64),
        frames.Register(req=2, auth_key=B32, signature=B64, token="chatcli-rt-abc"),
        frames.Auth(req=3, mailbox=B16, signature=B64),
        frames.CapAdd(req=4, cap_hashes=[B32, B32]),
        frames.CapRevoke(req=5, cap_hashes=[B32]),
        frames.Deposit(req=6, items=[frames.DepositItem(mailbox=B16, cap=B32, payload=b"sealed"),
                                     frames.DepositItem(mailbox=B16, cap=B32, payload=b"x")]),
        frames.Ack(req=7, ids=[1, 2, 2**40]),
        frames.AccountDelete(req=8),
        frames.PresenceQuery(req=9, targets=[frames.PresenceTarget(mailbox=B16, cap=B32)]),
        frames.PresenceSubscribe(req=10, targets=[frames.PresenceTarget(mailbox=B16, cap=B32)]),
        frames.PresenceSettings(req=11, hidden=True),
        frames.BlobPut(req=12, blob=B16, offset=0, data=b"chunk", final=True,
                       read_cap_hash=B32, ttl=3600),
        frames.BlobGet(req=13, blob=B16, read_cap=B32, offset=0, length=1024),
        frames.BlobDelete(req=14, blob=B16),
        frames.Ping(req=15),
    ]


def relay_frames() -> list[frames.Frame]:
    """One valid frame of every relay type."""
    entry = frames.PresenceEntry(mailbox=B16, online=True, last_seen=1_700_000_000_000)
    hidden = frames.PresenceEntry(mailbox=B16, online=None, last_seen=None)
    return [
        frames.Welcome(version=1, relay_key=B32, signature=B64, challenge=RELAY_CHALLENGE,
                       max_frame=frames.MAX_FRAME_SIZE, max_payload=frames.MAX_PAYLOAD_SIZE),
        frames.Registered(req=1, mailbox=B16),
        frames.DepositResult(req=2, errors=[None, codes.QUOTA_EXCEEDED]),
        frames.Deliver(messages=[frames.Delivered(id=1, payload=b"sealed", received_at=5)]),
        frames.Synced(),
        frames.PresenceResult(req=3, entries=[entry, hidden]),
        frames.PresenceUpdate(entries=[entry]),
        frames.BlobData(req=4, data=b"chunk", size=5),
        frames.Pong(req=5),
        frames.Ok(req=6),
        frames.Error(req=7, code=codes.NOT_AUTHENTICATED, message="Log in first."),
        frames.Error(req=None, code=codes.BAD_FRAME, message="Invalid frame."),
        frames.Bye(code=codes.SHUTTING_DOWN),
    ]


def _relay_conversations() -> list[bytes]:
    hello = encode(frames.Hello(versions=[1], nonce=CLIENT_NONCE))
    register = encode(frames.Register(req=1, auth_key=B32, signature=B64))
    auth = encode(frames.Auth(req=2, mailbox=B16, signature=B64))
    owner = [encode(f) for f in client_frames() if not isinstance(
        f, frames.Hello | frames.Register | frames.Auth | frames.AccountDelete)]
    everything = [encode(f) for f in client_frames()]
    item = frames.DepositItem(mailbox=B16, cap=B32, payload=b"p" * 600)
    big_payload = encode(frames.Deposit(req=3, items=[item]))
    big_frame = encode(frames.Deposit(req=4, items=[item] * 4))
    # Pushes that leave the connection open, in turn.
    pushes = [RELAY_PUSHES.index(name) for name in RELAY_PUSHES
              if name not in ("none", "fatal_error", "bye")]
    return [
        # Hello, a refused Register, an accepted Auth, then every owner request
        # with the relay pushing a frame after each, then a Bye.
        record(1, hello) + record(0, register) + record(1, auth)
        + b"".join(record(pushes[i % len(pushes)] << 2, data) for i, data in enumerate(owner))
        + record(RELAY_PUSHES.index("bye") << 2, encode(frames.AccountDelete(req=99))),
        # Every frame before the handshake (the first closes the connection).
        b"".join(record(0, data) for data in everything),
        # Hello left unanswered, then a second Hello.
        record(2, hello) + record(2, hello),
        # Requests while a login is pending, then a second Hello (fatal), then
        # a frame on the closed connection.
        record(1, hello) + record(2, register)
        + b"".join(record(0, data) for data in everything[1:]) + record(0, hello)
        + record(0xFF) + record(0, register),
        # An unanswered Hello, then a relay that closes with a fatal Error.
        record(2, hello) + record(RELAY_PUSHES.index("fatal_error") << 2, register),
        # The target's relay takes frames up to 2048 bytes and payloads up to
        # 512: a payload over the limit (refused, the connection goes on), then
        # a frame over the limit (fatal).
        record(1, hello) + record(0, big_payload) + record(0, register)
        + record(0, big_frame),
    ]


def _client_conversations() -> list[bytes]:
    welcome, impostor, forged = record(1, b"\x00"), record(1, b"\x01"), record(1, b"\x02")
    answers = [encode(f) for f in relay_frames() if not isinstance(f, frames.Welcome)]
    # Request ids start at 1 and go up by one per request sent.
    login = record(2, b"\x00\x00") + record(0, encode(frames.Registered(req=1, mailbox=B16)))
    return [
        b"\x00" + welcome + login + record(2, b"\x02\x00")
        + record(0, encode(frames.Pong(req=2)))
        + record(0, encode(frames.Deliver(messages=[frames.Delivered(
            id=1, payload=b"sealed", received_at=5)])))
        + record(0, encode(frames.Synced()))
        + record(2, b"\x03\x00") + record(3, b"\x03\x03")
        + record(2, b"\x05\x00") + record(3, b"\x01\x04"),
        b"\x01" + welcome + record(2, b"\x01\x00") + record(3, b"\x04\x01")
        + record(2, b"\x02\x01") + record(2, b"\x07\x00") + record(3, b"\x05\x03"),
        b"\x02" + impostor + welcome,
        b"\x00" + impostor,
        b"\x01" + forged,
        b"\x02" + b"".join(record(0, data) for data in answers),
        b"\x02" + welcome + b"".join(record(0, data) for data in answers),
        b"\x00" + welcome + b"".join(record(3, bytes([i, 1]))
                                     for i in range(len(CLIENT_ANSWERS))),
    ]


def _mailbox_inputs() -> list[bytes]:
    # Structured by atheris.FuzzedDataProvider: any bytes are a valid input.
    return [bytes(range(256)), b"\x00" * 64, b"\xff" * 64, bytes(range(0, 256, 3)) * 2]


def seeds(target: str) -> list[bytes]:
    """The seed corpus of a target."""
    if target == "decoder":
        return [encode(f) for f in client_frames() + relay_frames()]
    if target == "relay":
        return _relay_conversations()
    if target == "client":
        return _client_conversations()
    if target == "mailbox":
        return _mailbox_inputs()
    raise ValueError(f"unknown fuzz target {target!r}")
