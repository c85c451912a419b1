"""Local database sealing: round trip, context binding, tampering, wrong key."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatcli.crypto.errors import CorruptData, InvalidKey
from chatcli.crypto.localseal import LocalSealer, generate_local_key

SEALER = LocalSealer(generate_local_key())


@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=2000), context=st.binary(max_size=40))
def test_round_trip(data: bytes, context: bytes) -> None:
    sealed = SEALER.seal(data, context=context)
    assert SEALER.open(sealed, context=context) == data
    assert len(sealed) == len(data) + 1 + 24 + 16


def test_context_binding_and_random_nonces() -> None:
    sealed = SEALER.seal(b"hello", context=b"messages.body")
    with pytest.raises(CorruptData):
        SEALER.open(sealed, context=b"contacts.name")
    assert SEALER.seal(b"hello", context=b"c") != SEALER.seal(b"hello", context=b"c")


def test_tamper_and_wrong_key() -> None:
    sealed = bytearray(SEALER.seal(b"hello", context=b"c"))
    with pytest.raises(CorruptData):
        LocalSealer(generate_local_key()).open(bytes(sealed), context=b"c")
    sealed[-1] ^= 1
    with pytest.raises(CorruptData):
        SEALER.open(bytes(sealed), context=b"c")
    with pytest.raises(CorruptData):
        SEALER.open(b"\x01" + bytes(10), context=b"c")
    with pytest.raises(InvalidKey):
        LocalSealer(b"short")
