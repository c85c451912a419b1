"""Groups in a key backup (``chatcli keys export``): enough to rejoin them.

A backup carries, per active group, its id, names, creator and signed
membership operations; not the sessions, sender keys or history. After
``keys import`` the restored member asks the creator to renew its member
record (``join``), and keys are exchanged again (``docs/protocol.md``, part 3,
"Groups", joining again).
"""

from __future__ import annotations

import msgspec


class BackupGroup(msgspec.Struct, array_like=True, frozen=True):
    group_id: bytes
    name: str
    creator_name: str
    admin: bytes
    ops: list[bytes]


__all__ = ["BackupGroup"]
