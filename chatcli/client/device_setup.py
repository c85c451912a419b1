"""Making a new device of an existing identity, and the relay side of the
device list: the capabilities a device's mailbox must accept.

:func:`add_device` is the end of linking (``chatcli device link``) without
the transfer: the existing device's client is at hand (tests, and the linking
code once the snapshot arrived). :func:`create_device_home` is the new
device's half, :func:`register_capabilities` the relay's.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from chatcli.client import models as db
from chatcli.client.backup import BackupV1
from chatcli.client.capabilities import cap_hash
from chatcli.client.home import Home
from chatcli.client.sessions import sign_restore_prekey
from chatcli.client.store import now_ms
from chatcli.crypto import devicelist as dl
from chatcli.crypto.keys import DHKeyPair, IdentityKeyPair, MailboxKeyPair
from chatcli.protocol import frames
from chatcli.protocol.frames import MAX_BATCH

if TYPE_CHECKING:
    from chatcli.client.service import ChatClient


def create_device_home(home: Home, passphrase: str, *, identity: IdentityKeyPair,
                       mailbox_key: MailboxKeyPair, mailbox: bytes, relay_url: str,
                       device_id: bytes, device_name: str, restore_prekey: DHKeyPair,
                       snapshot: BackupV1, device_list: dl.DeviceList) -> ChatClient:
    """Create ``home`` as the device ``device_id`` of ``identity`` from a
    snapshot of another device (contacts, groups, settings, the self
    capability) and the signed list that already names this device."""
    from chatcli.client.service import ChatClient

    dl.verify_device_list(device_list, identity.public)
    if device_list.find(device_id) is None:
        raise dl.BadDeviceList("The device list does not name this new device.")
    client = ChatClient.create(
        home, passphrase, name=snapshot.name, relay_url=relay_url, mailbox=mailbox,
        identity=identity, mailbox_key=mailbox_key, profile_key=snapshot.profile_key,
        restore_prekey=restore_prekey, device_id=device_id, device_name=device_name)
    with client.store.write():
        client.restore_contacts(snapshot)
        account = client.store.account()
        self_cap = snapshot.self_capability or os.urandom(32)
        db.Account.update(
            device_list=dl.encode_device_list(device_list),
            self_cap_sealed=client.sealer.seal(self_cap, "account.self_cap", account.id),
        ).execute()
    return client


async def register_capabilities(client: ChatClient) -> None:
    """Let this device's mailbox accept every capability the identity issued
    (its contacts', live invites', the self capability); inside ``online()``."""
    hashes = client.capability_hashes()
    conn = await client.own_relay()
    for start in range(0, len(hashes), MAX_BATCH):
        chunk = hashes[start:start + MAX_BATCH]
        await conn.request(lambda req, c=chunk: frames.CapAdd(  # type: ignore[misc]
            req=req, cap_hashes=c))


async def add_device(existing: ChatClient, home: Home, passphrase: str, *, device_name: str,
                     token: str | None = None) -> ChatClient:
    """Make ``home`` a new device of ``existing``'s identity: a new mailbox on
    the identity's relay, a new restore prekey, the contacts and groups of a
    snapshot; ``existing`` signs the list with it and sends it to every
    contact and own device. Returns the new device's client (offline)."""
    from chatcli.client.relay_client import connect
    from chatcli.protocol.address import parse_relay_url

    home.require_empty()
    relay_url = existing.relay_url
    mailbox_key = MailboxKeyPair.generate()
    async with connect(parse_relay_url(relay_url)) as conn:
        mailbox = await conn.register(mailbox_key.auth_public, mailbox_key.sign, token)
    restore = DHKeyPair.generate()
    device_id = os.urandom(dl.DEVICE_ID_BYTES)
    record = dl.DeviceRecord(
        device_id=device_id, name=device_name, relay_url=relay_url, mailbox=mailbox,
        box_key=mailbox_key.box_public, restore_prekey=restore.public,
        restore_prekey_signature=sign_restore_prekey(existing.identity, restore.public),
        added_at=now_ms())
    existing.self_capability()
    snapshot = existing.decode_backup(existing.export_backup())
    signed = existing.add_own_device(record)
    new = create_device_home(
        home, passphrase, identity=existing.identity, mailbox_key=mailbox_key,
        mailbox=mailbox, relay_url=relay_url, device_id=device_id, device_name=device_name,
        restore_prekey=restore, snapshot=snapshot, device_list=signed)
    async with new.online():
        await register_capabilities(new)
    async with existing.online():
        conn = await existing.own_relay()
        own = cap_hash(existing.self_capability())
        await conn.request(lambda req: frames.CapAdd(req=req, cap_hashes=[own]))
        await existing.flush_outbox()
    return new
