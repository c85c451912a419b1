"""The ``search`` method over LocalApi: one-to-one and group messages, filters,
errors, and the index following what arrives and what is removed."""

from __future__ import annotations

import pytest

from chatcli.api.errors import ApiError
from chatcli.client.service import ChatClient
from tests.api.test_local import apis, call
from tests.client.conftest import Trio, pair


async def test_search_one_to_one(clients: tuple[ChatClient, ChatClient]) -> None:
    alice, bob = clients
    await pair(alice, bob)
    a, b = apis(alice, bob)
    await call(a, "send", {"to": "bob", "text": "Lunch at the Café tomorrow?"})
    await call(b, "receive")
    await call(b, "send", {"to": "alice", "text": "yes, LUNCH works"})
    await call(a, "receive")
    hits = await call(a, "search", {"text": "lunch"})
    assert [(h["from"], h["direction"], h["conversation"], h["contact"], h["group"])
            for h in hits] == [("bob", "in", "bob", "bob", None),
                               ("me", "out", "bob", "bob", None)]
    assert hits[0]["snippet"] == "yes, LUNCH works"
    assert [hits[0]["snippet"][s:e] for s, e in hits[0]["highlights"]] == ["LUNCH"]
    assert [h["snippet"] for h in await call(a, "search", {"text": "CAFÉ tom"})] == [
        "Lunch at the Café tomorrow?"]
    assert await call(a, "search", {"text": "lunch dinner"}) == []
    assert len(await call(a, "search", {"text": "lunch", "contact": "bob", "limit": 1})) == 1
    # What arrives after the index was built is found by the next search.
    await call(b, "send", {"to": "alice", "text": "lunch moved to noon"})
    await call(a, "receive")
    assert (await call(a, "search", {"text": "noon"}))[0]["snippet"] == "lunch moved to noon"
    with pytest.raises(ApiError) as bad:
        await call(a, "search", {"text": "lunch", "contact": "nobody"})
    assert bad.value.error == "unknown_contact"
    with pytest.raises(ApiError) as empty:
        await call(a, "search", {"text": "?!"})
    assert empty.value.error == "usage_error" and empty.value.exit_code == 2
    # Removing the contact removes its messages from the results.
    await call(a, "contacts.remove", {"contact": "bob"})
    assert await call(a, "search", {"text": "lunch"}) == []


async def test_search_groups(trio_of: Trio) -> None:
    alice, bob, carol = trio_of
    a, b, c = apis(alice, bob, carol)
    await call(a, "groups.create", {"name": "team", "members": ["bob", "carol"]})
    for _ in range(3):
        for api in (b, c, a):
            await call(api, "receive")
    await call(b, "send", {"to": "team", "text": "release on Friday"})
    got = [e for e in await call(c, "receive") if e["type"] == "message"]
    assert got[0]["text"] == "release on Friday"
    hits = await call(c, "search", {"text": "friday"})
    assert [(h["conversation"], h["group"], h["contact"], h["from"]) for h in hits] == [
        ("team", "team", None, "bob")]  # bob is a member, not carol's contact
    assert await call(c, "search", {"text": "friday", "group": "team"}) == hits
    with pytest.raises(ApiError):
        await call(c, "search", {"text": "friday", "group": "nope"})
    with pytest.raises(ApiError):
        await call(c, "search", {"text": "friday", "group": "team", "contact": "alice"})
    own = await call(b, "search", {"text": "release"})
    assert [(h["from"], h["direction"]) for h in own] == [("me", "out")]
