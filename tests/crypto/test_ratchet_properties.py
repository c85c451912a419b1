"""Property tests of the Double Ratchet: any delivery order, drops, duplicates, restores.

Within the bounds (fewer than MAX_SKIP lost messages per chain, fewer than
MAX_SKIPPED_TOTAL pending keys, fewer than MAX_OLD_CHAINS turns) every message
that is not dropped decrypts exactly once to what was sent, every duplicate
raises ReplayedMessage, and neither a duplicate nor a damaged message changes
the receiver's state.
"""

from __future__ import annotations

import os
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from chatcli.crypto.errors import CorruptData, DecryptionFailed, ReplayedMessage
from chatcli.crypto.keys import DHKeyPair
from chatcli.crypto.ratchet import RatchetSession

AD = os.urandom(64)

SEND_A, SEND_B, DELIVER, DUPLICATE, DROP, RESTORE = range(6)
actions = st.lists(
    st.tuples(
        st.sampled_from([SEND_A, SEND_B, DELIVER, DELIVER, DUPLICATE, DROP, RESTORE]),
        st.integers(min_value=0, max_value=1000),
    ),
    min_size=20,
    max_size=100,
)


class Conversation:
    def __init__(self) -> None:
        sk = os.urandom(32)
        prekey = DHKeyPair.generate()
        self.sessions = {
            "A": RatchetSession.initiator(sk, prekey.public, AD),
            "B": RatchetSession.responder(sk, prekey, AD),
        }
        self.in_flight: list[tuple[str, bytes, bytes]] = []  # (recipient, wire, plaintext)
        self.delivered: list[tuple[str, bytes, bytes]] = []
        self.count = 0

    def send(self, sender: str) -> None:
        if not self.sessions[sender].can_send:
            return
        plaintext = b"%s:%d:" % (sender.encode(), self.count) + os.urandom(self.count % 5)
        self.count += 1
        recipient = "B" if sender == "A" else "A"
        self.in_flight.append((recipient, self.sessions[sender].encrypt(plaintext), plaintext))

    def deliver(self, index: int) -> None:
        recipient, wire, plaintext = self.in_flight.pop(index % len(self.in_flight))
        assert self.sessions[recipient].decrypt(wire) == plaintext
        self.delivered.append((recipient, wire, plaintext))

    def duplicate(self, index: int) -> None:
        recipient, wire, _ = self.delivered[index % len(self.delivered)]
        session = self.sessions[recipient]
        before = session.to_bytes()
        try:
            session.decrypt(wire)
        except ReplayedMessage:
            pass
        else:
            raise AssertionError("a duplicate was decrypted twice")
        assert session.to_bytes() == before


@settings(max_examples=100, deadline=None)
@given(actions, st.randoms(use_true_random=False))
def test_any_delivery_order_with_drops_and_duplicates(
    script: list[tuple[int, int]], rnd: random.Random
) -> None:
    c = Conversation()
    c.send("A")
    for action, arg in script:
        if action == SEND_A:
            c.send("A")
        elif action == SEND_B:
            c.send("B")
        elif action == DELIVER and c.in_flight:
            c.deliver(arg)
        elif action == DUPLICATE and c.delivered:
            c.duplicate(arg)
        elif action == DROP and c.in_flight:
            c.in_flight.pop(arg % len(c.in_flight))
        elif action == RESTORE:
            side = "A" if arg % 2 else "B"
            c.sessions[side] = RatchetSession.from_bytes(c.sessions[side].to_bytes())
    # Everything still in flight arrives at last, in a shuffled order.
    rnd.shuffle(c.in_flight)
    while c.in_flight:
        c.deliver(0)
    for index in range(len(c.delivered)):
        c.duplicate(index)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(min_value=0, max_value=5),
    st.integers(min_value=0, max_value=10_000),
    st.integers(min_value=1, max_value=255),
)
def test_any_single_byte_change_is_rejected_without_effect(
    turns: int, position: int, flip: int
) -> None:
    c = Conversation()
    for _ in range(turns):
        c.send("A")
        c.deliver(0)
        c.send("B")
        c.deliver(0)
    c.send("A")
    recipient, wire, plaintext = c.in_flight.pop()
    damaged = bytearray(wire)
    damaged[position % len(wire)] ^= flip
    session = c.sessions[recipient]
    before = session.to_bytes()
    try:
        session.decrypt(bytes(damaged))
    except (DecryptionFailed, CorruptData):
        pass
    else:
        raise AssertionError("a damaged message was accepted")
    assert session.to_bytes() == before
    assert session.decrypt(wire) == plaintext
