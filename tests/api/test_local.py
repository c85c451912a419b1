"""Every LocalApi method against the in-memory relay (tests/client/fakerelay.py);
each answer is also checked against the result type docs/api.md documents."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from chatcli.api.errors import ApiError
from chatcli.api.local import LocalApi, needs_network
from chatcli.api.schema import METHODS
from chatcli.client.service import ChatClient
from tests.client.conftest import Trio, pair


async def call(api: LocalApi, method: str, params: dict[str, Any] | None = None) -> Any:
    """The method's answer, checked against its documented result type (and
    run without trio when the method is a local one)."""
    params = params or {}
    if needs_network(method, params):
        result = await api.call(method, params)
    else:
        result = api.call_local(method, params)
    msgspec.convert(result, METHODS[method].result)
    return result


def apis(*clients: ChatClient) -> list[LocalApi]:
    return [LocalApi(client, resident=False) for client in clients]


async def test_version_status_settings(clients: tuple[ChatClient, ChatClient]) -> None:
    a, _ = apis(*clients)
    assert (await call(a, "version"))["api"] == 1
    status = await call(a, "status")
    assert status["name"] == "alice" and status["resident"] is False
    assert status["fingerprint"] == clients[0].identity.public.fingerprint()
    assert (await call(a, "settings.get"))["read_receipts"] is True
    assert (await call(a, "settings.set", {"read_receipts": False}))["read_receipts"] is False
    assert clients[0].account().read_receipts is False
    assert (await call(a, "presence.set", {"mode": "hide"})) == {"hidden": True}
    assert (await call(a, "settings.get"))["presence_hidden"] is True
    assert (await call(a, "presence.set", {"mode": "show"})) == {"hidden": False}


async def test_invite_accept_send_receive_history(clients: tuple[ChatClient, ChatClient]
                                                  ) -> None:
    a, b = apis(*clients)
    invite = await call(a, "invites.create", {"label": "bob", "expires": 3600})
    assert invite["link"].startswith("chatcli:") and invite["label_taken"] is False
    added = await call(b, "invites.accept", {"link": invite["link"], "name": "alice"})
    assert added["name"] == "alice"
    events = await call(a, "receive")
    assert events[-1] == {"type": "synced"}
    assert any(e["type"] == "notice" and e["contact"] == "bob" for e in events)
    assert [c["name"] for c in await call(a, "contacts.list", {"offline": True})] == ["bob"]
    listed = await call(a, "contacts.list")
    assert listed[0]["online"] is not None  # the relay was asked

    sent = await call(a, "send", {"to": "bob", "text": "hello bob"})
    assert sent == {"id": sent["id"], "to": "bob", "stored": True}
    got = await call(b, "receive")
    messages = [e for e in got if e["type"] == "message"]
    assert [(m["from"], m["text"], m["group"]) for m in messages] == [
        ("alice", "hello bob", None)]
    # Without read_receipts the message stays unread and only "delivered" goes back.
    assert (await call(b, "history", {"contact": "alice"}))[-1]["state"] == "received"
    receipts = [e for e in await call(a, "receive") if e["type"] == "receipt"]
    assert [(r["from"], r["kind"]) for r in receipts] == [("bob", "delivered")]
    assert receipts[0]["ids"] == [sent["id"]]
    # read marks it read and queues the read receipt; the next connection sends it.
    await call(b, "read", {"contact": "alice", "ids": [sent["id"]]})
    assert (await call(b, "history", {"contact": "alice"}))[-1]["state"] == "read"
    await call(b, "receive")
    receipts = [e for e in await call(a, "receive") if e["type"] == "receipt"]
    assert [(r["from"], r["kind"]) for r in receipts] == [("bob", "read")]
    history = await call(a, "history", {"contact": "bob", "limit": 1})
    assert [(h["text"], h["state"]) for h in history] == [("hello bob", "read")]


async def test_history_pages(clients: tuple[ChatClient, ChatClient]) -> None:
    alice, bob = clients
    await pair(alice, bob)
    a, _ = apis(alice, bob)
    for i in range(7):
        alice.enqueue_text("bob", f"m{i}")
    everything = await call(a, "history", {"contact": "bob"})
    assert [h["text"] for h in everything] == [f"m{i}" for i in range(7)]
    last = await call(a, "history", {"contact": "bob", "limit": 3})
    assert [h["text"] for h in last] == ["m4", "m5", "m6"]
    first = everything[0]["sent_at"]
    assert await call(a, "history", {"contact": "bob", "before": first}) == []


async def test_history_pages_open_only_their_rows(clients: tuple[ChatClient, ChatClient],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # A page of older history (the web page scrolling back through a long
    # conversation) reads and opens its own rows, not everything after them.
    alice, bob = clients
    await pair(alice, bob)
    a, _ = apis(alice, bob)
    clock = iter(range(1_000_000, 2_000_000, 10))
    monkeypatch.setattr("chatcli.client.outbox.now_ms", lambda: next(clock))
    for i in range(40):
        alice.enqueue_text("bob", f"m{i}")
    everything = await call(a, "history", {"contact": "bob", "limit": 100})
    opened: list[str] = []
    real_open = alice.sealer.open_text

    def counting_open(data: bytes, column: str, row: object) -> str:
        opened.append(column)
        return real_open(data, column, row)

    monkeypatch.setattr(alice.sealer, "open_text", counting_open)
    page = await call(a, "history", {"contact": "bob", "limit": 5,
                                     "before": everything[30]["sent_at"]})
    assert [h["text"] for h in page] == [f"m{i}" for i in range(25, 30)]
    assert opened == ["message.text"] * 5


async def test_receive_with_read_receipts(clients: tuple[ChatClient, ChatClient]) -> None:
    alice, bob = clients
    await pair(alice, bob)
    a, b = apis(alice, bob)
    sent = await call(a, "send", {"to": "bob", "text": "one"})
    await call(b, "receive", {"read_receipts": True})
    assert (await call(b, "history", {"contact": "alice"}))[-1]["state"] == "read"
    assert bob.auto_read is False  # the choice holds for that stream only
    receipts = [e for e in await call(a, "receive") if e["type"] == "receipt"]
    assert [(r["kind"], r["ids"]) for r in receipts] == [("read", [sent["id"]])]


async def test_typing_arrives_as_an_event(clients: tuple[ChatClient, ChatClient]) -> None:
    alice, bob = clients
    await pair(alice, bob)
    a, b = apis(alice, bob)
    assert await call(a, "typing", {"to": "bob", "active": True}) is None
    typing = [e for e in await call(b, "receive") if e["type"] == "typing"]
    assert typing == [{"type": "typing", "from": "alice", "active": True}]


async def test_presence_get(clients: tuple[ChatClient, ChatClient]) -> None:
    alice, bob = clients
    await pair(alice, bob)
    a, _ = apis(alice, bob)
    found = await call(a, "presence.get", {"contacts": ["bob"]})
    assert list(found) == ["bob"] and found["bob"]["known"] is True


async def test_verify_block_unblock_remove(clients: tuple[ChatClient, ChatClient]) -> None:
    alice, bob = clients
    await pair(alice, bob)
    a, _ = apis(alice, bob)
    shown = await call(a, "contacts.verify", {"contact": "bob"})
    assert shown["verified"] is False and len(shown["safety_number"]) == 60
    assert bytes.fromhex(shown["qr"])
    confirmed = await call(a, "contacts.verify", {"contact": "bob", "confirm": True})
    assert confirmed["verified"] is True and confirmed["accepted"] is False
    assert confirmed["safety_number"] == shown["safety_number"]
    assert await call(a, "contacts.block", {"contact": "bob"}) is None
    assert (await call(a, "contacts.list", {"offline": True}))[0]["blocked"] is True
    assert await call(a, "contacts.unblock", {"contact": "bob"}) is None
    assert (await call(a, "contacts.list", {"offline": True}))[0]["blocked"] is False
    assert await call(a, "contacts.remove", {"contact": "bob"}) is None
    assert await call(a, "contacts.list", {"offline": True}) == []


async def test_profile_without_relay_blobs(clients: tuple[ChatClient, ChatClient],
                                          tmp_path: Path) -> None:
    """The in-memory relay stores no blobs: publishing a profile and sending a
    file are tested end to end (tests/e2e/test_messaging.py); here, what comes
    before the upload."""
    a, _ = apis(*clients)
    assert await call(a, "profile.get") is None
    with pytest.raises(ApiError) as raised:
        await call(a, "profile.set", {"status": "no name yet"})
    assert raised.value.error == "usage_error" and "--display-name" in raised.value.message
    with pytest.raises(ApiError) as raised:
        await call(a, "profile.set", {"display_name": "A", "avatar": str(tmp_path / "none")})
    assert raised.value.error == "usage_error" and "Cannot read" in raised.value.message


async def test_groups(trio_of: Trio) -> None:
    alice, bob, carol = trio_of
    a, b, c = apis(alice, bob, carol)
    created = await call(a, "groups.create", {"name": "team", "members": ["bob", "carol"]})
    assert created == {"group": "team", "invited": ["bob", "carol"]}
    for _ in range(3):
        for api in (b, c, a):
            await call(api, "receive")
    listed = await call(a, "groups.list")
    assert [(g["name"], g["members"]) for g in listed] == [("team", 3)]
    members = await call(a, "groups.members", {"group": "team"})
    assert sorted(m["name"] for m in members["members"]) == ["alice", "bob", "carol"]
    assert members["invited"] == []
    sent = await call(b, "send", {"to": "team", "text": "hi team"})
    assert (sent["members"], sent["stored_for"]) == (2, 2)
    got = [e for e in await call(c, "receive") if e["type"] == "message"]
    assert [(e["group"], e["text"]) for e in got] == [("team", "hi team")]
    assert got[0]["from_contact"] is False  # bob is not carol's contact
    history = await call(c, "groups.history", {"group": "team", "limit": 5})
    assert [h["text"] for h in history] == ["hi team"]
    # carol verifies bob, a member who is not her contact, both ways.
    number = await call(c, "groups.verify", {"group": "team", "member": "bob"})
    assert number["verified"] is False and number["contact"] is None
    via_verify = await call(c, "contacts.verify", {"contact": "bob", "confirm": True})
    assert via_verify["group"] == "team" and via_verify["verified"] is True
    assert via_verify["safety_number"] == number["safety_number"]
    await call(a, "groups.remove", {"group": "team", "member": "carol"})
    await call(b, "groups.leave", {"group": "team"})
    await call(a, "groups.add", {"group": "team", "contact": "carol"})
    assert (await call(a, "groups.members", {"group": "team"}))["invited"] == ["carol"]


async def test_events_carry_key_changes(tmp_path: Path, clients: tuple[ChatClient, ChatClient]
                                        ) -> None:
    from chatcli.client.home import Home
    from tests.client.conftest import PASS

    alice, bob = clients
    await pair(alice, bob)
    # bob starts over with a new identity and accepts a new invite labelled "bob".
    link = await LocalApi(alice, resident=False).call("invites.create", {"label": "bob"})
    from chatcli.client.service import create_account

    relay_url = bob.account().relay_url
    new_bob, _ = await create_account(Home(tmp_path / "bob2"), PASS, name="bob",
                                      relay_url=relay_url)
    try:
        await LocalApi(new_bob, resident=False).call("invites.accept",
                                                     {"link": link["link"], "name": "alice"})
        events = [e async for e in LocalApi(alice, resident=False).events()]
    finally:
        new_bob.close()
    changes = [e for e in events if e["type"] == "key_change"]
    assert len(changes) == 1 and changes[0]["contact"] == "bob"
    assert changes[0]["pending"] is True and changes[0]["warning"] is True
    assert changes[0]["fingerprint"] == new_bob.identity.public.fingerprint()
    msgspec.convert(changes[0], METHODS["receive"].result.__args__[0])
    with pytest.raises(ApiError) as raised:
        await LocalApi(alice, resident=False).call("send", {"to": "bob", "text": "x"})
    assert raised.value.error == "key_changed" and raised.value.exit_code == 4


async def test_send_and_typing_queue_only(clients: tuple[ChatClient, ChatClient]) -> None:
    """``queue``: answered at once, without a relay; the next connection sends."""
    alice, bob = clients
    await pair(alice, bob)
    a, b = apis(alice, bob)
    assert not needs_network("send", {"to": "bob", "text": "later", "queue": True})
    queued = a.call_local("send", {"to": "bob", "text": "later", "queue": True})
    assert queued == {"id": queued["id"], "to": "bob", "stored": False}
    assert a.call_local("typing", {"to": "bob", "active": True, "queue": True}) is None
    assert (await call(a, "history", {"contact": "bob"}))[-1]["state"] == "queued"
    await call(a, "receive")  # connects, and sends what waited
    assert (await call(a, "history", {"contact": "bob"}))[-1]["state"] == "sent"
    got = await call(b, "receive")
    assert [e["text"] for e in got if e["type"] == "message"] == ["later"]
    assert [e["active"] for e in got if e["type"] == "typing"] == [True]
