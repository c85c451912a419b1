"""The signed device list of an identity (issue 13, ``docs/protocol.md`` "Devices").

Every device of an identity holds the identity key IK; the list says which
devices are current. It is signed by IK over
``"chatcli/device-list/v1" || msgpack([identity, version, issued_at, devices])``
and a reader accepts a list only when that signature verifies and its
``version`` is higher than the one it holds. Pure: no I/O, ``now`` is an argument.

A contact that never published a list is one *legacy* device (``device_id``
None) at its contact address: :func:`legacy_device_id` is that id.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from chatcli.crypto.errors import BadSignature, CorruptData
from chatcli.crypto.keys import IdentityKeyPair, IdentityPublicKey

DEVICE_LIST_LABEL = b"chatcli/device-list/v1"
# The same label as chatcli.client.sessions signs restore prekeys with: a
# device record's prekey is checked exactly like a ContactInfo's.
RESTORE_PREKEY_LABEL = b"chatcli/restore-prekey/v1"
DEVICE_ID_BYTES = 16
MAX_NAME = 64
# Every device costs each sender one ratchet encryption per message.
MAX_DEVICES = 10

_B16 = Annotated[bytes, msgspec.Meta(min_length=16, max_length=16)]
_B32 = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
_B64 = Annotated[bytes, msgspec.Meta(min_length=64, max_length=64)]
_Millis = Annotated[int, msgspec.Meta(ge=0, lt=2**53)]


class BadDeviceList(BadSignature):
    """A device list is not signed by its identity, is malformed, or is older
    than the one already known."""

    default = "A device list is not valid."


class DeviceRecord(msgspec.Struct, array_like=True, frozen=True):
    """One device: its id, its unique name, where it receives (its own mailbox
    and box key on ``relay_url``) and its own signed restore prekey."""

    device_id: _B16
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME)]
    relay_url: Annotated[str, msgspec.Meta(max_length=500)]
    mailbox: _B16
    box_key: _B32
    restore_prekey: _B32
    restore_prekey_signature: _B64
    added_at: _Millis


class DeviceList(msgspec.Struct, array_like=True, frozen=True):
    """The current devices of ``identity``, version ``version``, signed by it."""

    identity: _B32
    version: Annotated[int, msgspec.Meta(ge=1, lt=2**53)]
    issued_at: _Millis
    devices: Annotated[list[DeviceRecord], msgspec.Meta(min_length=1, max_length=MAX_DEVICES)]
    signature: _B64

    def find(self, device_id: bytes | None) -> DeviceRecord | None:
        """The record of ``device_id``, or None when it is not listed."""
        return next((d for d in self.devices if d.device_id == device_id), None)

    def find_name(self, name: str) -> DeviceRecord | None:
        return next((d for d in self.devices if d.name == name), None)

    @property
    def device_ids(self) -> frozenset[bytes]:
        return frozenset(d.device_id for d in self.devices)


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(DeviceList)


def _signed_bytes(identity: bytes, version: int, issued_at: int,
                  devices: list[DeviceRecord]) -> bytes:
    return DEVICE_LIST_LABEL + _encoder.encode([identity, version, issued_at, devices])


def _check_devices(devices: list[DeviceRecord]) -> None:
    if not 1 <= len(devices) <= MAX_DEVICES:
        raise BadDeviceList(f"A device list holds 1 to {MAX_DEVICES} devices.")
    if len({d.device_id for d in devices}) != len(devices):
        raise BadDeviceList("A device list names the same device twice.")
    if len({d.name for d in devices}) != len(devices):
        raise BadDeviceList("Two devices in a device list have the same name.")


def sign_device_list(own: IdentityKeyPair, version: int, devices: list[DeviceRecord], *,
                     now: int) -> DeviceList:
    """A list of ``devices`` at ``version``, issued at ``now`` (ms), signed by ``own``."""
    devices = list(devices)
    _check_devices(devices)
    for device in devices:
        verify_record(own.public, device)
    identity = own.public.raw
    return DeviceList(identity=identity, version=version, issued_at=now, devices=devices,
                      signature=own.sign(_signed_bytes(identity, version, now, devices)))


def verify_record(identity: IdentityPublicKey, record: DeviceRecord) -> None:
    """Raise :class:`BadDeviceList` unless ``record``'s restore prekey is signed by ``identity``."""
    try:
        identity.verify(RESTORE_PREKEY_LABEL + record.restore_prekey,
                        record.restore_prekey_signature)
    except BadSignature:
        raise BadDeviceList(
            f"The restore prekey of device {record.name!r} is not signed by its identity."
        ) from None


def verify_device_list(devices: DeviceList, identity: IdentityPublicKey) -> None:
    """Raise :class:`BadDeviceList` unless ``devices`` is ``identity``'s, well
    formed, and signed by it (the list and every record's restore prekey)."""
    if devices.identity != identity.raw:
        raise BadDeviceList("A device list belongs to another identity.")
    _check_devices(devices.devices)
    try:
        identity.verify(_signed_bytes(devices.identity, devices.version, devices.issued_at,
                                      devices.devices), devices.signature)
    except BadSignature:
        raise BadDeviceList("A device list is not signed by its identity.") from None
    for record in devices.devices:
        verify_record(identity, record)


def accept_device_list(stored: DeviceList | None, offered: DeviceList,
                       identity: IdentityPublicKey) -> bool:
    """Whether ``offered`` replaces ``stored``: True when it verifies and is
    newer; False when it is the same or an older version (nothing to do).
    Raise :class:`BadDeviceList` when it does not verify."""
    verify_device_list(offered, identity)
    return stored is None or offered.version > stored.version


def with_device(current: DeviceList, own: IdentityKeyPair, record: DeviceRecord, *,
                now: int) -> DeviceList:
    """``current`` with ``record`` added (or replacing the record of the same
    device id), at the next version."""
    same_name = current.find_name(record.name)
    if same_name is not None and same_name.device_id != record.device_id:
        raise BadDeviceList(f"A device named {record.name!r} is already in the list.")
    if current.find(record.device_id) is not None:   # replaced where it stands
        devices = [record if d.device_id == record.device_id else d for d in current.devices]
    else:
        devices = [*current.devices, record]
    return sign_device_list(own, current.version + 1, devices, now=now)


def without_device(current: DeviceList, own: IdentityKeyPair, device_id: bytes, *,
                   now: int) -> DeviceList:
    """``current`` without the device ``device_id``, at the next version."""
    kept = [d for d in current.devices if d.device_id != device_id]
    if len(kept) == len(current.devices):
        raise BadDeviceList("That device is not in the list.")
    return sign_device_list(own, current.version + 1, kept, now=now)


def renamed_device(current: DeviceList, own: IdentityKeyPair, device_id: bytes, name: str, *,
                   now: int) -> DeviceList:
    """``current`` with device ``device_id`` called ``name``, at the next version."""
    record = current.find(device_id)
    if record is None:
        raise BadDeviceList("That device is not in the list.")
    other = current.find_name(name)
    if other is not None and other.device_id != device_id:
        raise BadDeviceList(f"A device named {name!r} is already in the list.")
    devices = [msgspec.structs.replace(d, name=name) if d.device_id == device_id else d
               for d in current.devices]
    return sign_device_list(own, current.version + 1, devices, now=now)


def changes(old: DeviceList | None, new: DeviceList) -> tuple[list[str], list[str]]:
    """The names of the devices ``new`` adds and removes compared with ``old``."""
    before = {} if old is None else {d.device_id: d.name for d in old.devices}
    after = {d.device_id: d.name for d in new.devices}
    added = [name for did, name in after.items() if did not in before]
    removed = [name for did, name in before.items() if did not in after]
    return added, removed


def encode_device_list(devices: DeviceList) -> bytes:
    return _encoder.encode(devices)


def decode_device_list(data: bytes) -> DeviceList:
    """Decode a stored or received list (not verified: see :func:`verify_device_list`)."""
    try:
        return _decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError):
        raise CorruptData("A device list is damaged or not in the expected format.") from None
