"""The signed device list (chatcli.crypto.devicelist)."""

from __future__ import annotations

import os

import msgspec
import pytest

from chatcli.crypto import devicelist as dl
from chatcli.crypto.errors import BadSignature, CorruptData
from chatcli.crypto.keys import DHKeyPair, IdentityKeyPair

NOW = 1_800_000_000_000


def record(ik: IdentityKeyPair, name: str) -> dl.DeviceRecord:
    prekey = DHKeyPair.generate().public
    return dl.DeviceRecord(
        device_id=os.urandom(16), name=name, relay_url="ws://127.0.0.1:1/#x",
        mailbox=os.urandom(16), box_key=os.urandom(32), restore_prekey=prekey,
        restore_prekey_signature=ik.sign(dl.RESTORE_PREKEY_LABEL + prekey), added_at=NOW)


def test_a_signed_list_verifies_round_trips_and_a_forgery_does_not() -> None:
    ik, other = IdentityKeyPair.generate(), IdentityKeyPair.generate()
    signed = dl.sign_device_list(ik, 1, [record(ik, "laptop"), record(ik, "phone")], now=NOW)
    back = dl.decode_device_list(dl.encode_device_list(signed))
    assert back == signed
    dl.verify_device_list(back, ik.public)
    forged = [
        msgspec.structs.replace(signed, version=2),
        msgspec.structs.replace(signed, issued_at=NOW + 1),
        msgspec.structs.replace(signed, devices=signed.devices[:1]),
        msgspec.structs.replace(signed, devices=[signed.devices[0], record(other, "evil")]),
        msgspec.structs.replace(signed, signature=other.sign(b"x")),
    ]
    for bad in forged:
        with pytest.raises(BadSignature):
            dl.verify_device_list(bad, ik.public)
    with pytest.raises(dl.BadDeviceList):
        dl.verify_device_list(signed, other.public)       # someone else's list


def test_only_a_newer_version_is_accepted() -> None:
    ik = IdentityKeyPair.generate()
    first = dl.sign_device_list(ik, 1, [record(ik, "laptop")], now=NOW)
    second = dl.with_device(first, ik, record(ik, "phone"), now=NOW + 1)
    assert second.version == 2
    assert dl.accept_device_list(None, first, ik.public)
    assert dl.accept_device_list(first, second, ik.public)
    assert not dl.accept_device_list(second, first, ik.public)
    assert not dl.accept_device_list(second, second, ik.public)


def test_add_remove_rename_and_changes() -> None:
    ik = IdentityKeyPair.generate()
    laptop, phone = record(ik, "laptop"), record(ik, "phone")
    first = dl.sign_device_list(ik, 1, [laptop], now=NOW)
    second = dl.with_device(first, ik, phone, now=NOW)
    assert dl.changes(first, second) == (["phone"], [])
    third = dl.without_device(second, ik, laptop.device_id, now=NOW)
    assert dl.changes(second, third) == ([], ["laptop"])
    assert third.find(laptop.device_id) is None and third.find(phone.device_id) == phone
    fourth = dl.renamed_device(third, ik, phone.device_id, "pocket", now=NOW)
    assert [d.name for d in fourth.devices] == ["pocket"] and fourth.version == 4
    with pytest.raises(dl.BadDeviceList):
        dl.with_device(fourth, ik, record(ik, "pocket"), now=NOW)     # name taken
    with pytest.raises(dl.BadDeviceList):
        dl.without_device(fourth, ik, laptop.device_id, now=NOW)      # not listed
    with pytest.raises(dl.BadDeviceList):
        dl.without_device(fourth, ik, phone.device_id, now=NOW)       # the last device


def test_malformed_lists_are_refused() -> None:
    ik = IdentityKeyPair.generate()
    laptop = record(ik, "laptop")
    with pytest.raises(dl.BadDeviceList):
        dl.sign_device_list(ik, 1, [laptop, laptop], now=NOW)
    with pytest.raises(dl.BadDeviceList):
        dl.sign_device_list(ik, 1, [record(ik, "a"), record(ik, "a")], now=NOW)
    with pytest.raises(dl.BadDeviceList):
        dl.sign_device_list(ik, 1, [record(ik, str(i)) for i in range(dl.MAX_DEVICES + 1)],
                            now=NOW)
    with pytest.raises(CorruptData):
        dl.decode_device_list(b"\x93\x01")
