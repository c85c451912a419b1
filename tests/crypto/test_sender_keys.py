"""Sender keys for groups: signed hash ratchets, out-of-order, replay, forgery, rolling."""

from __future__ import annotations

import hashlib
import hmac
import os
import random

import msgspec
import nacl.bindings as sodium
import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatcli.crypto import sender_keys
from chatcli.crypto.errors import (
    BadSignature,
    CorruptData,
    DecryptionFailed,
    ReplayedMessage,
    TooManySkipped,
)
from chatcli.crypto.kdf import hkdf_sha256
from chatcli.crypto.sender_keys import (
    DISTRIBUTION_SIZE,
    MAX_SKIP,
    MAX_SKIPPED_TOTAL,
    MESSAGE_OVERHEAD,
    SenderKeyReceiver,
    SenderKeyState,
    message_chain_id,
)


def chain() -> tuple[SenderKeyState, SenderKeyReceiver]:
    sender = SenderKeyState.generate()
    return sender, SenderKeyReceiver.from_distribution(sender.distribution())


def test_one_ciphertext_opens_for_every_member() -> None:
    sender = SenderKeyState.generate()
    members = [SenderKeyReceiver.from_distribution(sender.distribution()) for _ in range(5)]
    for i in range(3):
        message = sender.encrypt(b"to the group %d" % i)
        assert message_chain_id(message) == sender.chain_id
        assert all(m.decrypt(message) == b"to the group %d" % i for m in members)


def test_layouts() -> None:
    sender, _ = chain()
    dist = sender.distribution()
    assert len(dist) == DISTRIBUTION_SIZE == 85
    assert dist[0] == sender_keys.VERSION
    assert dist[1:17] == sender.chain_id
    assert dist[53:] == sender.signing_public.raw
    message = sender.encrypt(b"x" * 10)
    assert len(message) == 10 + MESSAGE_OVERHEAD == 10 + 101
    assert message[17:21] == (0).to_bytes(4, "big")
    assert sender.encrypt(b"y")[17:21] == (1).to_bytes(4, "big")
    assert b"x" * 10 not in message


def test_a_late_joiner_reads_only_from_its_distribution_on() -> None:
    sender, early = chain()
    old = sender.encrypt(b"before you joined")
    late = SenderKeyReceiver.from_distribution(sender.distribution())
    assert late.iteration == 1
    with pytest.raises(ReplayedMessage):
        late.decrypt(old)
    new = sender.encrypt(b"welcome")
    assert late.decrypt(new) == early.decrypt(new) == b"welcome"


def test_out_of_order_within_bounds() -> None:
    sender, receiver = chain()
    messages = [sender.encrypt(b"%d" % i) for i in range(10)]
    order = [9, 0, 5, 3, 8, 1, 2, 7, 6, 4]
    for i in order:
        assert receiver.decrypt(messages[i]) == b"%d" % i
    assert receiver.skipped_keys == 0
    assert receiver.iteration == 10


def test_replay_is_refused_without_effect() -> None:
    sender, receiver = chain()
    m0, m1 = sender.encrypt(b"zero"), sender.encrypt(b"one")
    receiver.decrypt(m1)
    receiver.decrypt(m0)
    for replay in (m0, m1):
        before = receiver.to_bytes()
        with pytest.raises(ReplayedMessage):
            receiver.decrypt(replay)
        assert receiver.to_bytes() == before


def test_forgery_by_another_member_is_rejected() -> None:
    """Carol knows Bob's chain key (she is a member) but not his signing key."""
    bob, alice_view = chain()
    carol_view = SenderKeyReceiver.from_distribution(bob.distribution())
    assert carol_view.decrypt(bob.encrypt(b"real")) == b"real"

    # Carol derives the next message key from what she was given and signs herself.
    dist = bob.distribution()
    chain_key, iteration = dist[21:53], int.from_bytes(dist[17:21], "big")
    mk = hmac.new(chain_key, b"\x01", hashlib.sha256).digest()
    out = hkdf_sha256(mk, salt=bytes(32), info=sender_keys.MESSAGE_KEY_LABEL, length=56)
    prefix = bytes([sender_keys.VERSION]) + bob.chain_id + iteration.to_bytes(4, "big")
    body = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
        b"send me your password", prefix, out[32:], out[:32]
    )
    carol_key = nacl.signing.SigningKey.generate()
    signature = carol_key.sign(sender_keys.SIGNATURE_LABEL + prefix + body).signature
    forged = prefix + body + signature
    before = alice_view.to_bytes()
    with pytest.raises(BadSignature):
        alice_view.decrypt(forged)
    assert alice_view.to_bytes() == before
    assert alice_view.decrypt(bob.encrypt(b"still fine")) == b"still fine"


@pytest.mark.parametrize("position", [0, 5, 18, 30, -70, -1])
def test_altered_messages_are_rejected(position: int) -> None:
    sender, receiver = chain()
    message = bytearray(sender.encrypt(b"pay 10 euros to alice"))
    message[position] ^= 1
    before = receiver.to_bytes()
    with pytest.raises((BadSignature, DecryptionFailed, CorruptData)):
        receiver.decrypt(bytes(message))
    assert receiver.to_bytes() == before


def test_a_rolled_chain_is_unreadable_with_the_old_distribution() -> None:
    sender, removed_member = chain()
    assert removed_member.decrypt(sender.encrypt(b"before removal")) == b"before removal"
    rolled = SenderKeyState.generate()  # what every remaining member does after a removal
    remaining = SenderKeyReceiver.from_distribution(rolled.distribution())
    message = rolled.encrypt(b"after removal")
    assert remaining.decrypt(message) == b"after removal"
    with pytest.raises(DecryptionFailed):
        removed_member.decrypt(message)
    # Even relabelled with the old chain id, it fails: the signature is the new key's.
    relabelled = message[:1] + sender.chain_id + message[17:]
    with pytest.raises(BadSignature):
        removed_member.decrypt(relabelled)
    assert rolled.chain_id != sender.chain_id
    assert rolled.distribution()[21:53] != sender.distribution()[21:53]


def test_over_skip_is_refused() -> None:
    sender, receiver = chain()
    messages = [sender.encrypt(b"%d" % i) for i in range(MAX_SKIP + 2)]
    with pytest.raises(TooManySkipped):
        receiver.decrypt(messages[MAX_SKIP + 1])
    assert receiver.decrypt(messages[MAX_SKIP]) == b"%d" % MAX_SKIP
    assert receiver.skipped_keys == MAX_SKIP


def test_skipped_keys_are_bounded_oldest_evicted() -> None:
    sender, receiver = chain()
    messages = [sender.encrypt(b"m") for _ in range(3 * MAX_SKIP)]
    for i in (MAX_SKIP - 1, 2 * MAX_SKIP - 1, 3 * MAX_SKIP - 1):
        receiver.decrypt(messages[i])
    assert receiver.skipped_keys == MAX_SKIPPED_TOTAL
    with pytest.raises(ReplayedMessage):  # evicted
        receiver.decrypt(messages[0])
    assert receiver.decrypt(messages[3 * MAX_SKIP - 2]) == b"m"


def test_serialisation_round_trips() -> None:
    sender, receiver = chain()
    messages = [sender.encrypt(b"%d" % i) for i in range(5)]
    receiver.decrypt(messages[4])
    sender = SenderKeyState.from_bytes(sender.to_bytes())
    receiver = SenderKeyReceiver.from_bytes(receiver.to_bytes())
    assert receiver.skipped_keys == 4
    assert receiver.decrypt(messages[2]) == b"2"
    assert receiver.decrypt(sender.encrypt(b"after")) == b"after"
    with pytest.raises(ReplayedMessage):
        receiver.decrypt(messages[4])


def test_damaged_inputs_are_refused() -> None:
    sender, receiver = chain()
    for bad in (b"", os.urandom(40), sender.to_bytes()[:-2]):
        with pytest.raises(CorruptData):
            SenderKeyState.from_bytes(bad)
        with pytest.raises(CorruptData):
            SenderKeyReceiver.from_bytes(bad)
    fields = msgspec.msgpack.decode(receiver.to_bytes())
    fields[0] = 2
    with pytest.raises(CorruptData):
        SenderKeyReceiver.from_bytes(msgspec.msgpack.encode(fields))
    dist = sender.distribution()
    for bad_dist in (dist[:-1], b"\x02" + dist[1:], dist[:53] + bytes(32)):
        with pytest.raises(CorruptData):
            SenderKeyReceiver.from_distribution(bad_dist)
    with pytest.raises(CorruptData):
        receiver.decrypt(sender.encrypt(b"x")[: MESSAGE_OVERHEAD - 1])
    with pytest.raises(CorruptData):
        message_chain_id(b"\x09" + bytes(200))


def test_repr_and_distribution_keep_the_signing_key_secret() -> None:
    sender, receiver = chain()
    seed = msgspec.msgpack.decode(sender.to_bytes())[4]
    assert seed not in sender.distribution()
    assert seed.hex()[:8] not in repr(sender) + repr(receiver)


@settings(max_examples=50, deadline=None)
@given(
    st.integers(min_value=1, max_value=40),
    st.randoms(use_true_random=False),
    st.lists(st.integers(min_value=0, max_value=1000), max_size=20),
)
def test_any_order_with_duplicates_and_drops(
    count: int, rnd: random.Random, duplicates: list[int]
) -> None:
    sender, receiver = chain()
    messages = [(sender.encrypt(b"%d" % i), b"%d" % i) for i in range(count)]
    arriving = [m for m in messages if rnd.random() > 0.2]  # some are lost
    rnd.shuffle(arriving)
    for message, plaintext in arriving:
        assert receiver.decrypt(message) == plaintext
    for index in duplicates:
        if arriving:
            with pytest.raises(ReplayedMessage):
                receiver.decrypt(arriving[index % len(arriving)][0])
