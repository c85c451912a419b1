"""Sealed envelopes and padding buckets."""

from __future__ import annotations

import nacl.bindings as sodium
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatcli.crypto.envelope import (
    ENVELOPE_BUCKETS,
    MAX_BODY_SIZE,
    MAX_SEALED_SIZE,
    bucket_for,
    open_envelope,
    pad,
    seal_envelope,
    unpad,
)
from chatcli.crypto.errors import CorruptData, DecryptionFailed, TooLarge
from chatcli.crypto.keys import IdentityKeyPair, MailboxKeyPair

MAILBOX = MailboxKeyPair.generate()
SENDER = IdentityKeyPair.generate().public


def test_max_sealed_size_matches_the_wire_limit() -> None:
    from chatcli.protocol.frames import MAX_PAYLOAD_SIZE

    assert MAX_SEALED_SIZE == MAX_PAYLOAD_SIZE
    sealed = seal_envelope(MAILBOX.box_public, SENDER, b"x" * MAX_BODY_SIZE)
    assert len(sealed) == MAX_PAYLOAD_SIZE
    assert open_envelope(MAILBOX, sealed).body == b"x" * MAX_BODY_SIZE
    with pytest.raises(TooLarge):
        seal_envelope(MAILBOX.box_public, SENDER, b"x" * (MAX_BODY_SIZE + 1))


@settings(max_examples=40, deadline=None)
@given(body=st.binary(max_size=5000))
def test_round_trip_and_bucketed_size(body: bytes) -> None:
    sealed = seal_envelope(MAILBOX.box_public, SENDER, body)
    assert len(sealed) - 48 in ENVELOPE_BUCKETS
    assert len(sealed) - 48 == bucket_for(1 + 32 + len(body))
    opened = open_envelope(MAILBOX, sealed)
    assert opened.body == body
    assert opened.sender == SENDER
    assert SENDER.raw not in sealed


def test_similar_lengths_share_a_size() -> None:
    sizes = {len(seal_envelope(MAILBOX.box_public, SENDER, b"a" * n)) for n in range(0, 200)}
    assert sizes == {256 + 48}
    assert len(seal_envelope(MAILBOX.box_public, SENDER, b"a" * 900)) == 1024 + 48


def test_only_the_right_mailbox_opens_it() -> None:
    sealed = seal_envelope(MAILBOX.box_public, SENDER, b"secret")
    with pytest.raises(DecryptionFailed):
        open_envelope(MailboxKeyPair.generate(), sealed)


@settings(max_examples=30, deadline=None)
@given(index=st.integers(min_value=0, max_value=256 + 48 - 1))
def test_tampering_is_detected(index: int) -> None:
    sealed = bytearray(seal_envelope(MAILBOX.box_public, SENDER, b"secret"))
    sealed[index] ^= 0x40
    with pytest.raises(DecryptionFailed):
        open_envelope(MAILBOX, bytes(sealed))


def test_malformed_inner_content_is_corrupt() -> None:
    bad_version = sodium.crypto_box_seal(pad(b"\x02" + SENDER.raw + b"x"), MAILBOX.box_public)
    with pytest.raises(CorruptData):
        open_envelope(MAILBOX, bad_version)
    unpadded = sodium.crypto_box_seal(b"\x01" + SENDER.raw + b"x" * 223, MAILBOX.box_public)
    with pytest.raises(CorruptData):
        open_envelope(MAILBOX, unpadded)
    short = sodium.crypto_box_seal(pad(b"\x01abc"), MAILBOX.box_public)
    with pytest.raises(CorruptData):
        open_envelope(MAILBOX, short)


@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=3000))
def test_pad_unpad(data: bytes) -> None:
    padded = pad(data)
    assert len(padded) in ENVELOPE_BUCKETS and len(padded) > len(data)
    assert unpad(padded) == data


def test_unpad_refuses_bad_padding_and_sizes() -> None:
    with pytest.raises(CorruptData):
        unpad(bytes(256))  # no 0x80 marker
    with pytest.raises(CorruptData):
        unpad(b"\x80" + bytes(299))  # not a bucket size
    with pytest.raises(TooLarge):
        pad(b"x" * ENVELOPE_BUCKETS[-1])
