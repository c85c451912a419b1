"""Encrypted attachments: a file is encrypted with its own key
(``chatcli.crypto.attachment``, secretstream chunks), uploaded as a blob to the
sender's relay, and announced inside a :class:`~chatcli.client.messages.Text`
carrying the blob id, read capability, key and digest. The recipient downloads
it, checks the digest, decrypts and saves it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from chatcli.client import messages as m
from chatcli.client.core import ClientCore
from chatcli.client.errors import RelayRequestError
from chatcli.client.events import GroupMessageEvent, MessageEvent
from chatcli.errors import TooLargeError, UsageError
from chatcli.protocol import codes, frames

BLOB_TTL = 30 * 86400
CHUNK = 192 * 1024  # well inside MAX_BLOB_CHUNK and the frame limit
MAX_ATTACHMENT = 100 * 1024 * 1024

Progress = Callable[[int], None]


def _stderr_progress(total: int, label: str) -> tuple[Progress, Callable[[], None]]:
    """A progress bar on stderr when it is a terminal, else nothing."""
    import sys

    if not sys.stderr.isatty():
        return (lambda n: None), (lambda: None)
    import click

    bar = click.progressbar(length=total, label=label, file=sys.stderr)
    bar.__enter__()
    return bar.update, (lambda: bar.__exit__(None, None, None))


def _encrypt_to_temp(path: Path, directory: Path, limit: int | None
                     ) -> tuple[Path, object, int]:
    from chatcli.crypto.attachment import encrypt_file

    if path.stat().st_size > MAX_ATTACHMENT:
        raise UsageError(f"{path.name} is larger than {MAX_ATTACHMENT // 2**20} MiB.")
    if limit is not None and path.stat().st_size > limit:
        raise _too_large(path.name, limit)
    tmp = directory / f".upload-{os.urandom(8).hex()}"
    sealed = encrypt_file(path, tmp)
    return tmp, sealed, tmp.stat().st_size


def _mib(size: int) -> str:
    for unit, scale in (("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{round(size / scale, 1):g} {unit}"
    return f"{size} bytes"


def _too_large(name: str, limit: int | None) -> TooLargeError:
    what = f"stores files of at most {_mib(limit)} (encrypted)" if limit is not None else \
        "refused a file this large"
    return TooLargeError(f"{name} is too large for your relay, which {what}; nothing was sent.")


def _read_chunk(path: Path, offset: int, size: int) -> bytes:
    with path.open("rb") as handle:
        handle.seek(offset)
        return handle.read(size)


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


async def upload_attachment(client: ClientCore, path: Path) -> m.AttachmentRef:
    """Encrypt ``path`` and upload it as a blob on the own relay."""
    import trio

    from chatcli.crypto.attachment import EncryptedAttachment

    # The relay announces its blob size limit when connecting (None from relays
    # that predate it): a file over it is refused before anything is uploaded.
    conn = await client.own_relay()
    limit = conn.proto.max_blob
    tmp, sealed, total = await trio.to_thread.run_sync(_encrypt_to_temp, path, client.home.root,
                                                       limit)
    assert isinstance(sealed, EncryptedAttachment)
    try:
        if limit is not None and total > limit:
            raise _too_large(path.name, limit)
        blob_id = os.urandom(16)
        read_cap = os.urandom(32)
        update, done = _stderr_progress(total, f"Uploading {path.name}")
        try:
            offset = 0
            while True:
                data = _read_chunk(tmp, offset, CHUNK)
                final = offset + len(data) >= total
                try:
                    await conn.request(lambda req, d=data, o=offset, f=final: frames.BlobPut(  # type: ignore[misc]
                        req=req, blob=blob_id, offset=o, data=d, final=f,
                        read_cap_hash=hashlib.sha256(read_cap).digest(), ttl=BLOB_TTL))
                except RelayRequestError as exc:
                    if exc.code == codes.BLOB_TOO_LARGE:  # a relay that does not announce it
                        raise _too_large(path.name, limit) from None
                    raise
                offset += len(data)
                update(len(data))
                if final:
                    break
        finally:
            done()
    finally:
        _remove(tmp)
    return m.AttachmentRef(relay_url=client.relay_url, blob=blob_id, read_cap=read_cap,
                           key=sealed.key.raw, digest=sealed.digest,
                           size=sealed.plaintext_size, name=path.name[:255])


def check_same_relay(url: str, contact_relay: str) -> None:
    """A contact's blobs live on its own relay: refuse any other address, so a
    contact cannot make this client connect to arbitrary hosts."""
    from chatcli.protocol.address import parse_relay_url

    if parse_relay_url(url) != parse_relay_url(contact_relay):
        raise UsageError("The attachment is stored on a relay other than the sender's; "
                         "it was not fetched.")


def _safe_name(name: str) -> str:
    base = os.path.basename(name.replace("\\", "/")).strip()
    base = re.sub(r"[^\w.\- ]", "_", base).lstrip(".")
    return base[:200] or "attachment"


def _free_path(directory: Path, name: str) -> Path:
    candidate = directory / name
    stem, suffix = os.path.splitext(name)
    n = 1
    while candidate.exists():
        candidate = directory / f"{stem} ({n}){suffix}"
        n += 1
    return candidate


def _open_download(save_dir: Path) -> tuple[Path, BinaryIO]:
    save_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = save_dir / f".download-{os.urandom(8).hex()}"
    return tmp, os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")


def _decrypt_into(tmp: Path, save_dir: Path, ref: m.AttachmentRef) -> Path:
    from chatcli.crypto.attachment import AttachmentKey, decrypt_file

    target = _free_path(save_dir, _safe_name(ref.name))
    decrypt_file(tmp, target, AttachmentKey(ref.key), ref.digest)
    return target


async def download_attachment(client: ClientCore, ref: m.AttachmentRef, save_dir: Path) -> Path:
    """Download, verify and decrypt an attachment into ``save_dir``."""
    import trio

    conn = await client.anonymous(ref.relay_url)
    tmp, out = _open_download(save_dir)
    try:
        with out:
            offset = 0
            size: int | None = None
            update: Progress | None = None
            done: Callable[[], None] = lambda: None  # noqa: E731
            try:
                while size is None or offset < size:
                    answer = await conn.request(lambda req, o=offset: frames.BlobGet(  # type: ignore[misc]
                        req=req, blob=ref.blob, read_cap=ref.read_cap, offset=o,
                        length=frames.MAX_BLOB_CHUNK))
                    assert isinstance(answer, frames.BlobData)
                    if size is None:
                        size = answer.size
                        if size > MAX_ATTACHMENT + MAX_ATTACHMENT // 100 + 1024:
                            raise UsageError(f"The attachment {ref.name!r} is too large "
                                             "to download.")
                        update, done = _stderr_progress(size, f"Downloading {ref.name}")
                    if not answer.data:
                        break
                    out.write(answer.data)
                    offset += len(answer.data)
                    if update is not None:
                        update(len(answer.data))
            finally:
                done()
        return await trio.to_thread.run_sync(_decrypt_into, tmp, save_dir, ref)
    finally:
        _remove(tmp)


async def download_for_event(client: ClientCore, event: MessageEvent, save_dir: Path | None
                             ) -> MessageEvent:
    """The event with ``attachment["path"]`` set once the file is saved (or
    ``attachment["error"]`` when it could not be fetched)."""
    from chatcli.errors import ChatcliError

    ref = event.attachment_ref
    if ref is None or event.attachment is None:
        return event
    info = dict(event.attachment)
    try:
        if isinstance(event, GroupMessageEvent) and not event.from_contact:
            # A member who is not a contact: its relay is in the group's member records.
            from chatcli.client.groups.queries import member_relay

            relay = event.group and member_relay(client, event.group, event.fingerprint)
            if not relay:
                raise UsageError("The sender is no longer a member of the group; the "
                                 "attachment was not fetched.")
        else:
            relay = client.get_contact(event.contact, allow_key_changed=True).relay_url
        check_same_relay(ref.relay_url, relay)
        path = await download_attachment(client, ref, save_dir or client.home.downloads)
        info["path"] = str(path)
        from chatcli.client.inbox import record_saved

        record_saved(client, event.id, path)
    except ChatcliError as exc:
        info["error"] = str(exc)
    return dataclasses.replace(event, attachment=info)
