"""Joining without the creator, admins, the group profile and recovery by vote:
clients on the in-memory relay (tests/client/fakerelay.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chatcli.client.groups.service import GroupService
from chatcli.client.service import ChatClient
from chatcli.errors import UsageError
from tests.client.conftest import drain, make_client, pair
from tests.client.fakerelay import FakeRelay
from tests.client.test_group_service import make_group, send, settle, texts

Four = tuple[ChatClient, ChatClient, ChatClient, ChatClient]
PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)


@pytest.fixture
async def four(tmp_path: Path, relay: FakeRelay) -> AsyncIterator[Four]:
    """alice knows everyone; bob also knows dave."""
    clients = [await make_client(tmp_path, n, relay) for n in ("alice", "bob", "carol", "dave")]
    alice, bob, carol, dave = clients
    for other, name in ((bob, "bob"), (carol, "carol"), (dave, "dave")):
        await pair(alice, other, name, "alice")
    await pair(bob, dave, "dave", "bob")
    yield alice, bob, carol, dave
    for client in clients:
        client.close()


def view(client: ChatClient, group: str = "team") -> tuple[set[str], set[str]]:
    """(members, admins) by fingerprint: the same on every member."""
    infos = GroupService(client).members(group)
    return ({i.fingerprint for i in infos}, {i.fingerprint for i in infos if i.admin})


def fp(client: ChatClient) -> str:
    return client.identity.public.fingerprint()


async def flush(client: ChatClient) -> None:
    async with client.online():
        await client.flush_outbox()


async def test_an_invited_member_sends_at_once_while_the_creator_is_away(four: Four) -> None:
    """The first-user story of issue 15: carol, just invited, receives and sends
    at once; bob reads her and she reads bob, without alice doing anything more."""
    alice, bob, carol, _dave = four
    GroupService(alice).create("team", ["bob"])
    await flush(alice)
    await settle(bob, alice, bob)
    GroupService(alice).add("team", "carol")
    await flush(alice)
    # From here on alice receives nothing: she is away.
    notices = [getattr(e, "text", "") for e in await drain(carol)]
    assert any("You are now a member of the group team" in n for n in notices), notices
    assert [g["status"] for g in GroupService(carol).groups()] == ["active"]
    await send(carol, "team", "hi, carol here")
    assert await texts(bob) == [("team", "carol", "hi, carol here")]
    await send(bob, "team", "welcome carol")
    assert [t for *_, t in await texts(carol)] == ["welcome carol"]
    assert view(bob) == view(carol)
    # Alice comes back: she reads both and agrees on the members.
    got = await texts(alice)
    assert sorted(t for *_, t in got) == ["hi, carol here", "welcome carol"]
    assert view(alice) == view(bob)


async def test_carol_reads_bob_after_joining(four: Four) -> None:
    alice, bob, carol, _dave = four
    GroupService(alice).create("team", ["bob"])
    await flush(alice)
    await settle(bob, alice, bob)
    GroupService(alice).add("team", "carol")
    await flush(alice)
    await drain(carol)
    await flush(carol)
    await settle(bob)
    await send(bob, "team", "welcome carol")
    assert [t for *_, t in await texts(carol)] == ["welcome carol"]


async def test_two_admins_acting_at_once_converge(four: Four) -> None:
    """Alice makes bob an admin; then, at the same time, bob invites dave and
    alice sets the profile: both count. Then alice demotes bob while bob removes
    carol: alice is more senior, so the demotion wins and carol stays."""
    alice, bob, carol, dave = four
    await make_group(alice, bob, carol)
    await settle(alice, bob, carol)
    GroupService(alice).set_admin("team", "bob")
    await flush(alice)
    await settle(bob, carol)
    assert GroupService(bob).info("team")["is_admin"]
    GroupService(bob).add("team", "dave")
    GroupService(alice).set_profile("team", title="The Team", description="all of us")
    await flush(alice)
    await flush(bob)
    await settle(dave, carol, bob, alice, dave, carol, bob, alice)
    for client in (alice, bob, carol, dave):
        assert view(client) == ({fp(c) for c in (alice, bob, carol, dave)},
                                {fp(alice), fp(bob)})
        assert GroupService(client).info("team")["title"] == "The Team"
    # Concurrent: the demotion of bob and bob's removal of carol.
    GroupService(alice).set_admin("team", "bob", admin=False)
    GroupService(bob).remove("team", "carol")
    await flush(alice)
    await flush(bob)
    await settle(carol, dave, bob, alice, carol, dave, bob, alice)
    expected = ({fp(c) for c in (alice, bob, carol, dave)}, {fp(alice)})
    for client in (alice, bob, carol, dave):
        assert view(client) == expected
    # Carol is a member again everywhere and everyone reads everyone.
    assert [g["status"] for g in GroupService(carol).groups()] == ["active"]
    await send(carol, "team", "still here")
    await settle(alice, bob, dave)
    for client in (alice, bob, dave):
        history = [h["text"] for h in GroupService(client).history("team")]
        assert "still here" in history


async def test_the_last_admin_hands_the_role_over_when_leaving(four: Four) -> None:
    alice, bob, carol, _dave = four
    await make_group(alice, bob, carol)
    await settle(alice, bob, carol)
    with pytest.raises(UsageError, match="Only an admin"):
        GroupService(bob).leave("team", successor="carol")
    assert GroupService(alice).leave("team", successor="carol") == "carol"
    await flush(alice)
    await settle(bob, carol, bob, carol)
    for client in (bob, carol):
        assert view(client) == ({fp(bob), fp(carol)}, {fp(carol)})
    # Without a successor named, the longest-standing member takes the role.
    assert GroupService(carol).leave("team") == "bob"
    await flush(carol)
    await settle(bob, bob)
    assert view(bob) == ({fp(bob)}, {fp(bob)})


async def test_admins_invite_and_remove_and_members_cannot(four: Four) -> None:
    alice, bob, carol, dave = four
    await make_group(alice, bob, carol)
    await settle(alice, bob, carol)
    with pytest.raises(UsageError, match="Only the admins of team"):
        GroupService(bob).add("team", "dave")
    with pytest.raises(UsageError, match="Only the admins"):
        GroupService(bob).set_profile("team", title="mine")
    GroupService(alice).set_admin("team", "bob")
    await flush(alice)
    await settle(bob, carol)
    with pytest.raises(UsageError, match="already an admin"):
        GroupService(alice).set_admin("team", "bob")
    # Bob, a junior admin, cannot demote or remove the creator.
    with pytest.raises(UsageError, match="creator"):
        GroupService(bob).remove("team", "alice")
    GroupService(bob).add("team", "dave")
    await flush(bob)
    await settle(dave, alice, carol, bob)
    assert fp(dave) in view(alice)[0]
    GroupService(bob).remove("team", "dave")
    await flush(bob)
    await settle(dave, alice, carol, bob)
    for client in (alice, bob, carol):
        assert fp(dave) not in view(client)[0]
    assert [g["status"] for g in GroupService(dave).groups()] == ["removed"]


async def test_group_profile_is_set_by_admins_and_seen_by_all(four: Four) -> None:
    alice, bob, carol, _dave = four
    await make_group(alice, bob, carol)
    await settle(alice, bob, carol)
    assert GroupService(bob).info("team")["title"] == "team"
    GroupService(alice).set_profile("team", title="Climbing club",
                                    description="Saturdays at 10", avatar=PNG)
    with pytest.raises(UsageError, match="too large"):
        GroupService(alice).set_profile("team", avatar=PNG + bytes(40_000))
    await flush(alice)
    await settle(bob, carol)
    for client in (alice, bob, carol):
        info = GroupService(client).info("team")
        assert (info["title"], info["description"], info["avatar"]) == (
            "Climbing club", "Saturdays at 10", PNG)
        assert info["name"] == "team"
    GroupService(alice).set_profile("team", description="Sundays", clear_avatar=True)
    await flush(alice)
    await settle(bob)
    info = GroupService(bob).info("team")
    assert (info["title"], info["description"], info["avatar"]) == (
        "Climbing club", "Sundays", None)


async def test_a_majority_recovers_a_group_whose_admin_is_gone(four: Four) -> None:
    """Alice, the only admin, lost her device (she never left): bob and carol,
    two of three members, vote carol in."""
    alice, bob, carol, _dave = four
    await make_group(alice, bob, carol)
    await settle(alice, bob, carol)
    GroupService(carol).vote_admin("team", "carol")
    await flush(carol)
    await settle(bob)
    assert not GroupService(carol).info("team")["is_admin"]   # one vote of three
    GroupService(bob).vote_admin("team", "carol")
    await flush(bob)
    await settle(carol, bob)
    assert GroupService(carol).info("team")["is_admin"]
    await flush(carol)
    await settle(bob)
    assert view(bob) == view(carol)
    assert view(bob)[1] == {fp(alice), fp(carol)}


async def test_members_are_told_of_their_role(four: Four) -> None:
    alice, bob, carol, _dave = four
    await make_group(alice, bob, carol)
    await settle(alice, bob, carol)
    GroupService(alice).set_admin("team", "bob")
    await flush(alice)
    notices = [getattr(e, "text", "") for e in await drain(bob)]
    assert "You are now an admin of the group team." in notices
    GroupService(alice).set_admin("team", "bob", admin=False)
    await flush(alice)
    notices = [getattr(e, "text", "") for e in await drain(bob)]
    assert "You are no longer an admin of the group team." in notices
    roles = {i.name: i.role for i in GroupService(carol).members("team")}
    assert roles == {"alice": "creator", "bob": "member", "carol": "member"}


async def test_an_invitation_can_be_withdrawn_before_it_is_accepted(four: Four) -> None:
    alice, bob, _carol, dave = four
    GroupService(alice).create("team", ["bob"])
    await flush(alice)
    await settle(bob, alice)
    GroupService(alice).add("team", "dave")
    assert GroupService(alice).invited("team") == ["dave"]
    GroupService(alice).remove("team", "dave")
    await flush(alice)
    await settle(dave, bob)
    assert GroupService(alice).invited("team") == []
    assert [g["status"] for g in GroupService(dave).groups()] == ["removed"]
    assert fp(dave) not in view(bob)[0]


def test_the_chat_header_shows_the_group_profile() -> None:
    from chatcli.client.chat_ui import ChatTarget, header_lines

    target = ChatTarget(name="team", kind="group", contact_id=0, mailbox=b"", relay_url="",
                        verified=False)
    members = [{"name": "me", "me": True}, {"name": "bob", "me": False}]
    plain = header_lines(target, members, {"title": "team", "description": ""})
    assert plain[0] == "── chat in group team ── with bob"
    shown = header_lines(target, members, {"title": "Climbers\x1b[2J",
                                           "description": "Saturdays"})
    # An admin's text reaches the terminal without escape sequences.
    assert "\x1b" not in shown[0] and shown[0].startswith("── chat in group team “Climbers")
    assert shown[1] == "   Saturdays" and len(shown) == 3
