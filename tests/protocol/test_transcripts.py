from __future__ import annotations

import pytest

from chatcli.protocol import transcripts

K = bytes(range(32))
C = bytes(range(32, 64))
M = bytes(16)


def test_transcripts_are_domain_separated() -> None:
    hello = transcripts.relay_hello(K, C, C, 1)
    register = transcripts.register(K, C, C)
    auth = transcripts.auth(K, C, M)
    assert hello.startswith(b"chatcli/relay-hello/v1")
    assert register.startswith(b"chatcli/relay-register/v1")
    assert auth.startswith(b"chatcli/relay-auth/v1")
    assert len({hello, register, auth}) == 3


def test_exact_layout() -> None:
    assert transcripts.auth(K, C, M) == (
        b"chatcli/relay-auth/v1" + b"\x00\x20" + K + b"\x00\x20" + C + b"\x00\x10" + M)
    assert transcripts.relay_hello(K, C, K, 1).endswith(b"\x00\x01\x01")


def test_every_input_changes_the_transcript() -> None:
    base = transcripts.relay_hello(K, C, C, 1)
    assert transcripts.relay_hello(C, C, C, 1) != base
    assert transcripts.relay_hello(K, K, C, 1) != base
    assert transcripts.relay_hello(K, C, K, 1) != base
    assert transcripts.relay_hello(K, C, C, 2) != base


@pytest.mark.parametrize("call", [
    lambda: transcripts.auth(K[:31], C, M),
    lambda: transcripts.auth(K, C, M + b"x"),
    lambda: transcripts.register(K, C[:5], K),
    lambda: transcripts.relay_hello(K, C, C, 0),
    lambda: transcripts.relay_hello(K, C, C, 256),
])
def test_wrong_lengths_are_refused(call: object) -> None:
    with pytest.raises(ValueError):
        call()  # type: ignore[operator]
