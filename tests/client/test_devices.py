"""Devices in the client core against an in-memory relay: a second device of
an identity, fan-out, sent-message sync, list changes, removal, refusal."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatcli.client.device_setup import add_device
from chatcli.client.devices import DeviceRemovedError
from chatcli.client.events import MessageEvent, NoticeEvent, SentElsewhereEvent
from chatcli.client.home import Home
from chatcli.client.service import ChatClient
from tests.client.conftest import PASS, drain, make_client, pair
from tests.client.fakerelay import FakeRelay


def texts(events: list[object]) -> list[str]:
    return [e.text for e in events if isinstance(e, MessageEvent)]


def synced(events: list[object]) -> list[str]:
    return [e.text for e in events if isinstance(e, SentElsewhereEvent)]


def notices(events: list[object]) -> list[str]:
    return [e.text for e in events if isinstance(e, NoticeEvent)]


async def send(client: ChatClient, name: str, text: str) -> None:
    async with client.online():
        await client.send_text(name, text)


async def test_two_devices_chat_sync_and_removal(tmp_path: Path, relay: FakeRelay) -> None:
    alice = await make_client(tmp_path, "alice", relay)
    bob = await make_client(tmp_path, "bob", relay)
    await pair(alice, bob)
    safety = bob.get_contact("alice").identity
    laptop = await add_device(alice, Home(tmp_path / "alice-laptop"), PASS,
                              device_name="laptop")
    assert [d.name for d in alice.own_device_list().devices] == ["first device", "laptop"]
    assert laptop.identity.public == alice.identity.public
    assert notices(await drain(bob)) == [
        "alice's devices changed: added laptop. The safety number is unchanged."]
    assert bob.get_contact("alice").identity == safety

    await send(bob, "alice", "hello both")
    assert texts(await drain(alice)) == ["hello both"]
    assert texts(await drain(laptop)) == ["hello both"]

    await send(laptop, "bob", "from the laptop")
    assert texts(await drain(bob)) == ["from the laptop"]
    assert synced(await drain(alice)) == ["from the laptop"]
    await send(alice, "bob", "from the first")
    assert texts(await drain(bob)) == ["from the first"]
    assert synced(await drain(laptop)) == ["from the first"]
    # Each device's history shows all four, its own and the other's sends outgoing.
    for device in (alice, laptop):
        assert [(h["direction"], h["text"]) for h in device.history("bob")] == [
            ("in", "hello both"), ("out", "from the laptop"), ("out", "from the first")]

    alice.remove_own_device("laptop")
    async with alice.online():
        await alice.flush_outbox()
    assert any("removed laptop" in n for n in notices(await drain(bob)))
    await send(bob, "alice", "after removal")
    assert texts(await drain(alice)) == ["after removal"]
    events = await drain(laptop)
    assert texts(events) == []
    assert "This device was removed from alice's account" in " ".join(notices(events))
    with pytest.raises(DeviceRemovedError):
        laptop.require_listed()


async def test_a_message_from_an_unlisted_device_is_refused(tmp_path: Path,
                                                            relay: FakeRelay) -> None:
    alice = await make_client(tmp_path, "alice", relay)
    bob = await make_client(tmp_path, "bob", relay)
    await pair(alice, bob)
    laptop = await add_device(alice, Home(tmp_path / "alice-laptop"), PASS,
                              device_name="laptop")
    await drain(bob)
    alice.remove_own_device("laptop")
    async with alice.online():
        await alice.flush_outbox()
    await drain(bob)
    # The removed device still holds the identity key and tries to send anyway.
    laptop.enqueue_text("bob", "sneaky")
    async with laptop.online():
        await laptop.deliver_outbox()
    events = await drain(bob)
    assert texts(events) == []
    assert any("not on alice's device list" in n for n in notices(events))


async def test_a_removed_device_refuses_to_go_online(tmp_path: Path, relay: FakeRelay) -> None:
    alice = await make_client(tmp_path, "alice", relay)
    laptop = await add_device(alice, Home(tmp_path / "alice-laptop"), PASS,
                              device_name="laptop")
    alice.remove_own_device("laptop")
    async with alice.online():
        await alice.flush_outbox()
    assert any("was removed" in n for n in notices(await drain(laptop)))
    with pytest.raises(DeviceRemovedError, match="removed from alice's account"):
        await drain(laptop)
    with pytest.raises(Exception, match="cannot remove itself"):
        alice.remove_own_device("first device")


async def test_devices_made_on_both_sides_before_either_list_arrived(
        tmp_path: Path, relay: FakeRelay) -> None:
    alice = await make_client(tmp_path, "alice", relay)
    bob = await make_client(tmp_path, "bob", relay)
    await pair(alice, bob)
    laptop = await add_device(alice, Home(tmp_path / "a-laptop"), PASS, device_name="laptop")
    bob_laptop = await add_device(bob, Home(tmp_path / "b-laptop"), PASS, device_name="laptop")
    bob_phone = await add_device(bob, Home(tmp_path / "b-phone"), PASS, device_name="phone")
    for device in (bob, alice, laptop, bob_laptop, bob_phone):
        await drain(device)
    await send(alice, "bob", "to all of bob")
    for device in (bob, bob_laptop, bob_phone):
        assert texts(await drain(device)) == ["to all of bob"]
    await send(laptop, "bob", "from the laptop")
    for device in (bob, bob_laptop, bob_phone):
        assert texts(await drain(device)) == ["from the laptop"]
    await send(bob_phone, "alice", "from the phone")
    for device in (alice, laptop):
        assert texts(await drain(device)) == ["from the phone"]


async def test_a_backup_of_a_device_restores_that_device(tmp_path: Path,
                                                         relay: FakeRelay) -> None:
    alice = await make_client(tmp_path, "alice", relay)
    bob = await make_client(tmp_path, "bob", relay)
    await pair(alice, bob)
    laptop = await add_device(alice, Home(tmp_path / "alice-laptop"), PASS,
                              device_name="laptop")
    await drain(bob)
    payload = alice.export_backup()
    restored = ChatClient.import_backup(Home(tmp_path / "alice-restored"), payload, PASS)
    assert restored.device_id == alice.device_id
    listed = restored.own_device_list()
    assert sorted(d.name for d in listed.devices) == ["first device", "laptop"]
    assert listed.version == alice.own_device_list().version + 1
    await send(restored, "bob", "back again")
    assert texts(await drain(bob)) == ["back again"]
    assert synced(await drain(laptop)) == ["back again"]
    await send(bob, "alice", "welcome back")
    assert texts(await drain(restored)) == ["welcome back"]
    assert texts(await drain(laptop)) == ["welcome back"]


def as_version_6(client: ChatClient) -> None:
    """Rewrite the database in the shape chatcli wrote before devices (schema 6):
    sessions unique per contact, outbox rows without a device, no device columns."""
    import sqlite3

    path = client.home.database
    client.close()
    conn = sqlite3.connect(path)
    conn.executescript("""
        BEGIN;
        CREATE TABLE session_v6 (id INTEGER NOT NULL PRIMARY KEY,
            contact_id INTEGER NOT NULL UNIQUE REFERENCES contact (id) ON DELETE CASCADE,
            state_sealed BLOB NOT NULL, updated_at INTEGER NOT NULL);
        INSERT INTO session_v6 SELECT id, contact_id, state_sealed, updated_at FROM session;
        DROP TABLE session; ALTER TABLE session_v6 RENAME TO session;
        ALTER TABLE outbox DROP COLUMN device;
        ALTER TABLE account DROP COLUMN device_id; ALTER TABLE account DROP COLUMN device_name;
        ALTER TABLE account DROP COLUMN device_list;
        ALTER TABLE account DROP COLUMN self_cap_sealed;
        ALTER TABLE contact DROP COLUMN device_list;
        UPDATE meta_entry SET value = '6' WHERE key = 'schema_version';
        COMMIT;
    """)
    conn.close()


async def test_a_version_6_database_becomes_one_device_and_keeps_its_sessions(
        tmp_path: Path, relay: FakeRelay) -> None:
    alice = await make_client(tmp_path, "alice", relay)
    bob = await make_client(tmp_path, "bob", relay)
    await pair(alice, bob)
    await send(alice, "bob", "before")
    assert texts(await drain(bob)) == ["before"]
    alice.enqueue_text("bob", "queued across the upgrade")
    home = alice.home
    as_version_6(alice)
    alice = ChatClient.unlock(Home(home.root), PASS)
    assert len(alice.device_id) == 16
    async with alice.online():
        await alice.flush_outbox()
    await send(alice, "bob", "after")
    assert texts(await drain(bob)) == ["queued across the upgrade", "after"]
    await send(bob, "alice", "reply")
    assert texts(await drain(alice)) == ["reply"]
    assert [d.name for d in alice.own_device_list().devices] == ["first device"]
