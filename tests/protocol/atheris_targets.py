"""Coverage-guided fuzz targets for atheris (libFuzzer).

Each target takes the fuzzer's bytes and raises only on a bug (an exception
other than the documented ones, or a broken invariant):

- ``decoder``: :func:`decode_client_frame` and :func:`decode_relay_frame` either
  return a frame, which re-encodes and decodes to an equal frame, or raise
  :class:`RemoteProtocolError` with a valid code whose Error frame round-trips;
- ``relay``: a :class:`RelayProtocol` fed a conversation of arbitrary client
  messages, login verdicts and relay pushes raises only
  :class:`RemoteProtocolError` (receiving) and :class:`LocalProtocolError`
  (sending) and keeps the state table's invariants;
- ``client``: the same for :class:`ClientProtocol`, with genuine, impostor and
  forged Welcomes, requests and answers (``RelayIdentityError`` too);
- ``mailbox``: :func:`chatcli.relay.mailbox.plan_deposits` on structured inputs
  (``atheris.FuzzedDataProvider``) against a reference model and the quota.

The input formats are described in :mod:`tests.protocol.atheris_seeds`.
tests/protocol/test_atheris.py runs every target for a bounded number of runs
in the test suite. For a longer session, with a corpus kept between runs::

    mkdir -p /tmp/corpus-decoder
    .venv/bin/python -m tests.protocol.atheris_targets decoder /tmp/corpus-decoder \\
        -max_total_time=600 -max_len=4096

Any libFuzzer option may follow the target's name; a crash writes the input to
``crash-<sha1>`` (see ``-artifact_prefix``) and reproduces with
``python -m tests.protocol.atheris_targets decoder crash-<sha1>``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar, cast, get_args

import atheris

# Instrument chatcli (only: the libraries are not what is under test) so that
# libFuzzer is guided by the coverage of its branches. chatcli must not have
# been imported before this point.
with atheris.instrument_imports(include=["chatcli"]):
    from chatcli.crypto.errors import BadSignature, InvalidKey
    from chatcli.crypto.keys import MailboxKeyPair, RelayKeyPair, RelayPublicKey
    from chatcli.protocol import State, codes, frames, transcripts
    from chatcli.protocol._state import (
        ADMISSION,
        CLIENT_FRAME_KIND,
        FATAL_STATES,
        PUSH_STATES,
        Kind,
    )
    from chatcli.protocol.codec import (
        LocalProtocolError,
        RemoteProtocolError,
        decode_client_frame,
        decode_relay_frame,
        encode,
    )
    from chatcli.protocol.connection import ClientProtocol, RelayIdentityError, RelayProtocol
    from chatcli.relay.mailbox import DepositItem, Quota, payload_hash, plan_deposits
    from chatcli.relay.store.base import Usage

from tests.protocol.atheris_seeds import (
    CLIENT_ANSWERS,
    CLIENT_NONCE,
    CLIENT_REQUESTS,
    IMPOSTOR_SEED,
    MAILBOX_SEED,
    RELAY_CHALLENGE,
    RELAY_PUSHES,
    RELAY_SEED,
    TARGETS,
    split_records,
)

# A bug found here once (tests/protocol/test_fuzz_findings.py): the decoders
# let RecursionError out on a frame nested about a thousand levels deep. Fixed;
# set to True only to fuzz past such a bug again while it is being fixed.
TOLERATE_DEEP_NESTING = False
_CONTAINER_HEADERS = frozenset([*range(0x80, 0xA0), 0xDC, 0xDD, 0xDE, 0xDF])


def _known_deep_nesting(data: bytes) -> bool:
    return TOLERATE_DEEP_NESTING and sum(b in _CONTAINER_HEADERS for b in data) >= 500


_F = TypeVar("_F", bound=Callable[..., object])


def _instrumented(func: _F) -> _F:
    """atheris.instrument_func, typed: coverage of this module's own branches
    guides the fuzzer too (it is run as __main__, so instrument_imports misses it)."""
    return cast(_F, atheris.instrument_func(func))


CLIENT_TYPES: tuple[type, ...] = get_args(frames.ClientFrame)
RELAY_TYPES: tuple[type, ...] = get_args(frames.RelayFrame)

RELAY_KP = RelayKeyPair(RELAY_SEED)
IMPOSTOR_KP = RelayKeyPair(IMPOSTOR_SEED)
MAILBOX_KP = MailboxKeyPair(MAILBOX_SEED)
B16 = bytes(range(16))
B32 = bytes(range(32))
B64 = bytes(range(64))


@_instrumented
def _check_error(exc: RemoteProtocolError) -> None:
    """A RemoteProtocolError is well-formed and its Error frame can be sent."""
    assert exc.code in codes.ALL_CODES, exc.code
    assert isinstance(exc.fatal, bool)
    assert exc.req is None or 0 <= exc.req < 2**53
    assert exc.fatal or exc.req is not None
    error = exc.error_frame()
    assert (error.req is None) is exc.fatal
    assert len(error.message) <= frames.MAX_TEXT
    assert decode_relay_frame(encode(error)) == error


# ------------------------------------------------------------------ decoder


def _req(value: object) -> bool:
    return type(value) is int and 0 <= value < 2**53


def _sized(value: object, low: int, high: int) -> bool:
    return isinstance(value, bytes) and low <= len(value) <= high


def _listed(value: object, low: int, high: int) -> bool:
    return isinstance(value, list) and low <= len(value) <= high


def _entries_ok(entries: list[frames.PresenceEntry]) -> bool:
    return all(_sized(e.mailbox, 16, 16) and e.online in (None, True, False)
               and (e.last_seen is None or _req(e.last_seen)) for e in entries)


@_instrumented
def _check_frame(frame: frames.Frame) -> None:
    """The constraints that frames.py declares hold for a decoded frame. (Also
    one branch per frame type, so that libFuzzer tells the types apart: the
    decoding itself happens in msgspec's C code, which is not instrumented.)"""
    f: object = frame
    if isinstance(f, frames.Hello):
        ok = (_listed(f.versions, 1, 8) and all(type(v) is int and 1 <= v <= 255
                                                 for v in f.versions)
              and _sized(f.nonce, 32, 32))
    elif isinstance(f, frames.Welcome):
        ok = (type(f.version) is int and _sized(f.relay_key, 32, 32)
              and _sized(f.signature, 64, 64) and _sized(f.challenge, 32, 32)
              and _req(f.max_frame) and _req(f.max_payload))
    elif isinstance(f, frames.Register):
        ok = (_req(f.req) and _sized(f.auth_key, 32, 32) and _sized(f.signature, 64, 64)
              and (f.token is None or (isinstance(f.token, str)
                                       and len(f.token) <= frames.MAX_TEXT)))
    elif isinstance(f, frames.Registered):
        ok = _req(f.req) and _sized(f.mailbox, 16, 16)
    elif isinstance(f, frames.Auth):
        ok = _req(f.req) and _sized(f.mailbox, 16, 16) and _sized(f.signature, 64, 64)
    elif isinstance(f, frames.CapAdd | frames.CapRevoke):
        ok = (_req(f.req) and _listed(f.cap_hashes, 1, frames.MAX_BATCH)
              and all(_sized(h, 32, 32) for h in f.cap_hashes))
    elif isinstance(f, frames.Deposit):
        ok = (_req(f.req) and _listed(f.items, 1, frames.MAX_BATCH)
              and all(_sized(i.mailbox, 16, 16) and _sized(i.cap, 32, 32)
                      and _sized(i.payload, 1, frames.MAX_PAYLOAD_SIZE) for i in f.items))
    elif isinstance(f, frames.DepositResult):
        ok = _req(f.req) and all(e is None or isinstance(e, str) for e in f.errors)
    elif isinstance(f, frames.Deliver):
        ok = (_listed(f.messages, 1, frames.MAX_BATCH)
              and all(_req(m.id) and _sized(m.payload, 1, frames.MAX_PAYLOAD_SIZE)
                      and _req(m.received_at) for m in f.messages))
    elif isinstance(f, frames.Synced):
        ok = True
    elif isinstance(f, frames.Ack):
        ok = (_req(f.req) and _listed(f.ids, 1, frames.MAX_BATCH * 4)
              and all(_req(i) for i in f.ids))
    elif isinstance(f, frames.AccountDelete | frames.BlobDelete | frames.Ping | frames.Pong
                    | frames.Ok):
        ok = _req(f.req) and (not isinstance(f, frames.BlobDelete) or _sized(f.blob, 16, 16))
    elif isinstance(f, frames.PresenceQuery | frames.PresenceSubscribe):
        ok = (_req(f.req) and _listed(f.targets, 1, frames.MAX_BATCH)
              and all(_sized(t.mailbox, 16, 16) and _sized(t.cap, 32, 32) for t in f.targets))
    elif isinstance(f, frames.PresenceResult):
        ok = _req(f.req) and _entries_ok(f.entries)
    elif isinstance(f, frames.PresenceUpdate):
        ok = _entries_ok(f.entries)
    elif isinstance(f, frames.PresenceSettings):
        ok = _req(f.req) and f.hidden in (True, False)
    elif isinstance(f, frames.BlobPut):
        ok = (_req(f.req) and _sized(f.blob, 16, 16) and _req(f.offset)
              and _sized(f.data, 0, frames.MAX_BLOB_CHUNK) and f.final in (True, False)
              and _sized(f.read_cap_hash, 32, 32) and type(f.ttl) is int
              and 60 <= f.ttl <= 366 * 86400)
    elif isinstance(f, frames.BlobGet):
        ok = (_req(f.req) and _sized(f.blob, 16, 16) and _sized(f.read_cap, 32, 32)
              and _req(f.offset) and type(f.length) is int
              and 1 <= f.length <= frames.MAX_BLOB_CHUNK)
    elif isinstance(f, frames.BlobData):
        ok = _req(f.req) and _sized(f.data, 0, frames.MAX_BLOB_CHUNK) and _req(f.size)
    elif isinstance(f, frames.Error):
        ok = ((f.req is None or _req(f.req)) and isinstance(f.code, str)
              and isinstance(f.message, str) and len(f.message) <= frames.MAX_TEXT)
    elif isinstance(f, frames.Bye):
        ok = isinstance(f.code, str)
    else:
        raise AssertionError(f"unknown frame type {type(f).__name__}")
    assert ok, frame


@_instrumented
def _decode_one(decode: Callable[[bytes], frames.Frame], types: tuple[type, ...],
                data: bytes, *, relay: bool) -> None:
    try:
        frame = decode(data)
    except RemoteProtocolError as exc:
        _check_error(exc)
        if relay:  # a client cannot answer a relay's bad frame
            assert exc.fatal and exc.req is None
        return
    except RecursionError:
        if _known_deep_nesting(data):
            return
        raise
    assert isinstance(frame, types), type(frame)
    _check_frame(frame)
    again = encode(frame)
    assert decode(again) == frame
    assert encode(decode(again)) == again


@_instrumented
def decoder(data: bytes) -> None:
    _decode_one(decode_client_frame, CLIENT_TYPES, data, relay=False)
    _decode_one(decode_relay_frame, RELAY_TYPES, data, relay=True)
    # The size is checked before anything else.
    for decode in (decode_client_frame, decode_relay_frame):
        try:
            decode(data, max_size=len(data) - 1)
        except RemoteProtocolError as exc:
            assert exc.code == codes.FRAME_TOO_LARGE and exc.fatal
        else:
            raise AssertionError("a frame over the size limit was decoded")


# -------------------------------------------------------------------- relay


@_instrumented
def _relay_push(proto: RelayProtocol, name: str, req: int) -> None:
    entry = frames.PresenceEntry(mailbox=B16, online=True, last_seen=1)
    pushes: dict[str, frames.RelayFrame] = {
        "pong": frames.Pong(req=req),
        "ok": frames.Ok(req=req),
        "error": frames.Error(req=req, code=codes.BAD_REQUEST, message="no"),
        "fatal_error": frames.Error(req=None, code=codes.INTERNAL_ERROR, message="no"),
        "deliver": frames.Deliver(messages=[frames.Delivered(id=1, payload=b"x",
                                                             received_at=2)]),
        "synced": frames.Synced(),
        "presence_update": frames.PresenceUpdate(entries=[entry]),
        "bye": frames.Bye(code=codes.SHUTTING_DOWN),
        "deposit_result": frames.DepositResult(req=req, errors=[None]),
    }
    frame = pushes[name]
    before = proto.state
    allowed = PUSH_STATES.get(type(frame))
    try:
        data = proto.send(frame)
    except LocalProtocolError:
        assert ((before is State.CLOSED and not isinstance(frame, frames.Error))
                or (allowed is not None and before not in allowed)), (name, before)
        assert proto.state is before
        return
    assert before is not State.CLOSED or isinstance(frame, frames.Error)
    assert allowed is None or before in allowed
    assert decode_relay_frame(data) == frame
    if isinstance(frame, frames.Bye) or (isinstance(frame, frames.Error) and frame.req is None):
        assert proto.state is State.CLOSED
    else:
        assert proto.state is before


@_instrumented
def _relay_receive(proto: RelayProtocol, control: int, data: bytes) -> int | None:
    """Feed one message; return its request id, or None."""
    before = proto.state
    try:
        frame = proto.receive_data(data)
    except RemoteProtocolError as exc:
        _check_error(exc)
        if exc.fatal:
            assert proto.state is State.CLOSED
        else:
            assert proto.state is before and before not in FATAL_STATES
        answer = exc.error_frame()
        assert decode_relay_frame(proto.send(answer)) == answer  # always allowed
        assert (proto.state is State.CLOSED) is exc.fatal
        return exc.req
    assert before is not State.CLOSED
    assert len(data) <= proto.max_frame
    kind = CLIENT_FRAME_KIND[type(frame)]
    assert ADMISSION[(before, kind)] is None, (before, kind)
    assert decode_client_frame(encode(frame)) == frame
    verdict = control & 3
    if isinstance(frame, frames.Hello):
        assert before is State.CONNECTING
        assert proto.version in frames.SUPPORTED_VERSIONS and proto.version in frame.versions
        if verdict < 2:
            welcome = decode_relay_frame(proto.accept_hello())
            assert isinstance(welcome, frames.Welcome)
            assert proto.state is State.READY
            assert welcome.relay_key == RELAY_KP.public.raw
            assert welcome.max_frame == proto.max_frame
            RelayPublicKey.from_bytes(welcome.relay_key).verify(
                transcripts.relay_hello(welcome.relay_key, frame.nonce, welcome.challenge,
                                        welcome.version), welcome.signature)
        else:
            assert proto.state is State.CONNECTING
        return None
    if isinstance(frame, frames.Register | frames.Auth):
        assert (before, proto.state) == (State.READY, State.AUTHENTICATING)
        if verdict == 0:
            proto.login_failed()
            assert (proto.state, proto.mailbox) == (State.READY, None)
        elif verdict == 1:
            proto.login_succeeded(B16)
            assert (proto.state, proto.mailbox) == (State.AUTHENTICATED, B16)
        return frame.req
    assert proto.state is before
    assert before in (State.READY, State.AUTHENTICATING, State.AUTHENTICATED)
    if kind is Kind.OWNER:
        assert before is State.AUTHENTICATED
    if isinstance(frame, frames.Deposit):
        assert all(len(item.payload) <= proto.max_payload for item in frame.items)
    req: int = getattr(frame, "req")  # noqa: B009 - every non-Hello client frame has one
    return req


@_instrumented
def relay(data: bytes) -> None:
    proto = RelayProtocol(RELAY_KP.public.raw, RELAY_KP.sign, challenge=RELAY_CHALLENGE,
                          max_frame=2048, max_payload=512)
    for control, body in split_records(data):
        if control == 0xFF:
            proto.close()
            assert proto.state is State.CLOSED
            continue
        try:
            req = _relay_receive(proto, control, body)
        except RecursionError:
            if _known_deep_nesting(body):
                return
            raise
        push = RELAY_PUSHES[(control >> 2) % len(RELAY_PUSHES)]
        if push != "none":
            _relay_push(proto, push, req or 0)


# ------------------------------------------------------------------- client


def _welcome(key: RelayKeyPair, nonce: bytes) -> bytes:
    signature = key.sign(transcripts.relay_hello(key.public.raw, nonce, RELAY_CHALLENGE, 1))
    return encode(frames.Welcome(version=1, relay_key=key.public.raw, signature=signature,
                                 challenge=RELAY_CHALLENGE, max_frame=4096, max_payload=1024))


# Genuine, from an impostor key (validly signed by it), and with a bad signature.
WELCOMES = (_welcome(RELAY_KP, CLIENT_NONCE), _welcome(IMPOSTOR_KP, CLIENT_NONCE),
            _welcome(RELAY_KP, b"\x09" * 32))


@_instrumented
def _client_request(proto: ClientProtocol, body: bytes) -> None:
    name = CLIENT_REQUESTS[body[0] % len(CLIENT_REQUESTS)] if body else "ping"
    reuse = len(body) > 1 and body[1] & 1
    before, pending = proto.state, proto.pending_requests
    try:
        if name == "register":
            data = proto.register(MAILBOX_KP.auth_public, MAILBOX_KP.sign)
        elif name == "auth":
            data = proto.auth(B16, MAILBOX_KP.sign)
        else:
            req = 1 if reuse else proto.next_request_id()
            target = frames.PresenceTarget(mailbox=B16, cap=B32)
            requests: dict[str, frames.ClientFrame] = {
                "ping": frames.Ping(req=req),
                "deposit": frames.Deposit(req=req, items=[frames.DepositItem(
                    mailbox=B16, cap=B32, payload=body[2:] or b"x")]),
                "ack": frames.Ack(req=req, ids=[1, 2]),
                "account_delete": frames.AccountDelete(req=req),
                "cap_add": frames.CapAdd(req=req, cap_hashes=[B32]),
                "blob_get": frames.BlobGet(req=req, blob=B16, read_cap=B32, offset=0, length=1),
                "presence_subscribe": frames.PresenceSubscribe(req=req, targets=[target]),
                "presence_settings": frames.PresenceSettings(req=req, hidden=True),
            }
            data = proto.send(requests[name])
    except LocalProtocolError:
        assert proto.state is before and proto.pending_requests == pending
        return
    sent = decode_client_frame(data)
    assert proto.pending_requests == pending + 1
    if isinstance(sent, frames.Register | frames.Auth):
        assert before is State.READY and proto.state is State.AUTHENTICATING
    else:
        assert ADMISSION[(before, CLIENT_FRAME_KIND[type(sent)])] is None
        assert proto.state is before


def _client_answer(body: bytes) -> bytes:
    name = CLIENT_ANSWERS[body[0] % len(CLIENT_ANSWERS)] if body else "ok"
    req = body[1] if len(body) > 1 else 0
    entry = frames.PresenceEntry(mailbox=B16, online=False, last_seen=None)
    frame: frames.Frame = {
        "registered": frames.Registered(req=req, mailbox=B16),
        "ok": frames.Ok(req=req),
        "pong": frames.Pong(req=req),
        "deposit_result": frames.DepositResult(req=req, errors=[codes.BAD_CAPABILITY]),
        "error": frames.Error(req=req, code=codes.AUTH_FAILED, message="no"),
        "blob_data": frames.BlobData(req=req, data=b"", size=0),
        "presence_result": frames.PresenceResult(req=req, entries=[entry]),
        "deliver": frames.Deliver(messages=[frames.Delivered(id=req, payload=b"x",
                                                             received_at=0)]),
        "synced": frames.Synced(),
        "presence_update": frames.PresenceUpdate(entries=[entry]),
        "bye": frames.Bye(code=codes.TRY_AGAIN),
        "fatal_error": frames.Error(req=None, code=codes.SLOW_CONSUMER, message="bye"),
    }[name]
    return encode(frame)


# (before, after) state pairs a received frame may cause, besides staying put.
CLIENT_MOVES = frozenset({
    (State.CONNECTING, State.READY),
    (State.AUTHENTICATING, State.AUTHENTICATED),
    (State.AUTHENTICATING, State.READY),
    *((state, State.CLOSED) for state in State),
})


def _welcome_verdict(frame: frames.Welcome, mode: int) -> str:
    """What verifying a Welcome must give: "ok", "version" or "identity"."""
    if frame.version != 1:
        return "version"
    if mode != 2 and frame.relay_key != RELAY_KP.public.raw:
        return "identity"
    try:
        RelayPublicKey.from_bytes(frame.relay_key).verify(
            transcripts.relay_hello(frame.relay_key, CLIENT_NONCE, frame.challenge, 1),
            frame.signature)
    except (BadSignature, InvalidKey):
        return "identity"
    return "ok"


@_instrumented
def _client_receive(proto: ClientProtocol, data: bytes, mode: int) -> None:
    before, pending = proto.state, proto.pending_requests
    expect = None  # for a Welcome in CONNECTING: the verification's outcome
    if before is State.CONNECTING:
        try:
            decoded: frames.Frame | None = decode_relay_frame(data)
        except (RemoteProtocolError, RecursionError):
            decoded = None
        if isinstance(decoded, frames.Welcome):
            expect = _welcome_verdict(decoded, mode)
    try:
        received = proto.receive_data(data)
    except RemoteProtocolError as exc:
        _check_error(exc)
        assert exc.fatal and proto.state is State.CLOSED
        assert expect in (None, "version"), expect
        assert expect is None or exc.code == codes.UNSUPPORTED_VERSION
        return
    except RelayIdentityError:
        assert expect == "identity"
        assert proto.state is State.CLOSED
        return
    assert expect in (None, "ok"), expect
    assert before is not State.CLOSED
    (frame,) = received
    assert decode_relay_frame(data) == frame
    after = proto.state
    assert after is before or (before, after) in CLIENT_MOVES, (before, after)
    assert proto.pending_requests in (pending, pending - 1)
    if isinstance(frame, frames.Welcome):
        assert (before, after) == (State.CONNECTING, State.READY) and expect == "ok"
        assert proto.relay_key == frame.relay_key and proto.challenge == frame.challenge
        assert proto.max_frame == min(frame.max_frame, 4096)
    elif isinstance(frame, frames.Bye) or (isinstance(frame, frames.Error) and frame.req is None):
        assert after is State.CLOSED
    elif isinstance(frame, frames.Deliver | frames.Synced):
        assert before is State.AUTHENTICATED and after is before
    if after is State.AUTHENTICATED and before is State.AUTHENTICATING:
        assert proto.mailbox is not None


@_instrumented
def client(data: bytes) -> None:
    if not data:
        return
    mode = data[0] % 3
    proto = ClientProtocol(relay_key=RELAY_KP.public.raw if mode == 0 else None,
                           fingerprint=RELAY_KP.fingerprint() if mode == 1 else None,
                           nonce=CLIENT_NONCE, max_frame=4096)
    assert proto.trust_on_first_use is (mode == 2)
    proto.start()
    for control, body in split_records(data[1:]):
        action = control % 4
        if action == 2:
            _client_request(proto, body)
            continue
        if action == 0:
            message = body
        elif action == 1:
            message = WELCOMES[body[0] % 3 if body else 0]
        else:
            message = _client_answer(body)
        try:
            _client_receive(proto, message, mode)
        except RecursionError:
            if _known_deep_nesting(message):
                return
            raise


# ------------------------------------------------------------------ mailbox


@_instrumented
def mailbox(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    boxes = [bytes([i]) * 16 for i in range(4)]
    caps = [bytes([i]) * 32 for i in range(3)]
    usage = {box: Usage(fdp.ConsumeIntInRange(0, 6), fdp.ConsumeIntInRange(0, 60))
             for box in boxes if fdp.ConsumeBool()}
    valid = {(box, cap) for box in boxes for cap in caps if fdp.ConsumeBool()}
    quota = Quota(fdp.ConsumeIntInRange(0, 5), fdp.ConsumeIntInRange(0, 50))
    items = [DepositItem(fdp.PickValueInList(boxes), fdp.PickValueInList(caps),
                         fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 20)))
             for _ in range(fdp.ConsumeIntInRange(0, 12))]
    refused: list[str | None] | None = None
    if fdp.ConsumeBool():
        refused = [fdp.PickValueInList([None, None, codes.RATE_LIMITED, codes.QUOTA_EXCEEDED])
                   for _ in items]
    # One-shot capabilities: some valid ones, and some used already, each by
    # one of the items' payloads or by an unknown deposit.
    one_shot = {pair for pair in valid if fdp.ConsumeBool()}
    used: dict[tuple[bytes, bytes], bytes | None] = {}
    for box in boxes:
        for cap in caps:
            if (box, cap) not in valid and fdp.ConsumeIntInRange(0, 3) == 0:
                used[(box, cap)] = (payload_hash(fdp.PickValueInList(items).payload)
                                    if items and fdp.ConsumeBool() else None)
    usage_before = dict(usage)

    plan = plan_deposits(items, valid, usage, quota, refused, one_shot=one_shot, used=used)

    assert usage == usage_before  # the caller's usage is not changed
    # A reference model: each item in order, quota counted over accepted items;
    # a one-shot pair is spent by its first accepted deposit, whose payload
    # is then answered as stored (a repeat) and any other refused.
    counts = {box: [u.messages, u.bytes] for box, u in usage.items()}
    spent = dict(used)
    expected: list[str | None] = []
    repeats: list[int] = []
    for index, item in enumerate(items):
        count = counts.get(item.mailbox)
        pair = (item.mailbox, item.cap_hash)
        if refused is not None and refused[index] is not None:
            expected.append(refused[index])
        elif count is None:
            expected.append(codes.UNKNOWN_MAILBOX)
        elif pair in spent:
            if spent[pair] is not None and spent[pair] == payload_hash(item.payload):
                expected.append(None)
                repeats.append(index)
            else:
                expected.append(codes.CAPABILITY_USED)
        elif pair not in valid:
            expected.append(codes.BAD_CAPABILITY)
        elif (count[0] + 1 > quota.max_messages
              or count[1] + len(item.payload) > quota.max_bytes):
            expected.append(codes.QUOTA_EXCEEDED)
        else:
            count[0] += 1
            count[1] += len(item.payload)
            expected.append(None)
            if pair in one_shot:
                spent[pair] = payload_hash(item.payload)
    assert plan.errors == expected, (plan.errors, expected)
    assert plan.repeated == repeats, (plan.repeated, repeats)
    assert plan.accepted == [i for i, error in enumerate(expected)
                             if error is None and i not in repeats]
    # At most one stored deposit per one-shot pair, none on a used one.
    stored_pairs = [(items[i].mailbox, items[i].cap_hash) for i in plan.accepted]
    assert not set(stored_pairs) & set(used)
    assert all(stored_pairs.count(pair) <= 1 for pair in one_shot)
    assert all(error is None or error in codes.ALL_CODES for error in plan.errors)
    # Accepted deposits never take a mailbox over its quota.
    for box, used in usage.items():
        taken = [items[i] for i in plan.accepted if items[i].mailbox == box]
        if taken:
            assert used.messages + len(taken) <= quota.max_messages
            assert used.bytes + sum(len(item.payload) for item in taken) <= quota.max_bytes


TARGET_FUNCTIONS: dict[str, Callable[[bytes], None]] = {
    "decoder": decoder, "relay": relay, "client": client, "mailbox": mailbox,
}
assert tuple(TARGET_FUNCTIONS) == TARGETS


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] not in TARGET_FUNCTIONS:
        print(f"usage: python -m tests.protocol.atheris_targets {{{','.join(TARGETS)}}} "
              "[libFuzzer options] [corpus directories or inputs]", file=sys.stderr)
        return 2
    atheris.Setup([argv[0], *argv[2:]], TARGET_FUNCTIONS[argv[1]])
    atheris.Fuzz()  # exits the process
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
