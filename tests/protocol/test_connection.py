"""The two state machines, joined in memory."""

from __future__ import annotations

import os

import msgspec
import pytest

from chatcli.crypto.keys import MailboxKeyPair, RelayKeyPair
from chatcli.protocol import State, codes, frames
from chatcli.protocol.codec import LocalProtocolError, RemoteProtocolError, encode
from chatcli.protocol.connection import ClientProtocol, RelayIdentityError, RelayProtocol
from tests.protocol.helpers import Pair

M = os.urandom(16)
K = os.urandom(32)


def test_handshake_with_fingerprint() -> None:
    pair = Pair()
    assert pair.client.state is State.CONNECTING
    welcome = pair.handshake()
    assert pair.client.state is State.READY
    assert pair.relay.state is State.READY
    assert pair.client.relay_key == pair.relay_kp.public.raw == welcome.relay_key
    assert pair.client.challenge == pair.relay.challenge
    assert pair.client.version == 1
    assert not pair.client.trust_on_first_use


def test_trust_on_first_use_returns_the_key() -> None:
    pair = Pair(pin=False)
    pair.handshake()
    assert pair.client.trust_on_first_use
    assert pair.client.relay_key == pair.relay_kp.public.raw


def test_wrong_fingerprint_is_detected() -> None:
    impostor = RelayKeyPair.generate()
    client = ClientProtocol(fingerprint=RelayKeyPair.generate().fingerprint())
    relay = RelayProtocol(impostor.public.raw, impostor.sign)
    relay.receive_data(client.start())
    with pytest.raises(RelayIdentityError):
        client.receive_data(relay.accept_hello())
    assert client.state is State.CLOSED


def test_wrong_pinned_key_is_detected() -> None:
    real, impostor = RelayKeyPair.generate(), RelayKeyPair.generate()
    client = ClientProtocol(relay_key=real.public.raw)
    relay = RelayProtocol(impostor.public.raw, impostor.sign)
    relay.receive_data(client.start())
    with pytest.raises(RelayIdentityError):
        client.receive_data(relay.accept_hello())


def test_relay_that_cannot_sign_is_detected() -> None:
    real, impostor = RelayKeyPair.generate(), RelayKeyPair.generate()
    client = ClientProtocol(fingerprint=real.fingerprint())
    # Presents the real key but signs with another one (a replayed key, no secret).
    relay = RelayProtocol(real.public.raw, impostor.sign)
    relay.receive_data(client.start())
    with pytest.raises(RelayIdentityError):
        client.receive_data(relay.accept_hello())


def test_replayed_welcome_from_another_connection_fails() -> None:
    kp = RelayKeyPair.generate()
    first = ClientProtocol(fingerprint=kp.fingerprint())
    relay = RelayProtocol(kp.public.raw, kp.sign)
    relay.receive_data(first.start())
    recorded = relay.accept_hello()
    second = ClientProtocol(fingerprint=kp.fingerprint())
    second.start()
    with pytest.raises(RelayIdentityError):
        second.receive_data(recorded)


def test_register_then_auth_on_a_new_connection() -> None:
    key = MailboxKeyPair.generate()
    pair = Pair()
    pair.handshake()
    (registered,) = pair.relay_answer(pair.client.register(key.auth_public, key.sign))
    assert isinstance(registered, frames.Registered)
    assert pair.client.state is State.AUTHENTICATED
    assert pair.relay.state is State.AUTHENTICATED
    assert pair.client.mailbox == registered.mailbox == pair.relay.mailbox

    again = Pair(relay_key=pair.relay_kp)
    again.mailboxes = pair.mailboxes
    again.handshake()
    (ok,) = again.relay_answer(again.client.auth(registered.mailbox, key.sign))
    assert ok == frames.Ok(req=1)
    assert again.client.state is State.AUTHENTICATED
    assert again.client.mailbox == registered.mailbox


def test_auth_signature_from_another_connection_is_refused() -> None:
    key = MailboxKeyPair.generate()
    pair = Pair()
    pair.handshake()
    (registered,) = pair.relay_answer(pair.client.register(key.auth_public, key.sign))
    assert isinstance(registered, frames.Registered)
    # A signature made for connection A, replayed on connection B.
    a = Pair(relay_key=pair.relay_kp)
    a.mailboxes = pair.mailboxes
    a.handshake()
    stolen = a.client.auth(registered.mailbox, key.sign)
    b = Pair(relay_key=pair.relay_kp)
    b.mailboxes = pair.mailboxes
    b.handshake()
    b.client.auth(registered.mailbox, key.sign)  # make the client expect an answer to req 1
    (error,) = b.relay_answer(stolen)
    assert isinstance(error, frames.Error) and error.code == codes.AUTH_FAILED
    assert b.client.state is State.READY
    assert b.relay.state is State.READY


def test_owner_frames_need_authentication() -> None:
    pair = Pair()
    pair.handshake()
    with pytest.raises(LocalProtocolError):
        pair.client.send(frames.Ack(req=1, ids=[1]))
    with pytest.raises(RemoteProtocolError) as info:
        pair.relay.receive_data(encode(frames.Ack(req=1, ids=[1])))
    assert info.value.code == codes.NOT_AUTHENTICATED
    assert not info.value.fatal
    assert pair.relay.state is State.READY


def test_open_frames_work_without_authentication() -> None:
    pair = Pair()
    pair.handshake()
    (pong,) = pair.relay_answer(pair.client.send(frames.Ping(req=pair.client.next_request_id())))
    assert pong == frames.Pong(req=1)
    item = frames.DepositItem(mailbox=M, cap=K, payload=b"sealed")
    (result,) = pair.relay_answer(pair.client.send(frames.Deposit(req=2, items=[item])))
    assert result == frames.DepositResult(req=2, errors=[None])
    assert pair.client.pending_requests == 0


def test_frames_before_hello_close_the_connection() -> None:
    kp = RelayKeyPair.generate()
    relay = RelayProtocol(kp.public.raw, kp.sign)
    with pytest.raises(RemoteProtocolError) as info:
        relay.receive_data(encode(frames.Ping(req=1)))
    assert info.value.fatal and info.value.code == codes.UNEXPECTED_FRAME
    assert relay.state is State.CLOSED
    relay.send(info.value.error_frame())   # the answer to the fatal error still goes out
    with pytest.raises(LocalProtocolError):
        relay.send(frames.Pong(req=1))


def test_second_hello_is_refused() -> None:
    pair = Pair()
    hello = pair.client.start()
    pair.relay.receive_data(hello)
    with pytest.raises(RemoteProtocolError):
        pair.relay.receive_data(hello)
    assert pair.relay.state is State.CLOSED


def test_unsupported_version() -> None:
    kp = RelayKeyPair.generate()
    relay = RelayProtocol(kp.public.raw, kp.sign)
    with pytest.raises(RemoteProtocolError) as info:
        relay.receive_data(encode(frames.Hello(versions=[7, 9], nonce=K)))
    assert info.value.code == codes.UNSUPPORTED_VERSION
    assert info.value.fatal


def test_login_twice_is_unexpected() -> None:
    key = MailboxKeyPair.generate()
    pair = Pair()
    pair.handshake()
    pair.relay_answer(pair.client.register(key.auth_public, key.sign))
    with pytest.raises(LocalProtocolError):
        pair.client.register(key.auth_public, key.sign)
    with pytest.raises(RemoteProtocolError) as info:
        pair.relay.receive_data(encode(frames.Auth(req=9, mailbox=M, signature=bytes(64))))
    assert info.value.code == codes.UNEXPECTED_FRAME and info.value.req == 9
    assert not info.value.fatal


def test_owner_frames_refused_while_login_in_flight() -> None:
    pair = Pair()
    pair.handshake()
    pair.relay.receive_data(pair.client.auth(M, MailboxKeyPair.generate().sign))
    assert pair.relay.state is State.AUTHENTICATING
    with pytest.raises(RemoteProtocolError) as info:
        pair.relay.receive_data(encode(frames.CapAdd(req=5, cap_hashes=[K])))
    assert info.value.code == codes.NOT_AUTHENTICATED
    pair.relay.receive_data(encode(frames.Ping(req=6)))  # open frames still pass


def test_deposit_payload_over_the_announced_limit() -> None:
    kp = RelayKeyPair.generate()
    relay = RelayProtocol(kp.public.raw, kp.sign, max_payload=10)
    client = ClientProtocol(fingerprint=kp.fingerprint())
    relay.receive_data(client.start())
    client.receive_data(relay.accept_hello())
    assert client.max_payload == 10
    item = frames.DepositItem(mailbox=M, cap=K, payload=b"x" * 11)
    with pytest.raises(RemoteProtocolError) as info:
        relay.receive_data(client.send(frames.Deposit(req=1, items=[item])))
    assert info.value.code == codes.FRAME_TOO_LARGE and info.value.req == 1


def test_relay_may_not_push_deliveries_before_auth() -> None:
    pair = Pair()
    pair.handshake()
    deliver = frames.Deliver(messages=[frames.Delivered(id=1, payload=b"x", received_at=0)])
    with pytest.raises(LocalProtocolError):
        pair.relay.send(deliver)
    with pytest.raises(RemoteProtocolError):
        pair.client.receive_data(encode(deliver))
    assert pair.client.state is State.CLOSED


def test_client_refuses_answers_to_unknown_requests() -> None:
    pair = Pair()
    pair.handshake()
    with pytest.raises(RemoteProtocolError):
        pair.client.receive_data(encode(frames.Ok(req=77)))


def test_client_refuses_a_mismatched_answer_type() -> None:
    pair = Pair()
    pair.handshake()
    pair.client.send(frames.Ping(req=1))
    with pytest.raises(RemoteProtocolError):
        pair.client.receive_data(encode(frames.Ok(req=1)))


def test_request_ids_are_unique() -> None:
    client = ClientProtocol()
    assert [client.next_request_id() for _ in range(3)] == [1, 2, 3]


def test_bye_and_fatal_error_close_both_sides() -> None:
    pair = Pair()
    pair.handshake()
    pair.client.receive_data(pair.relay.send(frames.Bye(code=codes.SHUTTING_DOWN)))
    assert pair.client.state is State.CLOSED and pair.relay.state is State.CLOSED
    with pytest.raises(LocalProtocolError):
        pair.relay.send(frames.Pong(req=1))

    other = Pair()
    other.handshake()
    fatal = frames.Error(req=None, code=codes.SLOW_CONSUMER, message="read faster")
    assert other.client.receive_data(other.relay.send(fatal)) == [fatal]
    assert other.client.state is State.CLOSED


def test_error_before_welcome_reaches_the_client() -> None:
    client = ClientProtocol()
    client.start()
    error = frames.Error(req=None, code=codes.TOO_MANY_CONNECTIONS, message="full")
    assert client.receive_data(encode(error)) == [error]
    assert client.state is State.CLOSED


def test_account_delete_closes_the_client() -> None:
    key = MailboxKeyPair.generate()
    pair = Pair()
    pair.handshake()
    pair.relay_answer(pair.client.register(key.auth_public, key.sign))
    pair.relay_answer(pair.client.send(frames.AccountDelete(req=50)))
    assert pair.client.state is State.CLOSED


def test_local_misuse() -> None:
    client = ClientProtocol()
    with pytest.raises(LocalProtocolError):
        client.send(frames.Ping(req=1))
    client.start()
    with pytest.raises(LocalProtocolError):
        client.start()
    with pytest.raises(LocalProtocolError):
        client.auth(M, MailboxKeyPair.generate().sign)
    kp = RelayKeyPair.generate()
    relay = RelayProtocol(kp.public.raw, kp.sign)
    with pytest.raises(LocalProtocolError):
        relay.accept_hello()
    with pytest.raises(LocalProtocolError):
        relay.login_succeeded(M)


def test_garbage_before_hello_is_fatal_but_after_it_per_request() -> None:
    pair = Pair()
    pair.handshake()
    bad = msgspec.msgpack.encode(["cap_add", 3, [b"short"]])
    with pytest.raises(RemoteProtocolError) as info:
        pair.relay.receive_data(bad)
    assert info.value.req == 3 and not info.value.fatal
    assert pair.relay.state is State.READY
