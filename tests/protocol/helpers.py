"""A client and a relay protocol object joined in memory (h11's tests/helpers.py style).

The relay side here is a toy: it accepts any Register/Auth whose signature
verifies, so the tests exercise the state machines, not the relay.
"""

from __future__ import annotations

import os

from chatcli.crypto.errors import BadSignature
from chatcli.crypto.keys import MailboxKeyPair, RelayKeyPair, SigningPublicKey
from chatcli.protocol import codes, frames
from chatcli.protocol.codec import RemoteProtocolError, encode
from chatcli.protocol.connection import ClientProtocol, RelayProtocol


class Pair:
    """``client`` and ``relay`` protocol objects; ``exchange`` carries bytes."""

    def __init__(self, *, relay_key: RelayKeyPair | None = None, pin: bool = True) -> None:
        self.relay_kp = relay_key or RelayKeyPair.generate()
        self.client = ClientProtocol(fingerprint=self.relay_kp.fingerprint() if pin else None)
        self.relay = RelayProtocol(self.relay_kp.public.raw, self.relay_kp.sign)
        self.mailboxes: dict[bytes, bytes] = {}  # mailbox -> auth key

    def handshake(self) -> frames.Welcome:
        self.relay.receive_data(self.client.start())
        (welcome,) = self.client.receive_data(self.relay.accept_hello())
        assert isinstance(welcome, frames.Welcome)
        return welcome

    def relay_answer(self, data: bytes) -> list[frames.Frame]:
        """Feed client bytes to the relay; answer like a minimal relay would;
        feed the answer back to the client and return what it yields."""
        try:
            frame = self.relay.receive_data(data)
        except RemoteProtocolError as exc:
            return list(self.client.receive_data(self.relay.send(exc.error_frame())))
        answer: frames.Frame
        if isinstance(frame, frames.Register):
            try:
                SigningPublicKey(frame.auth_key).verify(
                    self.relay.register_transcript(frame.auth_key), frame.signature)
            except BadSignature:
                self.relay.login_failed()
                answer = frames.Error(req=frame.req, code=codes.AUTH_FAILED, message="no")
            else:
                mailbox = os.urandom(16)
                self.mailboxes[mailbox] = frame.auth_key
                self.relay.login_succeeded(mailbox)
                answer = frames.Registered(req=frame.req, mailbox=mailbox)
        elif isinstance(frame, frames.Auth):
            key = self.mailboxes.get(frame.mailbox)
            try:
                if key is None:
                    raise BadSignature()
                SigningPublicKey(key).verify(self.relay.auth_transcript(frame.mailbox),
                                             frame.signature)
            except BadSignature:
                self.relay.login_failed()
                answer = frames.Error(req=frame.req, code=codes.AUTH_FAILED, message="no")
            else:
                self.relay.login_succeeded(frame.mailbox)
                answer = frames.Ok(req=frame.req)
        elif isinstance(frame, frames.Ping):
            answer = frames.Pong(req=frame.req)
        elif isinstance(frame, frames.Deposit):
            answer = frames.DepositResult(req=frame.req, errors=[None] * len(frame.items))
        else:
            answer = frames.Ok(req=frame.req)  # type: ignore[union-attr]
        return list(self.client.receive_data(self.relay.send(answer)))  # type: ignore[arg-type]


def new_mailbox_key() -> MailboxKeyPair:
    return MailboxKeyPair.generate()


def raw(frame: frames.Frame) -> bytes:
    return encode(frame)
