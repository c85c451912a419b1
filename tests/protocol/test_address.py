from __future__ import annotations

import pytest

from chatcli.crypto.keys import RelayKeyPair
from chatcli.protocol.address import InvalidRelayAddress, RelayAddress, parse_relay_url

# A fixed key, so that test ids are the same in every process (pytest-xdist).
FP = RelayKeyPair.from_private_bytes(bytes(range(32))).fingerprint()


def test_full_address() -> None:
    addr = parse_relay_url(f"ws://relay.example:8765/#{FP}")
    assert addr == RelayAddress("ws", "relay.example", 8765, FP)
    assert addr.url_without_fragment == "ws://relay.example:8765/"
    assert addr.display() == f"ws://relay.example:8765/#{FP}"
    assert parse_relay_url(addr.display()) == addr
    assert not addr.tls


def test_ipv6_and_wss_and_upper_case_fingerprint() -> None:
    addr = parse_relay_url(f"WSS://[::1]:443#{FP.upper()}")
    assert (addr.scheme, addr.host, addr.port, addr.fingerprint) == ("wss", "::1", 443, FP)
    assert addr.url_without_fragment == "wss://[::1]:443/"
    assert addr.tls


def test_fingerprint_optional_and_default_ports() -> None:
    assert parse_relay_url("ws://127.0.0.1:9/").fingerprint is None
    assert parse_relay_url("ws://host").port == 80
    assert parse_relay_url("wss://host/").port == 443
    assert parse_relay_url("ws://h:1").with_fingerprint(FP).fingerprint == FP


@pytest.mark.parametrize("url", [
    "", "   ", "http://host:1/", "host:8765", "ws://:8765/", "ws://host:99999/",
    "ws://host:0/", "ws://host:port/", "ws://host:1/path", "ws://host:1/?q=1",
    "ws://user:pw@host:1/", "ws://host:1/#tooshort", f"ws://host:1/#{FP[:-1]}1",
    "ws://ho st:1/", "ws://host:1/\x00x", "ws://[::1:1/", "ws://host:/",
])
def test_bad_addresses_have_clear_errors(url: str) -> None:
    with pytest.raises(InvalidRelayAddress) as info:
        parse_relay_url(url)
    assert str(info.value)
    assert info.value.exit_code == 2


def test_surrounding_whitespace_from_copy_paste_is_ignored() -> None:
    assert parse_relay_url(f"  ws://h:1/#{FP}\n").fingerprint == FP
