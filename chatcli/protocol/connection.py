"""Sans-I/O connection objects for both ends of a relay connection.

Three verbs, as in h11: feed the bytes of one received WebSocket message to
``receive_data``, which returns frames (or raises a typed error); turn a frame
into the bytes to send with ``send``; and look at ``state``. Nothing here
touches a socket, a clock or a thread. The state tables are in
:mod:`chatcli.protocol._state`.

Client::

    proto = ClientProtocol(fingerprint=address.fingerprint)
    ws.send(proto.start())                        # Hello
    proto.receive_data(ws.receive())              # [Welcome], verified
    ws.send(proto.auth(mailbox, mailbox_key.sign))
    for frame in proto.receive_data(ws.receive()): ...   # Ok -> AUTHENTICATED

Relay::

    proto = RelayProtocol(relay_key.public.raw, relay_key.sign)
    hello = proto.receive_data(message)           # must be Hello
    ws.send(proto.accept_hello())                 # Welcome, signed
    frame = proto.receive_data(message)           # admitted by state, else RemoteProtocolError
    ...                                           # Register/Auth: check, then
    proto.login_succeeded(mailbox)                # or proto.login_failed()
    ws.send(proto.send(answer))
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable

from chatcli.crypto.errors import BadSignature, InvalidKey
from chatcli.crypto.keys import RelayPublicKey, relay_fingerprint
from chatcli.errors import ProtocolError
from chatcli.protocol import codes, frames, transcripts
from chatcli.protocol._state import (
    ADMISSION,
    CLIENT_FRAME_KIND,
    FATAL_STATES,
    PUSH_STATES,
    RESPONSE,
    TRANSITIONS,
    Event,
    Kind,
    State,
)
from chatcli.protocol.codec import (
    LocalProtocolError,
    RemoteProtocolError,
    decode_client_frame,
    decode_relay_frame,
    encode,
)
from chatcli.protocol.frames import ClientFrame, RelayFrame

__all__ = [
    "ClientProtocol",
    "RelayIdentityError",
    "RelayProtocol",
    "Signer",
    "State",
    "negotiate_version",
]

Signer = Callable[[bytes], bytes]
"""A function returning a detached 64-byte Ed25519 signature over its input."""


class RelayIdentityError(ProtocolError):
    """The relay did not prove that it holds the expected key: either its key
    is not the one the address's fingerprint names, or its signature is bad.
    **Treat as an attack or a misconfiguration: do not retry silently.**"""


def negotiate_version(offered: list[int], supported: tuple[int, ...] =
                      frames.SUPPORTED_VERSIONS) -> int | None:
    """The highest version both sides speak, or None."""
    common = set(offered) & set(supported)
    return max(common) if common else None


def _transition(state: State, event: Event) -> State:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise LocalProtocolError(
            f"Event {event.value} is not allowed in state {state.value}.") from None


_ANONYMOUS_ONLY_WHY = ("deposits and presence go on a connection that never logs in; "
                       "owners log in on another")


class _Role:
    """Which of the two kinds of connection this one became (sealed sender).

    A connection that sent Register or Auth (even a failed one: it named a
    mailbox) is an owner's and never carries a deposit or a presence query; one
    that deposited or watched presence is anonymous and never logs in. The
    state table refuses anonymous frames while logged in; this remembers the
    rest for the life of the connection."""

    __slots__ = ("anonymous", "owner")

    def __init__(self) -> None:
        self.owner = False
        self.anonymous = False

    def refusal(self, kind: Kind) -> str | None:
        if kind is Kind.ANONYMOUS and self.owner:
            return codes.ANONYMOUS_ONLY
        if kind is Kind.LOGIN and self.anonymous:
            return codes.ANONYMOUS_ONLY
        return None

    def admit(self, kind: Kind) -> None:
        if kind is Kind.LOGIN:
            self.owner = True
        elif kind is Kind.ANONYMOUS:
            self.anonymous = True


class RelayProtocol:
    """The relay's end of one connection.

    ``receive_data`` decodes a client frame and admits it by the connection's
    state; a refused or malformed frame raises :class:`RemoteProtocolError`,
    whose ``error_frame()`` is the answer and whose ``fatal`` says whether to
    close afterwards. Register and Auth move the connection to AUTHENTICATING:
    the relay checks them (it needs its store) and reports the outcome with
    :meth:`login_succeeded` or :meth:`login_failed`.
    """

    __slots__ = (
        "_nonce",
        "_role",
        "_sign",
        "_state",
        "challenge",
        "mailbox",
        "max_blob",
        "max_frame",
        "max_payload",
        "relay_key",
        "version",
    )

    def __init__(self, relay_key: bytes, sign: Signer, *, challenge: bytes | None = None,
                 max_frame: int = frames.MAX_FRAME_SIZE,
                 max_payload: int = frames.MAX_PAYLOAD_SIZE,
                 max_blob: int | None = None) -> None:
        if len(relay_key) != 32:
            raise ValueError("relay_key must be 32 bytes")
        self.relay_key = relay_key
        self._sign = sign
        self.challenge = challenge if challenge is not None else os.urandom(32)
        if len(self.challenge) != 32:
            raise ValueError("challenge must be 32 bytes")
        self.max_frame = max_frame
        self.max_payload = max_payload
        self.max_blob = max_blob
        self._state = State.CONNECTING
        self.version: int | None = None
        self.mailbox: bytes | None = None
        self._nonce: bytes | None = None
        self._role = _Role()

    @property
    def state(self) -> State:
        return self._state

    # ------------------------------------------------------------ receiving

    def receive_data(self, data: bytes) -> ClientFrame:
        """Decode and admit one client frame; raise :class:`RemoteProtocolError`."""
        if self._state is State.CLOSED:
            raise RemoteProtocolError("The connection is closed.", code=codes.UNEXPECTED_FRAME)
        try:
            frame = decode_client_frame(data, max_size=self.max_frame)
        except RemoteProtocolError as exc:
            if exc.fatal or self._state is State.CONNECTING:
                exc.fatal = True
                self._state = State.CLOSED
            raise
        kind = CLIENT_FRAME_KIND[type(frame)]
        refusal = ADMISSION[(self._state, kind)]
        if kind is Kind.HELLO and refusal is None and self._nonce is not None:
            refusal = codes.UNEXPECTED_FRAME  # a second Hello before Welcome
        if refusal is None:
            refusal = self._role.refusal(kind)
        req: int | None = getattr(frame, "req", None)
        if refusal is not None:
            fatal = req is None or self._state in FATAL_STATES
            if fatal:
                self._state = State.CLOSED
            why = (_ANONYMOUS_ONLY_WHY if refusal == codes.ANONYMOUS_ONLY
                   else f"connection {self._state.value}")
            raise RemoteProtocolError(
                f"A {type(frame).__name__} frame is not allowed now ({why}).",
                code=refusal, req=req, fatal=fatal)
        if isinstance(frame, frames.Hello):
            version = negotiate_version(frame.versions)
            if version is None:
                self._state = State.CLOSED
                raise RemoteProtocolError(
                    f"No common protocol version; this relay speaks "
                    f"{', '.join(map(str, frames.SUPPORTED_VERSIONS))}.",
                    code=codes.UNSUPPORTED_VERSION)
            self.version = version
            self._nonce = frame.nonce
            return frame
        self._role.admit(kind)
        if isinstance(frame, frames.Register | frames.Auth):
            self._state = _transition(self._state, Event.LOGIN_SENT)
        elif isinstance(frame, frames.Deposit):
            for item in frame.items:
                if len(item.payload) > self.max_payload:
                    raise RemoteProtocolError(
                        f"A deposit payload is {len(item.payload)} bytes; the limit is "
                        f"{self.max_payload}.", code=codes.FRAME_TOO_LARGE, req=frame.req)
        return frame

    # --------------------------------------------------------- handshake

    def accept_hello(self) -> bytes:
        """The Welcome answering the received Hello; the connection is READY."""
        if self._state is not State.CONNECTING or self._nonce is None or self.version is None:
            raise LocalProtocolError("accept_hello() needs a received Hello.")
        signature = self._sign(transcripts.relay_hello(self.relay_key, self._nonce,
                                                       self.challenge, self.version))
        welcome = frames.Welcome(version=self.version, relay_key=self.relay_key,
                                 signature=signature, challenge=self.challenge,
                                 max_frame=self.max_frame, max_payload=self.max_payload,
                                 max_blob=self.max_blob)
        self._nonce = None
        self._state = _transition(self._state, Event.HANDSHAKE_DONE)
        return encode(welcome)

    def register_transcript(self, auth_key: bytes) -> bytes:
        """The bytes a Register's signature must cover on this connection."""
        return transcripts.register(self.relay_key, self.challenge, auth_key)

    def auth_transcript(self, mailbox: bytes, installation: bytes | None = None,
                        supersede: bool = False) -> bytes:
        """The bytes an Auth's signature must cover on this connection."""
        return transcripts.auth(self.relay_key, self.challenge, mailbox, installation,
                                supersede and installation is not None)

    def login_succeeded(self, mailbox: bytes) -> None:
        """The pending Register/Auth was accepted: the connection owns ``mailbox``."""
        self._state = _transition(self._state, Event.LOGIN_OK)
        self.mailbox = mailbox

    def login_failed(self) -> None:
        """The pending Register/Auth was refused: back to READY."""
        self._state = _transition(self._state, Event.LOGIN_FAILED)

    def close(self) -> None:
        """Nothing more is accepted or sent (after a fatal error or account deletion)."""
        self._state = State.CLOSED

    # ------------------------------------------------------------ sending

    def send(self, frame: RelayFrame) -> bytes:
        """Encode a relay frame, checking that it may be sent now. In CLOSED
        only an Error may still be sent: the answer to the fatal error."""
        if self._state is State.CLOSED and not isinstance(frame, frames.Error):
            raise LocalProtocolError("The connection is closed.")
        allowed = PUSH_STATES.get(type(frame))
        if allowed is not None and self._state not in allowed:
            raise LocalProtocolError(
                f"A {type(frame).__name__} frame cannot be sent in state {self._state.value}.")
        if isinstance(frame, frames.Welcome):
            raise LocalProtocolError("Use accept_hello() to send Welcome.")
        data = encode(frame)
        if isinstance(frame, frames.Bye) or (isinstance(frame, frames.Error)
                                             and frame.req is None):
            self._state = State.CLOSED
        return data


class ClientProtocol:
    """The client's end of one connection.

    Give the relay's key or fingerprint (from the relay address) to have
    Welcome verified against it; with neither, the key is accepted on first
    use (``trust_on_first_use`` is True and ``relay_key`` is what to pin: the
    caller warns the user). Requests take ids from :meth:`next_request_id`;
    answers are matched to requests, and an answer to nothing is an error.
    """

    def __init__(self, *, relay_key: bytes | None = None, fingerprint: str | None = None,
                 versions: tuple[int, ...] = frames.SUPPORTED_VERSIONS,
                 nonce: bytes | None = None,
                 max_frame: int = frames.MAX_FRAME_SIZE) -> None:
        if relay_key is not None and len(relay_key) != 32:
            raise ValueError("relay_key must be 32 bytes")
        self._expected_key = relay_key
        self._expected_fingerprint = fingerprint.lower() if fingerprint else None
        self.trust_on_first_use = relay_key is None and fingerprint is None
        self._versions = versions
        self._nonce = nonce if nonce is not None else os.urandom(32)
        if len(self._nonce) != 32:
            raise ValueError("nonce must be 32 bytes")
        self._max_frame = max_frame
        self._state = State.CONNECTING
        self._started = False
        self._next_req = 1
        self._pending: dict[int, type[frames.Frame]] = {}
        self._login_req: int | None = None
        self._login_mailbox: bytes | None = None
        self._role = _Role()
        self.relay_key: bytes | None = None
        self.challenge: bytes | None = None
        self.version: int | None = None
        self.max_frame: int | None = None
        self.max_payload: int | None = None
        self.max_blob: int | None = None  # None: the relay does not announce it
        self.mailbox: bytes | None = None

    @property
    def state(self) -> State:
        return self._state

    @property
    def pending_requests(self) -> int:
        """How many requests await an answer."""
        return len(self._pending)

    def next_request_id(self) -> int:
        """A fresh request id for this connection."""
        req = self._next_req
        self._next_req += 1
        return req

    def start(self) -> bytes:
        """The Hello that opens the connection."""
        if self._started:
            raise LocalProtocolError("start() was already called.")
        self._started = True
        return encode(frames.Hello(versions=list(self._versions), nonce=self._nonce))

    # ------------------------------------------------------------ requests

    def register(self, auth_key: bytes, sign: Signer, token: str | None = None) -> bytes:
        """A Register for a new mailbox with ``auth_key``, signed by ``sign``."""
        challenge = self._require_challenge()
        assert self.relay_key is not None
        signature = sign(transcripts.register(self.relay_key, challenge, auth_key))
        return self.send(frames.Register(req=self.next_request_id(), auth_key=auth_key,
                                         signature=signature, token=token))

    def auth(self, mailbox: bytes, sign: Signer, *, installation: bytes | None = None,
             supersede: bool = False) -> bytes:
        """An Auth proving ownership of ``mailbox``, signed by ``sign``, for
        ``installation`` (taking the mailbox over with ``supersede``)."""
        challenge = self._require_challenge()
        assert self.relay_key is not None
        signature = sign(transcripts.auth(self.relay_key, challenge, mailbox, installation,
                                          supersede))
        return self.send(frames.Auth(req=self.next_request_id(), mailbox=mailbox,
                                     signature=signature, installation=installation,
                                     supersede=supersede))

    def _require_challenge(self) -> bytes:
        if self.challenge is None:
            raise LocalProtocolError("The handshake is not finished.")
        return self.challenge

    def send(self, frame: ClientFrame) -> bytes:
        """Encode a request, checking that it may be sent now."""
        kind = CLIENT_FRAME_KIND[type(frame)]
        if kind is Kind.HELLO:
            raise LocalProtocolError("Use start() to send Hello.")
        refusal = ADMISSION[(self._state, kind)] or self._role.refusal(kind)
        if refusal is not None:
            raise LocalProtocolError(
                f"A {type(frame).__name__} frame cannot be sent in state {self._state.value}"
                f" ({refusal}).")
        req: int = getattr(frame, "req")  # noqa: B009 - every non-Hello client frame has one
        if req in self._pending:
            raise LocalProtocolError(f"Request id {req} is already in use.")
        data = encode(frame)
        if len(data) > (self.max_frame or self._max_frame):
            raise LocalProtocolError(f"The frame is {len(data)} bytes, over the relay's limit.")
        self._role.admit(kind)
        if kind is Kind.LOGIN:
            self._state = _transition(self._state, Event.LOGIN_SENT)
            self._login_req = req
            self._login_mailbox = frame.mailbox if isinstance(frame, frames.Auth) else None
        self._pending[req] = type(frame)
        return data

    # ------------------------------------------------------------ receiving

    def receive_data(self, data: bytes) -> list[RelayFrame]:
        """Decode one relay message: the frames it carries, checked against the
        connection's state and the pending requests."""
        if self._state is State.CLOSED:
            raise RemoteProtocolError("The connection is closed.", code=codes.UNEXPECTED_FRAME)
        try:
            frame = decode_relay_frame(data, max_size=self._max_frame)
        except RemoteProtocolError:
            self._state = State.CLOSED
            raise
        try:
            self._process(frame)
        except (RemoteProtocolError, RelayIdentityError):
            self._state = State.CLOSED
            raise
        return [frame]

    def _unexpected(self, frame: frames.Frame) -> RemoteProtocolError:
        return RemoteProtocolError(
            f"The relay sent {type(frame).__name__} in state {self._state.value}.",
            code=codes.UNEXPECTED_FRAME)

    def _process(self, frame: RelayFrame) -> None:
        if isinstance(frame, frames.Welcome):
            if self._state is not State.CONNECTING or not self._started:
                raise self._unexpected(frame)
            self._verify_welcome(frame)
            self._state = _transition(self._state, Event.HANDSHAKE_DONE)
            return
        if self._state is State.CONNECTING:
            if isinstance(frame, frames.Error) and frame.req is None:
                self._state = State.CLOSED
                return
            if not isinstance(frame, frames.Bye):
                raise self._unexpected(frame)
        if isinstance(frame, frames.Bye):
            self._state = State.CLOSED
            return
        if isinstance(frame, frames.Deliver | frames.Synced):
            if self._state is not State.AUTHENTICATED:
                raise self._unexpected(frame)
            return
        if isinstance(frame, frames.PresenceUpdate):
            return
        req: int | None = getattr(frame, "req", None)
        if isinstance(frame, frames.Error) and req is None:
            self._state = State.CLOSED
            return
        if req is None or req not in self._pending:
            raise RemoteProtocolError(
                f"The relay answered request {req}, which is not pending.",
                code=codes.UNEXPECTED_FRAME)
        request = self._pending[req]
        if not isinstance(frame, frames.Error | RESPONSE[request]):
            raise RemoteProtocolError(
                f"The relay answered a {request.__name__} with {type(frame).__name__}.",
                code=codes.UNEXPECTED_FRAME)
        del self._pending[req]
        if req == self._login_req:
            self._login_req = None
            if isinstance(frame, frames.Error):
                self._state = _transition(self._state, Event.LOGIN_FAILED)
            else:
                self.mailbox = (frame.mailbox if isinstance(frame, frames.Registered)
                                else self._login_mailbox)
                self._state = _transition(self._state, Event.LOGIN_OK)
        elif request is frames.AccountDelete and isinstance(frame, frames.Ok):
            self._state = State.CLOSED

    def _verify_welcome(self, welcome: frames.Welcome) -> None:
        if welcome.version not in self._versions:
            raise RemoteProtocolError(f"The relay chose protocol version {welcome.version}, "
                                      "which this client did not offer.",
                                      code=codes.UNSUPPORTED_VERSION)
        if self._expected_key is not None and not hmac.compare_digest(
                self._expected_key, welcome.relay_key):
            raise RelayIdentityError("The relay's key is not the one expected: this may be "
                                     "an impostor. Check the relay address.")
        if self._expected_fingerprint is not None and not hmac.compare_digest(
                relay_fingerprint(welcome.relay_key).encode(),
                self._expected_fingerprint.encode()):
            raise RelayIdentityError("The relay's key does not match the fingerprint in its "
                                     "address: this may be an impostor. Check the address.")
        try:
            RelayPublicKey.from_bytes(welcome.relay_key).verify(
                transcripts.relay_hello(welcome.relay_key, self._nonce, welcome.challenge,
                                        welcome.version),
                welcome.signature)
        except (BadSignature, InvalidKey):
            raise RelayIdentityError("The relay could not prove it holds its key: this may "
                                     "be an impostor.") from None
        self.relay_key = welcome.relay_key
        self.challenge = welcome.challenge
        self.version = welcome.version
        self.max_frame = min(welcome.max_frame, self._max_frame)
        self.max_payload = welcome.max_payload
        self.max_blob = welcome.max_blob
