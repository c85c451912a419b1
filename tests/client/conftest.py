"""Fixtures: an in-memory relay and unlocked clients in temporary homes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from chatcli.client.home import Home
from chatcli.client.service import ChatClient, create_account
from tests.client.fakerelay import FakeRelay

PASS = "correct horse battery"


@pytest.fixture(autouse=True)
def fast_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATCLI_INSECURE_FAST_KDF", "1")


@pytest.fixture
async def relay(nursery: trio.Nursery) -> FakeRelay:
    fake = FakeRelay()
    await nursery.start(fake.serve)
    return fake


@pytest.fixture
async def relay2(nursery: trio.Nursery) -> FakeRelay:
    fake = FakeRelay()
    await nursery.start(fake.serve)
    return fake


async def make_client(tmp_path: Path, name: str, relay: FakeRelay) -> ChatClient:
    client, _ = await create_account(Home(tmp_path / name), PASS, name=name, relay_url=relay.url)
    return client


async def pair(alice: ChatClient, bob: ChatClient, label: str = "bob",
               name: str = "alice") -> None:
    """Alice invites, Bob accepts, Alice receives the handshake."""
    async with alice.online():
        link = await alice.create_invite(label)
    async with bob.online():
        await bob.accept_invite(link, name)
    await drain(alice)
    await drain(bob)


async def drain(client: ChatClient) -> list[object]:
    events = []
    async with client.online():
        async for event in client.events():
            events.append(event)
    return events


@pytest.fixture
async def clients(tmp_path: Path, relay: FakeRelay) -> AsyncIterator[tuple[ChatClient, ChatClient]]:
    alice = await make_client(tmp_path, "alice", relay)
    bob = await make_client(tmp_path, "bob", relay)
    yield alice, bob
    alice.close()
    bob.close()


Trio = tuple[ChatClient, ChatClient, ChatClient]


@pytest.fixture
async def trio_of(tmp_path: Path, relay: FakeRelay) -> AsyncIterator[Trio]:
    """alice knows bob and carol; bob and carol are not each other's contacts."""
    alice = await make_client(tmp_path, "alice", relay)
    bob = await make_client(tmp_path, "bob", relay)
    carol = await make_client(tmp_path, "carol", relay)
    await pair(alice, bob, "bob", "alice")
    await pair(alice, carol, "carol", "alice")
    yield alice, bob, carol
    for client in (alice, bob, carol):
        client.close()
