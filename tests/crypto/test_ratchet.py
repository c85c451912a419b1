"""The Double Ratchet with header encryption: behaviour, bounds, errors, serialisation."""

from __future__ import annotations

import os

import msgspec
import pytest

from chatcli.crypto import ratchet
from chatcli.crypto.errors import (
    CorruptData,
    DecryptionFailed,
    InvalidKey,
    ReplayedMessage,
    SessionNotReady,
    TooManySkipped,
)
from chatcli.crypto.keys import DHKeyPair
from chatcli.crypto.ratchet import (
    ENC_HEADER_SIZE,
    MAX_OLD_CHAINS,
    MAX_SKIP,
    MAX_SKIPPED_TOTAL,
    MESSAGE_OVERHEAD,
    RatchetSession,
)
from chatcli.errors import CryptoError

AD = b"alice-identity-key-32-bytes-----" + b"bob-identity-key-32-bytes-------"


def pair(ad: bytes = AD) -> tuple[RatchetSession, RatchetSession]:
    sk = os.urandom(32)
    bob_prekey = DHKeyPair.generate()
    alice = RatchetSession.initiator(sk, bob_prekey.public, ad)
    bob = RatchetSession.responder(sk, bob_prekey, ad)
    return alice, bob


def started() -> tuple[RatchetSession, RatchetSession]:
    """A session where both sides have sent and received once."""
    alice, bob = pair()
    assert bob.decrypt(alice.encrypt(b"hello")) == b"hello"
    assert alice.decrypt(bob.encrypt(b"hi")) == b"hi"
    return alice, bob


def test_both_directions() -> None:
    alice, bob = pair()
    for i in range(3):
        assert bob.decrypt(alice.encrypt(b"a%d" % i)) == b"a%d" % i
    for i in range(3):
        assert alice.decrypt(bob.encrypt(b"b%d" % i)) == b"b%d" % i
    assert bob.decrypt(alice.encrypt(b"")) == b""


def test_ping_pong_steps_the_dh_ratchet_every_turn() -> None:
    alice, bob = pair()
    seen_alice, seen_bob = set(), set()
    for turn in range(10):
        seen_alice.add(alice._state.dhs.public)
        assert bob.decrypt(alice.encrypt(b"ping %d" % turn)) == b"ping %d" % turn
        seen_bob.add(bob._state.dhs.public)
        assert alice.decrypt(bob.encrypt(b"pong %d" % turn)) == b"pong %d" % turn
    assert len(seen_alice) == 10
    assert len(seen_bob) == 10


def test_message_layout_hides_the_header() -> None:
    alice, _ = pair()
    message = alice.encrypt(b"x" * 100)
    assert message[0] == ratchet.VERSION
    assert len(message) == 100 + MESSAGE_OVERHEAD == 100 + 97
    assert ENC_HEADER_SIZE == 81
    assert alice._state.dhs.public not in message
    # Two messages with the same counter-free content share no header bytes.
    second = alice.encrypt(b"x" * 100)
    assert message[1:ENC_HEADER_SIZE] != second[1:ENC_HEADER_SIZE]


def test_out_of_order_and_lost_messages() -> None:
    alice, bob = started()
    messages = [alice.encrypt(b"m%d" % i) for i in range(6)]
    for i in (4, 0, 5, 2):
        assert bob.decrypt(messages[i]) == b"m%d" % i
    assert bob.skipped_keys == 2  # 1 and 3 are still owed
    # Bob answers, Alice answers back: the late ones still open across DH steps.
    assert alice.decrypt(bob.encrypt(b"reply")) == b"reply"
    assert bob.decrypt(alice.encrypt(b"new chain")) == b"new chain"
    assert bob.decrypt(messages[3]) == b"m3"
    assert bob.skipped_keys == 1  # message 1 is lost; its key waits


def test_skipped_keys_across_a_dh_step_via_pn() -> None:
    alice, bob = started()
    first_chain = [alice.encrypt(b"old %d" % i) for i in range(3)]
    bob.decrypt(first_chain[0])
    alice.decrypt(bob.encrypt(b"turn"))
    # Alice's new chain arrives before the rest of her old one.
    assert bob.decrypt(alice.encrypt(b"new")) == b"new"
    assert bob.skipped_keys == 2
    assert bob.decrypt(first_chain[2]) == b"old 2"
    assert bob.decrypt(first_chain[1]) == b"old 1"
    assert bob.skipped_keys == 0


def test_replay_is_refused_and_distinct_from_tampering() -> None:
    alice, bob = started()
    m0, m1 = alice.encrypt(b"zero"), alice.encrypt(b"one")
    bob.decrypt(m1)
    bob.decrypt(m0)  # from the skipped keys
    for replay in (m0, m1):
        before = bob.to_bytes()
        with pytest.raises(ReplayedMessage):
            bob.decrypt(replay)
        assert bob.to_bytes() == before
    # Replays of an older chain, after DH ratchet steps.
    alice.decrypt(bob.encrypt(b"x"))
    bob.decrypt(alice.encrypt(b"y"))
    with pytest.raises(ReplayedMessage):
        bob.decrypt(m1)
    assert issubclass(ReplayedMessage, CryptoError)
    assert not issubclass(ReplayedMessage, DecryptionFailed)


def test_replay_of_the_first_message() -> None:
    alice, bob = pair()
    first = alice.encrypt(b"first")
    bob.decrypt(first)
    with pytest.raises(ReplayedMessage):
        bob.decrypt(first)


@pytest.mark.parametrize("where", ["version", "header-nonce", "header", "body", "tag"])
def test_tampering_is_rejected_and_leaves_the_state_unchanged(where: str) -> None:
    alice, bob = started()
    message = bytearray(alice.encrypt(b"attack at dawn"))
    position = {
        "version": 0,
        "header-nonce": 5,
        "header": ENC_HEADER_SIZE - 20,
        "body": ENC_HEADER_SIZE + 3,
        "tag": len(message) - 1,
    }[where]
    original = bytes(message)
    message[position] ^= 0x40
    before = bob.to_bytes()
    with pytest.raises(CorruptData if where == "version" else DecryptionFailed):
        bob.decrypt(bytes(message))
    assert bob.to_bytes() == before
    assert bob.decrypt(original) == b"attack at dawn"


def test_tampered_message_that_would_step_the_ratchet_changes_nothing() -> None:
    alice, bob = started()
    alice.decrypt(bob.encrypt(b"turn"))
    message = bytearray(alice.encrypt(b"new chain"))  # header under Bob's NHKr
    message[-5] ^= 1
    before = bob.to_bytes()
    with pytest.raises(DecryptionFailed):
        bob.decrypt(bytes(message))
    assert bob.to_bytes() == before


def test_truncated_and_foreign_messages() -> None:
    alice, bob = started()
    message = alice.encrypt(b"text")
    with pytest.raises(CorruptData):
        bob.decrypt(message[: MESSAGE_OVERHEAD - 1])
    with pytest.raises(DecryptionFailed):
        bob.decrypt(message[:-1])
    other_alice, _ = started()
    with pytest.raises(DecryptionFailed):
        bob.decrypt(other_alice.encrypt(b"not for bob"))
    with pytest.raises(DecryptionFailed):
        bob.decrypt(bytes([ratchet.VERSION]) + os.urandom(200))


def test_wrong_associated_data_is_rejected() -> None:
    sk = os.urandom(32)
    prekey = DHKeyPair.generate()
    alice = RatchetSession.initiator(sk, prekey.public, AD)
    bob = RatchetSession.responder(sk, prekey, AD[:-1] + b"X")
    with pytest.raises(DecryptionFailed):
        bob.decrypt(alice.encrypt(b"bound to the identities"))


def test_wrong_shared_secret_is_rejected() -> None:
    prekey = DHKeyPair.generate()
    alice = RatchetSession.initiator(os.urandom(32), prekey.public, AD)
    bob = RatchetSession.responder(os.urandom(32), prekey, AD)
    with pytest.raises(DecryptionFailed):
        bob.decrypt(alice.encrypt(b"hello"))


def test_responder_cannot_send_first() -> None:
    alice, bob = pair()
    assert not bob.can_send
    with pytest.raises(SessionNotReady):
        bob.encrypt(b"too early")
    bob.decrypt(alice.encrypt(b"hello"))
    assert bob.can_send


def test_over_skip_in_one_chain_is_refused() -> None:
    alice, bob = started()
    messages = [alice.encrypt(b"%d" % i) for i in range(MAX_SKIP + 2)]
    before = bob.to_bytes()
    with pytest.raises(TooManySkipped):
        bob.decrypt(messages[MAX_SKIP + 1])  # would skip MAX_SKIP + 1 keys
    assert bob.to_bytes() == before
    assert bob.decrypt(messages[MAX_SKIP]) == b"%d" % MAX_SKIP  # exactly MAX_SKIP: fine
    assert bob.skipped_keys == MAX_SKIP


def test_over_skip_of_the_previous_chain_is_refused() -> None:
    alice, bob = started()
    for i in range(MAX_SKIP + 1):
        alice.encrypt(b"lost %d" % i)  # never delivered
    alice.decrypt(bob.encrypt(b"turn"))
    with pytest.raises(TooManySkipped):
        bob.decrypt(alice.encrypt(b"its PN is too far ahead"))


def test_total_skipped_keys_are_bounded_oldest_evicted() -> None:
    alice, bob = started()
    first_of_chain = []
    for _ in range(3):  # three chains, each with MAX_SKIP - 1 lost messages
        chain = [alice.encrypt(b"m") for _ in range(MAX_SKIP)]
        first_of_chain.append(chain[0])
        bob.decrypt(chain[-1])
        alice.decrypt(bob.encrypt(b"turn"))
    assert bob.skipped_keys == MAX_SKIPPED_TOTAL
    with pytest.raises(ReplayedMessage):  # its key was evicted
        bob.decrypt(first_of_chain[0])
    assert bob.decrypt(first_of_chain[2]) == b"m"


def test_old_chains_are_forgotten_after_the_bound() -> None:
    alice, bob = started()
    late = alice.encrypt(b"late")
    alice.encrypt(b"trigger")
    bob.decrypt(alice.encrypt(b"skips late"))
    for _ in range(MAX_OLD_CHAINS + 1):  # chain 1 and then the late one's are forgotten
        alice.decrypt(bob.encrypt(b"b"))
        bob.decrypt(alice.encrypt(b"a"))
    assert bob.skipped_keys == 0
    with pytest.raises(DecryptionFailed):
        bob.decrypt(late)


def test_serialisation_round_trip_mid_conversation() -> None:
    alice, bob = started()
    pending = [alice.encrypt(b"p%d" % i) for i in range(4)]
    bob.decrypt(pending[3])
    assert bob.skipped_keys == 3
    bob = RatchetSession.from_bytes(bob.to_bytes())
    alice = RatchetSession.from_bytes(alice.to_bytes())
    assert bob.decrypt(pending[1]) == b"p1"
    assert alice.decrypt(bob.encrypt(b"after restore")) == b"after restore"
    assert bob.decrypt(alice.encrypt(b"and back")) == b"and back"
    assert bob.decrypt(pending[0]) == b"p0"
    with pytest.raises(ReplayedMessage):
        bob.decrypt(pending[3])
    restored = RatchetSession.from_bytes(bob.to_bytes())
    assert restored.to_bytes() == bob.to_bytes()


def test_fresh_responder_round_trips() -> None:
    alice, bob = pair()
    bob = RatchetSession.from_bytes(bob.to_bytes())
    assert bob.decrypt(alice.encrypt(b"hi")) == b"hi"


def test_damaged_state_is_refused() -> None:
    alice, _ = started()
    data = alice.to_bytes()
    for bad in (b"", b"\x00", os.urandom(50), data[:-3], b"\x91\x02"):
        with pytest.raises(CorruptData):
            RatchetSession.from_bytes(bad)
    fields = msgspec.msgpack.decode(data)
    assert fields[0] == ratchet.VERSION  # a MessagePack array whose first item is the version
    fields[0] = ratchet.VERSION + 1
    with pytest.raises(CorruptData):
        RatchetSession.from_bytes(msgspec.msgpack.encode(fields))
    fields[0] = ratchet.VERSION
    fields[4] = b"short root key"
    with pytest.raises(CorruptData):
        RatchetSession.from_bytes(msgspec.msgpack.encode(fields))


def test_invalid_keys_are_refused() -> None:
    prekey = DHKeyPair.generate()
    with pytest.raises(InvalidKey):
        RatchetSession.initiator(os.urandom(31), prekey.public, AD)
    with pytest.raises(InvalidKey):
        RatchetSession.initiator(os.urandom(32), prekey.public[:31], AD)
    with pytest.raises(InvalidKey):
        RatchetSession.initiator(os.urandom(32), bytes(32), AD)  # low-order point
    with pytest.raises(TypeError):
        RatchetSession.responder(os.urandom(32), prekey.public, AD)  # type: ignore[arg-type]


def test_repr_shows_no_secrets() -> None:
    alice, _ = started()
    text = repr(alice) + repr(alice._state)
    for secret in (alice._state.rk, alice._state.dhs.private_bytes()):
        assert secret.hex()[:8] not in text


def test_kdf_ck_uses_the_specification_constants() -> None:
    import hashlib
    import hmac

    ck = os.urandom(32)
    next_ck, mk = ratchet.kdf_ck(ck)
    assert mk == hmac.new(ck, b"\x01", hashlib.sha256).digest()
    assert next_ck == hmac.new(ck, b"\x02", hashlib.sha256).digest()


def test_session_from_x3dh_as_chatcli_uses_it() -> None:
    """The accepter (initiator) uses the invite's prekey as the inviter's first ratchet key."""
    from chatcli.crypto import x3dh
    from chatcli.crypto.keys import IdentityKeyPair

    inviter, accepter = IdentityKeyPair.generate(), IdentityKeyPair.generate()
    prekey = DHKeyPair.generate()
    sent = x3dh.initiate(accepter, inviter.public, prekey.public)
    alice = RatchetSession.initiator(sent.shared_secret, prekey.public, sent.associated_data)
    first = alice.encrypt(b"my address")
    got = x3dh.respond(inviter, prekey, accepter.public, sent.ephemeral_public)
    bob = RatchetSession.responder(got.shared_secret, prekey, got.associated_data)
    assert bob.decrypt(first) == b"my address"
    assert alice.decrypt(bob.encrypt(b"welcome")) == b"welcome"
