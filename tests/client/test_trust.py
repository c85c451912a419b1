"""Who a contact is: key changes need proof, an address proves nothing
(security review, finding 3); invite capabilities are replaced and revoked
after the first exchange (finding 4); a used invite fails loudly."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from chatcli.client import invites as service_module
from chatcli.client import models as db
from chatcli.client.errors import InviteRefusedError
from chatcli.client.service import ChatClient, MessageEvent, NoticeEvent, cap_hash
from chatcli.crypto.invite import parse_invite
from chatcli.crypto.keychange import KeyChange
from chatcli.crypto.keys import IdentityKeyPair
from chatcli.errors import KeyChangedError, RelayError, UsageError
from chatcli.protocol import frames
from tests.client.conftest import drain, make_client, pair
from tests.client.fakerelay import FakeRelay


def texts(events: list[object]) -> list[str]:
    return [e.text for e in events if isinstance(e, MessageEvent)]


def warnings(events: list[object]) -> list[str]:
    return [e.text for e in events if isinstance(e, NoticeEvent) and e.warning]


def contact(client: ChatClient, name: str) -> db.Contact:
    return client.get_contact(name, allow_key_changed=True)


async def test_claimed_address_makes_a_new_contact_not_a_takeover(
        tmp_path: Path, relay: FakeRelay, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = await make_client(tmp_path, "alice", relay)
    bob = await make_client(tmp_path, "bob", relay)
    await pair(alice, bob)
    bob_row = contact(alice, "bob")
    # Mallory accepts an invite of alice's and claims to be bob: bob's name,
    # relay, mailbox and box key, with her own identity key.
    mallory = await make_client(tmp_path, "mallory", relay)
    real_info = mallory._own_info

    def claim_bob(capability: bytes) -> object:
        return msgspec.structs.replace(
            real_info(capability), name="bob", relay_url=bob_row.relay_url,
            mailbox=bob_row.mailbox, box_key=bob_row.box_key)

    monkeypatch.setattr(mallory, "_own_info", claim_bob)
    async with alice.online():
        link = await alice.create_invite(None)
    async with mallory.online():
        await mallory.accept_invite(link, "alice")
    events = await drain(alice)
    assert alice.contact_names() == ["bob", "bob-2"]
    assert any("different identity key" in w and "bob-2" in w for w in warnings(events))
    kept = contact(alice, "bob")
    assert kept.identity == bob.identity.public.raw and not kept.key_changed
    assert contact(alice, "bob-2").identity == mallory.identity.public.raw
    assert not contact(alice, "bob-2").verified
    # Presence for bob's mailbox is still bob's.
    shown = alice._presence_events([frames.PresenceEntry(mailbox=bob_row.mailbox, online=True,
                                                         last_seen=None)])
    assert [e.contact for e in shown] == ["bob"]  # type: ignore[union-attr]
    # The old contact's session is untouched: writing to bob still works.
    async with alice.online():
        await alice.send_text("bob", "still you")
    assert texts(await drain(bob))[-1] == "still you"


async def test_key_change_signed_by_the_old_key_is_accepted(
        tmp_path: Path, relay: FakeRelay) -> None:
    alice = await make_client(tmp_path, "alice", relay)
    bob = await make_client(tmp_path, "bob", relay)
    await pair(alice, bob)
    alice.confirm_contact("bob")
    bob2 = await make_client(tmp_path, "bob2", relay)
    async with alice.online():
        link = await alice.create_invite(None)
    async with bob2.online():
        await bob2.accept_invite(link, "alice", previous_identity=bob.identity)
    events = await drain(alice)
    assert alice.contact_names() == ["bob"]
    row = contact(alice, "bob")
    assert row.identity == bob2.identity.public.raw
    assert not row.key_changed and row.verified  # the verified old key vouched
    assert any("signed the change" in w for w in warnings(events))
    async with alice.online():
        await alice.send_text("bob", "new laptop?")
    assert texts(await drain(bob2))[-1] == "new laptop?"
    async with bob2.online():
        await bob2.send_text("alice", "yes")
    assert texts(await drain(alice)) == ["yes"]


async def test_key_change_with_a_forged_signature_is_refused(
        tmp_path: Path, relay: FakeRelay, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = await make_client(tmp_path, "alice", relay)
    bob = await make_client(tmp_path, "bob", relay)
    await pair(alice, bob)
    mallory = await make_client(tmp_path, "mallory", relay)
    forger = IdentityKeyPair.generate()

    def forged(old: IdentityKeyPair, new: object, *, now: int) -> KeyChange:
        # Claims bob's old key, signed by a key that is not bob's.
        return KeyChange(old=bob.identity.public, new=mallory.identity.public, issued_at=now,
                         signature=forger.sign(b"anything"))

    monkeypatch.setattr(service_module, "sign_key_change", forged)
    async with alice.online():
        link = await alice.create_invite(None)
    async with mallory.online():
        await mallory.accept_invite(link, "alice", previous_identity=forger)
    events = await drain(alice)
    assert alice.contact_names() == ["bob"]
    assert contact(alice, "bob").identity == bob.identity.public.raw
    assert any("does not verify" in w for w in warnings(events))


async def test_unsigned_key_change_waits_for_confirm_and_reject_refuses_it(
        tmp_path: Path, relay: FakeRelay) -> None:
    alice = await make_client(tmp_path, "alice", relay)
    bob = await make_client(tmp_path, "bob", relay)
    await pair(alice, bob)
    alice.confirm_contact("bob")
    bob2 = await make_client(tmp_path, "bob2", relay)
    async with alice.online():
        link = await alice.create_invite("bob")
    async with bob2.online():
        await bob2.accept_invite(link, "alice")
    await drain(alice)
    with pytest.raises(KeyChangedError):
        alice.enqueue_text("bob", "who is this?")
    async with alice.online():
        await alice.reject_key_change("bob")
    row = contact(alice, "bob")
    assert row.identity == bob.identity.public.raw and not row.key_changed and row.verified
    assert row.pending_sealed is None
    # Writing to the old bob works again ...
    async with alice.online():
        await alice.send_text("bob", "it was not you")
    assert texts(await drain(bob))[-1] == "it was not you"
    # ... and the refused key can no longer deposit (its invite capability is revoked).
    invite = parse_invite(link, now=0)
    assert cap_hash(invite.capability) not in relay.mailboxes[alice.account().mailbox].caps
    async with bob2.online():
        with pytest.raises(Exception, match="refused"):
            await bob2.send_text("alice", "let me in", time_limit=2)
    with pytest.raises(UsageError, match="nothing to reject"):
        async with alice.online():
            await alice.reject_key_change("bob")


async def test_invite_capability_is_replaced_then_revoked(
        tmp_path: Path, relay: FakeRelay) -> None:
    alice = await make_client(tmp_path, "alice", relay)
    bob = await make_client(tmp_path, "bob", relay)
    async with alice.online():
        link = await alice.create_invite("bob")
    invite = parse_invite(link, now=0)
    alice_box = relay.mailboxes[alice.account().mailbox]
    async with bob.online():
        await bob.accept_invite(link, "alice")
        # Sent before alice answered: the invite's capability took the
        # handshake, so this waits in the outbox for bob's own capability.
        with pytest.raises(RelayError, match="not answered your acceptance"):
            await bob.send_text("alice", "early")
    assert texts(await drain(alice)) == []
    await drain(bob)  # bob switches to his own capability, says so, sends "early"
    assert texts(await drain(alice)) == ["early"]
    row = contact(bob, "alice")
    assert bob.sealer.open(row.deposit_cap_sealed, "contact.deposit_cap",
                           row.id) != invite.capability
    async with bob.online():
        await bob.send_text("alice", "after the switch")
    assert texts(await drain(alice)) == ["after the switch"]
    # The invite's capability no longer deposits nor watches presence.
    assert cap_hash(invite.capability) not in alice_box.caps
    async with bob.online():
        conn = await bob.anonymous(invite.relay_url)
        answer = await conn.request(lambda req: frames.Deposit(req=req, items=[
            frames.DepositItem(mailbox=invite.mailbox, cap=invite.capability, payload=b"x")]))
        assert isinstance(answer, frames.DepositResult) and answer.errors == ["bad_capability"]
        own_cap = bob.sealer.open(row.deposit_cap_sealed, "contact.deposit_cap", row.id)
        answer = await conn.request(lambda req: frames.PresenceQuery(req=req, targets=[
            frames.PresenceTarget(mailbox=invite.mailbox, cap=invite.capability),
            frames.PresenceTarget(mailbox=invite.mailbox, cap=own_cap)]))
        assert isinstance(answer, frames.PresenceResult)
        assert answer.entries[0].online is None and answer.entries[1].online is not None
    # Chatting goes on both ways with the replacement.
    async with alice.online():
        await alice.send_text("bob", "hi bob")
    assert texts(await drain(bob)) == ["hi bob"]
    async with bob.online():
        await bob.send_text("alice", "hi alice")
    assert texts(await drain(alice)) == ["hi alice"]


async def test_accepting_a_used_invite_fails_and_leaves_no_contact(
        tmp_path: Path, relay: FakeRelay) -> None:
    alice = await make_client(tmp_path, "alice", relay)
    bob = await make_client(tmp_path, "bob", relay)
    carol = await make_client(tmp_path, "carol", relay)
    async with alice.online():
        link = await alice.create_invite("bob")
    async with bob.online():
        await bob.accept_invite(link, "alice")
    await drain(alice)
    await drain(bob)
    await drain(alice)  # bob's switch arrives: the invite's capability is revoked
    async with carol.online():
        with pytest.raises(InviteRefusedError, match="already used or revoked") as caught:
            await carol.accept_invite(link, "alice")
    assert caught.value.exit_code == 3
    assert carol.contact_names() == []
    assert alice.contact_names() == ["bob"]


async def test_block_before_the_switch_also_revokes_the_invite_capability(
        tmp_path: Path, relay: FakeRelay) -> None:
    alice = await make_client(tmp_path, "alice", relay)
    bob = await make_client(tmp_path, "bob", relay)
    async with alice.online():
        link = await alice.create_invite("bob")
    async with bob.online():
        await bob.accept_invite(link, "alice")
    await drain(alice)  # bob has not read the answer: he still uses the invite's capability
    async with alice.online():
        await alice.block("bob")
    invite = parse_invite(link, now=0)
    assert cap_hash(invite.capability) not in relay.mailboxes[alice.account().mailbox].caps
    async with bob.online():
        with pytest.raises(Exception, match="refused"):
            await bob.send_text("alice", "let me in", time_limit=2)


async def test_version_1_database_gains_the_invite_link_column(tmp_path: Path) -> None:
    import sqlite3

    from chatcli.client.store import SCHEMA_VERSION, Sealer, Store

    path = tmp_path / "old.db"
    key = bytes(range(32))
    Store.open(path, Sealer(key), create=True).close()
    raw = sqlite3.connect(path)
    raw.execute("ALTER TABLE invite DROP COLUMN contact_cap_hash")
    raw.execute("UPDATE meta_entry SET value = '1' WHERE key = 'schema_version'")
    raw.commit()
    raw.close()
    Store.open(path, Sealer(key)).close()
    raw = sqlite3.connect(path)
    columns = {row[1] for row in raw.execute("PRAGMA table_info(invite)")}
    version = raw.execute("SELECT value FROM meta_entry WHERE key = 'schema_version'").fetchone()
    raw.close()
    assert "contact_cap_hash" in columns and version == (str(SCHEMA_VERSION),)


async def test_an_invite_made_before_the_upgrade_keeps_its_capability(
        tmp_path: Path, relay: FakeRelay) -> None:
    alice = await make_client(tmp_path, "alice", relay)
    bob = await make_client(tmp_path, "bob", relay)
    async with alice.online():
        link = await alice.create_invite("bob")
    with alice.store.write():  # as an older chatcli stored it: no contact capability
        db.Invite.update(contact_cap_hash=None).execute()
    relay.mailboxes[alice.account().mailbox].one_shot.clear()  # ... and registered it
    async with bob.online():
        await bob.accept_invite(link, "alice")
    await drain(alice)
    await drain(bob)
    await drain(alice)
    async with bob.online():
        await bob.send_text("alice", "still works")
    assert texts(await drain(alice)) == ["still works"]


async def test_two_acceptors_race_the_second_is_refused_the_first_waits(
        tmp_path: Path, relay: FakeRelay) -> None:
    """Both accept before alice runs anything: the relay lets one handshake
    through on the invite's one-shot capability and refuses the other."""
    alice = await make_client(tmp_path, "alice", relay)
    bob = await make_client(tmp_path, "bob", relay)
    carol = await make_client(tmp_path, "carol", relay)
    async with alice.online():
        link = await alice.create_invite("bob")
    async with bob.online():
        await bob.accept_invite(link, "alice")
        with pytest.raises(RelayError, match="stays queued and goes out"):
            await bob.send_text("alice", "sent early", time_limit=2)
    async with carol.online():
        with pytest.raises(InviteRefusedError, match="already used or revoked") as caught:
            await carol.accept_invite(link, "alice")
    assert caught.value.exit_code == 3
    assert carol.contact_names() == []
    assert warnings(await drain(alice)) == []      # only bob's handshake arrived
    assert alice.contact_names() == ["bob"]
    await drain(bob)   # alice's answer brings bob's own capability: the queue goes out
    with bob.store.read():
        assert not db.Outbox.select().exists()
        assert db.Message.get(db.Message.uuid.is_null(False)).failed is None
    assert texts(await drain(alice)) == ["sent early"]


async def _deposit_with(client: ChatClient, owner: ChatClient, capability: bytes) -> object:
    async with client.online():
        conn = await client.anonymous(owner.account().relay_url)
        answer = await conn.request(lambda req: frames.Deposit(req=req, items=[
            frames.DepositItem(mailbox=owner.account().mailbox, cap=capability,
                               payload=b"x")]))
    assert isinstance(answer, frames.DepositResult)
    return answer.errors


@pytest.mark.parametrize("proof", ["signed", "confirmed"])
async def test_key_change_revokes_the_capability_of_the_old_key(
        tmp_path: Path, relay: FakeRelay, proof: str) -> None:
    alice = await make_client(tmp_path, "alice", relay)
    bob = await make_client(tmp_path, "bob", relay)
    await pair(alice, bob)
    old_row = contact(bob, "alice")
    old_cap = bob.sealer.open(old_row.deposit_cap_sealed, "contact.deposit_cap", old_row.id)
    assert await _deposit_with(bob, alice, old_cap) == [None]
    await drain(alice)
    bob2 = await make_client(tmp_path, "bob2", relay)
    async with alice.online():
        link = await alice.create_invite(None if proof == "signed" else "bob")
    async with bob2.online():
        await bob2.accept_invite(link, "alice",
                                 previous_identity=bob.identity if proof == "signed" else None)
    await drain(alice)
    if proof == "confirmed":
        assert alice.confirm_contact("bob")   # offline: revoked at the next receive
        await drain(alice)
    assert contact(alice, "bob").identity == bob2.identity.public.raw
    # The old key's capability is revoked on the relay; the new key has its own.
    assert cap_hash(old_cap) not in relay.mailboxes[alice.account().mailbox].caps
    assert await _deposit_with(bob, alice, old_cap) == ["bad_capability"]
    with alice.store.read():
        assert not db.RetiredCapability.select().exists()
    await drain(bob2)
    async with bob2.online():
        await bob2.send_text("alice", "from the new key")
    assert texts(await drain(alice)) == ["from the new key"]
