"""Profiles: display name, status and avatar, sealed with the profile key
(``chatcli.crypto.profile``) and stored as a blob on the owner's relay.

Contacts receive the key and the blob's id and read capability inside their
session (:class:`~chatcli.client.messages.ProfileKeyUpdate`) and fetch the
blob when they want to show the profile. Blocking or removing a contact rolls
the key: the profile is sealed again under a new key, uploaded as a new blob,
and only the remaining contacts get the new key.
"""

from __future__ import annotations

import contextlib
import hashlib
import os

import msgspec

from chatcli.client import messages as m
from chatcli.client import models as db
from chatcli.client.core import ClientCore
from chatcli.crypto.profile import MAX_AVATAR, Profile, ProfileKey, open_profile, seal_profile
from chatcli.errors import CryptoError, RelayError, UsageError
from chatcli.protocol import frames

PROFILE_TTL = 366 * 86400
BLOB_CHUNK = 192 * 1024


class _StoredProfile(msgspec.Struct, array_like=True, frozen=True):
    display_name: str
    status: str
    avatar: bytes | None


def _encode(profile: Profile) -> bytes:
    return msgspec.msgpack.encode(_StoredProfile(profile.display_name, profile.status,
                                                 profile.avatar))


def _decode(data: bytes) -> Profile:
    stored = msgspec.msgpack.decode(data, type=_StoredProfile)
    return Profile(stored.display_name, stored.status, stored.avatar)


def own_profile(client: ClientCore) -> Profile | None:
    account = client.account()
    if account.profile_sealed is None:
        return None
    return _decode(client.sealer.open(account.profile_sealed, "account.profile", account.id))


async def upload_blob(client: ClientCore, data: bytes, ttl: int) -> tuple[bytes, bytes]:
    """Store ``data`` as a new blob on the own relay; returns (blob id, read capability)."""
    conn = await client.own_relay()
    blob_id, read_cap = os.urandom(16), os.urandom(32)
    cap_hash = hashlib.sha256(read_cap).digest()
    offset = 0
    while True:
        chunk = data[offset:offset + BLOB_CHUNK]
        final = offset + len(chunk) >= len(data)
        await conn.request(lambda req, c=chunk, o=offset, f=final: frames.BlobPut(  # type: ignore[misc]
            req=req, blob=blob_id, offset=o, data=c, final=f, read_cap_hash=cap_hash, ttl=ttl))
        offset += len(chunk)
        if final:
            return blob_id, read_cap


async def download_blob(client: ClientCore, relay_url: str, blob: bytes, read_cap: bytes
                        ) -> bytes:
    conn = await client.anonymous(relay_url)
    parts: list[bytes] = []
    offset, size = 0, None
    while size is None or offset < size:
        answer = await conn.request(lambda req, o=offset: frames.BlobGet(  # type: ignore[misc]
            req=req, blob=blob, read_cap=read_cap, offset=o, length=frames.MAX_BLOB_CHUNK))
        assert isinstance(answer, frames.BlobData)
        size = answer.size
        if not answer.data:
            break
        parts.append(answer.data)
        offset += len(answer.data)
    return b"".join(parts)


async def publish_profile(client: ClientCore, profile: Profile | None, *,
                          new_key: bool = False) -> int:
    """Seal and upload ``profile`` (the current one when None), then send the key
    to every contact that is not blocked. Returns how many contacts were told."""
    if profile is None:
        profile = own_profile(client)
    account = client.account()
    key = (ProfileKey.generate() if new_key else ProfileKey.from_bytes(
        client.sealer.open(account.profile_key_sealed, "account.profile_key",
                                                              account.id)))
    if profile is None:
        if new_key:
            with client.store.write():
                db.Account.update(profile_key_sealed=client.sealer.seal(
                    key.raw, "account.profile_key", account.id)).execute()
        return 0
    old_ref = (msgspec.msgpack.decode(client.sealer.open(account.profile_ref_sealed,
                                                         "account.profile_ref", account.id),
                                      type=m.ProfileKeyUpdate)
               if account.profile_ref_sealed else None)
    blob_id, read_cap = await upload_blob(client, seal_profile(key, profile), PROFILE_TTL)
    update = m.ProfileKeyUpdate(key=key.raw, relay_url=account.relay_url, blob=blob_id,
                                read_cap=read_cap)
    told = 0
    with client.store.write():
        db.Account.update(
            profile_key_sealed=client.sealer.seal(key.raw, "account.profile_key",
                                                  account.id),
            profile_sealed=client.sealer.seal(_encode(profile), "account.profile", account.id),
            profile_ref_sealed=client.sealer.seal(m.encode(update), "account.profile_ref",
                                                  account.id),
        ).execute()
        for contact in db.Contact.select().where(db.Contact.blocked == False,  # noqa: E712
                                                 db.Contact.key_changed == False):  # noqa: E712
            client._enqueue(contact, update, kind="profile")
            told += 1
    old_blob = old_ref.blob if old_ref is not None else None
    if old_blob is not None:
        conn = await client.own_relay()
        with contextlib.suppress(RelayError):
            await conn.request(lambda req: frames.BlobDelete(req=req, blob=old_blob))
    await client.flush_outbox()
    return told


async def contact_profile(client: ClientCore, name: str) -> Profile | None:
    """The contact's profile: fetched from its relay when possible, else the
    last copy seen; None when the contact never shared one."""
    contact = client.get_contact(name)
    if contact.profile_ref_sealed is None or contact.profile_key_sealed is None:
        return None
    ref = msgspec.msgpack.decode(client.sealer.open(contact.profile_ref_sealed,
                                                    "contact.profile_ref", contact.id),
                                 type=m.ProfileKeyUpdate)
    key = ProfileKey.from_bytes(client.sealer.open(contact.profile_key_sealed,
                                                   "contact.profile_key", contact.id))
    if ref.blob is not None and ref.read_cap is not None:
        from chatcli.client.attachments import check_same_relay

        try:
            check_same_relay(ref.relay_url, contact.relay_url)
            blob = await download_blob(client, ref.relay_url, ref.blob, ref.read_cap)
            profile = open_profile(key, blob)
        except (RelayError, UsageError, CryptoError):
            profile = None
        if profile is not None:
            with client.store.write():
                db.Contact.update(profile_sealed=client.sealer.seal(
                    _encode(profile), "contact.profile", contact.id)).where(
                    db.Contact.id == contact.id).execute()
            return profile
    if contact.profile_sealed is not None:
        return _decode(client.sealer.open(contact.profile_sealed, "contact.profile", contact.id))
    return None


# The picture formats a profile may carry, by their first bytes (browsers and
# image viewers show all four; nothing here decodes them).
IMAGE_MAGIC: tuple[tuple[str, bytes, int], ...] = (
    ("png", b"\x89PNG\r\n\x1a\n", 0), ("jpeg", b"\xff\xd8\xff", 0),
    ("gif", b"GIF87a", 0), ("gif", b"GIF89a", 0), ("webp", b"WEBP", 8))


def image_kind(data: bytes) -> str | None:
    """``"png"``, ``"jpeg"``, ``"gif"`` or ``"webp"`` from the magic bytes, else None."""
    for kind, magic, at in IMAGE_MAGIC:
        if data[at:at + len(magic)] == magic and (kind != "webp" or data[:4] == b"RIFF"):
            return kind
    return None


def check_avatar(data: bytes) -> bytes:
    """``data`` if it is a PNG, JPEG, GIF or WebP image of at most 512 KiB."""
    if image_kind(data) is None:
        raise UsageError("The avatar must be a PNG, JPEG, GIF or WebP image.")
    if len(data) > MAX_AVATAR:
        raise UsageError(f"The avatar is too large: {len(data) // 1024} KiB, at most "
                         f"{MAX_AVATAR // 1024} KiB (scale it down, e.g. to 256x256).")
    return data


def merge(current: Profile | None, display_name: str | None, status: str | None,
          avatar: bytes | None) -> Profile:
    if current is None and display_name is None:
        raise UsageError("Give --display-name the first time you set a profile.")
    if avatar is not None:
        check_avatar(avatar)
    base = current or Profile(display_name or "")
    return Profile(
        display_name if display_name is not None else base.display_name,
        status if status is not None else base.status,
        avatar if avatar is not None else base.avatar,
    )
