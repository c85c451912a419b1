"""Invites: round trip through a link, tampering, expiry, size."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatcli.crypto.errors import InvalidInvite, InviteExpired
from chatcli.crypto.invite import Invite, create_invite, parse_invite
from chatcli.crypto.keys import DHKeyPair, IdentityKeyPair, relay_fingerprint

INVITER = IdentityKeyPair.generate()
URL = "wss://relay.example.org:8765/#" + relay_fingerprint(bytes(range(32)))
NOW = 1_800_000_000


def _invite(**overrides: object) -> Invite:
    fields: dict[str, object] = {
        "relay_url": URL,
        "mailbox": b"m" * 16,
        "capability": b"c" * 32,
        "mailbox_key": b"k" * 32,
        "prekey_public": DHKeyPair.generate().public,
        "expires_at": NOW + 86400,
    }
    fields.update(overrides)
    return create_invite(INVITER, **fields)  # type: ignore[arg-type]


LINK = _invite().to_link()


def _payload(link: str) -> bytes:
    text = link.removeprefix("chatcli:")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _link(payload: bytes) -> str:
    return "chatcli:" + base64.urlsafe_b64encode(payload).decode().rstrip("=")


def test_round_trip() -> None:
    invite = _invite()
    link = invite.to_link()
    assert link.startswith("chatcli:") and "=" not in link
    parsed = parse_invite(link, now=NOW)
    assert parsed == invite
    assert parsed.identity == INVITER.public
    assert len(parsed.invite_id) == 16


def test_link_is_short_enough_for_a_qr_code() -> None:
    assert len(LINK) < 500
    import segno

    assert segno.make(LINK, error="L").version <= 15


def test_pasted_with_line_breaks() -> None:
    wrapped = "\n".join(LINK[i : i + 60] for i in range(0, len(LINK), 60))
    assert parse_invite("  " + wrapped + "\n", now=NOW).invite_id == parse_invite(
        LINK, now=NOW
    ).invite_id


def test_invite_ids_are_unique() -> None:
    assert _invite().invite_id != _invite().invite_id


def test_expiry() -> None:
    invite = _invite(expires_at=NOW + 10)
    parse_invite(invite.to_link(), now=NOW + 9)
    with pytest.raises(InviteExpired):
        parse_invite(invite.to_link(), now=NOW + 10)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_modified_byte_is_refused(data: st.DataObject) -> None:
    payload = bytearray(_payload(LINK))
    index = data.draw(st.integers(min_value=0, max_value=len(payload) - 1))
    payload[index] ^= data.draw(st.integers(min_value=1, max_value=255))
    with pytest.raises(InvalidInvite):
        parse_invite(_link(bytes(payload)), now=NOW)


def test_resigned_by_someone_else_is_a_different_inviter() -> None:
    # Mallory can issue her own invites, but cannot put Alice's key on them.
    mallory = IdentityKeyPair.generate()
    payload = _payload(LINK)
    forged = payload[:-64] + mallory.sign(b"chatcli/invite/v1\x00" + payload[:-64])
    with pytest.raises(InvalidInvite):
        parse_invite(_link(forged), now=NOW)


def test_malformed_links() -> None:
    for bad in ("", "chatcli:", "https://example.org", "chatcli:!!!!", LINK[:-10],
                "chatcli:" + "A" * 3000):
        with pytest.raises(InvalidInvite):
            parse_invite(bad, now=NOW)


def test_bad_fields_refused_at_creation() -> None:
    with pytest.raises(ValueError):
        _invite(mailbox=b"short")
    with pytest.raises(InvalidInvite):
        _invite(relay_url="http://example.org/")
